"""Prompt files for batch runs: `.txt` (one prompt a line) and `.yaml` / `.json` / `.csv` lists of items.

Every problem in every file is collected with its file and line before anything runs, so one pass fixes them all.
This module is the entry point: it picks the reader by extension (`prompt_txt`, `prompt_csv`, `prompt_structured`),
and the shared checks (`prompt_fields`, `prompt_rows`) turn what they read into `PromptItem`s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import bad_arg
from .prompt_csv import read_csv
from .prompt_fields import (CONVERTERS, ID_PATTERN, ITEM_FIELDS, MAX_SEEDS, RESERVED_IDS, SETTING_FIELDS,
                            WORD_TYPE_PATTERN, FieldError, normalise_key, parse_seed_list)
from .prompt_rows import MAX_LISTED, Problem, PromptFileError, PromptItem, RawEntry, auto_id, build_items
from .prompt_structured import MAX_DEPTH, read_structured
from .prompt_txt import read_txt

__all__ = ["CONVERTERS", "FORMATS", "ID_PATTERN", "ITEM_FIELDS", "MAX_DEPTH", "MAX_FILE_BYTES", "MAX_LISTED",
           "MAX_SEEDS", "RESERVED_IDS", "SETTING_FIELDS", "WORD_TYPE_PATTERN", "FieldError", "Problem",
           "PromptFileError", "PromptItem", "RawEntry", "auto_id", "build_items", "load_prompt_files",
           "normalise_key", "parse_seed_list", "read_csv", "read_entries", "read_structured", "read_txt"]

FORMATS = {".txt": "txt", ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".csv": "csv"}
MAX_FILE_BYTES = 64 << 20  # a prompt file of 64 MiB holds ~1M prompts, beyond what one batch folder is for


def _read_text(path: Path, problems: list[Problem]) -> str | None:
    """The text of a prompt file; None, with the problem listed, when it cannot be read within bounds."""
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
            word_type = CONVERTERS["word_type"](word_type)
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
