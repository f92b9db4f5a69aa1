"""A world CLIP whose gradients draw (issue 33): crop augmentation and PGD-L2 adversarial training of the small CLIP,
and the testbed settings that turn them on (docs/testbed.md, "A world CLIP whose gradients draw")."""

from __future__ import annotations

import pytest
import torch

from vqclip.errors import VqclipError
from vqclip.testbed.small_clip import (ClipTrainConfig, adv_eps_at, contrastive_loss, pgd_l2, random_crops,
                                       small_clip_config, train_small_clip)
from vqclip.testbed.world import World, training_set

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=16):
    w = World(image_size=32, classes=("star", "moon", "ring"), extra_words=("apple",), n_nonsense=1)
    return training_set(w, n)


def test_pgd_stays_in_its_ball_and_in_range_and_raises_the_loss():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 16)
    target = torch.rand(6, 3, 16, 16)

    def loss(v):  # per image, pulled towards `target`: the attack pushes away from it
        return -(v - target).pow(2).sum()

    for eps in (0.5, 2.0):
        adv = pgd_l2(loss, x, eps, steps=3, gen=torch.Generator().manual_seed(1))
        norms = (adv - x).flatten(1).norm(dim=1)
        assert (norms <= eps + 1e-5).all() and (norms > 0.5 * eps).all()
        assert adv.min() >= 0 and adv.max() <= 1
        start = pgd_l2(loss, x, eps, steps=0, gen=torch.Generator().manual_seed(1))  # the random start alone
        assert loss(adv) > loss(start) > loss(x) - 4 * eps * eps * len(x)


def test_random_crops_rescale_squares_and_are_off_at_scale_one():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32) / (2 * 3 * 32 * 32)
    gen = torch.Generator().manual_seed(0)
    assert random_crops(x, 1.0, gen) is x
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(0).get_state())  # no draws when off
    y = random_crops(x, 0.5, gen)
    assert y.shape == x.shape and not torch.equal(y, x)
    # a crop of a ramp keeps the ramp's order and lies within the picture's values
    assert y.min() >= x.min() - 1e-6 and y.max() <= x.max() + 1e-6
    assert (y[:, :, 1:, :] >= y[:, :, :-1, :] - 1e-6).all()


def test_eps_grows_over_the_ramp_and_is_zero_without_adversarial_training():
    off = ClipTrainConfig(steps=100)
    on = ClipTrainConfig(steps=100, adv_eps=2.0, adv_ramp=0.5)
    assert all(adv_eps_at(s, off) == 0 for s in range(100))
    assert adv_eps_at(0, on) == pytest.approx(0.04) and adv_eps_at(24, on) == pytest.approx(1.0)
    assert adv_eps_at(49, on) == adv_eps_at(99, on) == 2.0


def test_adversarial_training_trains_on_attacked_batches_and_starts_from_init():
    images, captions, _ = _data()
    cfg = small_clip_config(image_size=32, embed_dim=16, width=4)
    clean, h_clean = train_small_clip(cfg, images, captions, ClipTrainConfig(steps=2, batch_size=8, warmup=1))
    robust_cfg = ClipTrainConfig(steps=2, batch_size=8, warmup=1, adv_eps=1.0, adv_ramp=0.0, crop_scale=0.7)
    robust, h_robust = train_small_clip(cfg, images, captions, robust_cfg)
    again, _ = train_small_clip(cfg, images, captions, robust_cfg)
    assert [r["eps"] for r in h_robust] == [1.0, 1.0] and [r["eps"] for r in h_clean] == [0.0, 0.0]
    assert h_robust[0]["loss"] > h_clean[0]["loss"]  # the same first batch, attacked: the loss it trains on is higher
    assert all(torch.equal(a, b) for a, b in zip(robust.state_dict().values(), again.state_dict().values()))
    # init: a fine-tune starts from the given weights, not from the seed's fresh model
    tuned, h_tuned = train_small_clip(cfg, images, captions, robust_cfg, init=clean.state_dict())
    assert h_tuned[0]["loss"] != h_robust[0]["loss"]
    with torch.no_grad():
        x = images[:4].float() / 255
        assert not torch.allclose(tuned.encode_image(x), robust.encode_image(x))


def test_the_contrastive_loss_the_attack_raises_is_the_training_loss():
    f = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    assert contrastive_loss(f, f, torch.tensor(10.0)) < contrastive_loss(f, f.flip(0), torch.tensor(10.0))


def test_testbed_settings_keep_old_clips_reusable_and_refuse_bad_values():
    from vqclip.testbed.config import TestbedConfig

    plain = TestbedConfig.quick(0).clip_recipe()
    assert not {"clip_crop", "robust_steps", "robust_eps"} & set(plain)  # CLIPs trained before stay reusable
    robust = TestbedConfig.quick(0, clip_crop=0.6, robust_steps=10).clip_recipe()
    assert robust == {**plain, "clip_crop": 0.6, "robust_steps": 10, "robust_eps": 3.0, "robust_lr": 2e-3}
    with pytest.raises(VqclipError, match="--clip-crop"):
        TestbedConfig.quick(0, clip_crop=0.0)
    with pytest.raises(VqclipError, match="--robust-steps"):
        TestbedConfig.quick(0, robust_steps=-1)


def test_the_testbed_command_takes_the_robust_flags(capsys):
    from vqclip.cli import build_parser
    from vqclip.cli.testbed import _testbed_config

    args = build_parser().parse_args(["testbed", "--quick", "--clip-crop", "0.6", "--robust-steps", "1500",
                                      "--robust-eps", "2"])
    config = _testbed_config(args)
    assert (config.clip_crop, config.robust_steps, config.robust_eps) == (0.6, 1500, 2.0)


def test_the_clip_stage_fine_tunes_adversarially_after_the_clean_training(tmp_path):
    from vqclip.testbed.config import TestbedConfig
    from vqclip.testbed.stages import train_clip_stage

    config = TestbedConfig.quick(0, n_pairs=64, clip_steps=2, clip_batch=16, clip_warmup=1, robust_steps=2,
                                 clip_crop=0.6)
    info = train_clip_stage(config.world(), config, tmp_path, progress=False)
    assert info["train"]["crop_scale"] == 0.6 and info["train"]["adv_eps"] == 0
    assert info["robust"]["adv_eps"] == 3.0 and info["robust"]["steps"] == 2 and info["robust"]["crop_scale"] == 0.6
    assert info["recipe"]["robust_steps"] == 2
    again = train_clip_stage(config.world(), config, tmp_path, progress=False, reuse=True)
    assert again["reused"]


def test_the_docs_tables_are_rebuilt_from_the_shipped_records(capsys):
    """Every line `benchmarks/world_clip_draws.py table` prints from docs/data/world_clip_draws.json stands in
    docs/testbed.md: the numbers there come from the shipped per-image records, not by hand."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("world_clip_draws", root / "benchmarks" / "world_clip_draws.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["table", str(root / "docs" / "data" / "world_clip_draws.json")])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 11 + 2 + 12
    docs = (root / "docs" / "testbed.md").read_text(encoding="utf-8").splitlines()
    missing = [line for line in lines if line not in docs]
    assert not missing, missing


def test_the_testbed_says_how_long_before_any_work(monkeypatch, capsys, tmp_path):
    """Issue 36 item 15: one line with the estimate before training starts (here training is stopped at once)."""
    import vqclip.testbed.run as run_module
    from vqclip.cli import main

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "run_testbed", stop)
    monkeypatch.setattr(run_module, "run_testbed_seeds", stop)
    minutes = {}
    for name, argv in {"one": [], "three": ["--seeds", "0-2"], "robust": ["--robust-steps", "1500"],
                       "generate": ["--generate"]}.items():
        assert main(["testbed", "--quick", "--out", str(tmp_path / name), *argv]) == 130
        line = [ln for ln in capsys.readouterr().err.splitlines() if "on a quiet 2-core machine" in ln]
        assert len(line) == 1, line
        minutes[name] = int(line[0].split("about ")[1].split(" min")[0])
    assert minutes["one"] == 2 and minutes["three"] == 7  # 1,000 quick steps: about 128 s measured
    assert minutes["robust"] > minutes["one"] + 5 and minutes["generate"] > minutes["one"] + 5
