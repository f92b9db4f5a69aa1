"""Batch runs: resume after a crash, failures, Ctrl-C, shards; `vqclip batch` + `vqclip grid` on tiny models."""

import json
import os
from collections import Counter

import pytest
from PIL import Image

from test_batch_support import FakeModels, fake_generate, job_color, make_batch, run_fake
from vqclip.batch import shard_jobs
from vqclip.batch.shard import parse_shard
from vqclip.cli import main
from vqclip.io import read_jsonl

MANIFEST_KEYS = {"id", "prompt", "space", "seed", "image", "record", "status", "error", "word_type", "loss", "losses",
                 "seconds"}


class Crash(BaseException):
    """The process dies here (not an error the batch could record)."""


def counting(generate=fake_generate, crash_at=None, fail=None):
    """A generator that counts its calls, dies at call `crash_at` and raises for jobs `fail` picks."""
    calls = []

    def gen(settings, clip, vqgan, space, callback=None):
        calls.append((settings.prompts[0].text, space.name, settings.seed))
        if crash_at is not None and len(calls) == crash_at:
            raise Crash()
        if fail and fail(settings.prompts[0].text, space.name, settings.seed):
            raise RuntimeError("CUDA out of memory (simulated)")
        return generate(settings, clip, vqgan, space, callback)

    gen.calls = calls
    return gen


def ok_lines(out):
    return [line for line in read_jsonl(out / "manifest.jsonl") if line["status"] == "ok"]


def stamp(path):
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def test_resume_after_a_crash_finishes_exactly_the_missing_jobs(tmp_path, monkeypatch):
    import vqclip.batch.runner as runner

    spec, base = make_batch(tmp_path)  # 2 prompts x 2 seeds x 3 spaces
    out = tmp_path / "out"
    assert len(spec.jobs) == 12
    real_append = runner.append_manifest
    appended = []

    def dying_append(folder, line):  # job 3 writes its image and run.json, then the process dies
        appended.append(line["id"])
        if len(appended) == 4:
            raise Crash()
        real_append(folder, line)

    monkeypatch.setattr(runner, "append_manifest", dying_append)
    with pytest.raises(Crash):
        run_fake(spec, base, out)
    monkeypatch.setattr(runner, "append_manifest", real_append)
    with open(out / "manifest.jsonl", "ab") as f:  # and a torn half line at the end
        f.write(b'{"id": "pear/clip-s0", "sta')
    half = out / spec.jobs[4].folder  # job 4: image written, run.json not yet
    half.mkdir(parents=True)
    Image.new("RGB", (8, 8), "black").save(half / "image.png")
    finished = {j.id: stamp(out / j.folder / "image.png") for j in spec.jobs[:4]}

    gen = counting()
    summary = run_fake(spec, base, out, generate=gen)
    assert gen.calls == [(j.item.prompt, j.space, j.seed) for j in spec.jobs[4:]]
    assert (summary.done_before, summary.recovered, summary.ok, summary.failed) == (3, 1, 8, 0)
    assert {j.id: stamp(out / j.folder / "image.png") for j in spec.jobs[:4]} == finished  # never rewritten
    ids = Counter(line["id"] for line in ok_lines(out))
    assert set(ids) == {j.id for j in spec.jobs} and set(ids.values()) == {1}
    for job in spec.jobs:
        pixel = Image.open(out / job.folder / "image.png").getpixel((0, 0))
        assert pixel == job_color(job.item.prompt, job.space, job.seed)

    gen = counting()
    summary = run_fake(spec, base, out, generate=gen)
    assert gen.calls == [] and summary.done_before == 12


def test_manifest_lines_and_job_folders_follow_the_contract(tmp_path):
    spec, base = make_batch(tmp_path, prompt_text="#: word_type: nonsense\nblick\n", spaces=("clip", "forget"),
                            seeds=(3,))
    out = tmp_path / "out"
    run_fake(spec, base, out)
    lines = ok_lines(out)
    assert len(lines) == 2 and all(MANIFEST_KEYS <= set(line) for line in lines)
    line = lines[1]
    assert (line["id"], line["item"], line["prompt"], line["space"], line["seed"], line["word_type"]) == \
        ("blick/forget-s3", "blick", "blick", "forget", 3, "nonsense")
    assert line["image"] == "blick/forget-s3/image.png" and line["record"] == "blick/forget-s3/run.json"
    record = json.loads((out / line["record"]).read_text())
    assert record["status"] == "finished" and record["seed"] == 3 and record["space_name"] == "forget"
    assert record["batch"]["fingerprint"] == line["fingerprint"] == spec.job_fp(spec.jobs[1])
    assert record["word_type"] == "nonsense" and record["prompt"] == "blick"
    batch = json.loads((out / "batch.json").read_text())
    assert [j["id"] for j in batch["jobs"]] == ["blick/clip-s3", "blick/forget-s3"]


def test_a_failing_job_is_recorded_and_the_batch_goes_on(tmp_path):
    spec, base = make_batch(tmp_path, spaces=("clip", "learn"), seeds=(0,))
    out = tmp_path / "out"

    def nonfinite_for_pear(settings, clip, vqgan, space, callback=None):
        status = "nonfinite" if settings.prompts[0].text == "pear" and space.name == "clip" else "finished"
        return fake_generate(settings, clip, vqgan, space, callback, status)

    gen = counting(nonfinite_for_pear, fail=lambda p, s, seed: p == "apple" and s == "learn")
    summary = run_fake(spec, base, out, generate=gen)
    assert len(gen.calls) == 4 and (summary.ok, summary.failed) == (2, 2)
    lines = {line["id"]: line for line in read_jsonl(out / "manifest.jsonl")}
    assert lines["apple/learn-s0"]["status"] == "failed" and "out of memory" in lines["apple/learn-s0"]["error"]
    assert lines["apple/learn-s0"]["image"] is None
    assert lines["pear/clip-s0"]["status"] == "failed" and lines["pear/clip-s0"]["error"].startswith("nonfinite")
    assert json.loads((out / "pear/clip-s0/run.json").read_text())["status"] == "nonfinite"
    assert {i for i, line in lines.items() if line["status"] == "ok"} == {"apple/clip-s0", "pear/learn-s0"}

    gen = counting()
    assert run_fake(spec, base, out, generate=gen, skip_failed=True).skipped_failed == 2 and gen.calls == []
    summary = run_fake(spec, base, out, generate=gen)  # failed jobs are unfinished: retried
    assert sorted(gen.calls) == [("apple", "learn", 0), ("pear", "clip", 0)] and summary.ok == 2


@pytest.mark.parametrize("how", ["status", "exception"])
def test_ctrl_c_stops_after_recording_what_finished(tmp_path, how):
    spec, base = make_batch(tmp_path, spaces=("clip",), seeds=(0, 1))
    out = tmp_path / "out"
    calls = []

    def interrupted_third(settings, clip, vqgan, space, callback=None):
        calls.append(1)
        if len(calls) == 3:
            if how == "exception":
                raise KeyboardInterrupt
            return fake_generate(settings, clip, vqgan, space, callback, "interrupted")
        return fake_generate(settings, clip, vqgan, space, callback)

    summary = run_fake(spec, base, out, generate=interrupted_third)
    assert summary.interrupted and summary.ok == 2 and len(calls) == 3
    assert len(ok_lines(out)) == 2 and not (out / spec.jobs[2].folder).exists()
    assert run_fake(spec, base, out).ok == 2  # the rest, on resume


def test_shards_union_equals_a_single_process_run(tmp_path):
    spec, base = make_batch(tmp_path, prompt_text="apple\npear\nfig\n", spaces=("clip", "learn"), seeds=(0, 1))
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    run_fake(spec, base, single)
    for i in range(3):  # three processes (or machines) sharing the folder
        run_fake(spec, base, sharded, jobs=shard_jobs(spec.jobs, parse_shard(f"{i}/3")))
    a, b = ok_lines(single), ok_lines(sharded)
    assert Counter(line["id"] for line in b) == Counter(line["id"] for line in a) == {j.id: 1 for j in spec.jobs}
    for job in spec.jobs:
        assert (single / job.folder / "image.png").read_bytes() == (sharded / job.folder / "image.png").read_bytes()


# ---------------------------------------------------------------------------------------------------------------
# The CLI on tiny models.

@pytest.fixture()
def model_args(tiny_model_flags):
    return tiny_model_flags + ["--size", "16", "16", "--steps", "1"]


@pytest.fixture()
def cached_projections(tiny_clip):
    """learn and forget projections where `vqclip train` would leave them for the tiny CLIP."""
    import torch

    from vqclip.projections import projection_path, save_projection

    for seed, space in enumerate(("learn", "forget")):
        q, _ = torch.linalg.qr(torch.randn(32, 8, generator=torch.Generator().manual_seed(seed)))
        save_projection(projection_path(space, tiny_clip.identity), q.T, space, tiny_clip.identity)


def test_batch_then_grid_on_tiny_models(model_args, cached_projections, tmp_path, capsys):
    from vqclip.grid import GridStyle, arrange, collect, grid_title, layout_page, paginate

    prompts = tmp_path / "words.txt"
    prompts.write_text("# two words\n#: word_type: nonsense\nblick\n#: word_type: real\napple:1 | text:-0.5\n")
    out = tmp_path / "batch"
    cmd = ["batch", str(prompts), "--spaces", "clip,learn,forget", "--seeds", "0,1", "--out", str(out)] + model_args
    assert main(cmd) == 0
    assert capsys.readouterr().out.strip() == str(out)
    lines = ok_lines(out)
    assert len(lines) == 12 and {(line["space"], line["seed"]) for line in lines} == \
        {(s, seed) for s in ("clip", "learn", "forget") for seed in (0, 1)}
    assert {line["word_type"] for line in lines if line["prompt"] == "blick"} == {"nonsense"}
    record = json.loads((out / "apple-1-text-0-5/forget-s1/run.json").read_text())
    assert record["space"]["space"] == "forget" and record["space"]["dim"] == 8 and record["steps_done"] == 1
    images = {line["image"]: stamp(out / line["image"]) for line in lines}

    assert main(cmd) == 0  # resume: nothing left, nothing rewritten
    assert len(read_jsonl(out / "manifest.jsonl")) == 12
    assert {p: stamp(out / p) for p in images} == images
    assert "12 already finished" in capsys.readouterr().err

    assert main(["grid", str(out), "--html", "--thumb", "48"]) == 0
    assert capsys.readouterr().out.split() == [str(out / "grid.png"), str(out / "index.html")]
    found = collect(out)
    arr = arrange(found.cells)
    assert arr.col_fields == ["space", "seed"] and len(arr.rows) == 2 and len(arr.cols) == 6
    page = layout_page(paginate(arr, GridStyle(thumb=48))[0], arr, GridStyle(thumb=48), grid_title(found, arr))
    assert Image.open(out / "grid.png").size == page.size
    from xml.etree import ElementTree

    tree = ElementTree.fromstring((out / "index.html").read_text())
    srcs = {img.get("src") for img in tree.iter("{http://www.w3.org/1999/xhtml}img")}
    assert srcs == set(images)

    rc = main(cmd[:-len(model_args)] + model_args + ["--steps", "2"])
    assert rc == 2 and "different settings (steps: 1 -> 2)" in capsys.readouterr().err


def test_torchrun_environment_picks_the_share(tmp_path, monkeypatch, capsys):
    (tmp_path / "p.txt").write_text("apple\npear\nfig\n")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert main(["batch", str(tmp_path / "p.txt"), "--seeds", "0,1", "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    assert "6 jobs; share 1/2: 3 jobs" in capsys.readouterr().out


@pytest.mark.slow
def test_torchrun_two_processes_run_every_job_once(tiny_clip_id, tmp_path):
    """The documented `torchrun --standalone --nproc_per_node=N -m vqclip.cli batch ...`, on CPU."""
    import shutil
    import subprocess
    import sys

    from vqclip.models.tiny import write_taming_files

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    config, ckpt = write_taming_files(tmp_path / "vqgan")
    (tmp_path / "p.txt").write_text("apple\npear\nfig\n")
    out = tmp_path / "out"
    subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "vqclip.cli", "batch",
                    str(tmp_path / "p.txt"), "--seeds", "0,1", "--out", str(out), "--clip", tiny_clip_id,
                    "--vqgan-config", str(config), "--vqgan-checkpoint", str(ckpt), "--device", "cpu",
                    "--size", "16", "16", "--cutn", "2", "--steps", "1", "--quiet"], check=True, timeout=600)
    lines = read_jsonl(out / "manifest.jsonl")
    assert Counter(line["id"] for line in lines) == {f"{p}/clip-s{s}": 1 for p in ("apple", "pear", "fig")
                                                    for s in (0, 1)}
    assert Counter(line["shard"] for line in lines) == {"0/2": 3, "1/2": 3}


@pytest.mark.parametrize("files, extra, match", [
    ({"p.csv": "prompt,colour\napple,red\n"}, [], "p.csv:1: unknown field 'colour'"),
    ({"p.txt": "apple\n"}, ["--seeds", "0,x"], "--seeds"),
    ({"p.yaml": "- {prompt: a, id: one}\n- {prompt: b, id: one}\n"}, [], "p.yaml:2: id: duplicate id 'one'"),
    ({}, [], "missing.txt: the prompt file does not exist"),
    ({"p.txt": "apple\n"}, ["--seed", "1", "--seeds", "2"], "--seeds or --seed"),
    ({"p.txt": "apple\n"}, ["--projection-learn", "x.safetensors"], "learn is not in --spaces"),
    ({"p.txt": "apple\n"}, ["--spaces", "clip,spell"], "Valid choices"),
    ({"p.txt": "apple\n"}, ["--shard", "2/2"], "--shard"),
    ({"p.csv": "prompt,steps\napple,-3\n"}, [], "p.csv:2: steps: must be 0 or more"),
])
def test_bad_input_is_a_clear_error_and_creates_nothing(tmp_path, capsys, files, extra, match):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    paths = [str(tmp_path / n) for n in files] or [str(tmp_path / "missing.txt")]
    out = tmp_path / "out"
    assert main(["batch", *paths, "--out", str(out), "--device", "cpu"] + extra) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not out.exists()


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "p.txt").write_text("apple\npear\nfig\n")
    out = tmp_path / "out"
    assert main(["batch", str(tmp_path / "p.txt"), "--spaces", "clip,forget", "--seeds", "0-2", "--shard", "1/4",
                 "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "18 jobs" in text and "share 1/4: 5 jobs, 0 finished, 5 to run" in text and not out.exists()


def test_grid_of_a_folder_without_runs_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["grid", str(tmp_path / "empty")]) == 2
    assert "holds no runs" in capsys.readouterr().err


def test_python_dash_m_entry_points_exist():
    import importlib.util

    assert importlib.util.find_spec("vqclip.__main__") and importlib.util.find_spec("vqclip.cli.__main__")
    FakeModels()  # the stand-in is importable for other tests


def test_missing_projection_hint_names_the_batch_flag(model_args, tmp_path, capsys):
    (tmp_path / "p.txt").write_text("apple\n")
    rc = main(["batch", str(tmp_path / "p.txt"), "--spaces", "clip,learn", "--out", str(tmp_path / "out")]
              + model_args)
    assert rc == 2
    err = capsys.readouterr().err
    assert "--projection-learn PATH" in err and "--projection PATH" not in err
    assert "vqclip train --space learn --clip local-dir:" in err


@pytest.mark.parametrize("text, match", [("size: 40\n", "size"), ("steps: abc\n", "steps"),
                                         ("spaces: [clip]\n", "spaces")])
def test_batch_config_values_are_checked_like_flags(tmp_path, capsys, text, match):
    (tmp_path / "p.txt").write_text("apple\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    rc = main(["batch", str(tmp_path / "p.txt"), "--config", str(cfg), "--out", str(tmp_path / "out"), "--dry-run"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"--config {cfg}: {match}" in err and "Traceback" not in err


@pytest.mark.parametrize("extra", [["--seed", "-1"], ["--seed", str(2**63)], ["--seeds", f"0,{2**64}"]])
def test_batch_seed_out_of_range_is_refused(tmp_path, capsys, extra):
    (tmp_path / "p.txt").write_text("apple\n")
    assert main(["batch", str(tmp_path / "p.txt"), "--out", str(tmp_path / "out"), "--dry-run"] + extra) == 2
    err = capsys.readouterr().err
    assert "--seed" in err and "Traceback" not in err
