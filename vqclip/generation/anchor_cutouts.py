"""The cutouts of the two anchor recipes, each as its anchor computes them, with vqclip's calling convention.

- `CrowsonCutouts` (recipe `paper`): Katherine Crowson's VQGAN+CLIP notebook (z+quantize / codebook sampling):
  `cutn` random squares per image, side `U^cut_pow` between min and max size, resampled with a Lanczos-2
  prefilter and bicubic interpolation, clamped into [0, 1] with the gradient let through where it points back into
  range. No augmentations and no noise.
- `PooledCutouts` (recipe `nerdyrodent`): nerdyrodent/VQGAN-CLIP generate.py's default cut method `latest`: every
  cutout is the whole image, average- and max-pooled to CLIP's input size and averaged, then kornia augmentations
  (the installed kornia's classes, with generate.py's parameters) in the given order, then noise of a random
  strength up to `noise`. No clamp. generate.py pins kornia 0.5.4, whose `ColorJitter` (additive brightness,
  multiplicative contrast, HSV saturation and hue, in a random order) is `ColorJiggle` in kornia >= 0.6; kornia's
  `ColorJitter` now follows torchvision's formulas, so the recipe builds `ColorJiggle`.

Both follow `MakeCutouts`' convention: `maker(images (G, 3, H, W), generators: G torch.Generators)` gives
(G * cutn, 3, ch, cw), job g's cutouts in rows g*cutn .. (g+1)*cutn - 1, each job's randomness from its own
generator only. Both take CPU generators (`generator_device = "cpu"`): the anchors draw their random numbers on
the host (the notebook's scalar draws, kornia's parameter samplers), and a CPU generator seeded like the anchor's
global RNG gives the anchor's very numbers.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import bad_arg, choices_hint
from .ops import clamp_with_grad


def _pair(cut_size) -> tuple[int, int]:
    if isinstance(cut_size, int):
        return int(cut_size), int(cut_size)
    ch, cw = cut_size
    return int(ch), int(cw)


def _check_generators(images: torch.Tensor, generators: Sequence[torch.Generator]) -> None:
    if len(generators) != images.shape[0]:
        raise ValueError(f"{len(generators)} generators for {images.shape[0]} images")


# ---------------------------------------------------------------------------------------------------------------
# Crowson's notebook


@functools.lru_cache(maxsize=256)
def _lanczos_taps(out_len: int, in_len: int) -> torch.Tensor:
    """The notebook's Lanczos-2 prefilter for shrinking `in_len` samples to `out_len`, as a float32 CPU tensor
    computed with the notebook's arithmetic (positions accumulated in Python floats and stored in float32, the
    window normalised to sum 1), so the taps are bit for bit the notebook's."""
    ratio = out_len / in_len
    n = math.ceil(2 / ratio + 1)
    pos = torch.empty([n])
    cur = 0.0
    for i in range(n):
        pos[i] = cur
        cur += ratio
    x = torch.cat([-pos[1:].flip([0]), pos])[1:-1]

    def sinc(t):
        return torch.where(t != 0, torch.sin(math.pi * t) / (math.pi * t), t.new_ones([]))

    window = torch.where(torch.logical_and(-2 < x, x < 2), sinc(x) * sinc(x / 2), x.new_zeros([]))
    return window / window.sum()


@functools.lru_cache(maxsize=256)
def _lanczos_taps_on(out_len: int, in_len: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """`_lanczos_taps` moved to the images' device and dtype once, not in every step (a host-to-device copy)."""
    return _lanczos_taps(out_len, in_len).to(device, dtype)


def _resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The notebook's `resample` of (n, C, h, w) to `size`: along each axis that shrinks, a Lanczos-2 prefilter with
    reflect padding (one convolution over all n·C planes), then bicubic interpolation with align_corners=True."""
    n, c, h, w = x.shape
    dh, dw = size
    x = x.reshape(n * c, 1, h, w)
    if dh < h:
        taps = _lanczos_taps_on(dh, h, x.device, x.dtype)
        pad = (taps.shape[0] - 1) // 2
        x = F.conv2d(F.pad(x, (0, 0, pad, pad), "reflect"), taps[None, None, :, None])
    if dw < w:
        taps = _lanczos_taps_on(dw, w, x.device, x.dtype)
        pad = (taps.shape[0] - 1) // 2
        x = F.conv2d(F.pad(x, (pad, pad, 0, 0), "reflect"), taps[None, None, None, :])
    return F.interpolate(x.reshape(n, c, h, w), size, mode="bicubic", align_corners=True)


class CrowsonCutouts:
    """Crowson's notebook cutouts: `cutn` random squares per image, resampled to `cut_size` (H, W), clamped.

    Per cutout the job's generator gives, in the notebook's order, `rand() ** cut_pow` for the side (truncated to
    an int, in float32 as the notebook computes it), then the x offset, then the y offset: a CPU generator seeded
    with s gives the draws the notebook makes after `torch.manual_seed(s)` on one image. The crops are grouped by
    side, and each group is resampled in one call."""

    generator_device = "cpu"

    def __init__(self, cut_size, cutn: int, cut_pow: float = 1.0):
        self.cut_size = _pair(cut_size)  # (H, W)
        self.cutn = int(cutn)
        self.cut_pow = float(cut_pow)

    def __call__(self, images: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """(G, 3, H, W) -> (G * cutn, 3, ch, cw); job g's cutouts are rows g*cutn .. (g+1)*cutn - 1."""
        _check_generators(images, generators)
        _, _, side_y, side_x = images.shape
        ch, cw = self.cut_size
        max_size = min(side_x, side_y)
        # The notebook's CLIP input is square (cut_size × cut_size) and its smallest crop is min(W, H, cut_size);
        # vqclip's CLIP input may be (ch, cw) with ch != cw: the smallest crop is then min(W, H, ch, cw) and every
        # square crop is resampled to (ch, cw). For a square input this is exactly the notebook.
        min_size = min(side_x, side_y, ch, cw)
        by_size: dict[int, list[tuple[int, int, int, int]]] = {}  # side -> [(row, image, x, y)]
        row = 0
        for j, gen in enumerate(generators):
            for _ in range(self.cutn):
                size = int(torch.rand([], generator=gen) ** self.cut_pow * (max_size - min_size) + min_size)
                ox = int(torch.randint(0, side_x - size + 1, (), generator=gen))
                oy = int(torch.randint(0, side_y - size + 1, (), generator=gen))
                by_size.setdefault(size, []).append((row, j, ox, oy))
                row += 1
        pieces, order = [], []
        for size, crops in by_size.items():
            batch = torch.stack([images[j, :, oy:oy + size, ox:ox + size] for _, j, ox, oy in crops])
            pieces.append(_resample(batch, (ch, cw)))
            order.extend(r for r, _, _, _ in crops)
        out = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
        if order != list(range(len(order))):
            # rows of `out` are in size-group order; put each back at its draw's place
            where = torch.empty(len(order), dtype=torch.long)
            where[torch.tensor(order)] = torch.arange(len(order))
            out = out[where.to(out.device)]
        return clamp_with_grad(out, 0, 1)


# ---------------------------------------------------------------------------------------------------------------
# nerdyrodent/VQGAN-CLIP generate.py, cut method `latest`

# vqclip's augmentation names -> generate.py's codes (its --augments), and the kornia modules it builds for them.
NERDYRODENT_AUGMENTATIONS = {"affine": "Af", "perspective": "Pe", "jitter": "Ji", "erasing": "Er", "sharpness": "Sh"}


def _nerdyrodent_module(code: str):
    """The kornia module generate.py's `MakeCutouts` (cut method latest) builds for an --augments code."""
    import kornia.augmentation as K

    if code == "Ji":  # kornia 0.5.4's ColorJitter (nerdyrodent pins it), kept since kornia 0.6 as ColorJiggle
        return K.ColorJiggle(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1, p=0.7)
    if code == "Sh":
        return K.RandomSharpness(sharpness=0.3, p=0.5)
    if code == "Pe":
        return K.RandomPerspective(distortion_scale=0.7, p=0.7)
    if code == "Af":
        return K.RandomAffine(degrees=15, translate=0.1, shear=5, p=0.7, padding_mode="zeros", keepdim=True)
    if code == "Er":
        return K.RandomErasing(scale=(.1, .4), ratio=(.3, 1 / .3), same_on_batch=True, p=0.7)
    raise KeyError(code)


class PooledCutouts:
    """nerdyrodent's `latest` cutouts: each of a job's `cutn` cutouts is its whole image pooled to `cut_size`
    ((adaptive average + adaptive max) / 2), the job's cutouts go through the kornia augmentations in the order of
    `augment` (vqclip names: affine, perspective, jitter, erasing, sharpness) in one call, then noise of strength
    U(0, noise) per cutout.

    Randomness: per job, one seed drawn from the job's CPU generator; that job's augmentations and noise run under
    `torch.manual_seed(seed)` inside `torch.random.fork_rng`, so they are generate.py's forward under that seed and
    the caller's global RNG state is left as it was. One kornia call per job: RandomErasing's same_on_batch erases
    the same box in all cutouts of a job, as generate.py does, but not across the jobs of a group."""

    generator_device = "cpu"

    def __init__(self, cut_size, cutn: int, augment: Sequence[str] = ("affine", "perspective", "jitter", "erasing"),
                 noise: float = 0.1):
        self.cut_size = _pair(cut_size)  # (H, W)
        self.cutn = int(cutn)
        self.noise = float(noise)
        self.augmentations = tuple(augment)
        missing = [name for name in self.augmentations if name not in NERDYRODENT_AUGMENTATIONS]
        if missing:
            raise bad_arg("--augment", "the nerdyrodent recipe has no such augmentation", ",".join(missing),
                          choices_hint(NERDYRODENT_AUGMENTATIONS) + " Or 'none'.")
        self.augs = torch.nn.Sequential(*(_nerdyrodent_module(NERDYRODENT_AUGMENTATIONS[name])
                                          for name in self.augmentations))

    def __call__(self, images: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """(G, 3, H, W) -> (G * cutn, 3, ch, cw); job g's cutouts are rows g*cutn .. (g+1)*cutn - 1."""
        _check_generators(images, generators)
        size = self.cut_size
        pooled = (F.adaptive_avg_pool2d(images, size) + F.adaptive_max_pool2d(images, size)) / 2  # (G, 3, ch, cw)
        devices = [images.device.index if images.device.index is not None else torch.cuda.current_device()] \
            if images.device.type == "cuda" else []
        out = []
        for j, gen in enumerate(generators):
            seed = int(torch.randint(2**62, (1,), generator=gen))
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                batch = self.augs(pooled[j:j + 1].repeat(self.cutn, 1, 1, 1))
                if self.noise:
                    facs = batch.new_empty([self.cutn, 1, 1, 1]).uniform_(0, self.noise)
                    batch = batch + facs * torch.randn_like(batch)
            out.append(batch)
        return torch.cat(out) if len(out) > 1 else out[0]
