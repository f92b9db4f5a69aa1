"""Readers for files vqclip did not write: images whose header promises more pixels than is safe to decode."""

from __future__ import annotations

import os
import re
from typing import Any

from .errors import VqclipError, bad_arg, one_line

# Pillow's own warning threshold (~89.5 M pixels, a 9459 x 9459 image): nothing vqclip reads is near it, and a
# few kilobytes of PNG can declare far more (a decompression bomb).
MAX_PIXELS = 89_478_485


def open_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS):
    """`PIL.Image.open` that refuses, as an OSError, an image larger than `max_pixels` before decoding it.

    Pillow raises DecompressionBombError (not an OSError) only beyond twice its limit and merely warns below;
    callers that already handle unreadable files as OSError then handle bombs too.
    """
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():  # the size is checked below, with a refusal instead of a warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise OSError(f"{path}: too large to decode safely ({e})") from None
    width, height = im.size
    if width * height > max_pixels:
        im.close()
        raise OSError(f"{path}: {width}x{height} pixels is more than the {max_pixels} vqclip decodes "
                      "(a decompression bomb?)")
    return im


# ------------------------------------------------------------------------------------------ bounded text files
#
# Every JSON / YAML file vqclip reads and did not just write itself (manifests, run.json, batch.json, feature
# cache metadata, annotation files, taming model.yaml, open_clip_config.json) goes through `read_json` /
# `read_yaml`: a regular file only (never a FIFO or a device, which would block or never end), at most
# `max_bytes`, strict UTF-8, nesting at most `max_depth` levels, and integers of at most 4300 digits (Python's
# own limit). Every refusal is an `UntrustedFileError`: a VqclipError, hence a ValueError, so callers that
# already treat `ValueError` as "not readable JSON" handle it unchanged, and the CLI prints it on one line.

MAX_JSON_BYTES = 64 << 20  # 64 MiB: a 100,000-record manifest is ~9 MB, a run.json a few kB
MAX_YAML_BYTES = 1 << 20  # 1 MiB: a taming model.yaml is ~1 kB
MAX_DEPTH = 64  # lists/mappings inside each other; vqclip's own files nest at most 6 deep
MAX_TEXT_BYTES = 64 << 20  # word lists, class maps, attack-word files


class UntrustedFileError(VqclipError):
    """An input file breaks a bound on size, kind, encoding or nesting; the message names the file and the rule.

    `rule` and `fix` hold the two parts, for callers that list problems in their own format."""

    rule: str = ""
    fix: str = ""


def _refuse(path: Any, rule: str, fix: str, arg: str | None = None) -> UntrustedFileError:
    where = f"{arg}: {path}" if arg else str(path)
    error = UntrustedFileError(f"{where}: {rule}. {fix}")
    error.arg, error.rule, error.fix = arg, rule, fix
    return error


def read_bytes(path: str | os.PathLike, max_bytes: int, arg: str | None = None, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `max_bytes`, read without ever blocking on a FIFO or reading a
    device without end (`/dev/zero`, symlinks to either). FileNotFoundError / IsADirectoryError / PermissionError
    pass through as the OSErrors they are."""
    import stat

    path = os.fspath(path)
    st = os.stat(path)  # follows links: a link to a regular file is fine, a link to /dev/zero is not
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(21, "Is a directory", path)
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise _refuse(path, f"is {kind}, not a regular {what}", "Pass a regular file.", arg)
    if st.st_size > max_bytes:
        raise _refuse(path, f"is {st.st_size} bytes, more than the {max_bytes} vqclip reads as a {what}",
                      "Pass the right file (or split it).", arg)
    # O_NONBLOCK: should the file be swapped for a FIFO between stat and open, the open does not hang
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise _refuse(path, f"is not a regular {what}", "Pass a regular file.", arg)
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _refuse(path, f"holds more than the {max_bytes} bytes vqclip reads as a {what}",
                      "Pass the right file (or split it).", arg)
    return data


def read_text(path: str | os.PathLike, max_bytes: int = MAX_TEXT_BYTES, arg: str | None = None,
              what: str = "text file", encoding: str = "utf-8") -> str:
    """`read_bytes` decoded as strict UTF-8 (a BOM is dropped with utf-8-sig); binary files are one-line errors."""
    data = read_bytes(path, max_bytes, arg, what)
    if b"\x00" in data[:8192]:
        raise _refuse(path, f"is a binary file, not a {what}", "Pass a UTF-8 text file.", arg)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise _refuse(path, f"is not UTF-8 text ({e.reason} at byte {e.start})", "Save it as UTF-8.", arg) from None


def nesting_problem(data: Any, max_depth: int = MAX_DEPTH) -> str | None:
    """The rule `data` breaks when lists/mappings nest deeper than `max_depth`; checked without recursion, and
    each shared container (a YAML alias) walked once."""
    seen: set[int] = set()
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, tuple, dict)):
            if id(value) in seen:
                continue
            seen.add(id(value))
            if depth >= max_depth:
                return f"nests lists/mappings more than {max_depth} levels deep"
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return None


def parse_json(text: str | bytes, source: Any = "<json>", arg: str | None = None, max_depth: int = MAX_DEPTH,
               finite: bool = False) -> Any:
    """json.loads with its failures as one-line UntrustedFileErrors: syntax, nesting (no RecursionError), integers
    beyond 4300 digits and, with `finite`, NaN / Infinity."""
    import json

    def no_constant(name: str):
        raise ValueError(f"{name} is not a JSON number")

    try:
        data = json.loads(text, **({"parse_constant": no_constant} if finite else {}))
    except json.JSONDecodeError as e:
        raise _refuse(source, f"is not valid JSON ({e.msg}, line {e.lineno} column {e.colno})",
                      "Fix or replace the file.", arg) from None
    except RecursionError:
        raise _refuse(source, f"nests lists/mappings more than {max_depth} levels deep", "Fix or replace the file.",
                      arg) from None
    except UnicodeDecodeError as e:
        raise _refuse(source, f"is not UTF-8 text ({e.reason} at byte {e.start})", "Save it as UTF-8.", arg) from None
    except ValueError as e:  # a 10**4000-digit integer, or NaN with `finite`
        raise _refuse(source, f"is not JSON vqclip reads ({one_line(e, 120)})", "Fix or replace the file.",
                      arg) from None
    problem = nesting_problem(data, max_depth)
    if problem:
        raise _refuse(source, problem, "Fix or replace the file.", arg)
    return data


def read_json(path: str | os.PathLike, arg: str | None = None, max_bytes: int = MAX_JSON_BYTES,
              max_depth: int = MAX_DEPTH, finite: bool = False) -> Any:
    """The JSON document in a file, read within the bounds above (see `read_bytes` and `parse_json`)."""
    data = read_bytes(path, max_bytes, arg, "JSON file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _refuse(path, f"is not UTF-8 text ({e.reason} at byte {e.start})", "Fix or replace the file.",
                      arg) from None
    return parse_json(text, path, arg, max_depth, finite)


# How far YAML aliases may expand: a few hundred bytes of nested aliases otherwise stand for billions of values.
ALIAS_EXPANSION = 10  # expanded nodes allowed per node written, beyond a small allowance
ALIAS_ALLOWANCE = 10_000


def yaml_loader():
    """libyaml's safe loader when PyYAML was built with it (pure Python is ~10x slower on long files)."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def yaml_shape_problem(text: str, max_depth: int) -> tuple[int | None, str] | None:
    """(line, rule) when YAML/JSON text nests deeper than `max_depth` or its aliases expand far beyond its size.

    Reads parser events only (nothing is built), so a hostile file costs time linear in its length: an alias bomb
    is refused before it is expanded and deep nesting before any recursive reader sees it.
    """
    import yaml

    stack: list[list] = [[None, 0]]  # per open collection: its anchor and its expanded size so far
    anchors: dict[str, int] = {}  # anchor -> expanded size of what it names
    written = expanded = 0
    for event in yaml.parse(text, Loader=yaml_loader()):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack.append([event.anchor, 1])
            if len(stack) - 1 > max_depth:
                return event.start_mark.line + 1, f"nests lists/mappings more than {max_depth} levels deep"
            size = 1
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, inner = stack.pop()
            stack[-1][1] += inner
            if anchor:
                anchors[anchor] = inner
            continue
        elif isinstance(event, yaml.ScalarEvent):
            stack[-1][1] += 1
            size = 1
            if event.anchor:
                anchors[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            size = anchors.get(event.anchor, 1)
            stack[-1][1] += size
        else:
            continue
        written += 1
        expanded += size
        if expanded > ALIAS_EXPANSION * written + ALIAS_ALLOWANCE:
            return event.start_mark.line + 1, (f"its aliases (*name) expand to more than {ALIAS_EXPANSION} times "
                                               "the values written (a YAML alias bomb?)")
    return None


def read_yaml(path: str | os.PathLike, arg: str | None = None, max_bytes: int = MAX_YAML_BYTES,
              max_depth: int = 32) -> Any:
    """A YAML document read with `yaml.safe_load` after its event stream was checked (without recursion) for
    nesting deeper than `max_depth` and for aliases that expand far beyond the text (an alias bomb)."""
    import yaml

    text = read_text(path, max_bytes, arg, "YAML file", encoding="utf-8-sig")
    try:
        shape = yaml_shape_problem(text, max_depth)
        if shape:
            raise _refuse(path, f"{shape[1]} (line {shape[0]})" if shape[0] else shape[1],
                          "Fix or replace the file.", arg)
        data = yaml.load(text, Loader=yaml_loader())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise _refuse(path, f"is not valid YAML ({one_line(getattr(e, 'problem', None) or e, 120)}{where})",
                      "Fix or replace the file.", arg) from None
    except RecursionError:
        raise _refuse(path, f"nests lists/mappings more than {max_depth} levels deep", "Fix or replace the file.",
                      arg) from None
    return data


# ---------------------------------------------------------------------------------- option files (--config)

MAX_CONFIG_KEYS = 256  # a command has under 100 options; the file maps option names to values
MAX_CONFIG_VALUES = 10_000  # scalars and containers in the whole file (lists of image prompts included)
MAX_RESOLVED_CHARS = 1 << 20  # the text of every value after `${key}` interpolation, summed
_INTERPOLATION = re.compile(r"\$\{([^{}]*)\}")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def config_problem(data: Any, max_keys: int = MAX_CONFIG_KEYS, max_values: int = MAX_CONFIG_VALUES,
                   max_chars: int = MAX_RESOLVED_CHARS) -> tuple[str, str] | None:
    """(rule, fix) when an option file read by `read_yaml` is beyond what vqclip resolves, else None; checked
    before omegaconf sees it, in time linear in the file.

    At most `max_keys` top-level keys and `max_values` values in all; interpolations only of the form `${key}`
    naming another top-level key (no resolvers such as `${oc.env:...}`, no nesting, no cycles); and the text of
    every value after interpolation at most `max_chars` in all, computed from the lengths (a file of 28 lines that
    doubles a string at each line would otherwise resolve to gigabytes)."""
    if not isinstance(data, dict):
        return None
    if len(data) > max_keys:
        return (f"holds {len(data)} keys; an option file names at most {max_keys} options",
                "Keep one key per option (see --help).")
    strings, stack, count = [], [data], 0
    while stack:
        node = stack.pop()
        count += 1
        if count > max_values:
            return f"holds more than {max_values} values", "Keep the file to the options a command takes."
        if isinstance(node, dict):
            stack.extend(node.values())
            stack.extend(k for k in node if isinstance(k, str))
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and "${" in node:
            strings.append(node)
    return _ResolvedLengths(data, max_chars).problem(strings) if strings else None


class _ResolvedLengths:
    """The length of each string of an option file after `${key}` interpolation, from the lengths of the keys'
    values (each computed once), without building a single resolved string."""

    def __init__(self, data: dict, max_chars: int):
        self.keys = {str(k): v for k, v in data.items()}
        self.max_chars = max_chars
        self.memo: dict[str, int] = {}

    def problem(self, strings: list[str]) -> tuple[str, str] | None:
        try:
            resolved = 0
            for text in strings:
                resolved += self.text_length(text, ())
                if resolved > self.max_chars:
                    raise OverflowError
        except OverflowError:
            return (f"its ${{...}} interpolations expand to more than {self.max_chars} characters",
                    "Write the values out instead of building them from each other.")
        except ValueError as e:
            return str(e), "Write the values out, or refer to another key only as ${key}."
        return None

    def key_length(self, key: str, seen: tuple[str, ...]) -> int:
        if key in self.memo:
            return self.memo[key]
        if key in seen:
            raise ValueError(f"${{{key}}} refers to itself (through {' -> '.join(seen)})")
        value = self.keys[key]
        self.memo[key] = self.text_length(value, (*seen, key)) if isinstance(value, str) else len(str(value))
        return self.memo[key]

    def text_length(self, text: str, seen: tuple[str, ...]) -> int:
        total = len(text)
        for m in _INTERPOLATION.finditer(text):
            name = m.group(1).strip()
            if not _KEY.fullmatch(name) or name not in self.keys:
                raise ValueError(f"the interpolation {one_line(m.group(0), 60)} is not ${{key}} of another key of "
                                 "the file (resolvers, nested and relative references are not read)")
            total += self.key_length(name, seen) - len(m.group(0))
            if total > self.max_chars:
                raise OverflowError
        if "${" in _INTERPOLATION.sub("", text):
            raise ValueError(f"{one_line(text, 60)!r} holds a '${{' that is no ${{key}} interpolation")
        return total


# --------------------------------------------------------------------------------------- number arguments

def check_number(value: Any, arg: str, low: float | None = None, high: float | None = None,
                 low_open: bool = False, example: str = "") -> float:
    """A finite real number within [low, high] (`low_open`: above low), else the standard one-line error.

    For option and config values whose NaN or infinity would start a long run that can only end wrong."""
    import math

    lo = "" if low is None else (f"above {low}" if low_open else f"at least {low}")
    hi = "" if high is None else f"at most {high}"
    rule = "must be a finite number" + (f" {lo}" if lo else "") + (f" and {hi}" if lo and hi else f" {hi}" if hi
                                                                  else "")
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok:
        try:
            f = float(value)
        except OverflowError:
            ok = False
        else:
            ok = math.isfinite(f) and (low is None or (f > low if low_open else f >= low)) and (high is None
                                                                                               or f <= high)
    if not ok:
        raise bad_arg(arg, rule, value, f"Try {example}." if example else "Pass a finite number.")
    return float(value)


def check_count(value: Any, arg: str, low: int, high: int, example: str = "") -> int:
    """A whole number in [low, high] (for --max-images, --size, --thumb and the like), else the one-line error."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad_arg(arg, f"must be a whole number from {low} to {high}", value,
                      f"Try {example}." if example else f"Pass a number from {low} to {high}.")
    return value
