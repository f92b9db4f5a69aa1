"""Shared by the space-comparing evaluations: image encoding in batches and the set of spaces to compare."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Protocol, Sequence

import torch
from PIL import Image

from ..errors import VqclipError, bad_arg, choices_hint
from ..projections import load_projection, projection_path, resolve_space
from ..spaces import identity_space, Space, SPACES

log = logging.getLogger(__name__)


class Encoder(Protocol):
    """The image-text encoder the evaluations need (ClipModel, or a fake in tests)."""

    input_size: tuple[int, int]  # (H, W)
    device: torch.device

    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...  # (B, 3, H, W) in [0, 1] -> (B, D)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor: ...  # N strings -> (N, D)


def inside(root: Path, name: str) -> Path | None:
    """`root / name` when `name` is a relative path that stays inside `root`, else None.

    Annotation files are untrusted: an absolute name or one climbing out with `..` (`/etc/passwd`,
    `../../secret.png`) is refused. Checked on the written path, so a symlink the folder's owner placed still works.
    """
    name = str(name).replace("\\", "/")
    if not name or name.startswith("/") or os.path.isabs(name) or "\x00" in name or (len(name) > 1 and name[1] == ":"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    depth = 0
    for part in parts:
        depth += -1 if part == ".." else 1
        if depth < 0:
            return None
    return root / "/".join(parts) if parts else None


def to_input(image: Image.Image, input_size: tuple[int, int]) -> torch.Tensor:
    """PIL image -> (3, H, W) float in [0, 1], resized and centre-cropped like CLIP's preprocessing."""
    import numpy as np

    from ..spelling.render import resize_center_crop

    h, w = input_size
    arr = np.asarray(resize_center_crop(image, (w, h)), dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def encode_images(loaders: Sequence[Callable[[], Image.Image]], encoder: Encoder, batch_size: int = 32,
                  progress: bool = True, desc: str = "images") -> tuple[torch.Tensor, list[int], dict[int, str]]:
    """Encode images given as loaders; unreadable ones are skipped with their reason, never fatal.

    Returns ((M, D) features on the CPU, indices of the M encoded images, {index: reason} for the skipped ones).
    """
    from tqdm import tqdm

    feats, kept, failed = [], [], {}
    batch, batch_idx = [], []

    def flush():
        if batch:
            x = torch.stack(batch).to(encoder.device)  # (B, 3, H, W)
            with torch.no_grad():
                feats.append(encoder.encode_image(x).float().cpu())  # (B, D)
            kept.extend(batch_idx)
            batch.clear()
            batch_idx.clear()

    for i, load in enumerate(tqdm(loaders, desc=desc, unit="img", disable=not progress, leave=False)):
        try:
            image = load()
            image.load()
            batch.append(to_input(image.convert("RGB"), tuple(encoder.input_size)))
            batch_idx.append(i)
        except Exception as e:  # noqa: BLE001 - unreadable, truncated or missing files: record and go on
            failed[i] = f"unreadable image ({type(e).__name__}: {e})"
            continue
        if len(batch) >= batch_size:
            flush()
    flush()
    dim = feats[0].shape[1] if feats else 0
    return (torch.cat(feats) if feats else torch.zeros(0, dim)), kept, failed


def encode_texts(texts: Sequence[str], encoder: Encoder, batch_size: int = 256) -> torch.Tensor:
    """(N, D) text features on the CPU, in batches."""
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            out.append(encoder.encode_text(list(texts[start:start + batch_size])).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def parse_projection_arg(text: str) -> tuple[str | None, Path]:
    """`PATH` or `LABEL=PATH` (LABEL names the column)."""
    label, sep, path = text.partition("=")
    if sep and label and not os.path.exists(text):
        return label, Path(path).expanduser()
    return None, Path(text).expanduser()


def resolve_eval_spaces(clip_identity: str, embed_dim: int, spaces: Sequence[str] | None = None,
                        projections: Sequence[str] = (), cache: str | os.PathLike | None = None,
                        clip_flags: str | None = None) -> dict[str, Space]:
    """Columns to compare: named spaces (`clip`, and learn/forget from the cache) plus any projection files.

    With `spaces` None: clip, every cached learn/forget projection for this CLIP, and the files given.
    `clip_flags` (`ClipModel.cli_flags()`) make the training hint for a missing projection runnable.
    """
    out: dict[str, Space] = {}
    given: list[tuple[str, Space]] = []
    for text in projections:
        label, path = parse_projection_arg(text)
        sp = load_projection(path, None, embed_dim)
        sp.check_clip(clip_identity, embed_dim, clip_flags=clip_flags)
        given.append((label or sp.name, sp))
    explicit = spaces is not None
    names = list(spaces) if explicit else ["clip", "learn", "forget"]
    for name in names:
        if name not in SPACES:
            raise bad_arg("--spaces", "unknown embedding space", name, choices_hint(SPACES))
        if name == "clip":
            out["clip"] = identity_space()
            continue
        if any(label == name for label, _ in given):
            continue
        if not explicit and not projection_path(name, clip_identity, cache).is_file():
            log.info("no cached %s projection for %s; leaving it out", name, clip_identity)
            continue
        out[name] = resolve_space(name, clip_identity, embed_dim, None, cache, clip_flags=clip_flags)
    for label, sp in given:
        key, n = label, 2
        while key in out:
            key, n = f"{label}#{n}", n + 1
        out[key] = sp
    if not out:
        raise VqclipError("--spaces: nothing to evaluate; name at least one space or pass --projection FILE.")
    return out
