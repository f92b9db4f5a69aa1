"""YAML and JSON prompt files: a list of items, or {prompts: [...], defaults: {...}}.

The text is checked for deep nesting and alias bombs before anything is built from it, and the composed YAML nodes
give every item and field its line (JSON is composed as YAML 1.1 for the same purpose).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..untrusted import yaml_loader, yaml_shape_problem
from .prompt_fields import ITEM_FIELDS, normalise_key
from .prompt_rows import Problem, RawEntry, convert_field, unknown_field

MAX_DEPTH = 32  # nesting of lists/mappings a prompt file may have
SHAPE_FIX = "write the prompts as a flat list of items (see docs/batch.md)"


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


def _compose_yaml(text: str) -> tuple[Any, Any]:
    """(root node, data) of a YAML document, composed once: the nodes give line numbers, the data is built from them."""
    loader = yaml_loader()(text)
    try:
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    finally:
        loader.dispose()


def _load(file: str, text: str, kind: str, problems: list[Problem]) -> tuple[Any, Any] | None:
    """(data, YAML root node or None) of the text; None, with the problem listed, when it cannot be read safely."""
    import yaml

    root = None
    try:
        if kind == "json":
            data = json.loads(text)
            shape = _depth_problem(data)
        else:
            shape = yaml_shape_problem(text, MAX_DEPTH)  # before anything is built from the text
            if not shape:
                root, data = _compose_yaml(text)
    except json.JSONDecodeError as e:
        problems.append(Problem(file, e.lineno, f"is not valid JSON ({e.msg}, column {e.colno})"))
        return None
    except ValueError as e:  # json's other refusals: an integer of more than 4300 digits
        from ..errors import one_line

        problems.append(Problem(file, None, f"is not {kind.upper()} vqclip reads ({one_line(e, 120)})"))
        return None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problems.append(Problem(file, mark.line + 1 if mark else None,
                                f"is not valid YAML ({getattr(e, 'problem', None) or e})"))
        return None
    except RecursionError:  # JSON nested deeper than Python's reader goes
        shape = None, f"nests lists/mappings more than {MAX_DEPTH} levels deep"
    if shape:
        problems.append(Problem(file, shape[0], f"{shape[1]}; {SHAPE_FIX}"))
        return None
    return data, root


def _line_numbers(root, text: str, kind: str) -> tuple[dict, list]:
    """`_node_lines` of the document; JSON is composed as YAML here, and gets no lines where YAML cannot read it."""
    import yaml

    try:
        if root is None and kind == "json":
            root = yaml.compose(text, Loader=yaml_loader())
        return _node_lines(root)
    except yaml.YAMLError:  # valid JSON that YAML 1.1 cannot compose (rare): items get numbers, not lines
        return {}, []


def _split_top_level(data: Any, file: str, problems: list[Problem]) -> tuple[list | None, Any]:
    """(the list of items, the raw `defaults`) of a document; None for the list, with the problem listed, when the
    document holds no list of prompts."""
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
        return None, defaults_raw
    return data, defaults_raw


def _read_defaults(defaults_raw: Any, defaults_lines: dict, file: str, problems: list[Problem]) -> dict[str, Any]:
    """The file's `defaults` mapping, each field converted; bad ones are listed as problems and left out."""
    defaults: dict[str, Any] = {}
    if not isinstance(defaults_raw, dict):
        problems.append(Problem(file, None, "'defaults' must be a mapping of field names to values"))
        return defaults
    allowed = [k for k in ITEM_FIELDS if k not in ("prompt", "id")]
    for key, value in defaults_raw.items():
        name, line = normalise_key(key), defaults_lines.get(normalise_key(key))
        if name not in allowed:
            problems.append(unknown_field(name, file, line, allowed))
            continue
        ok, clean = convert_field(name, value, file, line, problems)
        if ok:
            defaults[name] = clean
    return defaults


def _item_entry(item: Any, index: int, file: str, lines: tuple, kind: str, defaults: dict[str, Any],
                problems: list[Problem]) -> RawEntry | None:
    """The raw entry of one item (a bare prompt or a mapping of fields); None, with the problem listed, otherwise.

    `lines` is the item's entry from `_node_lines`: (item line, {key: line}, {key: scalar as written})."""
    line, keys, scalars = lines
    where = file if line else f"{file} (item {index + 1})"
    if kind == "yaml" and not isinstance(item, (dict, list)) and "prompt" in scalars:
        # YAML reads words like `no`, `null` or `1e3` as booleans, None or numbers: keep what was written
        return RawEntry(where, line, {"prompt": scalars["prompt"]}, {"prompt": line}, dict(defaults))
    if isinstance(item, (str, int, float)) and not isinstance(item, bool):
        return RawEntry(where, line, {"prompt": item}, {"prompt": line}, dict(defaults))
    if isinstance(item, dict):
        fields = {normalise_key(k): v for k, v in item.items()}
        if kind == "yaml":  # YAML turns words like `no` or `1e3` into booleans/numbers: keep the text
            fields.update({k: scalars[k] for k in ("prompt", "id", "word_type") if k in scalars and k in fields})
        return RawEntry(where, line, fields, {k: keys.get(k, line) for k in fields}, dict(defaults))
    problems.append(Problem(where, line, f"each item must be a prompt or a mapping with a 'prompt'; got "
                                         f"{json.dumps(item, default=str)[:60]}"))
    return None


def read_structured(path: Path, text: str, kind: str, problems: list[Problem]) -> list[RawEntry]:
    """YAML/JSON: a list of items, or {prompts: [...], defaults: {...}}; an item is a prompt or a mapping."""
    file = str(path)
    loaded = _load(file, text, kind, problems)
    if loaded is None:
        return []
    data, root = loaded
    defaults_lines, item_lines = _line_numbers(root, text, kind)
    items, defaults_raw = _split_top_level(data, file, problems)
    if items is None:
        return []
    defaults = _read_defaults(defaults_raw, defaults_lines, file, problems)
    entries = []
    for i, item in enumerate(items):
        lines = item_lines[i] if i < len(item_lines) else (None, {}, {})
        entry = _item_entry(item, i, file, lines, kind, defaults, problems)
        if entry is not None:
            entries.append(entry)
    return entries
