"""Train a learn / forget projection W (d × D) on frozen CLIP features of the five-tuples (paper §2, §4, §5).

Only W trains: Adam (lr 1e-4), batch 128, StepLR halving every 4,000 steps, orthogonal init, signed InfoNCE terms
plus γ‖I − WWᵀ‖_F. Each epoch is validated on a held-out split with the same objective; the best epoch is kept.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..errors import VqclipError, bad_arg, check_seed
from .losses import TERMS, resolve_preset, spelling_objective
from .retrieval import retrieval_metrics, summary_scores

SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass
class SpellingFeatures:
    """Unit-norm CLIP features of N five-tuples; y_i is `class_features[class_ids]` (one prompt per class)."""

    x_i: torch.Tensor  # (N, D) natural images
    x_t: torch.Tensor  # (N, D) rendered words
    x_it: torch.Tensor  # (N, D) images with the word drawn on
    y_t: torch.Tensor  # (N, D) the word strings
    class_ids: torch.Tensor  # (N,) long, index into class_features
    class_features: torch.Tensor  # (C, D) class prompts "an image of a {class}"
    word_ids: torch.Tensor  # (N,) long, same id = same word
    is_real: torch.Tensor  # (N,) bool, real English word vs nonsense
    split: torch.Tensor | None = None  # (N,) 0 train, 1 val, 2 test
    class_image_features: torch.Tensor | None = None  # (C, D) rendered class names, for visual comprehension
    words: list[str] | None = None  # word_ids -> string
    classes: list[str] | None = None  # class_ids -> name
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.x_i)
        for name in ("x_t", "x_it", "y_t", "class_ids", "word_ids", "is_real"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"SpellingFeatures.{name} has {len(getattr(self, name))} rows, x_i has {n}")
        dims = {t.shape[-1] for t in (self.x_i, self.x_t, self.x_it, self.y_t, self.class_features)}
        if len(dims) != 1:
            raise ValueError(f"SpellingFeatures: all features need the same size D; got {sorted(dims)}")
        if n and int(self.class_ids.max()) >= len(self.class_features):
            raise ValueError("SpellingFeatures.class_ids point past class_features")

    @property
    def y_i(self) -> torch.Tensor:
        return self.class_features[self.class_ids]  # (N, D)

    @property
    def embed_dim(self) -> int:
        return int(self.x_i.shape[-1])

    def __len__(self) -> int:
        return len(self.x_i)

    def subset(self, index: torch.Tensor) -> "SpellingFeatures":
        """The tuples at `index` (a bool mask or indices); class and word tables are shared."""
        per_item = {k: getattr(self, k)[index] for k in ("x_i", "x_t", "x_it", "y_t", "class_ids", "word_ids",
                                                        "is_real")}
        split = self.split[index] if self.split is not None else None
        return SpellingFeatures(**per_item, class_features=self.class_features, split=split,
                                class_image_features=self.class_image_features, words=self.words,
                                classes=self.classes, metadata=self.metadata)

    def to(self, device: str | torch.device) -> "SpellingFeatures":
        """The same tuples with every tensor on `device` (training reads batches from there)."""
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return SpellingFeatures(**moved)

    def part(self, name: str) -> "SpellingFeatures":
        """The train, val or test split ('all' is everything)."""
        if name == "all":
            return self
        if name not in SPLITS:
            raise bad_arg("--split", "unknown split", name, "Use train, val, test or all.")
        if self.split is None:
            raise bad_arg("--split", "these features carry no split assignment", name, "Use --split all.")
        return self.subset(self.split == SPLITS[name])

    def split_sizes(self) -> dict[str, int]:
        if self.split is None:
            return {"all": len(self)}
        return {name: int((self.split == i).sum()) for name, i in SPLITS.items()}


@dataclass
class TrainConfig:
    """Training settings; dim / weights / gamma left None take the space's preset."""

    space: str = "forget"
    dim: int | None = None
    weights: str | Mapping[str, float] | None = None
    gamma: float | None = None
    lr: float = 1e-4
    batch_size: int = 128
    epochs: int = 30
    step_size: int = 4000  # StepLR period in optimiser steps
    lr_decay: float = 0.5
    mask_duplicates: bool = False
    seed: int = 0
    device: str = "cpu"

    def check(self, flags: Mapping[str, str] | None = None) -> "TrainConfig":
        """Refuse settings that cannot train, before any image is read or feature extracted.

        `flags` renames the options errors blame (field -> flag, e.g. `{"lr": "--proj-lr"}`).
        """
        flag = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "step_size": "--step-size",
                "lr_decay": "--lr-decay", "seed": "--seed", **(flags or {})}
        if self.epochs < 1:
            raise bad_arg(flag["epochs"], "must be at least 1", self.epochs, "Use e.g. 30.")
        if self.batch_size < 2:
            raise bad_arg(flag["batch_size"], "must be at least 2 for a contrastive loss", self.batch_size,
                          "Use e.g. 128.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise bad_arg(flag["lr"], "the learning rate must be a positive number", self.lr, "Use e.g. 1e-4.")
        if self.step_size < 1:
            raise bad_arg(flag["step_size"], "the StepLR period must be at least 1 step", self.step_size,
                          "Use e.g. 4000.")
        if not (0 < self.lr_decay <= 1):
            raise bad_arg(flag["lr_decay"], "the StepLR factor must be in (0, 1]", self.lr_decay, "Use e.g. 0.5.")
        check_seed(self.seed, flag["seed"])
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["weights"] = dict(self.weights) if isinstance(self.weights, Mapping) else self.weights
        return d


@dataclass
class TrainResult:
    """The kept projection and how it got there."""

    W: torch.Tensor  # (d, D), the best epoch's
    space: str
    dim: int
    weights: dict[str, float]
    gamma: float
    best_epoch: int
    history: list[dict]
    metrics: dict
    config: dict
    seconds: float


def _check_training_data(train: SpellingFeatures, weights: Mapping[str, float], batch_size: int) -> int:
    """Refuse data the objective cannot learn from; return the batch size actually used."""
    if len(train) < 2:
        raise bad_arg("--images", "training needs at least 2 five-tuples (InfoNCE contrasts items in a batch)",
                      f"{len(train)} training tuples", "Add images or lower --val-fraction / --test-fraction.")
    source = train.metadata.get("folder") or "the training features"
    for name in ("x_i", "x_t", "x_it", "y_t", "class_features", "class_image_features"):
        t = getattr(train, name)
        if t is not None and not bool(torch.isfinite(t).all()):
            raise bad_arg("--features", f"the features {name} hold NaN or infinite values: a projection trained on "
                          "them would be NaN too", str(source), "Extract the features again (remove the "
                          "feature cache folder, or pass another --features folder).")
    class_terms = [t for t in ("L2", "L6") if weights.get(t)]
    n_classes = int(torch.unique(train.class_ids).numel())
    if class_terms and n_classes < 2:
        raise bad_arg("--images", f"the class terms {', '.join(class_terms)} need at least 2 classes in a batch",
                      f"{n_classes} class", "Use an image folder with several class sub-folders, or drop "
                      "those terms with --weights.")
    return min(batch_size, len(train))


def _batch(f: SpellingFeatures, idx: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    idx = idx.to(f.x_i.device)
    out = {k: getattr(f, k)[idx].to(device).float() for k in ("x_i", "x_t", "x_it", "y_t")}  # (B, D)
    out["y_i"] = f.class_features[f.class_ids[idx]].to(device).float()  # (B, D)
    out["class_ids"] = f.class_ids[idx].to(device)
    out["word_ids"] = f.word_ids[idx].to(device)
    return out


def _batches(n: int, batch_size: int, generator: torch.Generator | None):
    """Index batches of one epoch; shuffled when a generator is given; the short tail is dropped (InfoNCE
    over a handful of items is a different, easier task) unless it is the only batch."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    stop = n - n % batch_size if n >= batch_size else n
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]


@torch.no_grad()
def evaluate_objective(W: torch.Tensor, f: SpellingFeatures, weights: Mapping[str, float], gamma: float,
                       batch_size: int = 128, mask_duplicates: bool = False) -> float:
    """The training objective averaged over `f` in fixed batches (validation loss)."""
    bs = min(batch_size, len(f))
    values = [float(spelling_objective(W, _batch(f, idx, W.device), weights, gamma, mask_duplicates)[0])
              for idx in _batches(len(f), bs, None) if len(idx) >= 2]
    return sum(values) / len(values) if values else float("nan")


def init_projection(dim: int, embed_dim: int, seed: int = 0) -> torch.Tensor:
    """A (d, D) matrix with orthonormal rows (paper §2: initialised orthogonal)."""
    g = torch.Generator().manual_seed(seed)
    return torch.nn.init.orthogonal_(torch.empty(dim, embed_dim), generator=g)


def train_projection(train: SpellingFeatures, val: SpellingFeatures | None = None,
                     config: TrainConfig | None = None,
                     callback: Callable[[dict], None] | None = None) -> TrainResult:
    """Train W on `train`, keep the epoch with the lowest objective on `val` (else the last), return it."""
    config = (config or TrainConfig()).check()
    start = time.perf_counter()
    preset = resolve_preset(config.space, config.dim, config.weights, config.gamma, train.embed_dim)
    weights, gamma, dim = preset["weights"], preset["gamma"], preset["dim"]
    batch_size = _check_training_data(train, weights, config.batch_size)
    device = torch.device(config.device)
    train = train.to(device)  # one copy up front instead of a host-to-device copy per step
    val = val.to(device) if val is not None else None
    W = torch.nn.Parameter(init_projection(dim, train.embed_dim, config.seed).to(device))
    opt = torch.optim.Adam([W], lr=config.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.step_size, gamma=config.lr_decay)
    gen = torch.Generator().manual_seed(config.seed)
    use_val = val is not None and len(val) >= 2
    best = (math.inf, 0, W.detach().clone())
    history, step = [], 0
    for epoch in range(1, config.epochs + 1):
        totals: dict[str, float] = {}
        batches = _batches(len(train), batch_size, gen)
        for idx in batches:
            loss, parts = spelling_objective(W, _batch(train, idx, device), weights, gamma, config.mask_duplicates)
            if not bool(torch.isfinite(loss)):  # refuse rather than write a NaN projection and exit 0
                raise VqclipError(f"training: the loss became {float(loss.detach())} at epoch {epoch}, step {step + 1}; no "
                                  f"projection was written. Lower --lr (now {config.lr}) or --gamma, or check the "
                                  "features for extreme values.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                totals[k] = totals.get(k, 0.0) + v
        record = {"epoch": epoch, "step": step, "lr": opt.param_groups[0]["lr"],
                  **{f"train_{k}": v / len(batches) for k, v in totals.items()}}
        if use_val:
            record["val_loss"] = evaluate_objective(W.detach(), val, weights, gamma, batch_size,
                                                    config.mask_duplicates)
        score = record.get("val_loss", -epoch)  # without validation the last epoch wins
        if score < best[0]:
            best = (score, epoch, W.detach().clone())
        history.append(record)
        if callback:
            callback(record)
    W_best = best[2].cpu()
    if not bool(torch.isfinite(W_best).all()):
        raise VqclipError("training: the projection W holds NaN or infinite values; no projection was written. "
                          f"Lower --lr (now {config.lr}).")
    metrics: dict[str, Any] = {"best_epoch": best[1]}
    if use_val:
        metrics["val_loss"] = best[0]
        metrics["val"] = retrieval_metrics(val, W_best, device=device)
        metrics["val_summary"] = summary_scores(metrics["val"])
    return TrainResult(W=W_best, space=config.space, dim=dim, weights=weights, gamma=gamma, best_epoch=best[1],
                       history=history, metrics=metrics, config={**config.to_dict(), "batch_size": batch_size},
                       seconds=time.perf_counter() - start)


def projection_metadata(result: TrainResult, recipe: Mapping[str, Any] | None = None,
                        split_sizes: Mapping[str, int] | None = None,
                        metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a projection file records about its training (stored as JSON strings in the safetensors header)."""
    return {
        "loss_weights": result.weights,
        "gamma": result.gamma,
        "training": {**result.config, "best_epoch": result.best_epoch, "seconds": round(result.seconds, 2),
                     "terms": {t: list(TERMS[t]) for t in result.weights}},
        "data_recipe": dict(recipe or {}),
        "split_sizes": dict(split_sizes or {}),
        "metrics": {**result.metrics, **(metrics or {})},
        "history": result.history,
    }


def write_projection(result: TrainResult, clip_identity: str, path: str | os.PathLike | None = None,
                     cache: str | os.PathLike | None = None, recipe: Mapping[str, Any] | None = None,
                     split_sizes: Mapping[str, int] | None = None, metrics: Mapping[str, Any] | None = None,
                     overwrite: bool = True) -> Path:
    """Write the projection atomically where the generator looks for it (or to `path`)."""
    from ..spaces import projection_path, save_projection

    target = Path(path) if path else projection_path(result.space, clip_identity, cache)
    if target.exists() and not overwrite:
        raise bad_arg("--out", "the projection file exists", str(target), "Pass --overwrite to replace it.")
    extra = projection_metadata(result, recipe, split_sizes, metrics)
    return save_projection(target, result.W, result.space, clip_identity, extra)


def train_test_metrics(features: SpellingFeatures, W: torch.Tensor, split: str = "test",
                       device: str | torch.device | None = None) -> dict:
    """Retrieval metrics of CLIP and of W on one split, for the file's record and the terminal."""
    part = features.part(split) if features.split is not None else features
    if len(part) < 2:
        return {}
    return {"split": split, "n": len(part), "clip": retrieval_metrics(part, None, device),
            "projection": retrieval_metrics(part, W, device)}
