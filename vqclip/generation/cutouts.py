"""Random cutouts of the decoded image, resampled to CLIP's input size and augmented with kornia."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import bad_arg, choices_hint


def _augmentations():
    import kornia.augmentation as K

    # The VQGAN+CLIP community defaults. No flips: a mirrored word is a different word to a reading CLIP.
    return {
        "affine": lambda: K.RandomAffine(degrees=15, translate=(0.1, 0.1), p=0.7, padding_mode="border"),
        "perspective": lambda: K.RandomPerspective(0.7, p=0.7),
        "jitter": lambda: K.ColorJitter(hue=0.1, saturation=0.1, p=0.7),
        "erasing": lambda: K.RandomErasing(scale=(0.1, 0.4), ratio=(0.3, 1 / 0.3), same_on_batch=False, p=0.7),
        "sharpness": lambda: K.RandomSharpness(0.3, p=0.4),
        "grayscale": lambda: K.RandomGrayscale(p=0.1),
        "flip": lambda: K.RandomHorizontalFlip(p=0.5),
    }


AUGMENTATIONS = ("affine", "perspective", "jitter", "erasing", "sharpness", "grayscale", "flip")
DEFAULT_AUGMENTATIONS = ("affine", "perspective", "jitter", "erasing")


def parse_augmentations(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """`"affine,jitter"` / `"none"` / None (defaults) -> tuple of names."""
    if spec is None:
        return DEFAULT_AUGMENTATIONS
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if names in (["none"], []):
        return ()
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise bad_arg("--augment", "unknown augmentation", ",".join(unknown), choices_hint(AUGMENTATIONS) +
                      " Or 'none'.")
    return tuple(names)


class MakeCutouts(nn.Module):
    """`cutn` random square crops (side ~ U^cut_pow between min and max), resized, augmented, plus noise."""

    def __init__(self, cut_size: tuple[int, int], cutn: int, cut_pow: float = 1.0,
                 augmentations: Sequence[str] = DEFAULT_AUGMENTATIONS, noise: float = 0.1):
        super().__init__()
        self.cut_size = tuple(cut_size)
        self.cutn = cutn
        self.cut_pow = cut_pow
        self.noise = noise
        table = _augmentations()
        self.augs = nn.Sequential(*[table[name]() for name in augmentations])

    def forward(self, image: torch.Tensor, generator: torch.Generator,
                device_generator: torch.Generator | None = None) -> torch.Tensor:
        """(1, 3, H, W) -> (cutn, 3, *cut_size). Randomness comes from the CPU `generator` (and, for the noise
        on a GPU, from `device_generator`, seeded from it), so a seed fixes every cutout."""
        _, _, h, w = image.shape
        max_size = min(h, w)
        min_size = min(h, w, min(self.cut_size))
        r = torch.rand(self.cutn, 3, generator=generator)  # size, x, y for each cutout
        cutouts = []
        for size_u, x_u, y_u in r.tolist():
            size = int(size_u ** self.cut_pow * (max_size - min_size) + min_size)
            ox = int(x_u * (w - size + 1))
            oy = int(y_u * (h - size + 1))
            crop = image[:, :, oy:oy + size, ox:ox + size]
            cutouts.append(F.interpolate(crop, size=self.cut_size, mode="bilinear", align_corners=False,
                                         antialias=size > min(self.cut_size)))
        batch = torch.cat(cutouts)  # (cutn, 3, *cut_size)
        if len(self.augs):
            # kornia draws from torch's global RNG: fork it and seed it from our generator.
            devices = [image.device] if image.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
                batch = self.augs(batch)
        if self.noise > 0:
            facs = torch.rand(self.cutn, 1, 1, 1, generator=generator).mul(self.noise).to(batch.device)
            if device_generator is not None:
                noise = torch.randn(batch.shape, generator=device_generator, device=batch.device)
            else:
                noise = torch.randn(batch.shape, generator=generator).to(batch.device)
            batch = batch + facs * noise
        return batch
