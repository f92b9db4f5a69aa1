"""CSV prompt files: a header row naming the fields, then one item a row."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .prompt_fields import ITEM_FIELDS, normalise_key
from .prompt_rows import Problem, RawEntry, unknown_field



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
                    problems.append(unknown_field(c, str(path), start, ITEM_FIELDS))
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
