import math

import pytest
import torch
from PIL import Image

from vqclip.errors import VqclipError
from vqclip.generation import Settings, parse_prompts, run
from vqclip.generation.ops import (clamp_with_grad, cosine_dist_loss, prompt_loss, spherical_dist_loss,
                                   vector_quantize)
from vqclip.spaces import Space


def _settings(**kw):
    base = dict(prompts=parse_prompts("an apple"), size=(32, 32), steps=3, cutn=4, seed=0)
    base.update(kw)
    return Settings(**base)


def _orthonormal(d, D, seed=0):
    q, _ = torch.linalg.qr(torch.randn(D, d, generator=torch.Generator().manual_seed(seed)))
    return q.T.contiguous()


# --- pure functions -------------------------------------------------------------------------------------------

def test_spherical_distance_is_half_the_squared_angle():
    theta = torch.tensor([0.0, 0.3, 1.0, 2.0, math.pi])
    x = torch.stack([torch.ones_like(theta), torch.zeros_like(theta)], -1)
    y = torch.stack([theta.cos(), theta.sin()], -1)
    assert torch.allclose(spherical_dist_loss(x, y), theta ** 2 / 2, atol=1e-5)
    assert torch.allclose(cosine_dist_loss(x, y), 1 - theta.cos(), atol=1e-6)


def test_prompt_loss_is_signed_and_scaled_by_weight():
    embeds = torch.nn.functional.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    target = torch.nn.functional.normalize(torch.randn(8, generator=torch.Generator().manual_seed(2)), dim=-1)
    base = spherical_dist_loss(embeds, target.unsqueeze(0)).mean()
    assert torch.allclose(prompt_loss(embeds, target, 1.0, -math.inf), base)
    assert torch.allclose(prompt_loss(embeds, target, 2.5, -math.inf), 2.5 * base)
    assert torch.allclose(prompt_loss(embeds, target, -0.5, -math.inf), -0.5 * base)


def test_stop_value_cuts_the_gradient_once_satisfied():
    target = torch.tensor([1.0, 0.0])
    near = torch.tensor([[0.99, 0.14]], requires_grad=True)  # distance ~0.01
    far = torch.tensor([[0.0, 1.0]], requires_grad=True)  # distance ~1.23
    for x in (near, far):
        prompt_loss(x, target, 1.0, stop=0.5).backward()
    assert near.grad.abs().sum() == 0  # below the stop: no pull
    assert far.grad.abs().sum() > 0


def test_straight_through_quantizer_passes_gradients_to_z():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    z = torch.tensor([[0.2, 0.1], [0.9, 0.7]], requires_grad=True)
    z_q = vector_quantize(z, codebook)
    assert torch.equal(z_q.detach(), codebook)  # forward: nearest codes
    (z_q * torch.tensor([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    assert torch.equal(z.grad, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # backward: identity


def test_clamp_with_grad_lets_an_out_of_range_pixel_come_back():
    x = torch.tensor([1.5], requires_grad=True)
    ((clamp_with_grad(x) - 0.5) ** 2).sum().backward()  # descent lowers x: back toward [0, 1]
    assert x.grad.item() == pytest.approx(1.0)
    x2 = torch.tensor([1.5], requires_grad=True)
    (-clamp_with_grad(x2)).sum().backward()  # descent would raise x further out: blocked
    assert x2.grad.item() == 0
    x3 = torch.tensor([1.5], requires_grad=True)
    ((x3.clamp(0, 1) - 0.5) ** 2).sum().backward()  # a plain clamp would never let it back
    assert x3.grad.item() == 0


# --- the loop ---------------------------------------------------------------------------------------------------

def test_same_seed_gives_the_same_image_bit_for_bit(tiny_clip, tiny_vqgan):
    a = run(_settings(seed=7), tiny_clip, tiny_vqgan, Space("clip"))
    b = run(_settings(seed=7), tiny_clip, tiny_vqgan, Space("clip"))
    c = run(_settings(seed=8), tiny_clip, tiny_vqgan, Space("clip"))
    assert a.image.tobytes() == b.image.tobytes() and a.history == b.history
    assert a.image.tobytes() != c.image.tobytes()


def test_unseeded_runs_draw_and_record_a_seed(tiny_clip, tiny_vqgan):
    r = run(_settings(seed=None, steps=1), tiny_clip, tiny_vqgan, Space("clip"))
    assert isinstance(r.seed, int)
    again = run(_settings(seed=r.seed, steps=1), tiny_clip, tiny_vqgan, Space("clip"))
    assert again.image.tobytes() == r.image.tobytes()


@pytest.mark.parametrize("method", ["zquant", "codebook"])
def test_a_few_steps_lower_the_loss(tiny_clip, tiny_vqgan, method):
    s = _settings(steps=8, cutn=8, augment="none", noise=0.0, cut_pow=1.0, method=method, lr=0.3)
    r = run(s, tiny_clip, tiny_vqgan, Space("clip"))
    assert r.status == "finished" and r.steps_done == 8
    assert min(r.history[-3:]) < r.history[0]


def test_projected_spaces_change_the_loss(tiny_clip, tiny_vqgan):
    s = _settings(steps=1, augment="none", noise=0.0)
    clip_loss = run(s, tiny_clip, tiny_vqgan, Space("clip")).history[0]
    learn_loss = run(s, tiny_clip, tiny_vqgan, Space("learn", _orthonormal(4, 32, 1))).history[0]
    forget_loss = run(s, tiny_clip, tiny_vqgan, Space("forget", _orthonormal(8, 32, 2))).history[0]
    assert len({round(clip_loss, 6), round(learn_loss, 6), round(forget_loss, 6)}) == 3


def test_negative_prompt_weight_flips_the_loss_sign(tiny_clip, tiny_vqgan):
    s = _settings(steps=1, augment="none", noise=0.0, prompts=parse_prompts("an apple | written text:-0.5"))
    r = run(s, tiny_clip, tiny_vqgan, Space("clip"))
    assert r.losses["an apple"] > 0 > r.losses["written text"]


def test_callback_sees_every_step_and_interrupt_keeps_the_image(tiny_clip, tiny_vqgan):
    seen = []

    def callback(info):
        seen.append(info.step)
        assert info.image.shape == (1, 3, 32, 32)
        if info.step == 2:
            raise KeyboardInterrupt

    r = run(_settings(steps=10), tiny_clip, tiny_vqgan, Space("clip"), callback)
    assert seen == [1, 2]
    assert r.status == "interrupted" and r.steps_done == 2
    assert r.image.size == (32, 32)


class _NaNAfter(Space):
    """A space whose projection turns to NaN after a number of calls."""

    def __init__(self, calls):
        super().__init__("clip")
        self.calls = calls

    def project(self, e):
        self.calls -= 1
        out = super().project(e)
        return out * float("nan") if self.calls < 0 else out


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_image(tiny_clip, tiny_vqgan):
    from vqclip.generation.loop import to_pil

    frames = {}
    # 1 call for the text target, then one per step: steps 1 and 2 are finite, step 3 is not.
    r = run(_settings(steps=10, lr=0.5), tiny_clip, tiny_vqgan, _NaNAfter(3),
            lambda info: frames.__setitem__(info.step, to_pil(info.image)))
    assert r.status == "nonfinite" and "step 3" in r.message
    assert r.steps_done == 2
    assert r.image.tobytes() == frames[2].tobytes()  # the image whose loss was last finite


def test_init_image_and_image_prompt(tiny_clip, tiny_vqgan, tmp_path):
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "red.png")
    s = _settings(steps=2, init_image=str(tmp_path / "red.png"), init_weight=0.5,
                  image_prompts=parse_prompts(f"{tmp_path / 'red.png'}:0.5"))
    r = run(s, tiny_clip, tiny_vqgan, Space("clip"))
    assert r.status == "finished" and str(tmp_path / "red.png") in r.losses


def test_size_is_snapped_to_the_vqgan_factor(tiny_clip, tiny_vqgan):
    s, notices = _settings(size=(33, 35)).resolved(tiny_vqgan.factor)
    assert s.size == (32, 34) and "snapped" in notices[0]


@pytest.mark.parametrize("kw, arg", [
    (dict(size=(1, 32)), "--size"),
    (dict(steps=-1), "--steps"),
    (dict(cutn=0), "--cutn"),
    (dict(optimizer="adamax2"), "--optimizer"),
    (dict(method="diffusion"), "--method"),
    (dict(loss="l2"), "--loss"),
    (dict(lr=-0.1), "--lr"),
    (dict(init_image="/no/such.png"), "--init-image"),
    (dict(augment="affine,blur"), "--augment"),
    (dict(prompts=parse_prompts("written text:-1")), "positive weight"),
])
def test_bad_settings_name_the_argument(tiny_vqgan, kw, arg):
    with pytest.raises(VqclipError, match=arg):
        _settings(**kw).resolved(tiny_vqgan.factor)


@pytest.mark.parametrize("spec, match", [("", "empty"), ("apple:1.5x", "must be numbers"), (":2", "needs some text"),
                                         ("apple:0", "weight of 0")])
def test_bad_prompts_are_clear_errors(spec, match):
    with pytest.raises(VqclipError, match=match):
        parse_prompts(spec)


def test_prompt_fields_are_parsed_from_the_right():
    [p] = parse_prompts("http://example.com/a.png:0.5:0.2")
    assert (p.text, p.weight, p.stop) == ("http://example.com/a.png", 0.5, 0.2)
    a, b = parse_prompts("note: apples | written text:-0.5")
    assert (a.text, a.weight) == ("note: apples", 1.0) and (b.text, b.weight) == ("written text", -0.5)


@pytest.mark.parametrize("spec", ["an apple:abc", "a:1:x", "apple:high | pear", "apple:x:0.5x"])
def test_a_word_glued_to_the_last_colon_is_a_weight_typo(spec):
    with pytest.raises(VqclipError, match="PROMPT: .*(mistyped weight|must be numbers)"):
        parse_prompts(spec)


@pytest.mark.parametrize("spec, text, weight", [
    ("a photo: an apple", "a photo: an apple", 1.0),
    ("https://x.y/z", "https://x.y/z", 1.0),
    ("http://x.com:8080/a.png", "http://x.com:8080/a.png", 1.0),
    ("note:two words", "note:two words", 1.0),
    ("Re:Zero:1", "Re:Zero", 1.0),
    ("a photo: an apple:-0.5", "a photo: an apple", -0.5),
])
def test_colons_in_prompt_text_still_work(spec, text, weight):
    [p] = parse_prompts(spec)
    assert (p.text, p.weight) == (text, weight)


def test_an_image_prompt_path_with_a_colon_word_is_still_a_path(tmp_path):
    from vqclip.generation import parse_image_prompt

    path = tmp_path / "shot:final.png"
    path.write_bytes(b"")
    assert parse_image_prompt(str(path)).text == str(path)
    assert parse_image_prompt(f"{path}:0.5").weight == 0.5
