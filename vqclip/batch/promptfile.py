"""Prompt files for batch runs: `.txt` (one prompt a line) and `.yaml` / `.json` / `.csv` lists of items.

Every problem in every file is collected with its file and line before anything runs, so one pass fixes them all.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Container, Mapping, Sequence

from ..errors import SEED_MAX, VqclipError, bad_arg

FORMATS = {".txt": "txt", ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".csv": "csv"}
# Settings an item may override (names of `generation.Settings` fields).
SETTING_FIELDS = ("steps", "size", "lr", "optimizer", "method", "loss", "cutn", "cut_pow", "augment", "noise",
                  "init_image", "init_weight", "change_every", "noise_prompts", "image_prompt_mode", "save_best")
ITEM_FIELDS = ("prompt", "id", "word_type", "seed", "seeds") + SETTING_FIELDS
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
WORD_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# Names a job folder may not take: they are the batch folder's own files.
RESERVED_IDS = frozenset({"batch.json", "manifest.jsonl", "grid.png", "index.html", "score"})
MAX_LISTED = 40
# Bounds on what a file may make us build: seeds per list, nesting of YAML/JSON, and how much YAML aliases may
# expand (a few hundred bytes of nested aliases otherwise stand for billions of values).
MAX_SEEDS = 10_000
MAX_DEPTH = 32
MAX_FILE_BYTES = 64 << 20  # a prompt file of 64 MiB holds ~1M prompts, beyond what one batch folder is for
ALIAS_EXPANSION = 10  # expanded nodes allowed per node written, beyond a small allowance
ALIAS_ALLOWANCE = 10_000
_SHORT = reprlib.Repr()  # values quoted in messages: a huge list or text is shown by its start
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 120, 120, 8, 8


@dataclass(frozen=True)
class Problem:
    """One bad line: where it is and what is wrong (rule, value received and fix)."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


class PromptFileError(VqclipError):
    """All the problems found in a set of prompt files."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        shown = [f"  {p}" for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            shown.append(f"  ... and {len(self.problems) - MAX_LISTED} more")
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{len(self.problems)} {noun} in the prompt file(s); nothing was run:\n" + "\n".join(shown))


@dataclass
class PromptItem:
    """One prompt of a batch with its per-item settings; `source` is `file:line`."""

    prompt: str
    id: str
    word_type: str | None = None
    seeds: tuple[int, ...] | None = None  # None: the batch's --seeds
    overrides: dict[str, Any] = field(default_factory=dict)  # Settings fields
    source: str = ""

    def to_dict(self) -> dict:
        return {"id": self.id, "prompt": self.prompt, "word_type": self.word_type,
                "seeds": list(self.seeds) if self.seeds is not None else None,
                "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in self.overrides.items()},
                "source": self.source}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PromptItem":
        overrides = {k: tuple(v) if k == "size" else v for k, v in (d.get("overrides") or {}).items()}
        seeds = d.get("seeds")
        return cls(str(d["prompt"]), str(d["id"]), d.get("word_type"),
                   tuple(int(s) for s in seeds) if seeds is not None else None, overrides, str(d.get("source", "")))


class FieldError(ValueError):
    """A value that breaks a field's rule; `fix` says what to write instead."""

    def __init__(self, rule: str, fix: str):
        super().__init__(rule)
        self.rule, self.fix = rule, fix


# ---------------------------------------------------------------------------------------------------------------
# Field converters: each takes a raw value (CSV/TXT strings or YAML/JSON values) and returns the clean one.

def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FieldError("must be text", 'Quote it, e.g. "an apple".')
    return str(value).strip()


def _int_value(value: Any, minimum: int, example: str) -> int:
    if isinstance(value, bool):
        raise FieldError("must be a whole number", f"Write e.g. {example}.")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d{1,30}\s*", value):  # longer is never a count
        value = int(value)
    if not isinstance(value, int):
        raise FieldError("must be a whole number", f"Write e.g. {example}.")
    if value < minimum:
        raise FieldError(f"must be {minimum} or more", f"Write e.g. {example}.")
    if value > 2**64:  # no count or seed vqclip takes comes near; beyond it, numbers only overflow later
        raise FieldError("must be at most 2**64", f"Write e.g. {example}.")
    return value


def _float_value(value: Any, example: str) -> float:
    if isinstance(value, bool):
        raise FieldError("must be a number", f"Write e.g. {example}.")
    try:
        out = float(value)
    except OverflowError:  # an integer beyond 1e308
        raise FieldError("must be a finite number", f"Write e.g. {example}.") from None
    except (TypeError, ValueError):
        raise FieldError("must be a number", f"Write e.g. {example}.") from None
    if not math.isfinite(out):
        raise FieldError("must be a finite number", f"Write e.g. {example}.")
    return out


def parse_seed_list(value: Any) -> tuple[int, ...]:
    """`3`, `"0,1,2"`, `"0-9"`, `"0..9"` (inclusive ranges) or a list of ints -> tuple of seeds in 0..SEED_MAX."""
    fix = 'Write e.g. 0, "0,1,2" or "0-9".'
    too_big = f"seeds must be at most {SEED_MAX} (2**63 - 1)"
    many = f"a seed list may hold at most {MAX_SEEDS} seeds, one image per seed and space"
    fix_many = "Split the work into several batches, e.g. --seeds 0-9999 then 10000-19999."
    if isinstance(value, (list, tuple)):
        parts: list[Any] = list(value)
    elif isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
    else:
        parts = [value]
    if len(parts) > MAX_SEEDS:
        raise FieldError(f"{many} ({len(parts)} listed)", fix_many)
    seeds: list[int] = []
    for part in parts:
        if isinstance(part, str) and (m := re.fullmatch(r"(\d+)\s*(?:-|\.\.)\s*(\d+)", part)):
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise FieldError(f"the range {part!r} runs backwards", fix)
            if hi > SEED_MAX:
                raise FieldError(f"{too_big}, {part!r} goes beyond", fix)
            if len(seeds) + hi - lo + 1 > MAX_SEEDS:  # counted before a single seed is listed
                raise FieldError(f"{many} (the range {part!r} alone holds {hi - lo + 1})", fix_many)
            seeds.extend(range(lo, hi + 1))
        elif part == "":
            raise FieldError("has an empty entry", fix)
        else:
            try:
                seeds.append(_int_value(part, 0, "0"))
            except FieldError:
                raise FieldError(f"seeds must be whole numbers >= 0, {part!r} is not", fix) from None
            if seeds[-1] > SEED_MAX:
                raise FieldError(f"{too_big}, {part!r} is not", fix)
    if not seeds:
        raise FieldError("needs at least one seed", fix)
    if len(set(seeds)) != len(seeds):
        raise FieldError("lists a seed twice", fix)
    return tuple(seeds)


def _seed(value: Any) -> tuple[int]:
    seed = _int_value(value, 0, "42")
    if seed > SEED_MAX:
        raise FieldError(f"must be at most {SEED_MAX} (2**63 - 1)", "Write e.g. 42.")
    return (seed,)


def _size(value: Any) -> tuple[int, int]:
    fix = 'Write e.g. 480, "480 320", "480x320" or [480, 320].'
    if isinstance(value, str):
        parts: list[Any] = [p for p in re.split(r"[\sx×,]+", value.strip().lower()) if p]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise FieldError("must be a width and a height", fix)
    try:
        return tuple(_int_value(p, 1, "480") for p in parts)  # type: ignore[return-value]
    except FieldError:
        raise FieldError("must be whole numbers of pixels", fix) from None


def _choice(choices: Callable[[], Sequence[str]]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        valid = sorted(choices())
        text = _text(value).lower()
        if text not in valid:
            raise FieldError("is not one of the known choices", "Valid choices: " + ", ".join(valid) + ".")
        return text
    return convert


def _methods():
    from ..generation.loop import METHODS
    return METHODS


def _optimizers():
    from ..generation.loop import OPTIMIZERS
    return OPTIMIZERS


def _losses():
    from ..generation.ops import LOSSES
    return LOSSES


def _augment(value: Any) -> str:
    from ..generation.cutouts import parse_augmentations

    text = ",".join(_text(v) for v in value) if isinstance(value, (list, tuple)) else _text(value)
    try:
        parse_augmentations(text)
    except VqclipError as e:
        raise FieldError("names an unknown augmentation", str(e).split(". ", 1)[-1]) from None
    return text


def _item_id(value: Any) -> str:
    text = _text(value)
    if not ID_PATTERN.match(text) or text.lower() in RESERVED_IDS:
        raise FieldError("must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
                         "(it names the item's folder)", 'Write e.g. "apple-1".')
    return text


def _word_type(value: Any) -> str:
    text = _text(value).lower()
    if not WORD_TYPE_PATTERN.match(text):
        raise FieldError("must be a short lowercase label", "Write real or nonsense.")
    return text


def _prompt(value: Any) -> str:
    from ..generation.prompts import check_weights_nonzero, parse_story

    text = _text(value)
    if not text:
        raise FieldError("is empty", 'Write a prompt such as "an apple" or "apple | text:-0.5".')
    try:
        for phase in parse_story(text):
            check_weights_nonzero(phase)
    except VqclipError as e:
        raise FieldError("is not a valid prompt", str(e)) from None
    return text


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "prompt": _prompt,
    "id": _item_id,
    "word_type": _word_type,
    "seed": _seed,
    "seeds": parse_seed_list,
    "steps": lambda v: _int_value(v, 0, "300"),
    "size": _size,
    "lr": lambda v: _float_value(v, "0.1"),
    "optimizer": _choice(_optimizers),
    "method": _choice(_methods),
    "loss": _choice(_losses),
    "cutn": lambda v: _int_value(v, 1, "32"),
    "cut_pow": lambda v: _float_value(v, "1.0"),
    "augment": _augment,
    "noise": lambda v: _float_value(v, "0.1"),
    "init_image": _text,
    "init_weight": lambda v: _float_value(v, "0.5"),
    "change_every": lambda v: _int_value(v, 0, "50"),
    "noise_prompts": lambda v: _noise_prompts(v),
    "image_prompt_mode": _choice(lambda: ("cutouts", "centre")),
    "save_best": lambda v: _bool_value(v),
}


def _noise_prompts(value: Any) -> list[str]:
    """`"42:0.5 | 7"` or a list of such items -> ["42:0.5", "7:1.0"] (turned into prompts by `job_settings`)."""
    from ..generation.prompts import parse_noise_prompt

    items = value if isinstance(value, list) else str(value).split("|")
    try:
        prompts = [parse_noise_prompt(str(v).strip(), "noise_prompts") for v in items if str(v).strip()]
        return [f"{p.text}:{p.weight}" for p in prompts]
    except VqclipError as e:
        raise FieldError("is not a list of SEED[:WEIGHT] noise prompts", str(e)) from None


def _bool_value(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise FieldError("must be true or false", "Write `true` or `false`.")


def normalise_key(key: Any) -> str:
    return str(key).strip().lower().replace("-", "_")


# ---------------------------------------------------------------------------------------------------------------
# Raw entries: what each format yields before the shared validation.

@dataclass
class RawEntry:
    """One item as read from a file: its fields and the line of the item and of each field."""

    file: str
    line: int | None
    fields: dict[str, Any]
    field_lines: dict[str, int | None] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)  # file-level settings, already validated


def _read_text(path: Path, problems: list[Problem]) -> str | None:
    from ..untrusted import UntrustedFileError, read_bytes

    try:  # a regular file of at most MAX_FILE_BYTES: a FIFO, /dev/zero or a link to them is refused at once
        return read_bytes(path, MAX_FILE_BYTES, what="prompt file").decode("utf-8-sig")
    except UntrustedFileError as e:
        problems.append(Problem(str(path), None, f"{e.rule}; {e.fix[:1].lower()}{e.fix[1:].rstrip('.')}"))
    except FileNotFoundError:
        problems.append(Problem(str(path), None, "the prompt file does not exist; check the path"))
    except IsADirectoryError:
        problems.append(Problem(str(path), None, "is a folder, not a prompt file; give the file inside it"))
    except UnicodeDecodeError as e:
        problems.append(Problem(str(path), None, f"is not UTF-8 text ({e.reason} at byte {e.start}); "
                                                 "save it as UTF-8"))
    except OSError as e:
        problems.append(Problem(str(path), None, f"cannot be read ({e.strerror})"))
    return None


def _convert(name: str, value: Any, file: str, line: int | None, problems: list[Problem]) -> tuple[bool, Any]:
    try:
        return True, CONVERTERS[name](value)
    except FieldError as e:
        problems.append(Problem(file, line, f"{name}: {e.rule}; got {_SHORT.repr(value)}. {e.fix}"))
        return False, None


def _unknown_field(name: str, file: str, line: int | None, allowed: Sequence[str]) -> Problem:
    return Problem(file, line, f"unknown field {name!r}; valid fields: {', '.join(allowed)}")


def read_txt(path: Path, text: str, problems: list[Problem]) -> list[RawEntry]:
    """One prompt a line; `#` starts a comment line; `#: key: value` sets a field for the lines below it."""
    entries, defaults = [], {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#:"):
            key, sep, value = line[2:].partition(":")
            key = normalise_key(key)
            allowed = [k for k in ITEM_FIELDS if k not in ("prompt", "id")]
            if not sep or key not in allowed:
                problems.append(Problem(str(path), n, f"directive {line!r} must read '#: FIELD: VALUE' with FIELD "
                                                      f"one of {', '.join(allowed)}"))
                continue
            value = value.strip()
            if not value:
                defaults.pop(key, None)  # an empty value clears the field
                continue
            ok, clean = _convert(key, value, str(path), n, problems)
            if ok:
                defaults.pop({"seed": "seeds", "seeds": "seed"}.get(key, ""), None)  # the later one replaces
                defaults[key] = clean
            continue
        if line.startswith("#"):
            continue
        entries.append(RawEntry(str(path), n, {"prompt": line}, {"prompt": n}, dict(defaults)))
    return entries


def read_csv(path: Path, text: str, problems: list[Problem]) -> list[RawEntry]:
    """A header row naming the fields (`prompt` required), then one item a row; rows starting with # are comments.

    Parsed strictly: a quote that is never closed is an error at the row where it opens, not a cell that
    silently swallows the rest of the file.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    entries: list[RawEntry] = []
    last_line = 0
    try:
        for row in reader:
            start, last_line = last_line + 1, reader.line_num
            if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [normalise_key(c) for c in row]
                unknown = [c for c in header if c not in ITEM_FIELDS]
                for c in unknown:
                    problems.append(_unknown_field(c, str(path), start, ITEM_FIELDS))
                dupes = sorted({c for c in header if header.count(c) > 1})
                if dupes:
                    problems.append(Problem(str(path), start, f"column(s) named twice: {', '.join(dupes)}"))
                if "prompt" not in header:
                    problems.append(Problem(str(path), start, "the header row needs a 'prompt' column; got columns "
                                                              f"{', '.join(header)}"))
                if unknown or dupes or "prompt" not in header:
                    return []
                continue
            if len(row) > len(header):
                problems.append(Problem(str(path), start, f"has {len(row)} cells but the header names {len(header)} "
                                                          "columns; quote cells that contain commas"))
                continue
            fields = {k: v for k, v in zip(header, row) if v.strip()}
            entries.append(RawEntry(str(path), start, fields, {k: start for k in fields}))
    except csv.Error as e:
        hint = "; a quoted cell opened here is never closed" if "end of data" in str(e) else \
            '; a quote (") inside a quoted cell must be doubled ("")'
        problems.append(Problem(str(path), last_line + 1, f"is not valid CSV ({e}){hint}"))
    if header is None:
        problems.append(Problem(str(path), None, "has no header row; the first row names the columns, e.g. "
                                                 "'prompt,id,word_type'"))
    return entries


def _node_lines(root) -> tuple[dict, list]:
    """From a composed YAML node: the key lines of `defaults` and, per item, (item line, {key: line}, raw scalars)."""
    import yaml

    defaults_lines: dict[str, int] = {}
    items_node = root
    if isinstance(root, yaml.MappingNode):
        items_node = None
        for k, v in root.value:
            if k.value == "prompts":
                items_node = v
            elif k.value == "defaults" and isinstance(v, yaml.MappingNode):
                defaults_lines = {normalise_key(kk.value): kk.start_mark.line + 1 for kk, _ in v.value}
    items = []
    if isinstance(items_node, yaml.SequenceNode):
        for node in items_node.value:
            keys, scalars = {}, {}
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    keys[normalise_key(k.value)] = k.start_mark.line + 1
                    if isinstance(v, yaml.ScalarNode):
                        scalars[normalise_key(k.value)] = v.value
            elif isinstance(node, yaml.ScalarNode):
                scalars["prompt"] = node.value
            items.append((node.start_mark.line + 1, keys, scalars))
    return defaults_lines, items


def _yaml_loader():
    """libyaml's loader when PyYAML was built with it (pure Python is ~10x slower on long files)."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _shape_problem(text: str) -> tuple[int | None, str] | None:
    """(line, rule) when YAML/JSON text nests deeper than MAX_DEPTH or its aliases expand far beyond its size."""
    return yaml_shape_problem(text, MAX_DEPTH)


def yaml_shape_problem(text: str, max_depth: int = MAX_DEPTH) -> tuple[int | None, str] | None:
    """(line, rule) when YAML/JSON text nests deeper than `max_depth` or its aliases expand far beyond its size.

    Reads parser events only (nothing is built), so a hostile file costs time linear in its length: an alias bomb
    is refused before it is expanded and deep nesting before any recursive reader sees it.
    """
    import yaml

    stack: list[list] = [[None, 0]]  # per open collection: its anchor and its expanded size so far
    anchors: dict[str, int] = {}  # anchor -> expanded size of what it names
    written = expanded = 0
    for event in yaml.parse(text, Loader=_yaml_loader()):
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


def _depth_problem(data: Any) -> tuple[None, str] | None:
    """(None, rule) when loaded JSON nests deeper than MAX_DEPTH (checked without recursion)."""
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, dict)):
            if depth >= MAX_DEPTH:
                return None, f"nests lists/mappings more than {MAX_DEPTH} levels deep"
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return None


def read_structured(path: Path, text: str, kind: str, problems: list[Problem]) -> list[RawEntry]:
    """YAML/JSON: a list of items, or {prompts: [...], defaults: {...}}; an item is a prompt or a mapping."""
    import yaml

    file = str(path)
    fix = "write the prompts as a flat list of items (see docs/batch.md)"
    root = None
    try:
        if kind == "json":
            data = json.loads(text)
            shape = _depth_problem(data)
        else:
            shape = _shape_problem(text)  # before anything is built from the text
            if not shape:
                loader = _yaml_loader()(text)
                try:  # composed once: the nodes give line numbers, and the data is built from them
                    root = loader.get_single_node()
                    data = loader.construct_document(root) if root is not None else None
                finally:
                    loader.dispose()
    except json.JSONDecodeError as e:
        problems.append(Problem(file, e.lineno, f"is not valid JSON ({e.msg}, column {e.colno})"))
        return []
    except ValueError as e:  # json's other refusals: an integer of more than 4300 digits
        from ..errors import one_line

        problems.append(Problem(file, None, f"is not {kind.upper()} vqclip reads ({one_line(e, 120)})"))
        return []
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problems.append(Problem(file, mark.line + 1 if mark else None,
                                f"is not valid YAML ({getattr(e, 'problem', None) or e})"))
        return []
    except RecursionError:  # JSON nested deeper than Python's reader goes
        shape = None, f"nests lists/mappings more than {MAX_DEPTH} levels deep"
    if shape:
        problems.append(Problem(file, shape[0], f"{shape[1]}; {fix}"))
        return []
    try:
        if root is None and kind == "json":
            root = yaml.compose(text, Loader=_yaml_loader())
        defaults_lines, item_lines = _node_lines(root)
    except yaml.YAMLError:  # valid JSON that YAML 1.1 cannot compose (rare): items get numbers, not lines
        defaults_lines, item_lines = {}, []
    defaults_raw: Any = {}
    if isinstance(data, dict):
        extra = sorted(set(data) - {"prompts", "defaults"})
        if extra:
            problems.append(Problem(file, 1, f"unknown top-level key(s) {', '.join(map(str, extra))}; a prompt file "
                                             "holds a list of items, or 'prompts' (the list) and 'defaults'"))
        defaults_raw = data.get("defaults") or {}
        data = data.get("prompts")
    if not isinstance(data, list):
        problems.append(Problem(file, None, "must hold a list of prompts (or a mapping with a 'prompts' list); got "
                                            f"{type(data).__name__}"))
        return []
    defaults: dict[str, Any] = {}
    if not isinstance(defaults_raw, dict):
        problems.append(Problem(file, None, "'defaults' must be a mapping of field names to values"))
    else:
        allowed = [k for k in ITEM_FIELDS if k not in ("prompt", "id")]
        for key, value in defaults_raw.items():
            name, line = normalise_key(key), defaults_lines.get(normalise_key(key))
            if name not in allowed:
                problems.append(_unknown_field(name, file, line, allowed))
                continue
            ok, clean = _convert(name, value, file, line, problems)
            if ok:
                defaults[name] = clean
    entries = []
    for i, item in enumerate(data):
        line, keys, scalars = item_lines[i] if i < len(item_lines) else (None, {}, {})
        where = file if line else f"{file} (item {i + 1})"
        if kind == "yaml" and not isinstance(item, (dict, list)) and "prompt" in scalars:
            # YAML reads words like `no`, `null` or `1e3` as booleans, None or numbers: keep what was written
            entries.append(RawEntry(where, line, {"prompt": scalars["prompt"]}, {"prompt": line}, dict(defaults)))
        elif isinstance(item, (str, int, float)) and not isinstance(item, bool):
            fields = {"prompt": item}
            entries.append(RawEntry(where, line, fields, {"prompt": line}, dict(defaults)))
        elif isinstance(item, dict):
            fields = {normalise_key(k): v for k, v in item.items()}
            if kind == "yaml":  # YAML turns words like `no` or `1e3` into booleans/numbers: keep the text
                fields.update({k: scalars[k] for k in ("prompt", "id", "word_type") if k in scalars and k in fields})
            entries.append(RawEntry(where, line, fields, {k: keys.get(k, line) for k in fields}, dict(defaults)))
        else:
            problems.append(Problem(where, line, f"each item must be a prompt or a mapping with a 'prompt'; got "
                                                 f"{json.dumps(item, default=str)[:60]}"))
    return entries


# ---------------------------------------------------------------------------------------------------------------
# Shared validation and ids.

def _clean_entry(entry: RawEntry, problems: list[Problem]) -> dict[str, Any] | None:
    """Convert and check every field of one entry; None when any is bad."""
    clean = dict(entry.defaults)
    ok_all = True
    for name, value in entry.fields.items():
        line = entry.field_lines.get(name, entry.line)
        if name not in CONVERTERS:
            problems.append(_unknown_field(name, entry.file, line, ITEM_FIELDS))
            ok_all = False
            continue
        ok, value = _convert(name, value, entry.file, line, problems)
        ok_all &= ok
        if ok:
            clean[name] = value
    if "prompt" not in entry.fields and ok_all:
        problems.append(Problem(entry.file, entry.line, "the item has no 'prompt'"))
        return None
    if "seed" in entry.fields and "seeds" in entry.fields:
        problems.append(Problem(entry.file, entry.line, "give 'seed' or 'seeds', not both"))
        return None
    if "seed" in clean and "seeds" in clean:  # a file default of one and the item's other: the item's wins
        clean.pop("seeds" if "seed" in entry.fields else "seed")
    return clean if ok_all else None


def auto_id(prompt: str, taken: Container[str]) -> str:
    """A folder-safe id from the prompt's words; a short hash of the prompt keeps it unique and stable."""
    digest = hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:6]
    base = re.sub(r"[^a-z0-9]+", "-", prompt.lower())[:40].strip("-")
    if not base or base.lower() in RESERVED_IDS:
        base = f"p-{digest}"
    return base if base not in taken else f"{base}-{digest}"


def _resolve_path(value: str, file: str) -> str:
    """`init_image` relative to the prompt file's folder."""
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else Path(file.split(" (item")[0]).parent / p)


def build_items(entries: Sequence[RawEntry], problems: list[Problem], word_type: str | None = None) -> list[PromptItem]:
    """Validate entries, assign ids (explicit ones first) and refuse duplicates."""
    cleaned = [(e, _clean_entry(e, problems)) for e in entries]
    seen: dict[str, str] = {}
    for e, c in cleaned:
        if c and "id" in c:
            where = f"{e.file}:{e.line}" if e.line else e.file
            if c["id"] in seen:
                problems.append(Problem(e.file, e.field_lines.get("id", e.line),
                                        f"id: duplicate id {c['id']!r} (first used at {seen[c['id']]}); "
                                        "give every item its own id"))
                continue
            seen[c["id"]] = where
    items: list[PromptItem] = []
    by_content: dict[str, str] = {}
    for e, c in cleaned:
        if not c:
            continue
        where = f"{e.file}:{e.line}" if e.line else e.file
        content = repr(sorted(kv for kv in c.items() if kv[0] != "id"))  # keys are unique: values never compared
        if "id" not in c:
            if content in by_content:
                problems.append(Problem(e.file, e.line, f"duplicate prompt {c['prompt']!r} with the same settings "
                                                        f"as {by_content[content]}; use seeds for more images, or "
                                                        "give the items different ids"))
                continue
            c["id"] = auto_id(c["prompt"], seen)  # the dict itself: copying it per item was quadratic
            seen[c["id"]] = where
        by_content.setdefault(content, where)
        overrides = {k: c[k] for k in SETTING_FIELDS if k in c}
        if "init_image" in overrides:
            overrides["init_image"] = _resolve_path(overrides["init_image"], e.file)
        seeds = c.get("seeds", c.get("seed"))
        items.append(PromptItem(c["prompt"], c["id"], c.get("word_type", word_type), seeds, overrides, where))
    return items


def read_entries(path: str | Path, problems: list[Problem]) -> list[RawEntry]:
    """The raw entries of one prompt file, by its extension."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        problems.append(Problem(str(path), None, f"unknown prompt file type {path.suffix or '(none)'!r}; use "
                                                 f"{', '.join(sorted(FORMATS))}"))
        return []
    text = _read_text(path, problems)
    if text is None:
        return []
    if kind == "txt":
        entries = read_txt(path, text, problems)
    elif kind == "csv":
        entries = read_csv(path, text, problems)
    else:
        entries = read_structured(path, text, kind, problems)
    if not entries and not any(p.file.startswith(str(path)) for p in problems):
        problems.append(Problem(str(path), None, "holds no prompts"))
    return entries


def load_prompt_files(paths: Sequence[str | Path], word_type: str | None = None) -> list[PromptItem]:
    """Read and validate every prompt file; raise PromptFileError listing all problems at once."""
    if word_type is not None:
        try:
            word_type = _word_type(word_type)
        except FieldError as e:
            raise bad_arg("--word-type", e.rule, word_type, e.fix) from None
    problems: list[Problem] = []
    entries = [e for p in paths for e in read_entries(p, problems)]
    items = build_items(entries, problems, word_type)
    if problems:
        order = {str(p): i for i, p in enumerate(paths)}  # files in the order given, lines in order within each
        raise PromptFileError(sorted(problems, key=lambda p: (order.get(p.file.split(" (item")[0], len(order)),
                                                              p.line or 0)))
    return items
