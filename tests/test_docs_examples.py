"""Every code block in README.md and docs/*.md is run here, or checked (issue 36: the only documented offline way to
try generation had failed on an import for a while, and no test ran the docs' code).

Marker convention: an HTML comment on the line right above a fenced block (GitHub does not show it):

    (no marker)                          a `bash` or `python` block is RUN as written: in a fresh folder holding a copy
                                         of prompts/, with a fresh HOME, offline (HF_HUB_OFFLINE=1), one thread; tiny
                                         models stand in for real weights when the block builds them itself, as
                                         docs/batch.md's "Try it offline" recipe does. Afterwards HOME must still be
                                         empty: vqclip leaves nothing there (issue 36 item 14).
    <!-- docs-test: check: REASON -->    CHECKED, not run, because of REASON (say which: "needs real weights",
                                         "needs your data", "needs network", "needs a GPU", "long: trains for
                                         minutes", ...). See "checked" below.
    <!-- docs-test: prompt-file NAME --> a prompt file shown as an example: written to NAME and loaded with
                                         vqclip.batch.load_prompt_files, which must accept it.
    <!-- ci:test-command -->             README's test command (.ci/run reads and runs it): checked here.

Checked means: a python block compiles and each of its import statements runs; in a bash block every command line
(backslash continuations joined, comments dropped, `&&` / `;` / `|` chains split) is one of:
  - `vqclip ...` (also `python -m vqclip ...`): parsed by vqclip's own argparse parser, so a renamed or mistyped
    flag, a bad choice or a missing argument fails here;
  - `torchrun ...`: parsed by torchrun's own parser; the module must be `vqclip` with dashed torchrun flags, as
    `vqclip batch --help` writes it, and its arguments are parsed as a vqclip command;
  - `pip install`: extras as `-e ".[X,Y]"` (vqclip is installed from its clone; `vqclip[X]` is not on PyPI), each
    extra defined in pyproject.toml;
  - `python FILE ...` / `bash FILE`: the file exists and mentions each `--flag` given;
  - one of the plain tools in TOOLS (venv activation, ruff, pytest, ...).
Blocks without a language or tagged `text` (and not marked as a prompt file) are shown output, file layouts or
usage synopses, not code.

Blocks in files this test's author does not own carry their marker in MARKERS_ELSEWHERE below (keyed by file and
the block's first line), until their owners move it into the file as a comment.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!--\s*(docs-test:\s*(?P<what>.*?)|ci:test-command)\s*-->")
CODE_LANGS = {"bash", "sh", "python"}
SHOWN_LANGS = {"", "text", "yaml", "json", "console"}  # shown output or layouts unless marked as a prompt file

# Blocks in docs other sessions own (docs/testbed.md, docs/speed.md, ...): (file, first line) -> marker text.
MARKERS_ELSEWHERE = {
    ("docs/testbed.md", "vqclip testbed                              # the full world (12 classes), about 7 minutes "
                        "on 2 CPU cores"): "check: long: trains CLIPs for minutes",
    ("docs/testbed.md", "vqclip testbed --quick --seeds 0-5 --out runs/tb27 --reuse-clip --generate --methods "
                        "negative,textoff,forget+negative \\"): "check: long: trains for hours",
}

# Plain tools a checked block may use, with what their line may look like.
TOOLS = {
    ".": re.compile(r"\. \.venv/bin/activate"),
    "source": re.compile(r"source \.venv/bin/activate"),
    "ruff": re.compile(r"ruff check"),
    "lint-imports": re.compile(r"lint-imports"),
    "python3": re.compile(r"python3 -m venv \.venv"),
    "export": re.compile(r"export [A-Z_]+=\S+"),
    "mkdir": re.compile(r"mkdir -p( \S+)+"),
    "cp": re.compile(r"cp( -r)? \S+( \S+)+"),
}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence
    lang: str
    text: str
    marker: str | None  # "check: REASON", "prompt-file NAME", "ci:test-command" or None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        fence = re.match(r"^(\s*)(`{3,})(.*)$", lines[i])
        if not fence:
            i += 1
            continue
        start, ticks, lang = i, fence.group(2), fence.group(3).strip()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(ticks):
            j += 1
        text = "\n".join(lines[start + 1:j])
        marker = None
        k = start - 1
        while k >= 0 and MARKER.search(lines[k]):
            m = MARKER.search(lines[k])
            marker = marker or (m.group("what").strip() if m.group("what") is not None else "ci:test-command")
            k -= 1
        first = text.splitlines()[0] if text.strip() else ""
        marker = marker or MARKERS_ELSEWHERE.get((str(path.relative_to(ROOT)), first))
        out.append(Block(path, start + 1, lang, text, marker))
        i = j + 1
    return out


ALL = [b for p in DOCS for b in blocks(p)]
CODE = [b for b in ALL if b.lang in CODE_LANGS or (b.marker or "").startswith("prompt-file")]


def test_every_block_has_a_known_language_and_marker():
    for b in ALL:
        assert b.lang in CODE_LANGS | SHOWN_LANGS, f"{b.name}: unknown block language {b.lang!r}"
        if b.marker is not None:
            assert (b.marker == "ci:test-command" or re.fullmatch(r"check: \S.*", b.marker)
                    or re.fullmatch(r"prompt-file [\w.-]+\.(txt|yaml|json|csv)", b.marker)), f"{b.name}: {b.marker!r}"
    keys = {(str(b.path.relative_to(ROOT)), (b.text.splitlines() or [""])[0]) for b in ALL}
    stale = [k for k in MARKERS_ELSEWHERE if k not in keys]
    assert not stale, f"MARKERS_ELSEWHERE names blocks that are gone (update it): {stale}"


# ------------------------------------------------------------------------------------------------------- checking

def command_lines(text: str) -> list[list[str]]:
    """The block's commands as token lists: continuations joined, comments dropped, chains split."""
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        tokens = shlex.split(line, comments=True)
        current: list[str] = []
        for t in tokens:
            if t in ("&&", "||", ";", "|"):
                commands.append(current)
                current = []
            else:
                current.append(t)
        commands.append(current)
    return [c for c in commands if c]


_parser = None


def check_vqclip(args: list[str], where: str) -> None:
    global _parser
    if _parser is None:
        from vqclip.cli import build_parser

        _parser = build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            _parser.parse_args(args)
    except SystemExit as e:
        pytest.fail(f"{where}: `vqclip {shlex.join(args)}` does not parse (exit {e.code}): {err.getvalue().strip()}")


def check_torchrun(args: list[str], where: str) -> None:
    from torch.distributed.run import get_args_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = get_args_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: `torchrun {shlex.join(args)}` does not parse: {err.getvalue().strip()}")
    assert ns.module and ns.training_script == "vqclip", \
        f"{where}: run vqclip under torchrun as `vqclip batch --help` does (`-m vqclip`), got {ns.training_script!r}"
    options = [a.split("=")[0] for a in args[:args.index("-m")] if a.startswith("--")]
    assert all("_" not in o for o in options), f"{where}: torchrun flags as --help spells them (dashes): {options}"
    check_vqclip(ns.training_script_args, where)


def _extras() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def check_pip(args: list[str], where: str) -> None:
    assert args[:1] == ["install"], f"{where}: pip {args}"
    for i, a in enumerate(args):
        assert not a.startswith("vqclip"), (f"{where}: `pip install {a}`: vqclip is installed from its clone "
                                            "(`pip install -e \".[EXTRA]\"`), not from an index")
        if a == "-e":
            target = args[i + 1]
            m = re.fullmatch(r"\.(?:\[([\w,]+)\])?", target)
            assert m, f"{where}: pip install -e {target}: install the clone as -e . or -e \".[EXTRA,...]\""
            unknown = set((m.group(1) or "").split(",")) - {""} - _extras()
            assert not unknown, f"{where}: extras {sorted(unknown)} are not in pyproject.toml"


def check_script(args: list[str], where: str) -> None:
    path = ROOT / args[0]
    assert path.is_file(), f"{where}: {args[0]} does not exist"
    source = path.read_text()
    missing = [a for a in args[1:] if a.startswith("--") and a.split("=")[0] not in source]
    assert not missing, f"{where}: {args[0]} has no {missing}"


_hf_help: list[str] = []


def check_hf(args: list[str], where: str) -> None:
    """`hf download ...`: the flags exist in the installed huggingface_hub's CLI (`hf download --help`)."""
    assert args[:1] == ["download"], f"{where}: hf {args}"
    if not _hf_help:
        hf = shutil.which("hf") or str(Path(sys.executable).parent / "hf")
        _hf_help.append(subprocess.run([hf, "download", "--help"], capture_output=True, text=True, timeout=60).stdout)
    missing = [a for a in args if a.startswith("--") and f"{a} " not in _hf_help[0]]
    assert not missing, f"{where}: `hf download` has no {missing}"


def check_curl(args: list[str], where: str) -> None:
    """`curl -L -o NAME URL`: URL is one the VQGAN registry downloads from."""
    from vqclip.models.registry import VQGAN_ASSETS

    assert args[:2] == ["-L", "-o"] and len(args) == 4, f"{where}: curl {args}"
    urls = {u for a in VQGAN_ASSETS.values() for r in (a.config, a.checkpoint) for u in r.urls}
    assert args[3] in urls, f"{where}: {args[3]} is not a URL of vqclip's VQGAN registry"


def check_command(cmd: list[str], where: str) -> None:
    head, rest = cmd[0], cmd[1:]
    if head == "hf":
        check_hf(rest, where)
    elif head == "curl":
        check_curl(rest, where)
    elif head == "vqclip":
        check_vqclip(rest, where)
    elif head == "torchrun":
        check_torchrun(rest, where)
    elif head == "pip":
        check_pip(rest, where)
    elif head in ("python", "python3") and rest[:2] in (["-m", "vqclip"], ["-m", "vqclip.cli"]):
        check_vqclip(rest[2:], where)
    elif head == "python" and rest[:2] == ["-m", "pytest"]:
        if any(a in ("-n", "--dist") or a.startswith("--no-loadscope") for a in rest):
            import xdist  # noqa: F401 - those flags are pytest-xdist's (the test extra installs it)
    elif head in ("python", "bash") and rest and (rest[0].endswith(".py") or rest[0].endswith(".sh")):
        check_script(rest, where)
    else:
        pattern = TOOLS.get(head)
        assert pattern is not None and pattern.fullmatch(shlex.join(cmd)), \
            f"{where}: `{shlex.join(cmd)}`: not a command this test knows how to check (see TOOLS)"


def check_python(block: Block) -> None:
    tree = ast.parse(block.text, filename=block.name)
    compile(tree, block.name, "exec")
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")  # pyflakes: undefined names too
    done = subprocess.run([ruff, "check", "--no-cache", "--select", "F", "--output-format", "concise",
                           "--stdin-filename", "block.py", "-"], input=block.text, capture_output=True, text=True)
    assert done.returncode == 0, f"{block.name}: {done.stdout.strip()}"
    namespace: dict = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            exec(compile(ast.Module([node], []), block.name, "exec"), namespace)  # noqa: S102 - the docs' imports


# ---------------------------------------------------------------------------------------------------------- running

def fresh_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VQCLIP_CACHE", "HF_HOME", "HF_HUB_CACHE", "MPLCONFIGDIR", "XDG_CACHE_HOME",
                        "XDG_CONFIG_HOME", "PYTEST_CURRENT_TEST")}
    env.update(HOME=str(home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return env


def run_block(block: Block, tmp_path: Path) -> None:
    work, home = tmp_path / "work", tmp_path / "home"
    home.mkdir()
    shutil.copytree(ROOT / "prompts", work / "prompts")
    script = tmp_path / ("block.sh" if block.lang != "python" else "block.py")
    script.write_text(block.text + "\n")
    argv = ["bash", "-e", str(script)] if block.lang != "python" else [sys.executable, str(script)]
    done = subprocess.run(argv, cwd=work, env=fresh_env(home), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, f"{block.name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}"
    left = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert not left, f"{block.name} left files in HOME: {left}"


@pytest.mark.parametrize("block", CODE, ids=[b.name for b in CODE])
def test_docs_code_block(block: Block, tmp_path):
    marker = block.marker or ""
    if marker.startswith("prompt-file"):
        from vqclip.batch import load_prompt_files

        path = tmp_path / marker.split()[1]
        path.write_text(block.text + "\n")
        assert load_prompt_files([str(path)]), block.name
    elif marker.startswith("check:") or marker == "ci:test-command":
        if block.lang == "python":
            check_python(block)
        else:
            assert "<<" not in block.text, f"{block.name}: a here-document in a checked block: run it instead"
            for cmd in command_lines(block.text):
                check_command(cmd, block.name)
    else:
        run_block(block, tmp_path)


def test_the_offline_recipe_is_run_not_only_checked():
    """docs/batch.md's tiny-model recipe is the one documented offline way to try generation: it must stay a run
    block (issue 36 item 9: it failed on `from vqclip.spaces import projection_path`)."""
    recipe = [b for b in CODE if b.path.name == "batch.md" and "make_clip_dir" in b.text]
    assert len(recipe) == 1 and recipe[0].marker is None


def _subcommands(parser) -> dict:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_the_readme_command_table_lists_every_command_and_subcommand():
    """Issue 36 item 13: the table lacked `models check`."""
    from vqclip.cli import build_parser

    table = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `vqclip ")]
    cells = {re.match(r"\| `vqclip ([\w-]+)", line).group(1): re.match(r"\| (`[^`]*`)", line).group(1) for line in table}
    for name, sub in _subcommands(build_parser()).items():
        assert name in cells, f"README's command table has no `vqclip {name}`"
        for child in _subcommands(sub):
            assert re.search(rf"[ |\\]{re.escape(child)}[|\\` ]", cells[name]), \
                f"README's command table: `vqclip {name}` does not list {child}"


def test_the_offline_steps_in_models_md_put_each_file_where_vqclip_looks(tmp_path, monkeypatch):
    """Issue 36 item 12: docs/models.md's by-hand steps, with HOME expanded, copy each file to the path the preflight
    checks and the loaders read: the hub folder of the CLIP's weights, the VQGAN's cache files, published/."""
    from vqclip import preflight
    from vqclip.models.registry import VQGAN_ASSETS, cached_file
    from vqclip.projections import registered_projection
    from vqclip.projections.published import published_dir

    for var in ("HF_HOME", "HF_HUB_CACHE", "VQCLIP_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    block = [b for b in CODE if b.path.name == "models.md" and b.text.lstrip().startswith("# on a machine")]
    assert len(block) == 1
    cmds = [[t.replace("~", str(tmp_path)) if t.startswith("~") else t for t in c] for c in command_lines(block[0].text)]
    hf = next(c for c in cmds if c[0] == "hf")
    need = preflight.clip_need("ViT-B-32", "openai")
    repo = hf[2]
    assert need.path == str(Path(hf[hf.index("--cache-dir") + 1]) / f"models--{repo.replace('/', '--')}")
    assert f"`hf download {' '.join(hf[2:4])} --cache-dir" in need.line()
    copies = {Path(c[-1]) / Path(src).name for c in cmds if c[0] == "cp" for src in c[1:-1] if src != "-r"}
    asset = VQGAN_ASSETS["vqgan_imagenet_f16_16384"]
    expected = {Path(need.path), published_dir(registered_projection("ViT-B-32/openai", "forget"), None),
                cached_file(asset, asset.config, None), cached_file(asset, asset.checkpoint, None)}
    assert copies == expected


def test_the_help_examples_parse_as_the_docs_do():
    """The README's torchrun line follows `vqclip batch --help`; the --help examples themselves pass the same checks
    (vqclip's parser; torchrun's parser, `-m vqclip`, dashed flags)."""
    from vqclip.cli import build_parser

    def walk(parser, name):
        yield name, parser
        for child, sub in _subcommands(parser).items():
            yield from walk(sub, f"{name} {child}")

    checked = 0
    for name, parser in walk(build_parser(), "vqclip"):
        for line in (parser.epilog or "").splitlines():
            line = line.strip()
            if line.startswith(("vqclip ", "torchrun ")):
                for cmd in command_lines(line):
                    check_command(cmd, f"`{name} --help`")
                checked += 1
    assert checked >= 20
