"""The package's shape (issue 26): rooms under 500 lines, functions under 60, every package in the layer contract.

Counted as the code reads: a file's lines, and a function from its `def` line to its last line (docstring
included). A function that needs more is split by responsibility (docs/architecture.md)."""

from __future__ import annotations

import ast
import pathlib

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: import-linter brings tomli
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vqclip"
SOURCES = sorted(PACKAGE.rglob("*.py"))
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60


def functions(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_the_package_is_found():
    assert len(SOURCES) > 50 and PACKAGE / "generation" / "loop.py" in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_source_file_over_500_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_FILE_LINES, f"{path.relative_to(ROOT)} has {n} lines; split it by responsibility"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_over_60_lines(path):
    long = [f"{f.name} ({f.end_lineno - f.lineno + 1} lines, line {f.lineno})" for f in functions(path)
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.relative_to(ROOT)}: {', '.join(long)}"


def test_the_layer_contract_names_every_package_and_top_level_module():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    named = {part.strip() for layer in layers for part in layer.replace(":", "|").split("|")}
    children = {f"vqclip.{p.stem if p.is_file() else p.name}" for p in PACKAGE.iterdir()
                if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()}
    assert children == named, f"missing from the contract: {sorted(children - named)}; " \
                              f"not in the package: {sorted(named - children)}"
    assert not any("ignore_imports" in c for c in config["contracts"])
