"""Issue 37 (hardening, third pass), driven through the CLI: each hostile input ends in one precise line (exit 2,
no traceback, no "unexpected error" backstop) and every file that was there before keeps its hash.

Every row of `CASES` failed on the code before the fix (a file outside --out replaced, exit 70 or 74 with a generic
line, or a run that silently ignored or mangled its input and exited 0). The cases that are not one command (a
second --overwrite, the grid's growth, start-up signals, a closed stdout, the checks before torch) follow the table.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vqclip.cli.batch  # noqa: F401 - imported before any test patches names it copies from cli.generate
from vqclip.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

PIPE_STATUS = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader went away
# Child processes import the same vqclip as this one (whatever folder they run in)
ROOT = str(Path(vqclip.cli.__file__).resolve().parents[2])
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p))


def _snapshot(root: Path, skip: Path) -> dict[str, str]:
    """sha256 of every file under `root` outside `skip` (links as their target, not followed)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p == skip or skip in p.parents:
            continue
        if p.is_symlink():
            out[str(p.relative_to(root))] = "->" + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class World(type(Path())):
    pass


@pytest.fixture()
def w(tmp_path, tiny_model_flags, tiny_clip, monkeypatch):
    """A user's folder: a prompt file, a file outside every output folder, the tiny models; outputs go to out/."""
    world = World(tmp_path / "w")
    (world / "outside").mkdir(parents=True)
    (world / "outside" / "notes.jsonl").write_text('{"the user": "notes"}\n')
    (world / "p.txt").write_text("an apple\n")
    world.model = [*tiny_model_flags, "--size", "32", "32", "--steps", "1"]
    world.config = tiny_model_flags[tiny_model_flags.index("--vqgan-config") + 1]
    world.clip_dir = tiny_model_flags[tiny_model_flags.index("--clip") + 1][len("local-dir:"):]
    world.identity, world.embed_dim = tiny_clip.identity, tiny_clip.embed_dim
    world.mp = monkeypatch
    return world


def _batch(w, *extra):
    return ["batch", str(w / "p.txt"), "--out", str(w / "b"), *w.model, *extra]


def _gen(w, *extra):
    return ["generate", "an apple", "--out", str(w / "out" / "r"), *w.model, *extra]


def _with_checkpoint(w, args, path):
    args = list(args)
    args[args.index("--vqgan-checkpoint") + 1] = str(path)
    return args


def _convert(w, path):
    return ["models", "convert", "--config", w.config, "--checkpoint", str(path), "--output",
            str(w / "out" / "x.safetensors")]


def _record(**edit) -> dict:
    """A batch.json that passes every check but the edited one."""
    record = {"format": "vqclip.batch/1", "fingerprint": "0123456789abcdef", "settings": {}, "models": {},
              "spaces": ["clip"], "seeds": [0], "projections": {}, "items": {}, "jobs": []}
    record.update(edit)
    return record


def _old_batch(record: dict, manifest=True):
    def setup(w):
        (w / "b").mkdir()
        (w / "b" / "batch.json").write_text(json.dumps(record))
        if manifest:
            (w / "b" / "manifest.jsonl").write_text('{"id": "an-apple/clip-s0", "status": "ok"}\n')
    return setup


def _planned_record(w, edit=None) -> dict:
    """The batch.json `vqclip batch p.txt` would write (its real fingerprint), edited by `edit`."""
    import vqclip.batch as batch
    from vqclip.batch import store

    seen = {}

    def spy(folder, record, overwrite=False):
        seen["record"] = record
        return store.check_batch_dir(folder, record, overwrite)

    with w.mp.context() as m:
        m.setattr(batch, "check_batch_dir", spy, raising=False)
        assert main(["batch", str(w / "p.txt"), "--out", str(w / "planning"), "--dry-run", *w.model]) == 0
    record = json.loads(json.dumps(seen["record"]))
    return edit(record) or record if edit else record


def _resume_with(edit=None, manifest_folder=False):
    def setup(w):
        (w / "b").mkdir()
        (w / "b" / "batch.json").write_text(json.dumps(_planned_record(w, edit)))
        if manifest_folder:
            (w / "b" / "manifest.jsonl").mkdir()
            (w / "b" / "manifest.jsonl" / "mine.txt").write_text("a user's file")
    return setup


def _file(name: str, data: bytes):
    def setup(w):
        (w / name).write_bytes(data)
    return setup


def _doubling_config(levels: int) -> bytes:
    lines = ["a0: xxxxxxxxxxxxxxxx"] + [f"a{i}: ${{a{i - 1}}}${{a{i - 1}}}" for i in range(1, levels + 1)]
    return ("\n".join(lines) + "\n").encode()


def _direction(make):
    """A direction file in vqclip's format for the tiny CLIP, its tensor `d` made by make(D)."""
    def setup(w):
        from safetensors.torch import save_file

        save_file({"d": make(w.embed_dim).contiguous()}, str(w / "d.safetensors"),
                  metadata={"format": "vqclip.direction/1", "kind": "textoff", "clip_model": w.identity})
    return setup


def _int64_checkpoint(w):
    from vqclip.models.tiny import make_vqgan

    state = {k: (v * 100).round().to(torch.int64) if v.is_floating_point() else v
             for k, v in make_vqgan().state_dict().items()}
    torch.save({"state_dict": state}, w / "int.ckpt")


RANDOM_5000 = random.Random(20).randbytes(5000)  # a draw whose pickle stream ends in KeyError: 0
CHECKPOINTS = {"\\x80\\x02. (IndexError)": b"\x80\x02.", "BINGET of nothing (KeyError)": b"\x80\x02h\x05.",
               "5000 random bytes": RANDOM_5000}

# (name, setup, argv, exit code, text the error line must hold)
CASES = [
    # 1. a fingerprint that leads out of --out (the old code replaced outside/notes.jsonl)
    ("37.1 fingerprint x/../../outside/notes", lambda w: (_old_batch(_record(fingerprint="x/../../outside/notes"))(w),
                                                          (w / "b" / "manifest.replaced-x").mkdir()),
     lambda w: _batch(w, "--overwrite"), 2, "fingerprint"),
    # 3. unreadable checkpoints (exit 70 before)
    *[(f"37.3 checkpoint {name} ({cmd})", _file("c.ckpt", data),
       (lambda w: _with_checkpoint(w, _gen(w), w / "c.ckpt")) if cmd == "generate" else
       (lambda w: _convert(w, w / "c.ckpt")), 2, "could not read the checkpoint")
      for name, data in CHECKPOINTS.items() for cmd in ("generate", "models convert")],
    # 4. malformed batch.json (exit 70 before)
    ("37.4 batch.json items that are not objects (--dry-run)",
     _resume_with(lambda r: r.update(items={k: [1] for k in r["items"]})),
     lambda w: _batch(w, "--dry-run"), 2, "batch.json"),
    ("37.4 batch.json fingerprint with a NUL (--overwrite)", _old_batch(_record(fingerprint="a\u0000b")),
     lambda w: _batch(w, "--overwrite"), 2, "fingerprint"),
    # 5. OSErrors with no rule (exit 74 before)
    ("37.5 manifest.jsonl is a folder (resume)", _resume_with(manifest_folder=True),
     lambda w: _batch(w, "--dry-run"), 2, "manifest.jsonl in the batch folder is a folder"),
    ("37.5 400-character fingerprint (--overwrite)", _old_batch(_record(fingerprint="a" * 400)),
     lambda w: _batch(w, "--overwrite"), 2, "fingerprint"),
    # 6. configs bounded before interpolation and by key count
    ("37.6 config doubling a string 17 times", _file("c.yaml", _doubling_config(17)),
     lambda w: _gen(w, "--config", str(w / "c.yaml")), 2, "interpolations expand"),
    ("37.6 config with 300 keys", _file("c.yaml", "".join(f"k{i}: {i}\n" for i in range(300)).encode()),
     lambda w: _gen(w, "--config", str(w / "c.yaml")), 2, "at most 256"),
    ("37.6 config with a resolver", _file("c.yaml", b"negative_text: ${oc.env:HOME}\n"),
     lambda w: _gen(w, "--config", str(w / "c.yaml")), 2, "interpolation"),
    # 8. textoff inputs that were silently ignored or mangled
    ("37.8 --textoff without --anti-text textoff", _direction(lambda D: torch.ones(D)),
     lambda w: _gen(w, "--textoff", str(w / "d.safetensors")), 2, "only with --anti-text textoff"),
    ("37.8 --negative-weight=-inf", lambda w: None,
     lambda w: _gen(w, "--anti-text", "negative", "--negative-weight=-inf"), 2, "--negative-weight"),
    ("37.8 direction of shape (2, D/2)", _direction(lambda D: torch.randn(2, D // 2)),
     lambda w: _gen(w, "--anti-text", "textoff", "--textoff", str(w / "d.safetensors")), 2, "one vector"),
    ("37.8 complex direction", _direction(lambda D: torch.randn(D, dtype=torch.complex64)),
     lambda w: _gen(w, "--anti-text", "textoff", "--textoff", str(w / "d.safetensors")), 2, "real floating"),
    ("37.8 no direction for a local CLIP: the hint names its folder", lambda w: None,
     lambda w: _gen(w, "--anti-text", "textoff"), 2, "--direction textoff --clip local-dir:/"),
    # 9. models: a --pretrained file beside local-dir:, integer VQGAN weights
    ("37.9 --pretrained FILE with --clip local-dir:", lambda w: None,
     lambda w: _gen(w, "--pretrained", str(w / "missing.pt")), 2, "--pretrained"),
    ("37.9 VQGAN state dict of int64", _int64_checkpoint,
     lambda w: _with_checkpoint(w, _gen(w), w / "int.ckpt"), 2, "floating-point"),
]


@pytest.mark.parametrize("name,setup,argv,code,expect", CASES, ids=[c[0] for c in CASES])
def test_hostile_inputs_end_in_one_rule_and_change_no_file(w, capsys, name, setup, argv, code, expect):
    setup(w)
    args = argv(w)
    capsys.readouterr()
    before = _snapshot(w, w / "out")
    try:
        rc = main(args)
    except SystemExit as e:  # argparse's own refusals (a usage line, then the error line)
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == code, (name, rc, err[-2000:])
    assert "Traceback" not in out + err and "unexpected error" not in err and "This is a bug" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and expect in errors[0], err
    assert "PATH_OF_THE_MODEL_FOLDER" not in err
    assert _snapshot(w, w / "out") == before


def test_the_textoff_hint_is_a_command_that_names_the_real_folder(w, capsys):
    main(_gen(w, "--anti-text", "textoff"))
    err = capsys.readouterr().err
    assert f"vqclip train --direction textoff --clip local-dir:{w.clip_dir}" in err, err


# ------------------------------------------------------------------------- 2. a second --overwrite loses nothing

def test_setting_aside_never_replaces_an_earlier_set_aside_manifest(tmp_path):
    from vqclip.batch.store import MANIFEST_NAME, open_batch_dir

    folder = tmp_path / "b"
    a, b = _record(fingerprint="a" * 16), _record(fingerprint="b" * 16)
    open_batch_dir(folder, a, "new")
    written = []
    for n, record in enumerate([b, a, b, a, b]):  # steps 3 -> 4 -> 3 -> 4 -> ...: the same fingerprints again
        line = f'{{"run": {n}}}\n'
        (folder / MANIFEST_NAME).write_text(line)
        written.append(line)
        open_batch_dir(folder, record, "replace")
    kept = sorted(p.read_text() for p in folder.glob("manifest.replaced-*.jsonl"))
    assert kept == sorted(written)  # every manifest a replace moved aside is still there
    assert sorted(p.name for p in folder.glob("manifest.replaced-*")) == [
        f"manifest.replaced-{'a' * 16}.2.jsonl", f"manifest.replaced-{'a' * 16}.3.jsonl",
        f"manifest.replaced-{'a' * 16}.jsonl", f"manifest.replaced-{'b' * 16}.2.jsonl",
        f"manifest.replaced-{'b' * 16}.jsonl"]


# ------------------------------------------------------------------------- 5. OSErrors of a user's paths

@pytest.mark.parametrize("error,rule", [
    (IsADirectoryError(21, "Is a directory", "/data/b/manifest.jsonl"), "a folder is where vqclip needs a file"),
    (OSError(36, "File name too long", "/data/" + "x" * 300), "longer than the file system allows"),
    (NotADirectoryError(20, "Not a directory", "/data/file/x"), "a file is where vqclip needs a folder")])
def test_an_os_error_about_a_path_names_it_and_its_rule(error, rule):
    from vqclip.cli import unexpected_error_line

    line, code = unexpected_error_line(error)
    assert code == 2 and line.startswith(error.filename) and rule in line and "Check the path and the disk" not in line


def test_a_config_interpolation_of_another_key_is_still_honoured(tmp_path):
    import argparse

    from vqclip.cli import build_parser
    from vqclip.cli.generate import apply_config_file

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["generate"]
    (tmp_path / "c.yaml").write_text("steps: 3\nnegative_text: ${steps} words\n")
    apply_config_file(sub, str(tmp_path / "c.yaml"))
    assert sub.get_default("negative_text") == "3 words" and sub.get_default("steps") == 3


# ------------------------------------------------------------------------- 7. grid pages follow the cells

def _diagonal(n: int):
    """n cells, each with its own prompt and its own seed, shown as prompts x seeds: n x n places, n cells."""
    from vqclip.grid import Cell, arrange
    from vqclip.grid.collect import FIELDS

    cells = [Cell({**{f: None for f in FIELDS}, "prompt": f"p{i}", "space": "clip", "seed": i, "run": f"p{i}"})
             for i in range(n)]
    return arrange(cells, "prompt", ["seed"])


def test_grid_pages_grow_with_the_cells_not_with_rows_times_columns():
    from vqclip.grid import GridStyle, paginate

    style = GridStyle()
    arr = _diagonal(3000)
    assert len(arr.rows) == len(arr.cols) == 3000
    pages = paginate(arr, style)
    assert len(pages) <= 2 * 3000 // style.max_rows + 2  # before: every (row chunk, column chunk), 188 x 250
    placed = {(r, c) for p in pages for r in p.rows for c in p.cols}
    assert all(key in placed for key in arr.table)  # every cell is on a page
    assert [p.number for p in pages] == list(range(1, len(pages) + 1)) and {p.count for p in pages} == {len(pages)}


def test_a_gallery_of_mostly_empty_places_is_refused_before_anything_is_written(tmp_path):
    from vqclip.errors import VqclipError
    from vqclip.grid import check_html_places

    with pytest.raises(VqclipError, match="--html: the gallery would be a table of 3000 rows x 3000 columns"):
        check_html_places(_diagonal(3000))
    check_html_places(_diagonal(100))  # 10,000 places for 100 images: within the margin


# ------------------------------------------------------------------------- 8. directions read safely

def _direction_file(tmp_path, d: torch.Tensor, meta=None) -> Path:
    from safetensors.torch import save_file

    path = tmp_path / "d.safetensors"
    save_file({"d": d.contiguous()}, str(path), metadata={"format": "vqclip.direction/1", "kind": "textoff",
                                                          "clip_model": "tiny/x", **(meta or {})})
    return path


def test_a_direction_of_huge_finite_values_is_still_its_direction(tmp_path):
    from vqclip.projections.direction import load_direction

    d = torch.full((16,), 3e38)
    d[::2] = -3e38
    found = load_direction(_direction_file(tmp_path, d), "tiny/x", 16).vector
    assert torch.isfinite(found).all() and abs(float(found.norm()) - 1) < 1e-6  # before: all zeros (norm inf)
    assert torch.allclose(found, torch.sign(d) / 4)


def test_a_hand_written_direction_is_not_recorded_as_trained(tmp_path):
    from vqclip.projections.direction import TRAIN_SOURCE, load_direction

    hand = load_direction(_direction_file(tmp_path, torch.ones(16)), "tiny/x", 16)
    assert hand.metadata["source"] != TRAIN_SOURCE and "no record of how it was made" in hand.metadata["source"]
    trained = load_direction(_direction_file(tmp_path, torch.ones(16), {"n_tuples": "12", "held_out": "{}",
                                                                         "features": "/f"}), "tiny/x", 16)
    assert trained.metadata["source"] == TRAIN_SOURCE


# ------------------------------------------------------------------------- 10. signals from the first moment

def _hooked(tmp_path, code: str) -> dict:
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(code)
    return dict(ENV, PYTHONPATH=os.pathsep.join([str(hook), ENV["PYTHONPATH"]]))


@pytest.mark.parametrize("where,prefix", [("build_parser", "vqclip"), ("run_batch_command", "vqclip batch")])
def test_sigterm_at_start_up_exits_130_with_a_line(tmp_path, where, prefix):
    """SIGTERM before any work (while the parser is built, or as `batch` begins, before its torch import): exit
    130 and the interrupted line, not death by the signal (143)."""
    target = "vqclip.cli" if where == "build_parser" else "vqclip.cli.batch"
    env = _hooked(tmp_path, f"import os, signal\nimport {target} as m\nreal = m.{where}\n"
                            f"def hooked(*a, **k):\n    os.kill(os.getpid(), signal.SIGTERM)\n    return real(*a, **k)\n"
                            f"m.{where} = hooked\n")
    (tmp_path / "p.txt").write_text("an apple\n")
    proc = subprocess.run([sys.executable, "-m", "vqclip", "batch", str(tmp_path / "p.txt"), "--out",
                           str(tmp_path / "b")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 130, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.strip().splitlines()[-1] == f"{prefix}: interrupted" and "Traceback" not in proc.stderr
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------------- issue 36, item 11: a closed stdout

def test_a_closed_stdout_ends_quietly_with_the_pipe_status():
    proc = subprocess.Popen([sys.executable, "-m", "vqclip", "models", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    proc.stdout.close()  # `| head -0`: the reader is gone before vqclip writes
    err = proc.stderr.read().decode()
    proc.wait(timeout=300)
    assert proc.returncode == PIPE_STATUS and err == "", (proc.returncode, err)


# ------------------------------------------------------------------------- issue 36, item 10: before torch

def _torch_free_checks() -> bool:
    """The prompt and anti-text parsers of vqclip.generation import without torch (its package __init__ loads the
    loop lazily): the condition for reporting argument mistakes before torch is imported."""
    code = "import sys, vqclip.generation.prompts, vqclip.generation.antitext; print('torch' in sys.modules)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV).stdout.strip() \
        == "False"


def test_the_argument_checks_import_no_torch():
    assert _torch_free_checks()


def test_the_space_names_the_early_checks_use_are_the_librarys():
    """antitext may keep its own literal copy of the space names (to import no torch); it must equal vqclip.spaces'."""
    from vqclip import spaces
    from vqclip.generation import antitext

    assert antitext.SPACES == spaces.SPACES and antitext.TEXT_MODES == spaces.TEXT_MODES
BLOCKED = ("import sys\nsys.modules['torch'] = None\nsys.modules['open_clip'] = None\n"
           "from vqclip.cli import main\nsys.exit(main(sys.argv[1:]))\n")


@pytest.mark.parametrize("argv,expect", [
    (["generate", "an apple:abc"], "mistyped weight"),
    (["generate", "an apple", "--video"], "Add --save-every N"),
    (["generate", "an apple", "--textoff", "x.json"], "only with --anti-text textoff"),
    (["batch", "{p}", "--spaces", "clip,lern"], "unknown embedding space"),
    (["batch", "{bad}"], "mistyped weight")])
def test_argument_mistakes_are_reported_before_torch_is_imported(tmp_path, argv, expect):
    (tmp_path / "p.txt").write_text("an apple\n")
    (tmp_path / "bad.txt").write_text("an apple:abc\n")
    argv = [a.format(p=tmp_path / "p.txt", bad=tmp_path / "bad.txt") for a in argv]
    proc = subprocess.run([sys.executable, "-c", BLOCKED, *argv], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=ENV)
    assert proc.returncode == 2 and expect in proc.stderr and "torch" not in proc.stderr, proc.stderr[-2000:]


# ------------------------------------------------------------------------- issue 36, item 15: batch's note

def test_batch_repeats_the_few_steps_note_of_generate(tmp_path, capsys):
    (tmp_path / "p.txt").write_text("an apple\n")
    args = ["batch", str(tmp_path / "p.txt"), "--out", str(tmp_path / "b"), "--dry-run", "--steps", "5"]
    assert main([*args, "--spaces", "clip,forget"]) == 0
    assert "note: with 5 steps the quantized codes have barely moved" in capsys.readouterr().err
    assert main([*args, "--spaces", "clip"]) == 0
    assert "barely moved" not in capsys.readouterr().err


# ------------------------------------------------------------------------- issue 37: the API's textoff advice

def test_the_apis_missing_direction_advice_names_the_clip_flags_it_was_loaded_with(tiny_clip_id, tmp_path):
    """`generate(space="textoff")` with no cached direction prints the train command with the model flags the user
    gave (a local model's real folder), as the CLI does, so that it runs as printed."""
    from vqclip.errors import VqclipError
    from vqclip.generation.api import generate, load_models
    from vqclip.models.tiny import write_taming_files

    config, ckpt = write_taming_files(tmp_path / "vqgan")
    models = load_models(tiny_clip_id, None, vqgan_config=str(config), vqgan_checkpoint=str(ckpt), device="cpu",
                         cache_dir=str(tmp_path / "cache"))
    flags = models.clip.cli_flags()
    assert flags
    with pytest.raises(VqclipError, match="no text direction") as e:
        generate("an apple", space="textoff", models=models, size=(16, 16), steps=1, cutn=2, seed=0)
    assert flags in str(e.value), str(e.value)


# ------------------------------------------------------------------------- issue 37: install hints

# Files whose hint another change still has to bring over (each entry must still hold the old form).
OLD_HINT_LEFT = set()


def test_install_hints_name_the_clone_install_the_readme_gives():
    """vqclip is installed from its clone (README: `pip install -e .`), not from PyPI: every hint says
    `pip install -e ".[X]"`, never `pip install "vqclip[X]"`, which would find nothing."""
    import re

    from vqclip.errors import missing_extra_hint, pip_extra

    root = Path(__file__).resolve().parent.parent
    old = re.compile(r"""pip install \\?["']vqclip\[""")
    found = {str(p.relative_to(root)) for p in (root / "vqclip").rglob("*.py") if old.search(p.read_text())}
    assert found == OLD_HINT_LEFT, found
    assert 'pip install "vqclip[' not in (root / "README.md").read_text()
    assert pip_extra("ocr") == 'pip install -e ".[ocr]" in the vqclip clone'
    hint = missing_extra_hint(ImportError("No module named 'wordfreq'", name="wordfreq"))
    assert hint == 'wordfreq is not installed (optional): pip install -e ".[train]" in the vqclip clone'


# ------------------------------------------------------------------------- issue 37: offline CLIP advice

@pytest.mark.parametrize("name,pretrained,folder", [
    ("hf-hub:someone/no-such-clip", None, "models--someone--no-such-clip"),
    ("ViT-B-32", "laion2b_s34b_b79k", "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K")])
def test_an_offline_clip_load_names_the_hub_folder_to_copy(tmp_path, monkeypatch, name, pretrained, folder):
    """Offline, the load error says which folder of the hub cache (blobs/, refs/, snapshots/) to bring over and
    the `hf download` that makes it, not just "copy the hub cache"."""
    from vqclip.errors import VqclipError
    from vqclip.models.clip import load_clip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(VqclipError) as e:
        load_clip(name, pretrained, device="cpu", cache_dir=str(tmp_path))
    text = str(e.value)
    assert f"{tmp_path / 'clip' / folder}/ (its blobs/, refs/ and snapshots/)" in text, text
    assert "hf download" in text, text
