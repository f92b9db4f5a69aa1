"""Issue 13, part A: nothing of the user's is deleted, no traceback reaches a user, outputs fail cleanly."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import vqclip.cli.batch  # noqa: F401 - imported before any test patches names it copies from cli.generate
from vqclip.cli import main
from vqclip.errors import describe_exception, one_line


# ---------------------------------------------------------------------------------------------------------------
# Item 3 and 6: the entry point's last line of defence; foreign messages quoted on one line.

def test_an_unexpected_exception_is_one_line_with_a_distinct_exit_code(monkeypatch, capsys):
    import vqclip.cli.models as models

    def broken(args):
        raise KeyError("\x1b[31mboom\x1b[0m\nsecond line")

    monkeypatch.setattr(models, "cmd_list", broken)
    assert main(["models", "list"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "KeyError" in err and "boom" in err and "\x1b" not in err and "run with --debug for the traceback" in err
    with pytest.raises(KeyError):
        main(["models", "list", "--debug"])
    monkeypatch.setenv("VQCLIP_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["models", "list"])


def test_an_os_error_names_the_file_and_the_fix(monkeypatch, capsys):
    import vqclip.cli.models as models

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/image.png")

    monkeypatch.setattr(models, "cmd_list", full)
    assert main(["models", "list"]) == 74
    err = capsys.readouterr().err.strip()
    assert err.startswith("vqclip models: error: /data/out/image.png: the disk is full") and "Free some space" in err
    assert "\n" not in err


def test_foreign_messages_are_quoted_on_one_line_without_escapes():
    text = "\x1b[1;31mCUDA out of memory.\x1b[0m Tried to allocate 2.00 GiB\n\tGPU 0; \x1b]8;;http://x\x07link\x1b]8;;\x07"
    assert one_line(text) == "CUDA out of memory. Tried to allocate 2.00 GiB GPU 0; link"
    assert describe_exception(RuntimeError("")) == "RuntimeError"  # an empty message still says something
    assert len(one_line("x" * 5000, 100)) == 100
    from vqclip.batch.runner import _error_text

    assert _error_text(RuntimeError("a\n\x1b[31mb\x1b[0m")) == "RuntimeError: a b"


# ---------------------------------------------------------------------------------------------------------------
# Shared fixtures: tiny models, a snapshot of a folder tree, a read-only and a full file system.

@pytest.fixture()
def model_args(tiny_model_flags):
    return tiny_model_flags + ["--size", "32", "32"]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its content (links as their target)."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = b"->" + os.readlink(p).encode()
        elif p.is_file():
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.fixture()
def readonly_dir(tmp_path):
    """A folder nobody can write to: a read-only tmpfs as root, else a chmod 555 folder."""
    path = tmp_path / "ro"
    if _mount_tmpfs(path, "ro,size=1m"):
        yield path
        subprocess.run(["umount", str(path)], check=False)
        return
    if os.geteuid() == 0:
        pytest.skip("root without mount: no way to make a folder read-only")
    path.chmod(0o555)
    yield path
    path.chmod(0o755)


@pytest.fixture()
def small_disk(tmp_path):
    """A 256 KiB file system (tmpfs), to fill up; skipped where mount is not allowed."""
    path = tmp_path / "small"
    if not _mount_tmpfs(path, "size=256k"):
        pytest.skip("mounting a small tmpfs needs root")
    yield path
    subprocess.run(["umount", str(path)], check=False)


# ---------------------------------------------------------------------------------------------------------------
# Item 1: generate --overwrite replaces a vqclip run, never a user's folder.

def test_overwrite_refuses_a_folder_that_is_not_a_run_and_deletes_nothing(model_args, tmp_path, capsys):
    out = tmp_path / "holiday"
    (out / "frames").mkdir(parents=True)
    (out / "frames" / "000010.png").write_bytes(b"my frame")
    (out / "frames" / "beach.jpg").write_bytes(b"my photo")
    (out / "video.mp4").write_bytes(b"my film")
    before = snapshot(tmp_path / "holiday")
    rc = main(["generate", "apple", "--steps", "1", "--seed", "1", "--out", str(out), "--overwrite"] + model_args)
    err = capsys.readouterr().err
    assert rc == 2 and "replaces only a vqclip run" in err and "Traceback" not in err
    assert snapshot(out) == before


def test_overwrite_of_a_run_removes_only_vqclips_own_frames_and_video(model_args, tmp_path):
    out = tmp_path / "run"
    assert main(["generate", "apple", "--steps", "2", "--seed", "1", "--out", str(out), "--save-every", "1",
                 "--video", "gif"] + model_args) == 0
    assert (out / "frames" / "000002.png").is_file() and (out / "video.gif").is_file()
    (out / "frames" / "notes.txt").write_text("mine")
    (out / "video.txt").write_text("mine too")
    assert main(["generate", "pear", "--steps", "1", "--seed", "2", "--out", str(out), "--overwrite"]
                + model_args) == 0
    assert not (out / "frames" / "000002.png").exists() and not (out / "video.gif").exists()
    assert (out / "frames" / "notes.txt").read_text() == "mine" and (out / "video.txt").read_text() == "mine too"
    assert json.loads((out / "run.json").read_text())["prompt"] == "pear"


# ---------------------------------------------------------------------------------------------------------------
# Item 4: a read-only output is refused before any work; a short manifest write is an error.

def test_append_jsonl_reports_a_short_write(tmp_path, monkeypatch):
    from vqclip import io

    path = tmp_path / "manifest.jsonl"
    real_write = os.write
    monkeypatch.setattr(io.os, "write", lambda fd, data: real_write(fd, data[: len(data) // 2]))
    with pytest.raises(OSError) as caught:
        io.append_jsonl(path, {"id": "a", "status": "ok"})
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    monkeypatch.undo()
    assert io.read_jsonl(path) == []  # the torn half line is never read as a record


def test_append_jsonl_on_a_full_disk_names_the_file(small_disk):
    from vqclip.io import append_jsonl

    (small_disk / "filler").write_bytes(b"\0" * (256 * 1024 - 4096 * 2))
    path = small_disk / "manifest.jsonl"
    with pytest.raises(OSError) as caught:
        for i in range(1000):
            append_jsonl(path, {"id": i, "pad": "x" * 500})
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)


def test_generate_into_a_read_only_folder_fails_before_loading_models(model_args, readonly_dir, capsys, monkeypatch):
    import vqclip.cli.generate as generate

    monkeypatch.setattr(generate, "load_models_from_args", lambda *a, **k: pytest.fail("models were loaded"))
    rc = main(["generate", "apple", "--steps", "1", "--out", str(readonly_dir / "run")] + model_args)
    err = capsys.readouterr().err
    assert rc == 74 and "cannot write" in err and "--out" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------------
# Item 14: workers on one folder claim jobs atomically; temporaries of killed writes are cleaned on resume.

WORKER = """
import json, os, sys, time
sys.path.insert(0, {tests!r})
from test_batch_support import fake_generate, make_batch, run_fake
from pathlib import Path

tmp = Path({tmp!r})
spec, base = make_batch(tmp)
def slow(settings, clip, vqgan, space, callback=None):
    with open(tmp / f"computed-{{os.getpid()}}.txt", "a") as f:
        f.write(f"{{settings.prompts[0].text}}/{{space.name}}/{{settings.seed}}\\n")
    time.sleep(0.3)
    return fake_generate(settings, clip, vqgan, space, callback)
while not (tmp / "go").exists():
    time.sleep(0.01)
summary = run_fake(spec, base, tmp / "out", generate=slow)
print(json.dumps({{"ok": summary.ok, "busy": summary.busy, "done": summary.done_before}}))
"""


def test_three_workers_on_one_folder_compute_every_job_once(tmp_path):
    from test_batch_support import make_batch
    from vqclip.batch.store import open_batch_dir

    spec, _ = make_batch(tmp_path)
    open_batch_dir(tmp_path / "out", spec.to_record(), "new")
    script = WORKER.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    (tmp_path / "go").touch()
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-2000:] for r in results]
    computed = [line for f in tmp_path.glob("computed-*.txt") for line in f.read_text().split()]
    assert len(computed) == len(spec.jobs) == 12 and len(set(computed)) == 12  # no job computed twice
    from vqclip.io import read_jsonl

    lines = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    assert sorted(line["id"] for line in lines) == sorted(j.id for j in spec.jobs)  # one line per job
    summaries = [json.loads(r[0].strip().splitlines()[-1]) for r in results]
    assert sum(s["ok"] for s in summaries) == 12
    assert not list((tmp_path / "out" / ".claims").glob("*.lock"))  # every claim released


def test_a_stale_claim_is_reclaimed_and_a_live_one_is_respected(tmp_path):
    from vqclip.batch.store import claim_job, claim_path

    folder = tmp_path / "b"
    live = claim_job(folder, "apple/clip-s0")
    assert live is not None and claim_job(folder, "apple/clip-s0") is None  # held by a live process (this one)
    live.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    path = claim_path(folder, "pear/clip-s0")
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "job": "pear/clip-s0"}))
    taken = claim_job(folder, "pear/clip-s0")  # its owner is dead: taken over
    assert taken is not None and json.loads(path.read_text())["pid"] == os.getpid()
    taken.release()
    other = claim_path(folder, "fig/clip-s0")
    other.write_text(json.dumps({"host": "another-host", "pid": 1, "job": "fig/clip-s0"}))
    assert claim_job(folder, "fig/clip-s0") is None  # another host's fresh claim cannot be checked: respected
    os.utime(other, (0, 0))
    assert claim_job(folder, "fig/clip-s0") is not None  # untouched for longer than STALE_SECONDS: taken over


def test_resume_removes_only_vqclips_own_temporaries(tmp_path):
    from test_batch_support import make_batch, run_fake

    spec, base = make_batch(tmp_path)
    out = tmp_path / "out"
    run_fake(spec, base, out, jobs=spec.jobs[:2])
    job_dir = out / spec.jobs[2].folder
    job_dir.mkdir(parents=True)
    from vqclip.io import host_tag

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    tag = f"vqclip-{host_tag()}-{dead}"  # a killed vqclip process of this host made these
    ours = [job_dir / f".image.png.{tag}-k3j_x9a2.part.png", out / f".run.json.{tag}-abcdefgh.part.json",
            out / f".vqclip-write-test-{host_tag()}-{dead}-a1b2c3d4"]
    theirs = [job_dir / "image.part.png", out / ".notes.txt", out / "my.part.png", out / ".x.short.part.png",
              job_dir / ".image.png.k3j_x9a2.part.png", out / ".vqclip-write-test-a1b2c3d4"]  # not vqclip's names
    for p in ours + theirs:
        p.write_bytes(b"x")
    run_fake(spec, base, out)
    assert not any(p.exists() for p in ours) and all(p.exists() for p in theirs)


# ---------------------------------------------------------------------------------------------------------------
# Item 12: sizes and cutout counts that cannot fit are refused before any model is loaded.

@pytest.mark.parametrize("extra, flag", [(["--size", "100000", "100000"], "--size"),
                                         (["--cutn", "100000000"], "--cutn")])
def test_a_run_that_cannot_fit_in_memory_is_refused_with_the_estimate(model_args, tmp_path, capsys, monkeypatch,
                                                                      extra, flag):
    import vqclip.cli.generate as generate

    monkeypatch.setattr(generate, "load_models_from_args", lambda *a, **k: pytest.fail("models were loaded"))
    rc = main(["generate", "apple", "--steps", "1", "--out", str(tmp_path / "r")] + model_args + extra)
    err = capsys.readouterr().err
    assert rc == 2 and f"error: {flag}: " in err and "needs about" in err and "free" in err
    assert "Traceback" not in err and not (tmp_path / "r").exists()
    (tmp_path / "p.txt").write_text("apple\n")
    rc = main(["batch", str(tmp_path / "p.txt"), "--out", str(tmp_path / "b")] + model_args + extra)
    err = capsys.readouterr().err
    assert rc == 2 and f"error: {flag}: " in err and "needs about" in err and not (tmp_path / "b").exists()


def test_the_memory_estimate_grows_with_size_and_cutn():
    from vqclip.cli.common import estimate_run_bytes

    small, big = sum(estimate_run_bytes((480, 480), 32)), sum(estimate_run_bytes((960, 960), 32))
    assert 0 < small < big and sum(estimate_run_bytes((480, 480), 64)) > small
    assert sum(estimate_run_bytes((480, 480), 32)) < 6 * 2**30  # an ordinary run is never refused on a laptop


def test_the_estimate_counts_the_decoders_attention():
    """Issue 28: taming's middle AttnBlock holds (h*w)**2 floats at the lowest resolution; with a small factor it
    dominates (a factor-4 model at 4000x4000: 10**6 tokens, terabytes)."""
    from vqclip.generation.memory import estimate_run_memory
    from vqclip.models.tiny import TINY_VQGAN_DDCONFIG

    f4 = {**TINY_VQGAN_DDCONFIG, "ch_mult": [1, 2, 2]}
    est = estimate_run_memory((4000, 4000), 1, f4)
    assert est.attention >= (1000 * 1000) ** 2 * 4 and est.attention > 10 * est.decoder
    f16 = estimate_run_memory((256, 256), 1, {**TINY_VQGAN_DDCONFIG, "ch_mult": [1, 1, 2, 2, 2]})
    assert f16.attention < f16.decoder  # 16 x 16 tokens: the feature maps dominate
    assert estimate_run_memory((512, 256), 1, f4).attention > 3 * estimate_run_memory((256, 256), 1, f4).attention


@pytest.mark.parametrize("cmd", ["generate", "animate", "batch"])
def test_4000_pixels_with_a_small_factor_is_refused_before_any_model(tmp_path, capsys, monkeypatch, tiny_clip_id,
                                                                     cmd):
    from vqclip.models.tiny import TINY_VQGAN_DDCONFIG, make_vqgan, write_taming_files

    import vqclip.cli.generate as generate

    monkeypatch.setattr(generate, "load_models_from_args", lambda *a, **k: pytest.fail("models were loaded"))
    config, ckpt = write_taming_files(tmp_path / "vq", make_vqgan({**TINY_VQGAN_DDCONFIG, "ch_mult": [1, 2, 2]}))
    flags = ["--clip", tiny_clip_id, "--vqgan-config", str(config), "--vqgan-checkpoint", str(ckpt), "--device", "cpu",
             "--size", "4000", "4000", "--cutn", "1", "--out", str(tmp_path / "r")]
    (tmp_path / "p.txt").write_text("apple\n")
    head = {"generate": ["generate", "apple"], "animate": ["animate", "apple", "--frames", "2"],
            "batch": ["batch", str(tmp_path / "p.txt")]}[cmd]
    rc = main(head + flags)
    err = capsys.readouterr().err
    assert rc == 2 and "error: --size: " in err and "TiB" in err and "attention" in err and "Lower --size" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------------------------
# Item 13: SIGTERM stops generate and batch like Ctrl-C.

def _wait_for(predicate, proc, seconds=240):
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def test_sigterm_writes_the_current_image_and_an_interrupted_run_json(model_args, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "vqclip", "generate", "apple", "--steps", "100000", "--seed", "1",
                             "--save-every", "1", "--out", str(out)] + model_args,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: (out / "frames" / "000002.png").is_file(), proc), proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "interrupted" and record["steps_done"] >= 2 and (out / "image.png").is_file()


def test_sigterm_stops_a_batch_cleanly_and_releases_its_claim(model_args, tmp_path):
    (tmp_path / "p.txt").write_text("apple\npear\n")
    out = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "vqclip", "batch", str(tmp_path / "p.txt"), "--steps", "100000",
                             "--out", str(out)] + model_args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: any((out / ".claims").glob("*.lock")), proc), proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "Traceback" not in err and "Run the same command again to resume" in err
    assert not list((out / ".claims").glob("*.lock")) and not (out / "manifest.jsonl").exists()


def test_an_interrupt_during_a_lazy_import_still_exits_130(model_args, tmp_path):
    """The test above failed twice in CI with status -2: its SIGTERM landed while the first job imported modules
    that make dataclasses with exec(), and `python -m` then exits by SIGINT although vqclip caught the interrupt.
    Here the interrupt is raised inside exec()'d source on purpose, at the point where the first job starts."""
    (tmp_path / "p.txt").write_text("apple\n")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import vqclip.batch.runner as runner\n"
        "def _interrupted(*args, **kwargs):\n"
        "    exec('raise KeyboardInterrupt')\n"
        "runner._run_group = _interrupted\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "vqclip", "batch", str(tmp_path / "p.txt"), "--steps", "3",
                           "--out", str(tmp_path / "b")] + model_args, capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 130, (proc.returncode, proc.stderr[-2000:])
    assert "Run the same command again to resume" in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# Item 4 (batch): a read-only folder is refused first; a full disk stops the batch and keeps finished jobs.

def test_batch_into_a_read_only_folder_fails_before_loading_models(model_args, readonly_dir, tmp_path, capsys,
                                                                   monkeypatch):
    import vqclip.cli.batch as batch

    monkeypatch.setattr(batch, "load_models_from_args", lambda *a, **k: pytest.fail("models were loaded"))
    (tmp_path / "p.txt").write_text("apple\n")
    rc = main(["batch", str(tmp_path / "p.txt"), "--out", str(readonly_dir / "b")] + model_args)
    err = capsys.readouterr().err
    assert rc == 74 and "cannot write" in err and "Traceback" not in err


def test_a_full_disk_stops_the_batch_and_keeps_finished_jobs(tmp_path, monkeypatch):
    import vqclip.batch.runner as runner
    from test_batch_support import make_batch, run_fake

    spec, base = make_batch(tmp_path)
    real = runner.write_run
    calls = []

    def filling(folder, result, record):
        calls.append(folder)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / "image.png"))
        return real(folder, result, record)

    monkeypatch.setattr(runner, "write_run", filling)
    out = tmp_path / "out"
    summary = run_fake(spec, base, out)
    assert summary.ok == 2 and len(calls) == 3 and "the disk is full" in summary.stopped
    from vqclip.io import read_jsonl

    assert [line["status"] for line in read_jsonl(out / "manifest.jsonl")] == ["ok", "ok"]  # no "failed" lines
    assert not list((out / ".claims").glob("*.lock"))


def test_a_really_full_disk_ends_batch_with_one_line_and_keeps_images(model_args, small_disk, tmp_path, capsys):
    (tmp_path / "p.txt").write_text("".join(f"word{i}\n" for i in range(12)))
    out = small_disk / "b"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (256 * 1024 - 48 * 1024))
    rc = main(["batch", str(tmp_path / "p.txt"), "--steps", "1", "--out", str(out)] + model_args)
    err = capsys.readouterr().err
    assert rc == 74 and "Traceback" not in err and "the disk is full" in err and "are kept" in err
    from vqclip.io import read_jsonl

    for line in read_jsonl(out / "manifest.jsonl"):
        assert line["status"] == "ok" and (out / line["image"]).is_file()


# ---------------------------------------------------------------------------------------------------------------
# Items 2, 10 and 15: grids replace only their own pages, stay inside the folder, and draw Hebrew and Arabic.

@pytest.fixture()
def batch_folder(tmp_path):
    from test_batch_support import make_batch, run_fake

    spec, base = make_batch(tmp_path, prompt_text="apple\nשלום\nمرحبا\n", spaces=("clip",), seeds=(0,), size=(16, 16))
    out = tmp_path / "batch"
    run_fake(spec, base, out)
    return out


def test_grid_keeps_a_users_files_beside_its_output(batch_folder, tmp_path, capsys):
    pics = tmp_path / "pics"
    pics.mkdir()
    mine = {name: f"user {name}".encode() for name in ("grid.png", "grid-001.png", "grid-002.png", "index.html")}
    for name, data in mine.items():
        (pics / name).write_bytes(data)
    rc = main(["grid", str(batch_folder), "--out-file", str(pics / "grid.png"), "--html", str(pics / "index.html")])
    err = capsys.readouterr().err
    assert rc == 2 and "--overwrite" in err and "Traceback" not in err
    assert snapshot(pics) == mine
    rc = main(["grid", str(batch_folder), "--out-file", str(pics / "grid.png"), "--max-rows", "1"])  # 3 pages
    assert rc == 2 and snapshot(pics) == mine
    # with --overwrite the named pages are replaced; a user's file the grid does not need is still never removed
    (pics / "grid-009.png").write_bytes(b"user page 9")
    assert main(["grid", str(batch_folder), "--out-file", str(pics / "grid.png"), "--overwrite"]) == 0
    assert (pics / "grid-001.png").read_bytes() == mine["grid-001.png"]
    assert (pics / "grid-009.png").read_bytes() == b"user page 9"
    assert (pics / "grid.png").read_bytes() != mine["grid.png"]


def test_a_grid_replaces_its_own_pages_and_removes_only_those(batch_folder, tmp_path):
    out = tmp_path / "g" / "grid.png"
    assert main(["grid", str(batch_folder), "--out-file", str(out), "--max-rows", "1", "--html",
                 str(tmp_path / "g" / "index.html")]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["grid-001.png", "grid-002.png", "grid-003.png",
                                                            "index.html"]
    (out.parent / "grid-other.png").write_bytes(b"mine")
    assert main(["grid", str(batch_folder), "--out-file", str(out), "--html", str(tmp_path / "g" / "index.html")]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["grid-other.png", "grid.png", "index.html"]


def test_image_paths_outside_the_folder_are_refused(batch_folder, tmp_path, capsys):
    from vqclip.batch.store import finished_record
    from vqclip.grid import collect
    from vqclip.io import read_jsonl

    secret = tmp_path / "secret.png"
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(secret)
    lines = read_jsonl(batch_folder / "manifest.jsonl")
    lines[0]["image"] = "../secret.png"
    lines[1]["image"] = str(secret)
    (batch_folder / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    cells = {c.fields["prompt"]: c for c in collect(batch_folder).cells}
    refused = [c for c in cells.values() if c.status == "refused"]
    assert len(refused) == 2 and all(c.image is None for c in refused)
    runs = tmp_path / "runs" / "r1"
    runs.mkdir(parents=True)
    (runs / "run.json").write_text(json.dumps({"prompt": "x", "image": "../../secret.png", "status": "finished"}))
    assert [c.status for c in collect(tmp_path / "runs").cells] == ["refused"]

    class Job:  # a run.json of a batch job that names an image outside its job folder is not finished
        folder = "j"

    (batch_folder / "j").mkdir()
    (batch_folder / "j" / "run.json").write_text(json.dumps({"status": "finished", "batch": {"fingerprint": "f"},
                                                              "image": "../../secret.png"}))
    assert finished_record(batch_folder, Job, "f") is None
    (batch_folder / "j" / "run.json").write_text(json.dumps({"status": "finished", "batch": "f"}))
    assert finished_record(batch_folder, Job, "f") is None  # a wrong-typed record is not finished either


def test_hebrew_and_arabic_labels_get_a_font_that_draws_them(batch_folder):
    from vqclip.grid import _has_glyph, arrange, collect, font_files, grid_title, layout_page, paginate
    from vqclip.grid import GridStyle, render_page

    if not font_files():
        pytest.skip("no font with Hebrew/Arabic coverage installed (install fonts-dejavu or matplotlib)")
    found = collect(batch_folder)
    arr = arrange(found.cells)
    style = GridStyle(thumb=32)
    page = layout_page(paginate(arr, style)[0], arr, style, grid_title(found, arr))
    assert page.font_file is not None
    assert all(_has_glyph(page.font_file, c) for c in "שלוםمرحبا")
    assert not all(_has_glyph(None, c) for c in "שלום")  # Pillow's own font would have drawn boxes
    render_page(page, arr, style)


# ---------------------------------------------------------------------------------------------------------------
# Done-when: the CLI over a table of hostile inputs: no traceback, one error line, nothing of the user's changed.

def _user_files(root: Path, batch_folder: Path) -> None:
    """A user's folder: a non-run folder with frames and a video, their own grid pages, a secret file."""
    from PIL import Image

    (root / "holiday" / "frames").mkdir(parents=True)
    (root / "holiday" / "frames" / "000001.png").write_bytes(b"my frame")
    (root / "holiday" / "video.mp4").write_bytes(b"my film")
    (root / "pics").mkdir()
    for name in ("grid.png", "grid-001.png", "grid-002.png"):
        (root / "pics" / name).write_bytes(b"my " + name.encode())
    Image.new("RGB", (8, 8), "blue").save(root / "secret.png")
    (root / "p.txt").write_text("apple\n")


HOSTILE = [  # (name, argv with {user}, {batch}, {ro} and {model} placeholders, exit codes, words in the error)
    ("overwrite a folder that is not a run", "generate apple --out {user}/holiday --overwrite {model}", {2},
     "replaces only a vqclip run"),
    ("grid over a user's pages", "grid {batch} --out-file {user}/pics/grid.png", {2}, "--overwrite"),
    ("grid pages over a user's pages", "grid {batch} --out-file {user}/pics/grid.png --max-rows 1", {2}, "--overwrite"),
    ("gallery over a user's page", "grid {batch} --no-png --html {user}/pics/grid.png.html", {0}, None),
    ("huge image", "generate apple --out {user}/r1 {model} --size 100000 100000", {2}, "needs about"),
    ("huge cutn", "generate apple --out {user}/r2 {model} --cutn 100000000", {2}, "needs about"),
    ("huge batch image", "batch {user}/p.txt --out {user}/b1 {model} --size 100000 100000", {2}, "needs about"),
    ("read-only generate", "generate apple --out {ro}/r {model}", {74}, "cannot write"),
    ("read-only batch", "batch {user}/p.txt --out {ro}/b {model}", {74}, "cannot write"),
    ("read-only grid", "grid {batch} --out-file {ro}/grid.png", {74}, "cannot write"),
    ("read-only gallery", "grid {batch} --no-png --html {ro}/index.html", {74}, "cannot write"),
    ("read-only score", "score {batch} --out {ro}/score", {74}, "cannot write"),
    ("read-only train", "train --space learn --images {user} --out-file {ro}/p.safetensors", {74}, "cannot write"),
    ("manifest image outside the folder", "grid {batch} --out-file {batch}/g.png", {0}, None),
    ("wrong-typed batch.json and manifest lines", "grid {broken} --out-file {broken}/g.png", {0}, None),
    ("resume a batch whose batch.json is wrong-typed", "batch {user}/p.txt --out {broken} {model}", {2},
     "is not a vqclip.batch/1 record"),
]


@pytest.mark.parametrize("name, argv, codes, words", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_inputs_end_in_one_line_and_change_nothing_of_the_users(name, argv, codes, words, model_args,
                                                                        batch_folder, readonly_dir, tmp_path, capsys):
    import shlex

    user = tmp_path / "user"
    user.mkdir()
    _user_files(user, batch_folder)
    lines = (batch_folder / "manifest.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["image"] = "../user/secret.png"
    (batch_folder / "manifest.jsonl").write_text("\n".join([json.dumps(first)] + lines[1:]) + "\n")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "batch.json").write_text(json.dumps({"format": "vqclip.batch/1", "jobs": "not a list", "items": [1, 2]}))
    (broken / "manifest.jsonl").write_text('{"id": 5, "status": "ok", "image": 7}\n[1, 2]\n"text"\n')
    before = snapshot(user)
    batch_before = snapshot(batch_folder)
    args = shlex.split(argv.format(user=user, batch=batch_folder, ro=readonly_dir, model=" ".join(model_args),
                                   broken=broken))
    rc = main(args)
    err = capsys.readouterr().err
    assert rc in codes, err
    assert "Traceback" not in err and "\x1b" not in err
    if rc:
        assert len([line for line in err.splitlines() if "error:" in line]) == 1, err
        assert words is None or words in err, err
    after = snapshot(user)
    created = set(after) - set(before)
    assert {k: after[k] for k in before} == before  # nothing of the user's changed or vanished
    assert all(n.startswith(("r1", "r2", "b1", "pics/grid.png.html")) for n in created), created
    assert set(snapshot(broken)) <= {"batch.json", "manifest.jsonl", "g.png"}
    changed = {k for k in batch_before if snapshot(batch_folder).get(k) != batch_before[k]}
    assert changed <= {"grid.png", "g.png"}


def test_score_sources_refuse_image_paths_outside_the_folder(batch_folder, tmp_path):
    from vqclip.evaluate.sources import read_batch, read_run
    from vqclip.io import read_jsonl

    lines = read_jsonl(batch_folder / "manifest.jsonl")
    lines[0]["image"] = "../../../../etc/passwd"
    lines[1]["image"] = "/etc/passwd"
    (batch_folder / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    items, skipped = read_batch(batch_folder)
    assert len(items) == len(lines) - 2 and all(batch_folder in i.path.parents for i in items)
    assert sum("outside the folder" in s["reason"] for s in skipped) == 2
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"prompt": "x", "image": "../secret.png"}))
    (tmp_path / "secret.png").write_bytes(b"x")
    items, skipped = read_run(run)
    assert items == [] and "outside the run folder" in skipped[0]["reason"]


def test_generate_on_a_full_disk_says_what_is_kept_in_one_line(model_args, small_disk, capsys):
    (small_disk / "filler").write_bytes(b"\0" * (256 * 1024 - 8 * 1024))
    out = small_disk / "run"
    rc = main(["generate", "apple", "--steps", "3", "--seed", "1", "--save-every", "1", "--out", str(out)]
              + model_args)
    err = capsys.readouterr().err
    assert rc == 74 and "Traceback" not in err and "the disk is full" in err and "Free some space" in err
    assert len(err.strip().splitlines()) == 1
    assert not any(p.name.endswith(".part.png") for p in small_disk.rglob("*"))  # no torn temporaries left


def test_a_generate_whose_first_write_fails_on_a_full_disk_leaves_no_empty_folder(model_args, tmp_path, monkeypatch,
                                                                                 capsys):
    import vqclip.outputs as outputs

    def full(folder, result, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "image.png"))

    monkeypatch.setattr(outputs, "write_run", full)
    out = tmp_path / "run"
    assert main(["generate", "an apple", "--steps", "1", "--seed", "0", "--out", str(out)] + model_args) == 74
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the disk is full" in err[0]
    assert not out.exists()  # the folder this run made is gone, as it held nothing
