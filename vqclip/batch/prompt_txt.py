"""Plain-text prompt files: one prompt a line, with `#:` directives setting fields for the lines below."""

from __future__ import annotations

from pathlib import Path

from .prompt_fields import ITEM_FIELDS, normalise_key
from .prompt_rows import Problem, RawEntry, convert_field


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
            ok, clean = convert_field(key, value, str(path), n, problems)
            if ok:
                defaults.pop({"seed": "seeds", "seeds": "seed"}.get(key, ""), None)  # the later one replaces
                defaults[key] = clean
            continue
        if line.startswith("#"):
            continue
        entries.append(RawEntry(str(path), n, {"prompt": line}, {"prompt": n}, dict(defaults)))
    return entries
