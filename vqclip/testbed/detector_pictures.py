"""The pictures the testbed world's judges learn from: words and objects alone, labelled, tiled, and letter-free
clutter, each maybe damaged the way VQGAN+CLIP damages images (`degrade`), drawn per split and index from
`item_rng` so that no picture coincides with the CLIP's training pairs."""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from ..spelling.render import item_rng, render_word
from .world import COLORS, SHAPES, World, background, draw_object, shape_mask, to_tensor, web_text_style, word_image, \
    write_on

# Kinds of training pictures and their shares. "clutter" is the hard negative: letter-free mess labelled no text.
KINDS = {"object": 0.18, "word": 0.18, "labelled": 0.18, "background": 0.06, "clutter": 0.18, "tiled_words": 0.11,
         "tiled_objects": 0.11}


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
