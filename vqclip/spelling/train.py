"""Train a learn / forget projection W (d × D) on frozen CLIP features of the five-tuples (docs/method.md §2, §4,
§5).

Only W trains: Adam (lr 1e-4), batch 128, StepLR halving every 4,000 steps, orthogonal init, signed InfoNCE terms
plus γ‖I − WWᵀ‖_F. Each epoch is validated on a held-out split with the same objective; the best epoch is kept.
Every training tuple is used in every epoch: the last, partial batch is kept, as the reference code's DataLoader
does (`drop_last=True` drops it instead).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..errors import VqclipError, bad_arg, check_seed
from .featureset import SPLITS, SpellingFeatures  # noqa: F401 - defined here before; still importable from here
from .losses import TERMS, resolve_preset, spelling_objective
from .retrieval import retrieval_metrics, summary_scores

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
    drop_last: bool = False  # drop each epoch's last, partial batch (the reference code keeps it)
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
        gamma = flag.get("gamma", "--gamma")
        if self.gamma is not None and (isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float))
                                       or not math.isfinite(self.gamma) or self.gamma < 0):
            raise bad_arg(gamma, "the orthogonality weight must be a finite number >= 0", self.gamma,
                          "Use e.g. 1.0 (0 switches the orthogonality penalty off).")
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


def _batch_bounds(n: int, batch_size: int, drop_last: bool = False) -> list[tuple[int, int]]:
    """(start, stop) of each batch of an epoch over n items. The last, partial batch is kept (the reference code's
    DataLoader default) unless `drop_last`, or unless it is the only batch; a single leftover item joins the batch
    before it, since InfoNCE needs two."""
    if n <= batch_size:
        return [(0, n)]
    stops = list(range(batch_size, n + 1, batch_size))
    tail = n - stops[-1]
    if tail and not drop_last:
        if tail == 1:
            stops[-1] = n
        else:
            stops.append(n)
    return list(zip([0] + stops[:-1], stops))


def _batches(n: int, batch_size: int, generator: torch.Generator | None, drop_last: bool = False):
    """Index batches of one epoch; shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return [order[a:b] for a, b in _batch_bounds(n, batch_size, drop_last)]


def training_steps(n_train: int, batch_size: int, epochs: int, drop_last: bool = False) -> int:
    """Optimiser steps a training of `epochs` over `n_train` tuples takes."""
    return len(_batch_bounds(n_train, min(batch_size, n_train), drop_last)) * epochs


# Adam moves each entry of W by about lr per step, and the entries of a d×D matrix with orthonormal rows are about
# 1/√D in size: a training whose steps × lr cannot reach that size leaves W near its random start.
MIN_REACH = 1.0


def too_few_steps_warning(n_train: int, config: TrainConfig, embed_dim: int) -> str | None:
    """One line saying why a training is too short to move W much (None when it is long enough)."""
    batch_size = min(config.batch_size, n_train)
    steps = training_steps(n_train, batch_size, config.epochs, config.drop_last)
    typical = 1 / math.sqrt(embed_dim)
    reach = steps * config.lr
    if reach >= MIN_REACH * typical:
        return None
    per_epoch = steps // config.epochs
    needed = math.ceil(MIN_REACH * typical / config.lr)
    return (f"warning: only {steps} optimisation steps ({per_epoch} per epoch x {config.epochs} epochs: "
            f"{n_train} training tuples, batch {batch_size}); at lr {config.lr:g} Adam moves each entry of W by "
            f"at most about {reach:.2g}, {100 * reach / typical:.2g} % of its typical size {typical:.2g}, so the "
            f"projection stays close to its random start and the loss barely moves. Aim for {needed} steps or "
            "more: more images (--images), a smaller --batch-size, more --epochs or a larger --lr.")


@torch.no_grad()
def evaluate_objective(W: torch.Tensor, f: SpellingFeatures, weights: Mapping[str, float], gamma: float,
                       batch_size: int = 128, mask_duplicates: bool = False) -> float:
    """The training objective averaged over `f` in fixed batches (validation loss)."""
    bs = min(batch_size, len(f))
    values, counts = [], []
    for idx in _batches(len(f), bs, None):
        if len(idx) >= 2:
            values.append(float(spelling_objective(W, _batch(f, idx, W.device), weights, gamma, mask_duplicates)[0]))
            counts.append(len(idx))
    return sum(v * c for v, c in zip(values, counts)) / sum(counts) if values else float("nan")


def init_projection(dim: int, embed_dim: int, seed: int = 0) -> torch.Tensor:
    """A (d, D) matrix with orthonormal rows (docs/method.md §2: initialised orthogonal)."""
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
        batches = _batches(len(train), batch_size, gen, config.drop_last)
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
    from ..projections import projection_path, save_projection

    target = Path(path) if path else projection_path(result.space, clip_identity, cache)
    if target.exists() and not overwrite:
        raise bad_arg("--out-file", "the projection file exists", str(target), "Pass --overwrite to replace it.")
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
