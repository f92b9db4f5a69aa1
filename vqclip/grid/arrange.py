"""Arranging cells into a table: rows × columns, with fields that still vary added to the columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ..errors import bad_arg, choices_hint
from ..spaces import SPACES
from .collect import AUTO_ORDER, FIELDS, SETTING_FIELDS, Cell, Collection

def _sort_key(field_name: str, value: Any, first_seen: Mapping[Any, int]) -> tuple:
    if field_name == "space":  # a space, or a way of keeping text out in one (forget+negative): by space, then parts
        parts = str(value).split("+")
        base = next((p for p in parts if p in SPACES), "clip" if value is not None else None)
        return (SPACES.index(base) if base in SPACES else len(SPACES), len(parts), str(value))
    if field_name == "prompt":
        return (first_seen.get(value, 0),)
    if value is None:
        return (0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, value)
    return (2, str(value))


def show(field_name: str, value: Any, prompt_text: Mapping[Any, str] | None = None) -> str:
    """A value as a label: `clip`, `seed 0`, `steps 300`, `size 480x320`, or the prompt's text."""
    if field_name == "prompt":
        return (prompt_text or {}).get(value, str(value))
    if field_name in ("space", "word_type"):
        return "-" if value is None else str(value)
    if field_name == "size" and isinstance(value, tuple) and len(value) == 2:
        return f"size {value[0]}x{value[1]}"
    if isinstance(value, tuple):
        value = ",".join(map(str, value)) or "none"
    return f"{field_name.replace('_', ' ')} {value}"


def parse_where(specs: Iterable[str]) -> dict[str, str]:
    """`["seed=0", "space=clip"]` -> {"seed": "0", "space": "clip"} (values compared as shown text)."""
    out = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in FIELDS:
            raise bad_arg("--where", "must read FIELD=VALUE with a known field", spec, choices_hint(FIELDS))
        out[name] = value.strip()
    return out


def _matches(value: Any, wanted: str) -> bool:
    if isinstance(value, tuple):
        return wanted.replace(" ", "") in (",".join(map(str, value)), "x".join(map(str, value)))
    return str(value) == wanted


@dataclass
class Arrangement:
    """Cells placed in a table: row keys × column keys (tuples of values of `col_fields`)."""

    row_field: str
    col_fields: list[str]
    rows: list[Any]
    cols: list[tuple]
    table: dict[tuple[Any, tuple], Cell]
    prompt_text: dict[Any, str]
    row_notes: dict[Any, str]
    shared: dict[str, Any]  # fields with one value over all cells (for the title)
    duplicates: int = 0

    def row_label(self, row: Any) -> str:
        return show(self.row_field, row, self.prompt_text)

    def col_label(self, col: tuple) -> str:
        return " · ".join(show(f, v, self.prompt_text) for f, v in zip(self.col_fields, col))


def _check_field(name: str, arg: str) -> str:
    name = name.strip().replace("-", "_")
    if name not in FIELDS:
        raise bad_arg(arg, "unknown field", name, choices_hint(FIELDS))
    return name


def arrange(cells: Sequence[Cell], rows: str = "prompt", cols: Sequence[str] = ("space",),
            where: Mapping[str, str] | None = None) -> Arrangement:
    """Place cells by `rows` × `cols`; fields that still vary within a place are added to the columns."""
    row_field = _check_field(rows, "--rows")
    col_fields = [_check_field(c, "--cols") for c in cols]
    if row_field in col_fields:
        raise bad_arg("--cols", "must not repeat the --rows field", ",".join(col_fields), "Pick other fields.")
    selected = [c for c in cells if all(_matches(c.fields.get(k), v) for k, v in (where or {}).items())]
    if not selected:
        raise bad_arg("--where", "no image matches", dict(where or {}), "Loosen or drop --where.")
    while True:
        groups: dict[tuple, list[Cell]] = {}
        for c in selected:
            groups.setdefault((c.fields[row_field],) + tuple(c.fields[f] for f in col_fields), []).append(c)
        crowded = [g for g in groups.values() if len(g) > 1]
        extra = next((f for f in AUTO_ORDER if f != row_field and f not in col_fields and
                      any(len({c.fields.get(f) for c in g}) > 1 for g in crowded)), None)
        if extra is None:
            break
        col_fields.append(extra)
    first_seen: dict[Any, int] = {}
    for c in selected:
        first_seen.setdefault(c.fields["prompt"], len(first_seen))
    row_vals = sorted({c.fields[row_field] for c in selected}, key=lambda v: _sort_key(row_field, v, first_seen))
    col_vals = sorted({tuple(c.fields[f] for f in col_fields) for c in selected},
                      key=lambda t: tuple(_sort_key(f, v, first_seen) for f, v in zip(col_fields, t)))
    table: dict[tuple[Any, tuple], Cell] = {}
    for key, group in groups.items():
        table[(key[0], key[1:])] = group[0]
    prompt_text = {c.fields["prompt"]: c.prompt_text or str(c.fields["prompt"]) for c in selected}
    row_notes = {}
    if row_field == "prompt":
        for c in selected:
            bits = [c.fields["word_type"]] if c.fields.get("word_type") else []
            bits += [str(c.fields["prompt"])] if str(c.fields["prompt"]) != c.prompt_text else []
            row_notes.setdefault(c.fields["prompt"], " · ".join(bits))
    shared = {f: next(iter(v)) for f in SETTING_FIELDS if len(v := {c.fields.get(f) for c in selected}) == 1}
    return Arrangement(row_field, col_fields, row_vals, col_vals, table, prompt_text, row_notes, shared,
                       sum(len(g) - 1 for g in groups.values()))


def grid_title(found: Collection, arr: Arrangement) -> str:
    shared = " · ".join(show(f, v) for f, v in arr.shared.items() if f in ("steps", "size", "method", "lr", "cutn"))
    return f"{found.title}  |  rows: {arr.row_field} · columns: {', '.join(arr.col_fields)}" + \
        (f"  |  {shared}" if shared else "")
