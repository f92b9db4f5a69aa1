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
def model_args(tiny_clip_id, tmp_path):
    from vqclip.models.tiny import write_taming_files

    config, ckpt = write_taming_files(tmp_path / "vqgan")
    return ["--clip", tiny_clip_id, "--vqgan-config", str(config), "--vqgan-checkpoint", str(ckpt),
            "--device", "cpu", "--size", "32", "32", "--cutn", "2", "--quiet"]


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
