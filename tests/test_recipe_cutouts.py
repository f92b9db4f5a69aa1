"""The recipes' cutouts against independent re-statements of their anchors, and the colour jitter.

- `CrowsonCutouts` (recipe paper) against Crowson's notebook `MakeCutouts` / `resample`, re-stated below and run
  on the global RNG after `torch.manual_seed(s)`, as the notebook runs.
- `PooledCutouts` (recipe nerdyrodent) against nerdyrodent/VQGAN-CLIP generate.py's `latest` cut method, re-stated
  below from the installed kornia's modules and run after `torch.manual_seed(seed)`.
- The `vqclip` recipe's colour jitter: its hue shift against kornia's, its gamut, its brightness and contrast.

Number comparisons run with 1 and with 2 intra-op threads (the `threads` fixture); run the file also with
`ATEN_CPU_CAPABILITY=avx2` for the other CPU kernel path.
"""

from __future__ import annotations

import math

import pytest
import torch

from vqclip.errors import VqclipError
from vqclip.generation import cutouts as vq
from vqclip.generation.anchor_cutouts import CrowsonCutouts, PooledCutouts


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def _image(seed: int, h: int, w: int, requires_grad: bool = False) -> torch.Tensor:
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1000 + seed))
    return x.requires_grad_(requires_grad)


# -------------------------------------------------------------------------------------------------------------
# Crowson's notebook, re-stated


def _notebook_taps(shrunk: int, full: int) -> torch.Tensor:
    """Lanczos window (a = 2) sampled every shrunk/full input pixels out to ±2 output pixels, normalised."""
    step = shrunk / full
    count = math.ceil(2 / step + 1)
    right = [0.0]
    while len(right) < count:  # positions added up one step at a time, in Python floats
        right.append(right[-1] + step)
    right = torch.tensor(right, dtype=torch.float32)
    t = torch.cat([-right.flip(0)[:-1], right])[1:-1]  # symmetric, without the two outermost points

    def normalised_sinc(v):
        return torch.where(v != 0, torch.sin(math.pi * v) / (math.pi * v), torch.ones([]))

    inside = (t > -2) & (t < 2)
    window = torch.where(inside, normalised_sinc(t) * normalised_sinc(t / 2), torch.zeros([]))
    return window / window.sum()


def _notebook_resize(crop: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Each channel on its own: where an axis shrinks, low-pass it with the Lanczos taps (mirror padding), then
    bicubic interpolation to the target with the corner pixels aligned."""
    n, c, h, w = crop.shape
    planes = crop.reshape(n * c, 1, h, w)
    if out_h < h:
        taps = _notebook_taps(out_h, h)
        half = (len(taps) - 1) // 2
        planes = torch.nn.functional.pad(planes, (0, 0, half, half), mode="reflect")
        planes = torch.nn.functional.conv2d(planes, taps.view(1, 1, -1, 1))
    if out_w < w:
        taps = _notebook_taps(out_w, w)
        half = (len(taps) - 1) // 2
        planes = torch.nn.functional.pad(planes, (half, half, 0, 0), mode="reflect")
        planes = torch.nn.functional.conv2d(planes, taps.view(1, 1, 1, -1))
    planes = planes.reshape(n, c, h, w)
    return torch.nn.functional.interpolate(planes, (out_h, out_w), mode="bicubic", align_corners=True)


class _ClampPassBack(torch.autograd.Function):
    """Clamp; backward keeps a gradient only if following it (descent) does not take the value further out."""

    @staticmethod
    def forward(ctx, v):
        ctx.save_for_backward(v)
        return v.clamp(0, 1)

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        outside = v - v.clamp(0, 1)
        return grad * (grad * outside >= 0)


def _notebook_cutouts(image: torch.Tensor, cut: int | tuple[int, int], cutn: int, cut_pow: float):
    """The notebook's MakeCutouts.forward on the global RNG: per cutout a side, an x and a y offset, a crop, a
    resize; all cutouts stacked and clamped. (The notebook's cut is square; (h, w) is vqclip's generalisation.)"""
    out_h, out_w = (cut, cut) if isinstance(cut, int) else cut
    height, width = image.shape[2:]
    largest = min(width, height)
    smallest = min(width, height, out_h, out_w)
    result = []
    for _ in range(cutn):
        side = int(torch.rand([]) ** cut_pow * (largest - smallest) + smallest)
        left = torch.randint(0, width - side + 1, ())
        top = torch.randint(0, height - side + 1, ())
        result.append(_notebook_resize(image[:, :, top:top + side, left:left + side], out_h, out_w))
    return _ClampPassBack.apply(torch.cat(result))


# Equality. Forward: torch.equal. The taps are computed with the notebook's float32 arithmetic, and grouping the
# crops of one size into one convolution / interpolation call does not change any output element's sum (each is
# a sum over one plane's pixels); bit-equal with the default (AVX512) and AVX2 kernels, 1 and 2 threads.
# Gradients: max |diff| <= 1e-6 relative to the gradient's size, since the input's gradient adds up the
# contributions of overlapping crops in another order (grouped by size, not in draw order): measured up to
# 9.5e-7 on gradients of order 1-10, bit-equal in 42 of 54 cases.
TOL = 1e-6


def _close_gradients(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a - b).abs().max().item() <= TOL * max(1.0, a.abs().max().item())


@pytest.mark.parametrize("h,w", [(48, 40), (40, 48), (12, 10), (17, 30)])
@pytest.mark.parametrize("cut_pow", [1.0, 0.5, 2.5])
def test_crowson_cutouts_are_the_notebooks(threads, h, w, cut_pow):
    for seed in (0, 1, 7):
        image = _image(seed, h, w, requires_grad=True)
        torch.manual_seed(seed)
        expected = _notebook_cutouts(image, 16, 8, cut_pow)
        mine = CrowsonCutouts((16, 16), 8, cut_pow)(image, [torch.Generator().manual_seed(seed)])
        assert mine.shape == expected.shape == (8, 3, 16, 16)
        assert torch.equal(mine, expected)
        weights = torch.randn(expected.shape, generator=torch.Generator().manual_seed(seed))
        (grad_expected,) = torch.autograd.grad((expected * weights).sum(), image)
        (grad_mine,) = torch.autograd.grad((mine * weights).sum(), image)
        assert _close_gradients(grad_mine, grad_expected)


def test_crowson_cutouts_clamp_with_the_notebooks_gradient():
    image = (_image(3, 40, 48) * 1.6 - 0.3).requires_grad_(True)  # values outside [0, 1]
    torch.manual_seed(3)
    expected = _notebook_cutouts(image, 16, 8, 1.0)
    mine = CrowsonCutouts(16, 8, 1.0)(image, [torch.Generator().manual_seed(3)])
    assert mine.min() >= 0 and mine.max() <= 1 and torch.equal(mine, expected)
    for sign in (1, -1):
        (a,) = torch.autograd.grad((sign * expected).sum(), image, retain_graph=True)
        (b,) = torch.autograd.grad((sign * mine).sum(), image, retain_graph=True)
        assert _close_gradients(a, b)


def test_crowson_cutouts_non_square_clip_input(threads):
    # vqclip's generalisation: square crops of at least min(W, H, ch, cw), each resampled to (ch, cw)
    image = _image(5, 48, 40)
    for seed in (0, 1):
        torch.manual_seed(seed)
        expected = _notebook_cutouts(image, (12, 20), 8, 1.0)
        mine = CrowsonCutouts((12, 20), 8)(image, [torch.Generator().manual_seed(seed)])
        assert mine.shape == (8, 3, 12, 20)
        assert torch.equal(mine, expected)


def test_crowson_cutouts_group_gives_each_job_its_own_cutouts(threads):
    images = torch.cat([_image(0, 48, 40), _image(1, 48, 40)])
    make = CrowsonCutouts((16, 16), 8, 1.0)
    both = make(images, [torch.Generator().manual_seed(10), torch.Generator().manual_seed(11)])
    alone = torch.cat([make(images[:1], [torch.Generator().manual_seed(10)]),
                       make(images[1:], [torch.Generator().manual_seed(11)])])
    assert both.shape == (16, 3, 16, 16) and torch.equal(both, alone)
    assert CrowsonCutouts.generator_device == "cpu" and vq.MakeCutouts.generator_device is None


def test_crowson_cutouts_resample_once_per_size():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        convs = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if "convolution" in str(func) or "conv2d" in str(func):
                Count.convs += 1
            return func(*args, **(kwargs or {}))

    image = _image(0, 48, 40)
    make = CrowsonCutouts((16, 16), 32, 0.0)  # cut_pow 0: every side is the largest, one size
    with Count():
        make(image, [torch.Generator().manual_seed(0)])
    assert Count.convs == 2  # one per shrinking axis, for all 32 cutouts


# -------------------------------------------------------------------------------------------------------------
# nerdyrodent/VQGAN-CLIP generate.py, cut method `latest`, re-stated from the installed kornia


def _nerdyrodent_latest(image: torch.Tensor, cut: int, cutn: int, codes: list[str], noise: float = 0.1):
    import kornia.augmentation as K

    modules = {
        "Af": lambda: K.RandomAffine(degrees=15, translate=0.1, shear=5, p=0.7, padding_mode="zeros", keepdim=True),
        "Pe": lambda: K.RandomPerspective(distortion_scale=0.7, p=0.7),
        "Ji": lambda: K.ColorJiggle(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1, p=0.7),
        "Er": lambda: K.RandomErasing(scale=(.1, .4), ratio=(.3, 1 / .3), same_on_batch=True, p=0.7),
        "Sh": lambda: K.RandomSharpness(sharpness=0.3, p=0.5),
    }
    augs = torch.nn.Sequential(*(modules[c]() for c in codes))
    avg, top = torch.nn.AdaptiveAvgPool2d((cut, cut)), torch.nn.AdaptiveMaxPool2d((cut, cut))
    batch = augs(torch.cat([(avg(image) + top(image)) / 2 for _ in range(cutn)]))
    if noise:
        strength = batch.new_empty([cutn, 1, 1, 1]).uniform_(0, noise)
        batch = batch + strength * torch.randn_like(batch)
    return batch


_CODES = {"affine": "Af", "perspective": "Pe", "jitter": "Ji", "erasing": "Er", "sharpness": "Sh"}


@pytest.mark.parametrize("names", [("affine", "perspective", "jitter", "erasing"),
                                   ("jitter", "sharpness", "erasing", "affine"), ("perspective",), ()])
def test_pooled_cutouts_are_nerdyrodents_latest(threads, names):
    make = PooledCutouts((16, 16), 8, names, 0.1)
    for s in (0, 1, 2):
        image = _image(s, 48, 40)
        seed = int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(s)))
        torch.manual_seed(seed)
        expected = _nerdyrodent_latest(image, 16, 8, [_CODES[n] for n in names])
        mine = make(image, [torch.Generator().manual_seed(s)])
        assert mine.shape == (8, 3, 16, 16)
        assert torch.equal(mine, expected)


def test_pooled_cutouts_group_and_global_rng():
    images = torch.cat([_image(0, 48, 40), _image(1, 48, 40)])
    make = PooledCutouts((16, 16), 8)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    both = make(images, [torch.Generator().manual_seed(4), torch.Generator().manual_seed(5)])
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn from, nor reseeded, the global RNG
    alone = torch.cat([make(images[:1], [torch.Generator().manual_seed(4)]),
                       make(images[1:], [torch.Generator().manual_seed(5)])])
    assert both.shape == (16, 3, 16, 16) and torch.equal(both, alone)
    assert torch.equal(torch.get_rng_state(), state)
    assert PooledCutouts.generator_device == "cpu"


def test_pooled_cutouts_without_noise_and_gradient():
    image = _image(0, 48, 40, requires_grad=True)
    out = PooledCutouts((16, 16), 4, (), 0.0)(image, [torch.Generator().manual_seed(0)])
    pooled = (torch.nn.functional.adaptive_avg_pool2d(image, 16) + torch.nn.functional.adaptive_max_pool2d(image, 16)) / 2
    assert torch.equal(out, pooled.expand(4, -1, -1, -1))
    out.sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_pooled_jitter_is_kornia_054s_additive_brightness_and_multiplicative_contrast():
    """nerdyrodent pins kornia 0.5.4, whose ColorJitter adds brightness - 1 and multiplies by the contrast factor
    (each clamped), in a random order per call; kornia >= 0.6 keeps it as ColorJiggle. On a uniform grey the
    saturation and hue steps change nothing, so each cutout is those two formulas in the drawn order (kornia 0.9's
    ColorJitter would scale the grey by the brightness factor and leave it under contrast)."""
    make = PooledCutouts((16, 16), 8, ("jitter",), 0.0)
    grey = 0.4
    for seed in (0, 1, 2):
        out = make(torch.full((1, 3, 40, 48), grey), [torch.Generator().manual_seed(seed)])
        params = make.augs[0]._params
        b, c, applied = params["brightness_factor"], params["contrast_factor"], params["batch_prob"] > 0.5
        expected = torch.full((8,), grey)
        for step in params["order"].tolist():
            if step == 0:
                expected = (expected + b - 1).clamp(0, 1)
            elif step == 1:
                expected = (expected * c).clamp(0, 1)
        expected = torch.where(applied, expected, torch.full_like(expected, grey))
        assert applied.any() and (out[:, :, 0, 0] - expected[:, None]).abs().max() < 1e-6


@pytest.mark.parametrize("name", ["grayscale", "flip"])
def test_pooled_cutouts_refuse_augmentations_nerdyrodent_lacks(name):
    with pytest.raises(VqclipError, match="nerdyrodent recipe has no such augmentation") as err:
        PooledCutouts((16, 16), 8, ("affine", name))
    assert err.value.arg == "--augment"
    assert "affine, erasing, jitter, perspective, sharpness" in str(err.value)


# -------------------------------------------------------------------------------------------------------------
# The vqclip recipe's colour jitter

def _u(n: int, brightness=0.5, contrast=0.5, saturation=0.5, hue=0.5, apply=0.0) -> torch.Tensor:
    """Jitter parameters: uniforms, 0.5 being the neutral factor; apply < 0.7 applies."""
    return torch.tensor([[apply, brightness, contrast, saturation, hue]]).expand(n, 5)


def _strength(change, x):
    """Mean absolute RGB change, averaged over a shift by +0.1 and by -0.1 of a turn (the range's extremes)."""
    return sum((change(x, sign) - x).abs().mean().item() for sign in (1, -1)) / 2


def _kornia_hue(x, sign):
    from kornia.enhance import adjust_hue

    return adjust_hue(x, sign * 0.1 * 2 * math.pi)  # kornia's ColorJitter hue=0.1: a factor in turns, × 2π


def _vqclip_hue(x, sign):
    return vq._jitter(x, _u(len(x), hue=1.0 if sign > 0 else 0.0))


def test_hue_jitter_is_as_strong_as_kornias(threads):
    """On uniform colours and smooth images (the photographs: tests/test_fidelity_jitter.py)."""
    colours = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # 4096 uniform colours
    smooth = torch.nn.functional.interpolate(torch.rand(8, 3, 6, 6, generator=torch.Generator().manual_seed(1)),
                                             size=(64, 64), mode="bicubic", align_corners=False).clamp(0, 1)
    for x in (colours, smooth):
        ratio = _strength(_vqclip_hue, x) / _strength(_kornia_hue, x)
        assert abs(ratio - 1) <= 0.02, ratio  # measured 0.999 on both
        # and it is kornia's shift, not only as strong: the mean change between the two is small
        for sign in (1, -1):
            assert (_vqclip_hue(x, sign) - _kornia_hue(x, sign)).abs().mean() < 0.006


def test_jitter_keeps_saturated_colours_in_gamut():
    corners = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 0]],
                           dtype=torch.float32).T.reshape(1, 3, 2, 4)
    u = torch.rand(512, 5, generator=torch.Generator().manual_seed(0))
    u[:256, 0] = 0.0  # half of them certainly jittered
    u[:8, 4], u[8:16, 4] = 1.0, 0.0  # and the hue extremes
    out = vq._jitter(corners.expand(512, -1, -1, -1), u)
    assert out.min() >= 0 and out.max() <= 1
    assert (out[:16] - corners).abs().max() > 0.1  # it did change them
    # through the whole default pipeline (no noise), whatever the crop
    make = vq.MakeCutouts((16, 16), 64, 1.0, ("jitter",), 0.0)
    image = corners.repeat_interleave(12, dim=2).repeat_interleave(10, dim=3)  # (1, 3, 24, 40) colour blocks
    cut = make(image, [torch.Generator().manual_seed(0)])
    assert cut.min() >= 0 and cut.max() <= 1


def test_jitter_applies_kornias_brightness_contrast_and_saturation(threads):
    from kornia.enhance import (adjust_brightness_accumulative, adjust_contrast_with_mean_subtraction,
                                adjust_saturation_with_gray_subtraction)

    x = 0.15 + 0.6 * torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))  # no clamping anywhere
    brighter = vq._jitter(x, _u(2, brightness=1.0))  # factor 1.1
    assert (brighter - adjust_brightness_accumulative(x, 1.1)).abs().max() < 1e-5
    flatter = vq._jitter(x, _u(2, contrast=0.0))  # factor 0.9
    assert (flatter - adjust_contrast_with_mean_subtraction(x, 0.9)).abs().max() < 1e-5
    assert (flatter - x).abs().max() > 0.01
    paler = vq._jitter(x, _u(2, saturation=0.0))
    assert (paler - adjust_saturation_with_gray_subtraction(x, 0.9)).abs().max() < 1e-5
    # all three, in the jitter's fixed order: brightness, contrast, saturation
    b, c, s = torch.tensor([0.93, 1.04]), torch.tensor([1.07, 0.91]), torch.tensor([0.95, 1.08])
    u = torch.stack([torch.zeros(2), (b - 0.9) / 0.2, (c - 0.9) / 0.2, (s - 0.9) / 0.2, torch.full((2,), 0.5)], 1)
    expected = adjust_saturation_with_gray_subtraction(
        adjust_contrast_with_mean_subtraction(adjust_brightness_accumulative(x, b), c), s)
    assert (vq._jitter(x, u) - expected).abs().max() < 1e-5
    # not drawn (u[:, 0] >= 0.7): unchanged
    assert (vq._jitter(x, _u(2, brightness=1.0, contrast=0.0, hue=1.0, apply=0.9)) - x).abs().max() < 1e-6


def test_jitter_draws_five_numbers_per_cutout_and_stays_batched():
    assert vq._AUGS["jitter"] == (0.7, 5)
    make = vq.MakeCutouts((16, 16), 8, 1.0, ("jitter",), 0.1)
    assert make.n_random == 3 + 5 + 1
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    def count(cutn):
        x = torch.rand(8 * cutn, 3, 16, 16, requires_grad=True)
        u = torch.rand(8 * cutn, 5)
        vq._jitter(x, u)  # constants cached
        Count.calls = 0
        with Count():
            vq._jitter(x, u).sum().backward()
        return Count.calls

    assert count(1) == count(8)
