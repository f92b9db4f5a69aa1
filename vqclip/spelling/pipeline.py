"""A projection for a loaded CLIP with the default recipe: what `--auto-train` runs and what the hint estimates.

Same data, features and settings as `vqclip train --space SPACE --clip ... --pretrained ...` without other flags
(ImageNetV2 matched-frequency, the paper's presets), so both share the feature cache and give the same file.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..downloads import IMAGENETV2_IMAGES
from .sources import DEFAULT_IMAGES

# Rendering x_t and x_it and decoding x_i run on DataLoader workers: about 60 tuples/s per worker, measured with
# 14 workers on a 16-core host (docs/spelling.md, "How long it takes"). CLIP's own speed is measured, not assumed.
RENDER_TUPLES_PER_WORKER_S = 60.0
IMAGENET_CLASSES = 1000


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_image_rate(clip, max_batch: int | None = None, min_seconds: float = 0.25) -> float:
    """Images per second `clip.encode_image` manages on its device.

    After a warm-up call the batch grows (4, 16, 64, ...) until one call takes `min_seconds`: cheap for a large
    model, and not dominated by per-call overhead for a small one.
    """
    max_batch = max_batch or (256 if clip.device.type == "cuda" else 64)
    h, w = clip.input_size[1], clip.input_size[0]
    clip.encode_image(torch.rand(2, 3, h, w, device=clip.device))
    batch = 4
    while True:
        x = torch.rand(batch, 3, h, w, device=clip.device)
        _sync(clip.device)
        start = time.perf_counter()
        clip.encode_image(x)
        _sync(clip.device)
        seconds = time.perf_counter() - start
        if seconds >= min_seconds or batch >= max_batch:
            return batch / max(seconds, 1e-9)
        batch = min(batch * 4, max_batch)


def measure_step_seconds(embed_dim: int, space: str, device: torch.device, batch: int = 128, repeats: int = 3) -> float:
    """Seconds of one training step (objective, backward, Adam) for this D and space's preset, measured."""
    from .losses import resolve_preset, spelling_objective
    from .train import init_projection

    preset = resolve_preset(space, None, None, None, embed_dim)
    W = torch.nn.Parameter(init_projection(preset["dim"], embed_dim).to(device))
    opt = torch.optim.Adam([W], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    feats = {k: torch.nn.functional.normalize(torch.randn(batch, embed_dim, generator=g), dim=-1).to(device)
             for k in ("x_i", "y_i", "x_t", "y_t", "x_it")}
    feats["class_ids"] = feats["word_ids"] = torch.arange(batch, device=device)

    def step():
        loss, _ = spelling_objective(W, feats, preset["weights"], preset["gamma"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({os.cpu_count() or 1} cores)" if device.type == "cpu" else str(device)


@dataclass(frozen=True)
class TrainingEstimate:
    """How long the default training of one projection takes here, from measured CLIP and step speeds."""

    seconds: float
    device: str
    images_per_s: float
    image_encodes: int
    steps: int

    def text(self) -> str:
        return (f"about {_duration(self.seconds)} to {_duration(2 * self.seconds)} on {self.device} "
                f"({self.image_encodes:,} CLIP image encodes at {self.images_per_s:,.0f}/s measured here, "
                f"{self.steps:,} training steps)")


def estimate_training(clip, space: str, images: int = IMAGENETV2_IMAGES, classes: int = IMAGENET_CLASSES,
                      class_renders: int = 4, epochs: int = 30, batch_size: int = 128, train_fraction: float = 0.8,
                      workers: int | None = None) -> TrainingEstimate:
    """Estimate the default run: x_i, x_t and x_it of every tuple plus the rendered class names through CLIP
    (measured rate), the rendering on `workers` CPU workers, and the training steps (measured)."""
    workers = default_workers() if workers is None else workers
    encodes = 3 * images + classes * class_renders
    rate = measure_image_rate(clip)
    encode_s = encodes / rate
    render_s = images / (RENDER_TUPLES_PER_WORKER_S * max(1, workers))
    extract_s = max(encode_s, render_s) if workers else encode_s + render_s
    from .train import training_steps

    steps = training_steps(max(2, math.floor(images * train_fraction)), batch_size, epochs)
    train_s = steps * measure_step_seconds(clip.embed_dim, space, clip.device, batch_size)
    return TrainingEstimate(extract_s + train_s, device_name(clip.device), rate, encodes, steps)


def train_default_projection(clip, space: str, cache: str | os.PathLike | None = None, images: str | None = None,
                             data_root: str | os.PathLike | None = None, progress: bool = True,
                             say: Callable[[str], None] | None = None) -> Path:
    """Train the `space` projection for `clip` with the default recipe and write it where generation looks.

    Holds the projection folder's lock, so parallel processes (torchrun ranks) train it once.
    """
    from ..cache import cache_dir
    from ..downloads import locked
    from ..projections import projection_path
    from .dataset import DataConfig, build_dataset
    from .features import extract_features, load_features
    from .sources import open_images
    from .render import TextStyle, resolve_fonts
    from .train import TrainConfig, too_few_steps_warning, train_projection, train_test_metrics, write_projection

    say = say or (lambda text: None)
    target = projection_path(space, clip.identity, cache)
    with locked(target.parent):
        if target.is_file():  # another process trained it while this one waited
            return target
        config = TrainConfig(space=space, device=str(clip.device)).check()
        data = DataConfig()
        style = TextStyle(fonts=resolve_fonts(None, None), seed=data.seed)
        source = open_images(images or DEFAULT_IMAGES, None, data_root or cache_dir(cache) / "datasets")
        dataset = build_dataset(source, (clip.input_size[1], clip.input_size[0]), style, data)
        folder = extract_features(clip, dataset, cache=cache, num_workers=default_workers(), progress=progress)
        features = load_features(folder, clip.identity)
        sizes = features.split_sizes()
        say(f"training the {space} projection on {sizes.get('train', len(features))} tuples")
        short = too_few_steps_warning(len(features.part("train")), config, features.embed_dim)
        if short:
            say(short)

        def on_epoch(r: dict) -> None:
            say(f"epoch {r['epoch']:3d}  train {r['train_loss']:.4f}"
                + (f"  val {r['val_loss']:.4f}" if "val_loss" in r else ""))

        result = train_projection(features.part("train"), features.part("val"), config, on_epoch)
        test = train_test_metrics(features, result.W, "test" if sizes.get("test", 0) >= 2 else "val", clip.device)
        recipe = {**features.metadata.get("recipe", {}), "features": str(folder),
                  "clip_precision": features.metadata.get("clip_precision")}
        return write_projection(result, clip.identity, target, recipe=recipe, split_sizes=sizes,
                                metrics={"test": test} if test else None, overwrite=False)
