"""Many images in one optimisation: batched cutouts, `run_many`, and grouped batches."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from vqclip.errors import VqclipError
from vqclip.generation import Settings, parse_prompts, run
from vqclip.generation.cutouts import MakeCutouts
from vqclip.generation.loop import run_many
from vqclip.spaces import Space

from test_generation import _NaNAfter  # a space whose projection turns to NaN after some calls

# A job's image in a group equals the job run alone up to float rounding in batched kernels: measured at most
# 1 level (of 255) on a few pixels (mean below 0.001) with AVX-512, AVX2 and the default kernels, and losses
# within 6e-7. The test allows a mean of 1 level and 1e-4 on the loss.
IMAGE_MEAN_TOLERANCE = 1.0
LOSS_TOLERANCE = 1e-4


def _orthonormal(d, D, seed=0):
    q, _ = torch.linalg.qr(torch.randn(D, d, generator=torch.Generator().manual_seed(seed)))
    return q.T.contiguous()


def _jobs(method="zquant", steps=6):
    base = Settings(prompts=parse_prompts("an apple"), size=(32, 32), steps=steps, cutn=4, seed=0, method=method)
    jobs = [base, dataclasses.replace(base, prompts=parse_prompts("a pear | written text:-0.5"), seed=5),
            dataclasses.replace(base, seed=9, loss="cosine")]
    spaces = [Space("clip"), Space("forget", _orthonormal(8, 32, 2)), Space("learn", _orthonormal(4, 32, 1))]
    return jobs, spaces


def _pixels(image):
    return np.asarray(image, dtype=np.float64)


@pytest.mark.parametrize("method", ["zquant", "codebook"])
def test_a_job_in_a_group_matches_the_job_run_alone(tiny_clip, tiny_vqgan, method):
    jobs, spaces = _jobs(method)
    together = run_many(jobs, tiny_clip, tiny_vqgan, spaces)
    assert [r.group_size for r in together] == [3, 3, 3]
    for settings, space, grouped in zip(jobs, spaces, together):
        alone = run(settings, tiny_clip, tiny_vqgan, space)
        assert grouped.status == alone.status == "finished" and grouped.steps_done == alone.steps_done
        assert np.abs(_pixels(grouped.image) - _pixels(alone.image)).mean() <= IMAGE_MEAN_TOLERANCE
        assert np.allclose(grouped.history, alone.history, atol=LOSS_TOLERANCE, rtol=0)
        assert grouped.losses.keys() == alone.losses.keys()
    # the jobs really differ from each other: the group did not hand one image to everyone
    assert len({r.image.tobytes() for r in together}) == 3


def test_a_group_is_reproducible_bit_for_bit(tiny_clip, tiny_vqgan):
    jobs, spaces = _jobs(steps=3)
    a = run_many(jobs, tiny_clip, tiny_vqgan, spaces)
    b = run_many(jobs, tiny_clip, tiny_vqgan, spaces)
    assert [r.image.tobytes() for r in a] == [r.image.tobytes() for r in b]
    assert [r.history for r in a] == [r.history for r in b]


def test_one_adam_over_stacked_latents_equals_one_adam_per_latent():
    gen = torch.Generator().manual_seed(0)
    latents = [torch.randn(4, 3, 3, generator=gen) for _ in range(3)]
    grads = [[torch.randn(4, 3, 3, generator=gen) for _ in range(3)] for _ in range(5)]
    separate = [x.clone().requires_grad_(True) for x in latents]
    stacked = torch.stack(latents).clone().requires_grad_(True)
    opts = [torch.optim.Adam([x], lr=0.1) for x in separate]
    opt = torch.optim.Adam([stacked], lr=0.1)
    for step_grads in grads:
        for x, o, g in zip(separate, opts, step_grads):
            x.grad = g.clone()
            o.step()
        stacked.grad = torch.stack(step_grads)
        opt.step()
    assert torch.equal(stacked.detach(), torch.stack([x.detach() for x in separate]))


def test_incompatible_jobs_are_refused_with_the_fields_that_differ(tiny_clip, tiny_vqgan):
    jobs, spaces = _jobs(steps=1)
    jobs[1] = dataclasses.replace(jobs[1], cutn=8)
    with pytest.raises(VqclipError, match="cutn"):
        run_many(jobs, tiny_clip, tiny_vqgan, spaces)


def test_a_job_turning_non_finite_stops_alone_and_the_others_are_untouched(tiny_clip, tiny_vqgan):
    jobs, spaces = _jobs(steps=5)
    spaces[1] = _NaNAfter(3)  # its text target, then steps 1 and 2 are finite; step 3 is not
    together = run_many(jobs, tiny_clip, tiny_vqgan, spaces)
    assert together[1].status == "nonfinite" and together[1].steps_done == 2 and "step 3" in together[1].message
    for i in (0, 2):
        alone = run(jobs[i], tiny_clip, tiny_vqgan, spaces[i])
        assert together[i].status == "finished" and together[i].steps_done == 5
        assert np.abs(_pixels(together[i].image) - _pixels(alone.image)).mean() <= IMAGE_MEAN_TOLERANCE


def test_callbacks_come_every_report_every_steps_for_each_job(tiny_clip, tiny_vqgan):
    jobs, spaces = _jobs(steps=7)
    seen = []
    run_many(jobs, tiny_clip, tiny_vqgan, spaces, lambda i, info: seen.append((i, info.step)), report_every=3)
    assert seen == [(i, s) for s in (3, 6, 7) for i in range(3)]


def test_a_callback_interrupt_stops_the_whole_group_and_keeps_images(tiny_clip, tiny_vqgan):
    jobs, spaces = _jobs(steps=9)

    def stop(i, info):
        if info.step == 2:
            raise KeyboardInterrupt

    results = run_many(jobs, tiny_clip, tiny_vqgan, spaces, stop)
    assert all(r.status == "interrupted" and r.steps_done == 2 and r.image.size == (32, 32) for r in results)


def _op_counts(cutn: int, images: int = 1) -> int:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    make = MakeCutouts((24, 24), cutn, 1.0, ("affine", "perspective", "jitter", "erasing", "sharpness",
                                             "grayscale", "flip"), 0.1)
    x = torch.rand(images, 3, 40, 48, requires_grad=True)
    gens = [torch.Generator().manual_seed(i) for i in range(images)]
    make(x, gens)  # constants are made (and cached) on the first call
    with Count():
        out = make(x, gens)
        out.sum().backward()
    assert out.shape == (images * cutn, 3, 24, 24)
    return Count.calls


def test_cutouts_cost_the_same_number_of_kernels_whatever_cutn_is():
    assert _op_counts(2) == _op_counts(32)
    # a group adds one random draw per job and step, not per cutout
    assert _op_counts(32, images=3) - _op_counts(32, images=1) == _op_counts(2, images=3) - _op_counts(2, images=1)


def test_cutouts_are_fixed_by_the_seed_and_stay_in_the_crop():
    make = MakeCutouts((16, 16), 6, 1.0, (), 0.0)
    image = torch.zeros(1, 3, 32, 32)
    image[:, :, :, 16:] = 1.0  # left half black, right half white
    a = make(image, [torch.Generator().manual_seed(3)])
    b = make(image, [torch.Generator().manual_seed(3)])
    c = make(image, [torch.Generator().manual_seed(4)])
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1  # crops resample inside the image: no padding, no overshoot


def test_a_whole_image_cutout_is_the_image_and_a_downscale_averages():
    from torchvision.transforms.functional import resize

    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    # cutouts as large as the image: the only crop is the whole image, resampled 1:1
    same = MakeCutouts((32, 32), 1, 1.0, (), 0.0)
    assert torch.allclose(same(image, [torch.Generator().manual_seed(0)]), image, atol=1e-5)
    # the largest crop (u ** cut_pow ~ 1) of a 48 px side down to 16 px averages 3x3 blocks (area sampling);
    # an unfiltered bilinear resize would pick one pixel of each block and alias
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    largest = MakeCutouts((16, 16), 1, 1e-9, (), 0.0)
    pooled = torch.nn.functional.avg_pool2d(image, 3)
    assert torch.allclose(largest(image, [torch.Generator().manual_seed(2)]), pooled, atol=1e-5)
    assert not torch.allclose(resize(image, [16, 16], antialias=False), pooled, atol=1e-3)


def test_the_loss_history_stays_on_the_device_between_read_backs(tiny_clip, tiny_vqgan, monkeypatch):
    """With report_every = N the loop reads losses back only every N steps (one synchronisation each)."""
    import vqclip.generation.loop as loop

    reads = []
    original = loop._Tracker.read_back

    def counting(self):
        reads.append(self.completed)
        return original(self)

    monkeypatch.setattr(loop._Tracker, "read_back", counting)
    jobs, spaces = _jobs(steps=10)
    results = run_many(jobs, tiny_clip, tiny_vqgan, spaces, report_every=4)
    assert reads == [4, 8, 10, 10]  # every 4 steps, the last step, and the final collection
    assert all(len(r.history) == 10 and all(math.isfinite(v) for v in r.history) for r in results)


def test_kill_9_in_a_group_loses_only_that_groups_unfinished_jobs(tiny_model_flags, tmp_path):
    """A batch killed (SIGKILL) while its second group runs keeps the first group's images and manifest lines;
    the same command then finishes the rest without recomputing anything."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from vqclip.cli import main
    from vqclip.io import read_jsonl

    prompts = tmp_path / "p.txt"
    prompts.write_text("an apple\na pear\na plum\na fig\n")
    out = tmp_path / "out"
    args = ["batch", str(prompts), "--out", str(out), "--group-size", "2", "--size", "32", "32", "--seed", "0",
            "--steps", "150"] + tiny_model_flags
    proc = subprocess.Popen([sys.executable, "-m", "vqclip"] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if len(read_jsonl(out / "manifest.jsonl")) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    lines = read_jsonl(out / "manifest.jsonl")
    assert len(lines) == 2, "the first group should have finished before the kill and the second not"
    first = {line["id"] for line in lines}
    assert all(line["status"] == "ok" and line["group_size"] == 2 for line in lines)
    records = {p.parent.relative_to(out).as_posix() for p in out.rglob("run.json")}
    assert records == first  # nothing of the killed group was written
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("image.png")}
    assert main(args) == 0
    lines = read_jsonl(out / "manifest.jsonl")
    assert sorted(line["id"] for line in lines) == sorted({line["id"] for line in lines}) and len(lines) == 4
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # the first group was not recomputed


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5"])
def test_a_bad_group_size_is_one_line_naming_the_flag(tiny_model_flags, tmp_path, capsys, value):
    from vqclip.cli import main

    (tmp_path / "p.txt").write_text("an apple\n")
    code = main(["batch", str(tmp_path / "p.txt"), "--out", str(tmp_path / "out"), "--group-size", value]
                + tiny_model_flags)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--group-size" in err and "auto" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_generate_many_returns_prompts_x_seeds_x_spaces_in_order(tiny_clip, tiny_vqgan):
    import vqclip
    from vqclip.generation.api import Models

    models = Models(tiny_clip, tiny_vqgan)
    seen = set()
    results = vqclip.generate_many(["an apple", "a pear"], seeds=[0, 1], spaces=["clip"], models=models,
                                   group_size=3, size=(32, 32), steps=2, cutn=2,
                                   callback=lambda i, info: seen.add(i))
    assert [(r.settings.prompts[0].text, r.seed) for r in results] == [("an apple", 0), ("an apple", 1),
                                                                        ("a pear", 0), ("a pear", 1)]
    assert [r.group_size for r in results] == [3, 3, 3, 1] and seen == {0, 1, 2, 3}
    alone = run(results[3].settings, tiny_clip, tiny_vqgan, Space("clip"))
    assert np.abs(_pixels(alone.image) - _pixels(results[3].image)).mean() <= IMAGE_MEAN_TOLERANCE


def test_auto_group_size_fills_free_gpu_memory_and_is_one_on_the_cpu(monkeypatch):
    from vqclip.generation.groups import AUTO_GROUP_MAX, auto_group_size
    from vqclip.generation.memory import estimate_run_memory

    assert auto_group_size(torch.device("cpu"), (256, 256), 32) == 1
    per_job = estimate_run_memory((256, 256), 32).total
    free = {"bytes": 10 * per_job}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 2 * free["bytes"]))
    cuda = torch.device("cuda")
    assert auto_group_size(cuda, (256, 256), 32) == 7  # 70 % of ten jobs' worth
    assert auto_group_size(cuda, (512, 512), 32) < 7  # larger images: fewer at once
    free["bytes"] = 10**15
    assert auto_group_size(cuda, (256, 256), 32) == AUTO_GROUP_MAX
    free["bytes"] = 1
    assert auto_group_size(cuda, (256, 256), 32) == 1  # never zero


def test_a_grouped_batch_with_progress_bars_names_the_group(tiny_model_flags, tmp_path, capsys):
    from vqclip.cli import main

    (tmp_path / "p.txt").write_text("an apple\na pear\na plum\n")
    flags = [f for f in tiny_model_flags if f != "--quiet"]
    assert main(["batch", str(tmp_path / "p.txt"), "--out", str(tmp_path / "out"), "--group-size", "2",
                 "--size", "32", "32", "--steps", "3"] + flags) == 0
    err = capsys.readouterr().err
    assert "an-apple/clip-s0 +1" in err  # the bar of the first group names its first job and how many more
    assert "3 generated" in err


def test_a_group_that_fails_as_a_whole_is_retried_one_job_at_a_time(tiny_model_flags, tmp_path, monkeypatch,
                                                                     capsys):
    import vqclip.generation.loop as loop
    from vqclip.cli import main
    from vqclip.io import read_jsonl

    real = loop.run_many
    sizes = []

    def fragile(settings, *args, **kwargs):
        sizes.append(len(settings))
        if len(settings) > 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(settings, *args, **kwargs)

    monkeypatch.setattr(loop, "run_many", fragile)
    (tmp_path / "p.txt").write_text("an apple\na pear\n")
    flags = [f for f in tiny_model_flags if f != "--quiet"]
    assert main(["batch", str(tmp_path / "p.txt"), "--out", str(tmp_path / "out"), "--group-size", "2",
                 "--size", "32", "32", "--steps", "2"] + flags) == 0
    assert sizes == [2, 1, 1]
    lines = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    assert [line["status"] for line in lines] == ["ok", "ok"] and all(line["group_size"] == 1 for line in lines)
    assert "2 generated" in capsys.readouterr().err
