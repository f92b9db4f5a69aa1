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

import hashlib
import io
import json
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch import nn
from torch.nn import functional as F

from ..errors import VqclipError, bad_arg, quote_error
from ..spelling.render import item_rng, render_word
from .world import COLORS, SHAPES, World, background, draw_object, shape_mask, to_tensor, web_text_style, word_image, \
    write_on

NONE = "none"  # the object classifier's label for pictures without an object
DETECTOR_FORMAT = "vqclip-world-detector"
FORMAT_VERSION = "1"
TEXT_FILE, OBJECT_FILE, RECORD_FILE = "text_detector.safetensors", "object_classifier.safetensors", "detector.json"
MEAN, STD = 0.5, 0.25  # inputs are (x / 255 - MEAN) / STD
# Kinds of training pictures and their shares. "clutter" is the hard negative: letter-free mess labelled no text.
KINDS = {"object": 0.18, "word": 0.18, "labelled": 0.18, "background": 0.06, "clutter": 0.18, "tiled_words": 0.11,
         "tiled_objects": 0.11}


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


# ---------------------------------------------------------------------------------------------- pictures
def _small_word(world: World, word: str, rng: random.Random) -> Image.Image:
    """A word on its own light patch, about a third of the image high: a tile of a tiled generation."""
    size = world.image_size
    w, h = rng.randint(int(size * 0.6), size), rng.randint(int(size * 0.3), int(size * 0.45))
    style = replace(web_text_style(world), size_range=(0.5, 0.7), jitter=0.04)
    return render_word(word, (w, h), style, rng)


def tiled_words(world: World, word: str, rng: random.Random) -> Image.Image:
    """2-3 copies of one word at different sizes and places, the first whole, others maybe cut by the border."""
    size = world.image_size
    img = background(size, rng)
    for k in range(rng.randint(2, 3)):
        tile = _small_word(world, word, rng)
        lo, hi = (0, max(0, size - tile.width)) if k == 0 else (-tile.width // 3, size - tile.width // 2)
        x = rng.randint(lo, hi)
        y = rng.randint(0, max(0, size - tile.height))
        img.paste(tile, (x, y))
    return img


def tiled_objects(world: World, cls: str, rng: random.Random) -> Image.Image:
    """2-3 smaller copies of one object on one background, some cut by the border."""
    size = world.image_size
    color = COLORS[rng.choice(tuple(COLORS))]
    img = background(size, rng, avoid=color)
    for _ in range(rng.randint(2, 3)):
        r = rng.uniform(0.12, 0.22) * size
        cx, cy = rng.uniform(0.1, 0.9) * size, rng.uniform(0.1, 0.9) * size
        angle = rng.uniform(-SHAPES[cls][1], SHAPES[cls][1])
        img.paste(Image.new("RGB", (size, size), color), (0, 0), shape_mask(cls, size, cx, cy, r, angle))
    return img


def clutter(world: World, rng: random.Random) -> Image.Image:
    """Letter-free mess: noise at some scale, scribbles, smeared shapes or a zoomed fragment of an object."""
    size = world.image_size
    kind = rng.choice(("noise", "scribble", "smear", "fragment", "blobs"))
    nrng = np.random.default_rng(rng.getrandbits(32))
    if kind == "noise":
        cells = rng.choice((4, 8, 16, 32, 64))
        arr = nrng.integers(0, 256, (cells, cells, 3 if rng.random() < 0.6 else 1), dtype=np.uint8)
        arr = np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr
        resample = rng.choice((Image.Resampling.NEAREST, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC))
        return Image.fromarray(arr).resize((size, size), resample)
    if kind == "scribble":  # strokes as thick as letters: the nearest thing to text that is not text
        img = background(size, rng)
        d = ImageDraw.Draw(img)
        for _ in range(rng.randint(3, 12)):
            ink = tuple(rng.randint(0, 255) for _ in range(3))
            pts = [(rng.uniform(0, size), rng.uniform(0, size))]
            for _ in range(rng.randint(1, 4)):
                step = rng.uniform(3, 14)
                a = rng.uniform(0, 2 * math.pi)
                pts.append((pts[-1][0] + step * math.cos(a), pts[-1][1] + step * math.sin(a)))
            d.line(pts, fill=ink, width=rng.randint(1, 3))
        return img
    if kind == "smear":
        img = background(size, rng)
        for _ in range(rng.randint(1, 4)):
            cls = rng.choice(world.classes)
            mask = shape_mask(cls, size, rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0.1, 0.3) * size,
                              rng.uniform(0, 360)).filter(ImageFilter.GaussianBlur(rng.uniform(2, 5)))
            img.paste(Image.new("RGB", (size, size), tuple(rng.randint(0, 255) for _ in range(3))), (0, 0), mask)
        return img
    if kind == "fragment":  # a corner of an object, zoomed until its shape no longer tells its class
        obj, meta = draw_object(world, rng.choice(world.classes), rng)
        z = rng.uniform(3.0, 5.0)
        w = size / z
        cx, cy = meta["center"]
        a = rng.uniform(0, 2 * math.pi)
        x0 = min(max(0.0, cx + meta["radius"] * math.cos(a) - w / 2), size - w)
        y0 = min(max(0.0, cy + meta["radius"] * math.sin(a) - w / 2), size - w)
        return obj.crop((x0, y0, x0 + w, y0 + w)).resize((size, size), Image.Resampling.BILINEAR)
    img = background(size, rng)
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(4, 20)):
        r = rng.uniform(1, 6)
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        ink = tuple(rng.randint(0, 255) for _ in range(3))
        d.ellipse((x - r, y - r * rng.uniform(0.5, 1.5), x + r, y + r), fill=ink)
    return img


def degrade(image: Image.Image, rng: random.Random, world: World | None = None) -> Image.Image:
    """VQGAN+CLIP-like damage that keeps words legible: crop/rescale, colour jitter, blend with mess, blur, blocks,
    noise and JPEG artefacts, each with some probability."""
    size = image.width
    img = image.convert("RGB")
    if rng.random() < 0.5:  # random crop (zoom in a little) or zoom out onto a border
        s = rng.uniform(0.78, 1.0)
        w = s * size
        x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - w)
        img = img.crop((x0, y0, x0 + w, y0 + w)).resize((size, size), Image.Resampling.BILINEAR)
    elif rng.random() < 0.3:
        s = rng.uniform(0.8, 0.95)
        small = img.resize((round(size * s), round(size * s)), Image.Resampling.BILINEAR)
        img = img.filter(ImageFilter.GaussianBlur(3))
        img.paste(small, (rng.randint(0, size - small.width), rng.randint(0, size - small.height)))
    arr = np.asarray(img, dtype=np.float32)
    nrng = np.random.default_rng(rng.getrandbits(32))
    if rng.random() < 0.6:  # brightness, contrast, per-channel gains, saturation
        gray = arr.mean(axis=2, keepdims=True)
        arr = gray + (arr - gray) * rng.uniform(0.3, 1.5)
        arr = (arr - 128) * rng.uniform(0.6, 1.3) + 128 + rng.uniform(-30, 30)
        arr = arr * np.array([rng.uniform(0.8, 1.2) for _ in range(3)], np.float32)
    if rng.random() < 0.25 and world is not None:  # a faint letter-free picture over it
        other = np.asarray(clutter(world, rng) if rng.random() < 0.5 else background(size, rng), np.float32)
        alpha = rng.uniform(0.1, 0.3)
        arr = (1 - alpha) * arr + alpha * other
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.35:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    if rng.random() < 0.2:  # blocky, like a coarse VQ grid upsampled
        k = rng.choice((2, 2, 3))
        img = img.resize((size // k, size // k), Image.Resampling.BILINEAR).resize(
            (size, size), rng.choice((Image.Resampling.NEAREST, Image.Resampling.BILINEAR)))
    arr = np.asarray(img, dtype=np.float32)
    if rng.random() < 0.4:
        arr = arr + nrng.normal(0, rng.uniform(2, 14), arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.4:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=rng.randint(20, 70))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img


@dataclass(frozen=True)
class Example:
    """One labelled picture: text present (0/1), word id (-1 without text), class id (len(classes) = none)."""

    image: Image.Image
    has_text: int
    word: int
    obj: int
    kind: str


def example(world: World, split: str, index: int, seed: int = 0, degrade_share: float = 0.0) -> Example:
    """Picture `index` of a detector split: its kind, content and damage all drawn from `item_rng`."""
    rng = item_rng(world.seed, f"detector-{split}", seed, index)
    kinds = list(KINDS)
    kind = rng.choices(kinds, weights=[KINDS[k] for k in kinds])[0]
    none = len(world.classes)
    word_id, cls_id, has_text = -1, none, 0
    if kind in ("object", "labelled", "tiled_objects"):
        cls_id = rng.randrange(len(world.classes))
    if kind in ("word", "labelled", "tiled_words"):
        word_id, has_text = rng.randrange(len(world.words)), 1
    cls, word = (world.classes[cls_id] if cls_id < none else None), (world.words[word_id] if has_text else None)
    if kind == "object":
        img, _ = draw_object(world, cls, rng)
    elif kind == "labelled":
        img, meta = draw_object(world, cls, rng)
        img = write_on(world, img, word, rng, meta)
    elif kind == "word":
        img = word_image(world, word, rng)
    elif kind == "tiled_words":
        img = tiled_words(world, word, rng)
    elif kind == "tiled_objects":
        img = tiled_objects(world, cls, rng)
    elif kind == "background":
        img = background(world.image_size, rng)
    else:
        img = clutter(world, rng)
    if rng.random() < degrade_share:
        img = degrade(img, rng, world)
    return Example(img, has_text, word_id, cls_id, kind)


@dataclass
class DetectorData:
    """Pictures and labels as tensors: images (N, 3, H, W) uint8, has_text (N,), word (N,), obj (N,)."""

    images: torch.Tensor
    has_text: torch.Tensor
    word: torch.Tensor
    obj: torch.Tensor
    kinds: list[str]


def detector_data(world: World, n: int, split: str, seed: int = 0, degrade_share: float = 0.0,
                  progress: Callable[[int], None] | None = None) -> DetectorData:
    """n pictures of a detector split."""
    items = []
    for i in range(n):
        items.append(example(world, split, i, seed, degrade_share))
        if progress:
            progress(1)
    return DetectorData(to_tensor([e.image for e in items]), torch.tensor([e.has_text for e in items]),
                        torch.tensor([e.word for e in items]), torch.tensor([e.obj for e in items]),
                        [e.kind for e in items])


# ---------------------------------------------------------------------------------------------- models
class SmallConvNet(nn.Module):
    """Space-to-depth (2x2 pixels -> 12 channels, lossless and 4x cheaper than a full-resolution first layer), three
    conv-BN-ReLU-maxpool blocks (width w, 2w, 4w), average and max pooled, then one linear layer per head: tolerant
    to translation, which words that wander around a tiled picture need."""

    def __init__(self, width: int, heads: dict[str, int], pool: int = 1):
        super().__init__()
        self.pool = pool  # the object classifier looks at half resolution: shapes are large, words need pixels
        chans = [12, width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.head_names = list(heads)
        self.heads = nn.ModuleDict({k: nn.Linear(2 * chans[-1], n) for k, n in heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        f = self.features(F.pixel_unshuffle(x, 2))  # (N, 4w, H/(16 pool), W/(16 pool))
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)  # (N, 8w)
        return {k: self.heads[k](pooled) for k in self.head_names}


def normalise(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> float inputs."""
    return (images.float() / 255 - MEAN) / STD


def augment(images: torch.Tensor, gen: torch.Generator, max_shift: int = 6) -> torch.Tensor:
    """Cheap batch augmentation that multiplies the drawn pictures: one shift (edge-padded) and one colour-channel
    order per batch; neither changes what is written or drawn."""
    dx, dy = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=gen))
    perm = torch.randperm(3, generator=gen)
    x = images[:, perm]
    if dx or dy:
        p = max_shift
        x = F.pad(x.float(), (p, p, p, p), mode="replicate")
        h, w = images.shape[2:]
        x = x[:, :, p + dy:p + dy + h, p + dx:p + dx + w].round().to(torch.uint8)
    return x


def text_loss(out: dict, has_text: torch.Tensor, word: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on text presence plus cross-entropy on the word, over pictures with text only."""
    loss = F.binary_cross_entropy_with_logits(out["text"][:, 0], has_text.float())
    mask = has_text.bool()
    if mask.any():
        loss = loss + F.cross_entropy(out["word"][mask], word[mask])
    return loss


def object_loss(out: dict, obj: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out["object"], obj)


LossFn = Callable[[dict, DetectorData, torch.Tensor], torch.Tensor]


def train_model(model: nn.Module, data: DetectorData, loss_fn: LossFn, config: DetectorConfig, steps: int,
                seed_offset: int, on_step: Callable[[dict], None] | None = None) -> list[dict]:
    """AdamW with a cosine schedule on random batches drawn by a seeded generator (same seed => same weights)."""
    gen = torch.Generator().manual_seed(config.seed * 1000 + seed_offset)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps, pct_start=0.1)
    model.train()
    history, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(data.images), (config.batch_size,), generator=gen)
        loss = loss_fn(model(normalise(augment(data.images[idx], gen))), data, idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        rec = {"step": step, "loss": float(loss.detach()), "seconds": time.perf_counter() - start}
        history.append(rec)
        if on_step:
            on_step(rec)
    model.eval()
    return history


def _new_text_model(world: World, width: int) -> SmallConvNet:
    return SmallConvNet(width, {"text": 1, "word": len(world.words)})


def _new_object_model(world: World, width: int) -> SmallConvNet:
    return SmallConvNet(width, {"object": len(world.classes) + 1}, pool=1)


def _init(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(seed)  # the only global draw: module initialisers take no generator
    return make()


@torch.no_grad()
def _outputs(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    model.eval()
    outs = [model(normalise(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return {k: torch.cat([o[k] for o in outs]) for k in outs[0]} if outs else {}


def accuracies(text_model: nn.Module, object_model: nn.Module, data: DetectorData) -> dict:
    """Text-present accuracy (all pictures), word accuracy (pictures with text), object accuracy (all, "none"
    included) and on pictures with an object."""
    t = _outputs(text_model, data.images)
    o = _outputs(object_model, data.images)
    has = data.has_text.bool()
    pred_text = t["text"][:, 0] > 0
    pred_obj = o["object"].argmax(1)
    none = o["object"].shape[1] - 1
    with_obj = data.obj != none
    clutter_mask = torch.tensor([k == "clutter" for k in data.kinds])
    return {"n": len(data.images),
            "text_present": round(float((pred_text == has).float().mean()), 4),
            "text_false_positive_on_clutter": round(float(pred_text[clutter_mask].float().mean()), 4)
            if clutter_mask.any() else None,
            "word": round(float((t["word"].argmax(1)[has] == data.word[has]).float().mean()), 4) if has.any() else None,
            "object": round(float((pred_obj == data.obj).float().mean()), 4),
            "object_drawn": round(float((pred_obj[with_obj] == data.obj[with_obj]).float().mean()), 4)
            if with_obj.any() else None}


# ---------------------------------------------------------------------------------------------- files
def _metadata(model: SmallConvNet, world: World, kind: str, width: int, extra: dict | None = None) -> dict[str, str]:
    config = {"kind": kind, "architecture": "SmallConvNet", "width": width, "pool": model.pool,
              "heads": {k: model.heads[k].out_features for k in model.head_names}, "image_size": world.image_size,
              "classes": list(world.classes), "words": list(world.words), "none": NONE,
              "normalisation": {"scale": 1 / 255, "mean": MEAN, "std": STD}}
    return {"format": DETECTOR_FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(config),
            **{k: json.dumps(v) for k, v in (extra or {}).items()}}


def save_model(model: SmallConvNet, path: str | Path, world: World, kind: str, width: int,
               extra: dict | None = None) -> Path:
    """One self-describing .safetensors file: the weights plus, in the metadata, everything that rebuilds them."""
    from safetensors.torch import save_file

    from ..io import atomic_path

    path = Path(path).expanduser()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=_metadata(model, world, kind, width, extra))
    return path


FIX = "Train one with vqclip.testbed.detector.train_detector_stage (it writes text_detector.safetensors and " \
      "object_classifier.safetensors), or point at such a file."


def load_model(path: str | Path, kind: str, arg: str = "detector file") -> tuple[SmallConvNet, dict]:
    """Rebuild a saved judge from its file alone; any damage or mismatch is one VqclipError naming the file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise bad_arg(arg, f"no {kind} file there", str(path), FIX)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != DETECTOR_FORMAT:
            raise ValueError(f"not a {DETECTOR_FORMAT} file (format={meta.get('format')!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format version {meta.get('format_version')!r}, this vqclip reads {FORMAT_VERSION}")
        from ..untrusted import parse_json

        config = parse_json(meta["config"], path)
        if config.get("kind") != kind:
            raise ValueError(f"it holds a {config.get('kind')!r}, not a {kind!r}")
        model = SmallConvNet(int(config["width"]), {k: int(v) for k, v in config["heads"].items()},
                             int(config.get("pool", 1)))
        model.load_state_dict(load_file(str(path)))
        model.eval()
    except VqclipError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors, json and torch raise many types for a damaged file
        raise bad_arg(arg, f"cannot load this {kind} file ({quote_error(e)})", str(path), FIX) from None
    return model, config


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _as_batch(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """(H, W, 3) uint8 arrays of any size -> (N, 3, size, size) uint8, resized with antialiasing."""
    out = []
    for im in images:
        pil = Image.fromarray(np.ascontiguousarray(im[..., :3]).astype(np.uint8)).convert("RGB")
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.Resampling.BILINEAR)
        out.append(pil)
    return to_tensor(out)


class WorldTextReader:
    """The text detector as an `OcrReader`: one whole-image detection reading the likeliest word when the text head
    says text (p >= 0.5), else none.

    The confidence is p_text x p_word: the model's probability that the picture shows text *and* that it says this
    word, so the score's confidence thresholds ask for a confident reading, as EasyOCR's recognition confidence does;
    the text head alone decides whether there is a detection at all (threshold 0).
    """

    def __init__(self, path: str | Path, arg: str = "detector file", threshold: float = 0.5):
        self.path = Path(path).expanduser()
        self.model, self.config = load_model(self.path, "text_detector", arg)
        self.words = list(self.config["words"])
        self.size = int(self.config["image_size"])
        self.threshold = threshold
        self.key = f"world-text-{_file_hash(self.path)[:12]}"

    @torch.no_grad()
    def probabilities(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """p_text (N,) and the word distribution (N, V)."""
        out = _outputs(self.model, _as_batch(images, self.size))
        return torch.sigmoid(out["text"][:, 0]), torch.softmax(out["word"], dim=1)

    def read(self, images: Sequence[np.ndarray]) -> list[list]:
        from ..evaluate.ocr import Detection

        if not len(images):
            return []
        p_text, p_word = self.probabilities(images)
        best_p, best = p_word.max(dim=1)
        out = []
        for im, pt, pw, w in zip(images, p_text.tolist(), best_p.tolist(), best.tolist()):
            h, wd = im.shape[:2]
            box = ((0.0, 0.0), (float(wd), 0.0), (float(wd), float(h)), (0.0, float(h)))
            out.append([Detection(box, self.words[w], float(pt * pw))] if pt >= self.threshold else [])
        return out


class ObjectClassifier:
    """Which of the world's classes is drawn, or "none"."""

    def __init__(self, model: SmallConvNet, config: dict):
        self.model, self.config = model, config
        self.labels = [*config["classes"], config.get("none", NONE)]
        self.size = int(config["image_size"])

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray]) -> tuple[list[str], np.ndarray]:
        """(H, W, 3) uint8 arrays -> predicted labels and (N, classes + 1) probabilities."""
        if not len(images):
            return [], np.zeros((0, len(self.labels)), np.float32)
        probs = torch.softmax(_outputs(self.model, _as_batch(images, self.size))["object"], dim=1)
        return [self.labels[i] for i in probs.argmax(1).tolist()], probs.numpy()


def load_object_classifier(path: str | Path, arg: str = "object classifier file") -> ObjectClassifier:
    model, config = load_model(path, "object_classifier", arg)
    return ObjectClassifier(model, config)


# ---------------------------------------------------------------------------------------------- stage
def detector_recipe(world: World, config: DetectorConfig) -> dict:
    """Everything that decides the judges' weights (saved ones are reused only when this matches)."""
    return {"format_version": FORMAT_VERSION, "world": world.to_dict(), "config": config.to_dict(),
            "kinds": dict(KINDS)}


def train_detectors(world: World, config: DetectorConfig,
                    progress: bool = False) -> tuple[SmallConvNet, SmallConvNet, dict]:
    """Draw the training pictures once, train the text detector and the object classifier on them."""
    from .run import _bar

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
