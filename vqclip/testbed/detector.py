"""Independent judges for the testbed world: does an image show written text, which word, which object (issue 16).

Generated images must be measured with models that are not the CLIP that steered the generation. Two small CNNs
are trained here on the world's own pictures, drawn under split names of their own (`item_rng(seed,
"detector-train", ...)`) so that no item coincides with the CLIP's training pairs:

* the *text detector*: one head says whether legible text is present, the other which of `world.words` it is;
* the *object classifier*: which of `world.classes` is drawn, or "none" (a word alone, a background, clutter).

VQGAN+CLIP outputs are messy (blur, noise, blocks, tiled partial copies), so the training data includes degraded
pictures, several small copies of a word or an object, and letter-free mess (noise, scribbles, smeared shapes,
fragments of objects) labelled "no text": a detector that calls every high-frequency texture text would measure
nothing. `WorldTextReader` wraps the text detector in the `OcrReader` protocol so `vqclip score` can use it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import bad_arg
from .detector_files import FORMAT_VERSION, save_model
# the readers, where `vqclip score` and the tests take them (they live in detector_files)
from .detector_files import ObjectClassifier, WorldTextReader, load_object_classifier  # noqa: F401
from .detector_nets import SmallConvNet, accuracies, object_loss, text_loss, train_model
from .detector_pictures import KINDS, detector_data
from .world import World

TEXT_FILE, OBJECT_FILE, RECORD_FILE = "text_detector.safetensors", "object_classifier.safetensors", "detector.json"


@dataclass(frozen=True)
class DetectorConfig:
    """How the two judges are trained; `quick()` is the test suite's (about 25 s on one CPU thread), the defaults
    about 2.5 min (one thread, shared machine)."""

    seed: int = 0
    n_train: int = 4000  # training pictures, shared by both models
    # Optimiser steps of the text detector. Text presence is learned in ~100 steps; reading words sits on a plateau
    # near chance for ~400 steps (batch 32) before it takes off, so the quick config reads words hardly better
    # than chance and only the full one is a usable word reader.
    steps: int = 1500
    # Optimiser steps of the object classifier: with twelve classes and half the pictures labelled "none", it too
    # predicts "none" for a few hundred steps before it learns the shapes.
    object_steps: int = 1500
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    text_width: int = 16  # channels of the first conv layer (then x2, x4, x4)
    object_width: int = 16
    degrade: float = 0.5  # share of training pictures passed through `degrade`
    n_heldout: int = 400  # held-out pictures for the accuracy report (clean, and the same ones degraded)

    @classmethod
    def quick(cls, seed: int = 0, **overrides) -> "DetectorConfig":
        """The reduced configuration of the test suite."""
        return cls(**{**dict(seed=seed, n_train=800, steps=250, object_steps=250, n_heldout=200), **overrides})

    def __post_init__(self):
        for name in ("n_train", "steps", "object_steps", "batch_size", "text_width", "object_width", "n_heldout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad_arg(name, "must be a positive integer", value, "Use the defaults or DetectorConfig.quick().")
        for name in ("steps", "object_steps"):  # the one-cycle schedule's warm-up needs 10 % of them >= 2 steps
            if getattr(self, name) < 20:
                raise bad_arg(name, "must be at least 20 (the learning-rate warm-up is 10 % of the steps)",
                              getattr(self, name), "Use e.g. 250 (the quick config) or 1500.")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise bad_arg("lr", "must be a learning rate in (0, 1)", self.lr, "Try 3e-3.")
        if not 0 <= self.weight_decay < 1:
            raise bad_arg("weight_decay", "must be in [0, 1)", self.weight_decay, "Try 1e-4.")
        if not 0 <= self.degrade <= 1:
            raise bad_arg("degrade", "must be a share between 0 and 1", self.degrade, "Try 0.5.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise bad_arg("seed", "must be a non-negative integer", self.seed, "Try 0.")

    def to_dict(self) -> dict:
        return asdict(self)


def _new_text_model(world: World, width: int) -> SmallConvNet:
    return SmallConvNet(width, {"text": 1, "word": len(world.words)})


def _new_object_model(world: World, width: int) -> SmallConvNet:
    return SmallConvNet(width, {"object": len(world.classes) + 1}, pool=1)


def _init(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(seed)  # the only global draw: module initialisers take no generator
    return make()


def detector_recipe(world: World, config: DetectorConfig) -> dict:
    """Everything that decides the judges' weights (saved ones are reused only when this matches)."""
    return {"format_version": FORMAT_VERSION, "world": world.to_dict(), "config": config.to_dict(),
            "kinds": dict(KINDS)}


def train_detectors(world: World, config: DetectorConfig,
                    progress: bool = False) -> tuple[SmallConvNet, SmallConvNet, dict]:
    """Draw the training pictures once, train the text detector and the object classifier on them."""
    from .progress import bar as _bar

    start = time.perf_counter()
    with _bar(config.n_train, "detector: pictures", progress) as bar:
        data = detector_data(world, config.n_train, "train", config.seed, config.degrade, bar.update)
    seconds = {"pictures": round(time.perf_counter() - start, 1)}
    text_model = _init(config.seed, lambda: _new_text_model(world, config.text_width))
    object_model = _init(config.seed + 1, lambda: _new_object_model(world, config.object_width))
    jobs = (("text", text_model, lambda out, d, idx: text_loss(out, d.has_text[idx], d.word[idx]), config.steps, 1),
            ("object", object_model, lambda out, d, idx: object_loss(out, d.obj[idx]), config.object_steps, 2))
    losses = {}
    for name, model, loss_fn, steps, offset in jobs:
        with _bar(steps, f"detector: {name} model", progress) as bar:
            history = train_model(model, data, loss_fn, config, steps, offset, lambda rec: bar.update(1))
        seconds[name] = round(history[-1]["seconds"], 1)
        losses[name] = round(sum(r["loss"] for r in history[-20:]) / min(20, len(history)), 4)
    return text_model, object_model, {"seconds": seconds, "final_loss": losses,
                                      "pictures": {k: data.kinds.count(k) for k in sorted(set(data.kinds))}}


def heldout_accuracies(world: World, text_model: nn.Module, object_model: nn.Module, n: int) -> dict:
    """Accuracies on `n` held-out pictures (split "heldout", never trained on), clean and degraded."""
    clean = detector_data(world, n, "heldout", 0, 0.0)
    damaged = detector_data(world, n, "heldout", 0, 1.0)
    return {"clean": accuracies(text_model, object_model, clean),
            "degraded": accuracies(text_model, object_model, damaged)}


def train_detector_stage(world: World, config: DetectorConfig, out_dir: str | Path, progress: bool = True,
                         reuse: bool = False) -> dict:
    """Train both judges, save `out_dir/text_detector.safetensors`, `out_dir/object_classifier.safetensors` and
    `out_dir/detector.json` (recipe, held-out accuracies, seconds). With `reuse`, models whose recorded recipe
    matches are kept."""
    from ..io import write_json

    out = Path(out_dir).expanduser()
    record_path = out / RECORD_FILE
    recipe = detector_recipe(world, config)
    if reuse and record_path.is_file() and (out / TEXT_FILE).is_file() and (out / OBJECT_FILE).is_file():
        try:
            from ..untrusted import read_json

            record = read_json(record_path)
        except (OSError, ValueError):
            record = {}
        if isinstance(record, dict) and record.get("recipe") == recipe:
            return {**record, "reused": True}
    text_model, object_model, info = train_detectors(world, config, progress)
    start = time.perf_counter()
    acc = heldout_accuracies(world, text_model, object_model, config.n_heldout)
    info["seconds"]["heldout"] = round(time.perf_counter() - start, 1)
    extra = {"recipe": recipe, "heldout": acc}
    save_model(text_model, out / TEXT_FILE, world, "text_detector", config.text_width, extra)
    save_model(object_model, out / OBJECT_FILE, world, "object_classifier", config.object_width, extra)
    record = {"recipe": recipe, "files": {"text_detector": TEXT_FILE, "object_classifier": OBJECT_FILE},
              "heldout": acc, **info, "threads": torch.get_num_threads()}
    write_json(record_path, record)
    return {**record, "reused": False}
