"""Random cutouts of the decoded images, resampled to CLIP's input size and augmented: batched tensor operations.

Every cutout of every image in a group is made by the same few kernels, whatever `cutn` is: one grid sample (or,
when a crop can be larger than CLIP's input, one `roi_align` with adaptive area sampling, so a large crop is
averaged, not aliased) crops and resamples all of them, one resampling per geometric augmentation, one 3×3
colour matrix and one grey offset per cutout for the jitter, one mask for the erasing, one noise add.
The random parameters of a job's cutouts come from that job's generator on the device, in one draw per step, so a
seed fixes the cutouts and no random number crosses between host and device.

The augmentations follow the VQGAN+CLIP community defaults that vqclip used through kornia's augmentation modules
(RandomAffine(15°, translate 0.1, border), RandomPerspective(0.7), ColorJitter(brightness, contrast, saturation,
hue 0.1), RandomErasing(0.1–0.4, ratio 0.3–3.3), each with p = 0.7). The jitter is not kornia's code: brightness,
contrast and saturation are kornia ColorJitter's formulas (scale by the factor; blend with the cutout's mean grey;
blend with the pixel's grey, which is exactly a scaling of the YIQ chroma plane), folded into one 3×3 matrix and one
grey offset per cutout. The hue shift is a rotation about RGB's grey axis by the nominal angle, after which each
pixel's largest and smallest channel are set back to what they were (an affine map per pixel, which changes
neither its HSV hue nor its order of channels): that is what kornia's HSV hue shift keeps, so the result stays in
the gamut as kornia's does, and on photographs it changes colours as much as kornia's (docs/method.md §9). The
result is clamped into [0, 1], as kornia's ColorJitter clamps.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch

from ..errors import bad_arg, choices_hint

# name -> (probability, random numbers per cutout). No flip by default: a mirrored word is a different word to a
# reading CLIP.
_AUGS = {
    "affine": (0.7, 4),  # apply, angle, tx, ty
    "perspective": (0.7, 9),  # apply, 8 corner offsets
    "jitter": (0.7, 5),  # apply, brightness, contrast, saturation, hue
    "erasing": (0.7, 5),  # apply, area, log aspect ratio, x, y
    "sharpness": (0.4, 2),  # apply, factor
    "grayscale": (0.1, 1),  # apply
    "flip": (0.5, 1),  # apply
}
AUGMENTATIONS = tuple(_AUGS)
# RGB -> YIQ: saturation scales the (I, Q) chroma plane, luma Y is left alone (kornia's grey is this Y).
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.595716, -0.274453, -0.321263), (0.211456, -0.522591, 0.311135))
# An orthonormal basis of RGB whose first axis is grey: the hue turns the other two about it.
_GREY_BASIS = ((3 ** -0.5, 3 ** -0.5, 3 ** -0.5), (2 / 6 ** 0.5, -1 / 6 ** 0.5, -1 / 6 ** 0.5),
               (0.0, 2 ** -0.5, -(2 ** -0.5)))
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


@functools.lru_cache(maxsize=16)
def _constants(device: torch.device, dtype: torch.dtype, w: int, h: int) -> dict[str, torch.Tensor]:
    """The constant tensors of the augmentations, made once per device, dtype and cutout size: a tensor built
    from Python numbers is a host-to-device copy, which waits for the device on CUDA."""
    from kornia.geometry import create_meshgrid

    yiq = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
    return {
        "corners": torch.tensor([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=dtype).to(device),
        "inward": torch.tensor([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=dtype).to(device),
        "half": torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=dtype).to(device),
        "scale": torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)], dtype=dtype).to(device),
        "grid": create_meshgrid(h, w, normalized_coordinates=False, device=device, dtype=dtype),  # (1, h, w, 2)
        "to_yiq": yiq.to(device=device, dtype=dtype),
        "to_rgb": torch.linalg.inv(yiq).to(device=device, dtype=dtype),
        "to_grey": torch.tensor(_GREY_BASIS, dtype=dtype).to(device),
    }


def _affine_inverse(u: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """(n, 3, 3) output-to-input pixel maps of rotations by U(-15°, 15°) about the centre and shifts by
    U(-0.1, 0.1) of the size; the identity where the cutout is not drawn for it (u[:, 0] >= p)."""
    apply = (u[:, 0] < _AUGS["affine"][0]).to(u.dtype)
    angle = (u[:, 1] * 30 - 15) * (math.pi / 180) * apply
    tx = (u[:, 2] * 0.2 - 0.1) * w * apply
    ty = (u[:, 3] * 0.2 - 0.1) * h * apply
    cx, cy = (w - 1) / 2, (h - 1) / 2
    cos, sin = angle.cos(), angle.sin()
    # forward: y = R (x - c) + c + t; inverse: x = R^T (y - c - t) + c, written out to need no matrix inverse.
    m = torch.zeros(len(u), 3, 3, device=u.device, dtype=u.dtype)
    m[:, 0, 0], m[:, 0, 1] = cos, sin
    m[:, 1, 0], m[:, 1, 1] = -sin, cos
    m[:, 0, 2] = cx - cos * (cx + tx) - sin * (cy + ty)
    m[:, 1, 2] = cy + sin * (cx + tx) - cos * (cy + ty)
    m[:, 2, 2] = 1
    return m


def _perspective_inverse(u: torch.Tensor, w: int, h: int, distortion: float = 0.7) -> torch.Tensor:
    """(n, 3, 3) output-to-input pixel maps of homographies that move each corner inward by up to `distortion`
    × half the size (kornia's RandomPerspective); the inverse comes from swapping the corner sets."""
    from kornia.geometry.transform import get_perspective_transform

    const = _constants(u.device, u.dtype, w, h)
    apply = (u[:, :1] < _AUGS["perspective"][0]).to(u.dtype)
    start = const["corners"].expand(len(u), 4, 2)
    offsets = u[:, 1:9].view(-1, 4, 2) * (const["half"] * distortion) * const["inward"]
    end = start + offsets * apply.unsqueeze(-1)
    return get_perspective_transform(end, start)


def _warp(x: torch.Tensor, inverse: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Resample (n, C, h, w) images through (n, 3, 3) output-to-input pixel maps, bilinearly.

    kornia's warp_perspective inverts the matrix it is given, and a matrix inverse on a GPU waits for the device
    to report singular matrices: a host-device synchronisation in every step. The maps here are built inverted.
    """
    import torch.nn.functional as F
    from kornia.geometry.linalg import transform_points

    n, _, h, w = x.shape
    const = _constants(x.device, x.dtype, w, h)
    src = transform_points(inverse[:, None], const["grid"].expand(n, h, w, 2))  # pixel coordinates in the input
    return F.grid_sample(x, src * const["scale"] - 1, mode="bilinear", padding_mode=padding_mode,
                         align_corners=True)


def _jitter(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """kornia ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1)'s ranges, in a fixed order, in two
    batched matrix products and about ten elementwise kernels (against about a hundred for kornia's HSV round
    trip, which measured as costly as CLIP's forward pass here):

    - brightness × U(0.9, 1.1): the cutout is scaled;
    - contrast U(0.9, 1.1): the cutout is blended with its mean grey (luma averaged over its pixels), c·x + (1-c)·m;
    - saturation U(0.9, 1.1): blended with each pixel's grey, the same as scaling the YIQ chroma plane;
    - hue U(-0.1, 0.1) of a turn: a rotation by that angle about the grey axis, then each pixel mapped affinely
      (v ↦ lo + (v - lo')·(hi - lo)/(hi' - lo')) so that its largest and smallest channel are those it had before
      the rotation, as kornia's HSV hue shift keeps them; the map changes neither the pixel's HSV hue nor the order
      of its channels, so the shift is the rotation's, and no pixel leaves the gamut through it.

    The first three are one 3×3 matrix and one grey offset per cutout: y = b·c·M·x + (1 - c)·b·m. The rotation of
    y is the same product with the rotated matrix (a grey offset is on the axis). The result is clamped into
    [0, 1], as kornia's ColorJitter clamps."""
    n, _, h, w = x.shape
    apply = (u[:, 0] < _AUGS["jitter"][0]).to(u.dtype)
    brightness = 1 + (u[:, 1] * 0.2 - 0.1) * apply
    contrast = 1 + (u[:, 2] * 0.2 - 0.1) * apply
    saturation = 1 + (u[:, 3] * 0.2 - 0.1) * apply
    hue = (u[:, 4] * 0.2 - 0.1) * (2 * math.pi) * apply
    const = _constants(x.device, x.dtype, w, h)
    chroma = torch.zeros(n, 3, 3, device=x.device, dtype=x.dtype)
    chroma[:, 0, 0] = brightness * contrast
    chroma[:, 1, 1] = chroma[:, 2, 2] = saturation * brightness * contrast
    linear = const["to_rgb"] @ chroma @ const["to_yiq"]  # (n, 3, 3)
    turn = torch.zeros(n, 3, 3, device=x.device, dtype=x.dtype)
    turn[:, 0, 0] = 1
    turn[:, 1, 1], turn[:, 1, 2] = hue.cos(), -hue.sin()
    turn[:, 2, 1], turn[:, 2, 2] = hue.sin(), hue.cos()
    rotation = const["to_grey"].T @ turn @ const["to_grey"]  # (n, 3, 3) about the grey axis
    flat = x.reshape(n, 3, h * w)
    grey = flat.mean(-1) @ const["to_yiq"][0]  # (n,): the cutout's mean luma, kornia's contrast mean
    offset = ((1 - contrast) * brightness * grey).view(n, 1, 1)
    y = torch.baddbmm(offset, linear, flat)  # (n, 3, h·w): brightness, contrast, saturation
    turned = torch.baddbmm(offset, rotation @ linear, flat)  # y turned about the grey axis
    lo, hi = torch.aminmax(y, dim=1, keepdim=True)
    lo_turned, hi_turned = torch.aminmax(turned, dim=1, keepdim=True)
    ratio = (hi - lo) / (hi_turned - lo_turned).clamp_min(1e-6)
    return torch.addcmul(lo - lo_turned * ratio, turned, ratio).clamp(0, 1).view(n, 3, h, w)


def _erasing(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Zero a rectangle of 10–40 % of the area with aspect ratio in [0.3, 1/0.3], at a uniform position."""
    n, _, h, w = x.shape
    apply = u[:, 0] < _AUGS["erasing"][0]
    area = (u[:, 1] * 0.3 + 0.1) * (h * w)
    ratio = torch.exp(math.log(0.3) + u[:, 2] * (math.log(1 / 0.3) - math.log(0.3)))
    eh = (area * ratio).sqrt().round().clamp(1, h)
    ew = (area / ratio).sqrt().round().clamp(1, w)
    y0 = (u[:, 3] * (h - eh + 1)).floor()
    x0 = (u[:, 4] * (w - ew + 1)).floor()
    ys = torch.arange(h, device=x.device, dtype=u.dtype).view(1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=u.dtype).view(1, 1, w)
    inside = ((ys >= y0.view(-1, 1, 1)) & (ys < (y0 + eh).view(-1, 1, 1)) &
              (xs >= x0.view(-1, 1, 1)) & (xs < (x0 + ew).view(-1, 1, 1)) & apply.view(-1, 1, 1))
    return x.masked_fill(inside.unsqueeze(1), 0.0)


def _sharpness(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    from kornia.enhance import sharpness

    factor = u[:, 1] * 0.3 * (u[:, 0] < _AUGS["sharpness"][0]).to(u.dtype)
    return sharpness(x, factor)


def _grayscale(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    from kornia.color import rgb_to_grayscale

    apply = (u[:, 0] < _AUGS["grayscale"][0]).view(-1, 1, 1, 1)
    return torch.where(apply, rgb_to_grayscale(x).expand_as(x), x)


def _flip(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return torch.where((u[:, 0] < _AUGS["flip"][0]).view(-1, 1, 1, 1), x.flip(-1), x)


def _crop(images: torch.Tensor, ox: torch.Tensor, oy: torch.Tensor, size: torch.Tensor, cutn: int, ch: int,
          cw: int) -> torch.Tensor:
    """Crop the squares [ox, ox + size) × [oy, oy + size) (cutn per image) and resample each to ch × cw.

    When no crop can be larger than the output (images no larger than CLIP's input), one bilinear grid sample
    does it. Otherwise torchvision's roi_align, with ceil(size / output) samples per output pixel and axis for each
    crop, averages a large crop instead of aliasing it. (Both compute the same samples where both apply; roi_align's
    CPU backward measured about 35 ms slower at 128² with 8 cutouts, a fixed supersampled grid 50 % slower than
    roi_align at 480² with 32.)"""
    import torch.nn.functional as F
    from torchvision.ops import roi_align

    n = len(size)
    _, _, h, w = images.shape
    if min(h, w) > min(ch, cw):
        index = torch.arange(len(images), device=images.device, dtype=images.dtype).repeat_interleave(cutn)
        boxes = torch.stack([index, ox, oy, ox + size, oy + size], dim=1)
        # aligned=True: the box [ox, ox + size) covers exactly those pixels; sampling_ratio=-1 is adaptive
        return roi_align(images, boxes, output_size=(ch, cw), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    steps = _constants(images.device, images.dtype, cw, ch)["grid"][0]  # (ch, cw, 2): output x, y indices
    # sample centres in the image's pixel coordinates, normalised for align_corners=True
    xs = ox.view(n, 1, 1) + (steps[..., 0] + 0.5) * (size / cw).view(n, 1, 1) - 0.5
    ys = oy.view(n, 1, 1) + (steps[..., 1] + 0.5) * (size / ch).view(n, 1, 1) - 0.5
    grid = torch.stack([xs * (2 / max(w - 1, 1)) - 1, ys * (2 / max(h - 1, 1)) - 1], dim=-1)
    source = images.expand(n, -1, -1, -1) if len(images) == 1 else images.repeat_interleave(cutn, dim=0)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=True)


class MakeCutouts:
    """`cutn` random square crops per image (side ~ U^cut_pow between min and max), resampled to `cut_size`,
    augmented in the given order, plus noise of a random strength up to `noise`."""

    generator_device = None  # the jobs' generators live on the images' device (the anchor recipes' take "cpu")

    def __init__(self, cut_size: tuple[int, int], cutn: int, cut_pow: float = 1.0,
                 augmentations: Sequence[str] = DEFAULT_AUGMENTATIONS, noise: float = 0.1):
        self.cut_size = tuple(int(s) for s in cut_size)  # (H, W)
        self.cutn = int(cutn)
        self.cut_pow = float(cut_pow)
        self.noise = float(noise)
        self.augmentations = tuple(augmentations)
        self.n_random = 3 + sum(_AUGS[name][1] for name in self.augmentations) + 1

    def draw(self, generators: Sequence[torch.Generator], device: torch.device) -> torch.Tensor:
        """(len(generators) * cutn, n_random) uniform numbers: one draw per job, from that job's generator."""
        return torch.cat([torch.rand(self.cutn, self.n_random, generator=g, device=device) for g in generators])

    def __call__(self, images: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """(G, 3, H, W) -> (G * cutn, 3, *cut_size); job g's cutouts are rows g*cutn .. (g+1)*cutn - 1."""
        g, _, h, w = images.shape
        if len(generators) != g:
            raise ValueError(f"{len(generators)} generators for {g} images")
        device, dtype = images.device, images.dtype
        u = self.draw(generators, device).to(dtype)
        ch, cw = self.cut_size
        max_size = min(h, w)
        min_size = min(h, w, ch, cw)
        size = (u[:, 0] ** self.cut_pow * (max_size - min_size) + min_size).floor()
        ox = (u[:, 1] * (w - size + 1)).floor()
        oy = (u[:, 2] * (h - size + 1)).floor()
        x = _crop(images, ox, oy, size, self.cutn, ch, cw)
        col = 3
        for name in self.augmentations:
            k = _AUGS[name][1]
            params = u[:, col:col + k]
            col += k
            if name == "affine":
                x = _warp(x, _affine_inverse(params, cw, ch), "border")
            elif name == "perspective":
                x = _warp(x, _perspective_inverse(params, cw, ch), "zeros")
            else:
                x = {"jitter": _jitter, "erasing": _erasing, "sharpness": _sharpness, "grayscale": _grayscale,
                     "flip": _flip}[name](x, params)
        if self.noise > 0:
            strength = (u[:, col] * self.noise).view(-1, 1, 1, 1)
            noise = torch.cat([torch.randn((self.cutn, 3, ch, cw), generator=gen, device=device, dtype=dtype)
                               for gen in generators])
            x = x + strength * noise
        return x
