"""The items of prompt files: what every format's reader yields (`RawEntry`), the checks every row goes through, and
the validated `PromptItem`s with their ids; problems are collected as `Problem`s, never raised one by one."""

from __future__ import annotations

import hashlib
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Container, Mapping, Sequence

from ..errors import VqclipError
from .prompt_fields import CONVERTERS, ITEM_FIELDS, RESERVED_IDS, SETTING_FIELDS, FieldError

MAX_LISTED = 40  # problems a PromptFileError lists; the rest it counts
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


@dataclass
class RawEntry:
    """One item as read from a file: its fields and the line of the item and of each field."""

    file: str
    line: int | None
    fields: dict[str, Any]
    field_lines: dict[str, int | None] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)  # file-level settings, already validated


def convert_field(name: str, value: Any, file: str, line: int | None, problems: list[Problem]) -> tuple[bool, Any]:
    """(True, clean value), or (False, None) with the problem listed: the field's rule, the value and the fix."""
    try:
        return True, CONVERTERS[name](value)
    except FieldError as e:
        problems.append(Problem(file, line, f"{name}: {e.rule}; got {_SHORT.repr(value)}. {e.fix}"))
        return False, None


def unknown_field(name: str, file: str, line: int | None, allowed: Sequence[str]) -> Problem:
    """The problem of a field name vqclip does not know, listing the fields valid there."""
    return Problem(file, line, f"unknown field {name!r}; valid fields: {', '.join(allowed)}")


def _clean_entry(entry: RawEntry, problems: list[Problem]) -> dict[str, Any] | None:
    """Convert and check every field of one entry; None when any is bad."""
    clean = dict(entry.defaults)
    ok_all = True
    for name, value in entry.fields.items():
        line = entry.field_lines.get(name, entry.line)
        if name not in CONVERTERS:
            problems.append(unknown_field(name, entry.file, line, ITEM_FIELDS))
            ok_all = False
            continue
        ok, value = convert_field(name, value, entry.file, line, problems)
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
