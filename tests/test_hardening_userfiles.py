"""Issue 28, items 0, 5 and 6: no user file is touched by any path.

A table plants a user's files, hidden files that look like temporaries, and symbolic links (to a victim file or
folder outside the output folder) in the output folder of every command that writes, runs the command, and checks:
the victim's and the user's files are unchanged, the exit code is 0 (allowed work), 2 (a refused request) or 74 (the
OS), errors are one line with no traceback and no "unexpected error" backstop. Each of the issue's 11 data-loss cases
is one row here (`CASES`); every row failed on the code before the fix.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import vqclip.cli.batch  # noqa: F401 - imported before any test patches names it copies from cli.generate
from vqclip.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (a file: just it); links as their target, not followed."""
    root = Path(root)
    paths = [root] if root.is_file() or root.is_symlink() else sorted(root.rglob("*"))
    out = {}
    for p in paths:
        key = str(p.relative_to(root)) if p != root else p.name
        if p.is_symlink():
            out[key] = "->" + os.readlink(p)
        elif p.is_file():
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def clean_exit(rc: int, err: str, codes: set[int]) -> None:
    assert rc in codes, err
    assert "Traceback" not in err and "unexpected error" not in err and "This is a bug" not in err, err
    if rc:
        assert len([line for line in err.splitlines() if "error:" in line]) == 1, err


@pytest.fixture()
def model_args(tiny_model_flags):
    return tiny_model_flags + ["--size", "32", "32", "--steps", "1"]


@pytest.fixture()
def victim(tmp_path) -> Path:
    """A folder outside every output folder, with a file and a run-like sub-folder a planted link points at."""
    v = tmp_path / "victim"
    (v / "clip-s0").mkdir(parents=True)
    (v / "precious.txt").write_text("the user's thesis\n")
    (v / "clip-s0" / "image.png").write_bytes(b"the user's photo")
    (v / "clip-s0" / "run.json").write_text('{"mine": true}\n')
    (v / "000001.png").write_bytes(b"the user's frame")
    return v


def _batch(prompts: str, out: Path, model_args, tmp_path, name="p.txt", extra=()) -> int:
    (tmp_path / name).write_text(prompts)
    return main(["batch", str(tmp_path / name), "--out", str(out), *model_args, *extra])


# ---------------------------------------------------------------------------------------------------------------
# The 11 data-loss cases of the issue, one test each.

def test_case01_batch_overwrite_into_a_folder_of_user_files_is_refused(model_args, tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "apple" / "clip-s0").mkdir(parents=True)
    (mine / "batch.json").write_text('{"my": "batch notes"}\n')
    (mine / "apple" / "clip-s0" / "image.png").write_bytes(b"my picture")
    (mine / "manifest.jsonl").write_text('{"id": "mine"}\n')
    (mine / ".notes.abcdefgh.part.txt").write_text("hidden, but mine")
    before = digest(mine)
    rc = _batch("apple\n", mine, model_args, tmp_path, extra=["--overwrite"])
    clean_exit(rc, capsys.readouterr().err, {2})
    assert digest(mine) == before
    # the same without a batch.json at all
    (mine / "batch.json").unlink()
    before = digest(mine)
    rc = _batch("apple\n", mine, model_args, tmp_path, extra=["--overwrite"])
    clean_exit(rc, capsys.readouterr().err, {2})
    assert digest(mine) == before


def test_case02_temp_cleanup_keeps_a_users_hidden_files_in_every_subfolder(model_args, tmp_path, capsys):
    out = tmp_path / "b"
    assert _batch("apple\n", out, model_args, tmp_path) == 0
    (out / "mydocs").mkdir()
    theirs = [out / "mydocs" / ".cv.20240501.part.pdf", out / ".image.png.k3j_x9a2.part.png",
              out / "apple" / "clip-s0" / ".run.json.abcdefgh.part.json", out / ".vqclip-write-test-a1b2c3d4"]
    for p in theirs:
        p.write_bytes(b"mine")
    before = digest(out / "mydocs")
    rc = _batch("apple\npear\n", out, model_args, tmp_path)  # a resume (extend): cleans temporaries
    clean_exit(rc, capsys.readouterr().err, {0})
    assert all(p.read_bytes() == b"mine" for p in theirs) and digest(out / "mydocs") == before


def test_case03_temp_cleanup_keeps_a_running_grids_temporary(model_args, tmp_path, capsys, monkeypatch):
    out = tmp_path / "b"
    assert _batch("apple\n", out, model_args, tmp_path) == 0
    import vqclip.grid.png as png

    real = png.atomic_path
    cleaned = []

    @contextlib.contextmanager
    def slow_write(path):
        with real(path) as tmp:
            yield tmp
            # another process (a batch resume on the same folder) cleans temporaries while the grid is writing
            done = subprocess.run([sys.executable, "-c", "import sys; from vqclip.batch.store import "
                                   "clean_temporaries; print(len(clean_temporaries(sys.argv[1])))", str(out)],
                                  capture_output=True, text=True)
            cleaned.append(done.stdout.strip() or done.stderr)

    monkeypatch.setattr(png, "atomic_path", slow_write)
    rc = main(["grid", str(out), "--out-file", str(out / "grid.png")])
    clean_exit(rc, capsys.readouterr().err, {0})
    assert cleaned == ["0"] and (out / "grid.png").is_file()


def test_case04_batch_never_writes_through_a_linked_item_folder(model_args, tmp_path, victim, capsys):
    out = tmp_path / "b"
    assert _batch("apple\n", out, model_args, tmp_path) == 0
    (out / "pear").symlink_to(victim, target_is_directory=True)
    before = digest(victim)
    rc = _batch("apple\npear\n", out, model_args, tmp_path)
    clean_exit(rc, capsys.readouterr().err, {2})
    assert digest(victim) == before


def test_case05_batch_never_appends_to_a_linked_manifest(model_args, tmp_path, victim, capsys):
    out = tmp_path / "b"
    assert _batch("apple\n", out, model_args, tmp_path) == 0
    (out / "manifest.jsonl").unlink()
    (out / "manifest.jsonl").symlink_to(victim / "precious.txt")
    before = digest(victim)
    rc = _batch("apple\npear\n", out, model_args, tmp_path)
    clean_exit(rc, capsys.readouterr().err, {2})
    assert digest(victim) == before


def test_case06_generate_never_writes_frames_through_a_linked_frames_folder(model_args, tmp_path, victim, capsys):
    out = tmp_path / "run"
    assert main(["generate", "apple", "--seed", "1", "--out", str(out)] + model_args) == 0
    (out / "frames").symlink_to(victim, target_is_directory=True)
    before = digest(victim)
    rc = main(["generate", "pear", "--seed", "1", "--out", str(out), "--overwrite", "--save-every", "1",
               "--video", "gif"] + model_args)
    clean_exit(rc, capsys.readouterr().err, {2})
    assert digest(victim) == before


def test_case07_a_planted_write_test_link_is_never_followed(tmp_path, victim, capsys):
    from vqclip.models.tiny import make_vqgan, write_taming_files

    config, ckpt = write_taming_files(tmp_path / "files", make_vqgan())
    out = tmp_path / "conv"
    out.mkdir()
    for name in (f".write-test-{os.getpid()}", f".vqclip-write-test-{os.getpid()}"):
        (out / name).symlink_to(victim / "precious.txt")
    before = digest(victim)
    rc = main(["models", "convert", "--config", str(config), "--checkpoint", str(ckpt), "--output",
               str(out / "x.safetensors")])
    clean_exit(rc, capsys.readouterr().err, {0})
    assert digest(victim) == before and (out / "x.safetensors").is_file()


class _Reader:
    key = "fake-reader"

    def read(self, images):
        from vqclip.evaluate.ocr import Detection

        return [[Detection(((0, 0), (1, 0), (1, 1), (0, 1)), "apple", 0.8)] for _ in images]


@pytest.fixture()
def images(tmp_path) -> Path:
    root = tmp_path / "imgs" / "clip"
    root.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (32, 32), (10 * i, 0, 0)).save(root / f"apple_{i}.png")
    return tmp_path / "imgs"


def test_case08_score_never_replaces_a_users_report_files(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("vqclip.evaluate.ocr.EasyOcrReader", lambda device="auto": _Reader())
    out = tmp_path / "reports"
    out.mkdir()
    for name in ("table.md", "summary.json", "scores.jsonl", "chart.png"):
        (out / name).write_text(f"my {name}")
    before = digest(out)
    rc = main(["score", str(images), "--out", str(out), "-q"])
    clean_exit(rc, capsys.readouterr().err, {2})
    assert digest(out) == before
    # its own reports are replaced on the next run; --overwrite replaces a user's
    assert main(["score", str(images), "--out", str(tmp_path / "r2"), "-q"]) == 0
    assert main(["score", str(images), "--out", str(tmp_path / "r2"), "-q"]) == 0
    assert main(["score", str(images), "--out", str(out), "-q", "--overwrite"]) == 0
    assert digest(out)["table.md"] != before["table.md"]


def _typo_dataset(tmp_path) -> Path:
    from test_typographic_cli import photo_set

    return photo_set(tmp_path / "typo-photos")


def test_case09_eval_typographic_never_replaces_a_users_report_files(tmp_path, tiny_clip_id, capsys):
    ds = _typo_dataset(tmp_path)
    out = tmp_path / "report"
    out.mkdir()
    for name in ("predictions.jsonl", "table.md", "report.json"):
        (out / name).write_text(f"my {name}")
    before = digest(out)
    common = ["--clip", tiny_clip_id, "--device", "cpu", "--no-progress", "--spaces", "clip"]
    rc = main(["eval", "typographic", "--dataset", str(ds), "--out", str(out), *common])
    clean_exit(rc, capsys.readouterr().err, {2})
    assert digest(out) == before
    fresh = tmp_path / "fresh"
    assert main(["eval", "typographic", "--dataset", str(ds), "--out", str(fresh), *common]) == 0
    assert main(["eval", "typographic", "--dataset", str(ds), "--out", str(fresh), *common]) == 0  # its own


def test_case10_reproduce_typographic_never_replaces_a_users_files(tmp_path, tiny_clip, tiny_clip_id, capsys):
    from test_reproduce import fake_paper_photos
    from vqclip.projections import projection_path, save_projection

    for seed, space in enumerate(("learn", "forget")):
        q, _ = torch.linalg.qr(torch.randn(32, 8, generator=torch.Generator().manual_seed(seed)))
        save_projection(projection_path(space, tiny_clip.identity), q.T, space, tiny_clip.identity)
    fake_paper_photos()
    out = tmp_path / "r"
    (out / "typographic").mkdir(parents=True)
    for name in ("predictions.jsonl", "table.md", "report.json"):
        (out / "typographic" / name).write_text(f"my {name}")
    before = digest(out)
    rc = main(["reproduce", "typographic", "--clip", tiny_clip_id, "--device", "cpu", "--out", str(out), "-q"])
    clean_exit(rc, capsys.readouterr().err, {2})
    assert digest(out) == before


@pytest.fixture()
def class_images(tmp_path) -> Path:
    import random

    from PIL import ImageDraw

    rng = random.Random(0)
    root = tmp_path / "photos"
    for c, color in {"apple": "red", "grape": "purple", "lemon": "yellow"}.items():
        (root / c).mkdir(parents=True)
        for i in range(6):
            im = Image.new("RGB", (40, 48), tuple(rng.randrange(256) for _ in range(3)))
            ImageDraw.Draw(im).rectangle((5, 5, 30, 30), fill=color)
            im.save(root / c / f"{i}.png")
    return root


def _train_args(class_images, clip_id):
    return ["train", "--space", "forget", "--images", str(class_images), "--clip", clip_id, "--words", "12",
            "--workers", "0", "-q", "--val-fraction", "0.2", "--test-fraction", "0.2", "--class-renders", "1",
            "--epochs", "1", "--batch-size", "4"]


def test_case11_train_json_never_replaces_a_users_file(class_images, tmp_path, tiny_clip_id, capsys):
    mine = tmp_path / "notes.json"
    mine.write_text('{"my": "notes"}\n')
    rc = main(_train_args(class_images, tiny_clip_id) + ["--json", str(mine), "--out-file",
                                                         str(tmp_path / "p.safetensors")])
    clean_exit(rc, capsys.readouterr().err, {2})
    assert mine.read_text() == '{"my": "notes"}\n' and not (tmp_path / "p.safetensors").exists()
    # its own summary is replaced by the next run
    own = tmp_path / "train.json"
    args = _train_args(class_images, tiny_clip_id) + ["--json", str(own)]
    assert main(args + ["--out-file", str(tmp_path / "p1.safetensors")]) == 0
    assert main(args + ["--out-file", str(tmp_path / "p2.safetensors")]) == 0
    assert json.loads(own.read_text())["projection"] == str(tmp_path / "p2.safetensors")


def test_case12_synthetic_out_never_replaces_a_users_files(tmp_path, tiny_clip_id, capsys):
    src = tmp_path / "src"
    for obj in ("apple", "cup", "dog"):
        (src / obj).mkdir(parents=True)
        Image.new("RGB", (50, 40), (20, 200, 90)).save(src / obj / "a.png")
    syn = tmp_path / "syn"
    (syn / "images").mkdir(parents=True)
    (syn / "annotation.json").write_text('{"my": "labels"}')
    (syn / "recipe.json").write_text('{"my": "recipe"}')
    (syn / "images" / "00000_clean.png").write_bytes(b"my photo")
    before = digest(syn)
    args = ["eval", "typographic", "--synthetic", str(src), "--synthetic-out", str(syn), "--size", "32",
            "--spaces", "clip", "--out", str(tmp_path / "r2"), "--clip", tiny_clip_id, "--device", "cpu",
            "--no-progress"]
    rc = main(args)
    clean_exit(rc, capsys.readouterr().err, {2})
    assert digest(syn) == before
    (syn / "annotation.json").unlink()
    (syn / "recipe.json").unlink()
    rc = main(args)  # only the image is in the way now
    clean_exit(rc, capsys.readouterr().err, {2})
    assert (syn / "images" / "00000_clean.png").read_bytes() == b"my photo"


# ---------------------------------------------------------------------------------------------------------------
# Item 6: the video is made from this run's frames only.

def test_video_uses_only_the_frames_this_run_wrote(model_args, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["generate", "apple", "--seed", "1", "--out", str(out)] + model_args) == 0
    (out / "frames").mkdir()
    (out / "frames" / "mine.png").write_bytes(b"not a png at all")
    (out / "frames" / "notes.txt").write_text("mine")
    rc = main(["generate", "pear", "--seed", "1", "--out", str(out), "--overwrite", "--save-every", "1",
               "--video", "gif", "--steps", "2"] + model_args[:-2])
    clean_exit(rc, capsys.readouterr().err, {0})
    assert (out / "frames" / "mine.png").read_bytes() == b"not a png at all"
    assert (out / "frames" / "notes.txt").read_text() == "mine"
    from vqclip.outputs import run_frames

    ours, others = run_frames(out)
    assert [f.name for f in ours] == ["000001.png", "000002.png"]
    assert [f.name for f in others] == ["mine.png", "notes.txt"] and (out / "video.gif").is_file()


# ---------------------------------------------------------------------------------------------------------------
# Item 5: a full disk on every writer, safetensors included: exit 74, one line, nothing partial left.

def _full(monkeypatch, module, name):
    from safetensors import SafetensorError

    def full(*a, **k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(module, name, full)


def test_models_convert_on_a_full_disk_is_one_line_exit_74(tmp_path, monkeypatch, capsys):
    import safetensors.torch

    from vqclip.models.tiny import make_vqgan, write_taming_files

    config, ckpt = write_taming_files(tmp_path / "files", make_vqgan())
    _full(monkeypatch, safetensors.torch, "save_file")
    out = tmp_path / "conv"
    rc = main(["models", "convert", "--config", str(config), "--checkpoint", str(ckpt), "--output",
               str(out / "x.safetensors")])
    err = capsys.readouterr().err
    clean_exit(rc, err, {74})
    assert "the disk is full" in err and "--output" in err and list(out.iterdir()) == []


def test_train_out_on_a_full_disk_is_one_line_exit_74(class_images, tmp_path, tiny_clip_id, monkeypatch, capsys):
    import safetensors.torch

    real = safetensors.torch.save_file
    out = tmp_path / "proj"

    def full_here(tensors, filename, metadata=None):
        if str(out) in str(filename):
            raise __import__("safetensors").SafetensorError(
                "Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", full_here)
    rc = main(_train_args(class_images, tiny_clip_id) + ["--out-file", str(out / "p.safetensors")])
    err = capsys.readouterr().err
    clean_exit(rc, err, {74})
    assert "the disk is full" in err and list(out.iterdir()) == []


def test_a_real_full_disk_under_models_convert(tmp_path, capsys):
    from test_hardening_outputs import _mount_tmpfs

    from vqclip.models.tiny import make_vqgan, write_taming_files

    small = tmp_path / "small"
    if not _mount_tmpfs(small, "size=64k"):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        config, ckpt = write_taming_files(tmp_path / "files", make_vqgan())
        (small / "filler").write_bytes(b"\0" * (64 * 1024 - 8192))
        rc = main(["models", "convert", "--config", str(config), "--checkpoint", str(ckpt), "--output",
                   str(small / "x.safetensors")])
        err = capsys.readouterr().err
        clean_exit(rc, err, {74})
        assert "the disk is full" in err and sorted(p.name for p in small.iterdir()) == ["filler"]
    finally:
        subprocess.run(["umount", str(small)], check=False)


# ---------------------------------------------------------------------------------------------------------------
# The rules themselves, without models.

def test_own_temporaries_are_recognised_by_name_host_and_a_dead_pid(tmp_path):
    from vqclip.io import atomic_path, host_tag, own_temporary

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {f".image.png.vqclip-{host_tag()}-{dead}-k3j_x9a2.part.png": True,
                 f".image.png.vqclip-{host_tag()}-{os.getpid()}-k3j_x9a2.part.png": True,
                 f".image.png.vqclip-{host_tag()}-{live.pid}-k3j_x9a2.part.png": False,
                 f".vqclip-write-test-{host_tag()}-{dead}-a1b2c3d4": True,
                 f".image.png.vqclip-00000000-{dead}-k3j_x9a2.part.png": False,  # another host, fresh
                 ".cv.20240501.part.pdf": False, ".image.png.k3j_x9a2.part.png": False}
        for name, ours in names.items():
            (tmp_path / name).write_bytes(b"x")
            assert own_temporary(tmp_path / name) is ours, name
        link = tmp_path / f".x.vqclip-{host_tag()}-{dead}-abcdefgh.part.png"
        link.symlink_to(tmp_path / "elsewhere")
        assert not own_temporary(link)
    finally:
        live.kill()
    with atomic_path(tmp_path / "a.png") as tmp:
        assert own_temporary(tmp)


def test_check_replaceable_and_the_ledger(tmp_path):
    from vqclip.errors import VqclipError
    from vqclip.io import check_replaceable, record_written, write_text

    path = tmp_path / "table.md"
    check_replaceable([path])  # absent: fine
    path.write_text("mine")
    with pytest.raises(VqclipError, match="--overwrite"):
        check_replaceable([path])
    check_replaceable([path], overwrite=True)
    write_text(path, "vqclip's")
    record_written(path)
    check_replaceable([path])  # vqclip wrote it
    path.write_text("edited by the user")
    with pytest.raises(VqclipError):
        check_replaceable([path])  # changed since: the user's now


def test_append_jsonl_never_follows_a_link(tmp_path, victim):
    from vqclip.io import append_jsonl

    (tmp_path / "m.jsonl").symlink_to(victim / "precious.txt")
    with pytest.raises(OSError) as caught:
        append_jsonl(tmp_path / "m.jsonl", {"id": 1})
    assert caught.value.errno == errno.ELOOP
    assert (victim / "precious.txt").read_text() == "the user's thesis\n"


# ---------------------------------------------------------------------------------------------------------------
# The planted-files table: a user's file, a hidden file matching the old temp pattern and a link to a victim file
# in the output folder of every command that writes; nothing of the user's (or the victim) changes.

PLANTED = [  # (name, argv with {out}, {model}, {imgs}, {batch}, {ds}, {vq}, {train} placeholders, exit codes)
    ("generate", "generate apple --out {out} {model}", {2}),
    ("generate --overwrite", "generate apple --out {out} --overwrite {model}", {2}),
    ("animate", "animate apple --frames 2 --steps-per-frame 1 --out {out} {model}", {2}),
    ("animate --overwrite", "animate apple --frames 2 --steps-per-frame 1 --out {out} --overwrite {model}", {2}),
    ("batch", "batch {prompts} --out {out} {model}", {2}),
    ("batch --overwrite", "batch {prompts} --out {out} --overwrite {model}", {2}),
    ("grid", "grid {batch} --out-file {out}/grid.png --html {out}/index.html", {0}),
    ("score", "score {imgs} --out {out} -q", {0}),
    ("eval typographic", "eval typographic --dataset {ds} --out {out} --spaces clip --no-progress {clip}", {0}),
    ("eval typographic --synthetic-out", "eval typographic --synthetic {src} --synthetic-out {out} --size 32 "
     "--spaces clip --out {out}/report --no-progress {clip}", {0}),
    ("models convert", "models convert {vq} --output {out}/x.safetensors", {0}),
    ("train --json", "{train} --json {out}/t.json --out-file {out}/p.safetensors", {0}),
]


@pytest.mark.parametrize("name, argv, codes", PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_files_in_every_output_folder_are_left_alone(name, argv, codes, model_args, tmp_path, victim,
                                                             images, class_images, tiny_clip_id, monkeypatch,
                                                             capsys):
    import shlex

    from vqclip.models.tiny import make_vqgan, write_taming_files

    monkeypatch.setattr("vqclip.evaluate.ocr.EasyOcrReader", lambda device="auto": _Reader())
    values = {"model": " ".join(model_args), "imgs": images, "clip": f"--clip {tiny_clip_id} --device cpu",
              "ds": _typo_dataset(tmp_path) if "--dataset" in argv else "", "prompts": tmp_path / "p.txt",
              "train": " ".join(_train_args(class_images, tiny_clip_id))}
    (tmp_path / "p.txt").write_text("apple\n")
    if "{batch}" in argv:
        assert main(["batch", str(tmp_path / "p.txt"), "--out", str(tmp_path / "b"), *model_args]) == 0
        values["batch"] = tmp_path / "b"
    if "{vq}" in argv:
        config, ckpt = write_taming_files(tmp_path / "files", make_vqgan())
        values["vq"] = f"--config {config} --checkpoint {ckpt}"
    if "{src}" in argv:
        for obj in ("apple", "cup"):
            (tmp_path / "src" / obj).mkdir(parents=True)
            Image.new("RGB", (50, 40), (20, 200, 90)).save(tmp_path / "src" / obj / "a.png")
        values["src"] = tmp_path / "src"
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    (out / ".notes.abcdefgh.part.png").write_text("hidden, mine")
    (out / "link.png").symlink_to(victim / "precious.txt")
    (out / f".write-test-{os.getpid()}").symlink_to(victim / "precious.txt")
    before, victim_before = digest(out), digest(victim)
    capsys.readouterr()
    rc = main(shlex.split(argv.format(out=out, **values)))
    clean_exit(rc, capsys.readouterr().err, codes)
    after = digest(out)
    assert {k: after.get(k) for k in before} == before and digest(victim) == victim_before
