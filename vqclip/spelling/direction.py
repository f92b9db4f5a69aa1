"""The text direction of a CLIP from its cached five-tuple features: where writing a word moves an image's
embedding, on average (docs/method.md §10; the file format is `projections/direction.py`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..errors import bad_arg
from .featureset import SpellingFeatures


def text_direction(features: SpellingFeatures) -> torch.Tensor:
    """normalize(mean(x_it) − mean(x_i)) over the training tuples: the same natural images with and without a word
    written on them, so the difference holds the writing and little else (unit-norm features, shape (D,))."""
    part = features.part("train") if features.split is not None else features
    if len(part) < 1:
        raise bad_arg("--direction", "the features hold no training tuples", len(part),
                      "Extract features from more images (e.g. --images imagenetv2).")
    x_i = F.normalize(part.x_i.double(), dim=-1)
    x_it = F.normalize(part.x_it.double(), dim=-1)
    return F.normalize(x_it.mean(0) - x_i.mean(0), dim=0).float()


def direction_agreement(features: SpellingFeatures, vector: torch.Tensor) -> dict:
    """How well the direction separates written from natural on held-out tuples (test, else val, else all): the
    mean of (x_it − x_i)·d and the share of tuples whose written image lies further along d than its natural one."""
    sizes = features.split_sizes()
    split = next((s for s in ("test", "val") if sizes.get(s, 0) > 0), "all")
    part = features.part(split)
    delta = (F.normalize(part.x_it.float(), dim=-1) - F.normalize(part.x_i.float(), dim=-1)) @ vector.float()
    return {"split": split, "n": len(part), "mean_shift": round(float(delta.mean()), 6),
            "share_written_further": round(float((delta > 0).float().mean()), 6)}


def write_direction(vector: torch.Tensor, clip_identity: str, path: str | os.PathLike | None = None,
                    cache: str | os.PathLike | None = None, record: Mapping[str, Any] | None = None) -> Path:
    """Write the direction atomically where generation looks for it (or to `path`)."""
    from ..projections.direction import direction_path, save_direction

    return save_direction(Path(path) if path else direction_path(clip_identity, cache), vector, clip_identity, record)
