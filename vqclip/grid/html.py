"""The grid as a static, offline HTML gallery (XHTML-compatible, images linked relative to the page)."""

from __future__ import annotations

import html
import os
import urllib.parse
from pathlib import Path
from typing import Any

from ..errors import bad_arg
from ..io import write_text
from .arrange import Arrangement, grid_title
from .collect import SETTING_FIELDS, STATUS_NOTES, Cell, Collection

HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1em; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ddd; padding: 4px; vertical-align: top; }
thead th { position: sticky; top: 0; background: #fafafa; }
th.row { text-align: left; max-width: 18em; font-weight: normal; }
.sub { color: #777; font-size: 85%; }
figure { margin: 0; }
figcaption { font-size: 80%; color: #444; max-width: THUMBpx; overflow-wrap: anywhere; }
.empty { width: THUMBpx; height: THUMBpx; background: #eee; color: #888; display: flex; align-items: center;
         justify-content: center; text-align: center; font-size: 85%; overflow: hidden; }
dl { display: grid; grid-template-columns: auto auto; gap: 0 0.6em; margin: 0.3em 0; font-size: 80%; }
dt { color: #777; } dd { margin: 0; overflow-wrap: anywhere; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _href(image: Path, base: Path) -> str:
    rel = os.path.relpath(image.resolve(), base.resolve())
    return urllib.parse.quote(Path(rel).as_posix(), safe="/._-~")


def settings_list(cell: Cell) -> str:
    """The image's prompt, space, seed, loss and settings as an HTML definition list."""
    rows = [("prompt", cell.prompt_text), ("space", cell.fields.get("space")), ("seed", cell.fields.get("seed"))]
    if cell.fields.get("word_type"):
        rows.append(("word type", cell.fields["word_type"]))
    rows += [({"loss": "final loss"}.get(k, k), v) for k, v in cell.info.items() if k in ("loss", "seconds")]
    rows += [(k, ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in cell.settings.items()
             if k in SETTING_FIELDS]
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e('-' if v is None else v)}</dd>" for k, v in rows) + "</dl>"


def _html_cell(cell: Cell | None, base: Path, thumb: int) -> str:
    if cell is None:
        return '<td><div class="empty">no image</div></td>'
    caption = f"{_e(cell.fields.get('space'))} · seed {_e(cell.fields.get('seed'))}"
    if isinstance(cell.info.get("loss"), (int, float)) and not isinstance(cell.info.get("loss"), bool):
        caption += f" · loss {float(cell.info['loss']):.4f}"
    details = f"<details><summary>settings</summary>{settings_list(cell)}</details>"
    if cell.image is None:
        note = cell.note or STATUS_NOTES.get(cell.status, cell.status)
        return f'<td><div class="empty">{_e(note)}</div><figcaption>{caption}</figcaption>{details}</td>'
    href = _href(cell.image, base)
    alt = f"{cell.prompt_text} ({cell.fields.get('space')}, seed {cell.fields.get('seed')})"
    note = f'<br /><span class="sub">{_e(cell.note)}</span>' if cell.note else ""
    return (f'<td><figure><a href="{href}"><img src="{href}" alt="{_e(alt)}" title="{_e(alt)}" width="{thumb}" '
            f'loading="lazy" /></a><figcaption>{caption}{note}</figcaption>{details}</figure></td>')


# The gallery is one table of rows × columns places; beyond this many empty places per cell (plus a margin) it
# would grow with the square of the lines of a manifest, so it is refused with the flags that shrink it.
HTML_EMPTY_PER_CELL = 4
HTML_MARGIN = 10_000


def check_html_places(arr: Arrangement) -> None:
    """Refuse a gallery whose table is mostly empty places (work and size quadratic in the cells)."""
    places, cells = len(arr.rows) * len(arr.cols), len(arr.table)
    if places > HTML_EMPTY_PER_CELL * cells + HTML_MARGIN:
        raise bad_arg("--html", f"the gallery would be a table of {len(arr.rows)} rows x {len(arr.cols)} columns "
                      f"({places} places) for {cells} images; vqclip writes at most {HTML_EMPTY_PER_CELL} empty "
                      f"places per image plus {HTML_MARGIN}", f"columns: {', '.join(arr.col_fields)}",
                      "Pick --rows/--cols whose values the images share (e.g. --cols space), or select with --where.")


def render_html(found: Collection, arr: Arrangement, base: Path, thumb: int = 160) -> str:
    """The gallery as one XHTML-compatible page; image paths are relative to `base` (the page's folder)."""
    check_html_places(arr)
    title = grid_title(found, arr)
    head = "".join(f"<th>{_e(arr.col_label(c))}</th>" for c in arr.cols)
    body = []
    for row in arr.rows:
        note = arr.row_notes.get(row)
        label = _e(arr.row_label(row)) + (f'<br /><span class="sub">{_e(note)}</span>' if note else "")
        cells = "".join(_html_cell(arr.table.get((row, col)), base, thumb) for col in arr.cols)
        body.append(f'<tr><th class="row">{label}</th>{cells}</tr>')
    counts: dict[str, int] = {}
    for cell in arr.table.values():
        counts[cell.status] = counts.get(cell.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return ("<!DOCTYPE html>\n"
            '<html xmlns="http://www.w3.org/1999/xhtml" lang="en">\n<head>\n<meta charset="utf-8" />\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1" />\n'
            f'<meta name="generator" content="{HTML_GENERATOR}" />\n'
            f"<title>{_e(title)}</title>\n<style>{HTML_STYLE.replace('THUMB', str(thumb))}</style>\n</head>\n<body>\n"
            f"<h1>{_e(found.title)}</h1>\n<p class=\"sub\">rows: {_e(arr.row_field)} · columns: "
            f"{_e(', '.join(arr.col_fields))} · {_e(summary)}</p>\n"
            f"<table>\n<thead><tr><th></th>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) +
            "\n</tbody>\n</table>\n</body>\n</html>\n")


HTML_GENERATOR = "vqclip grid"


def _is_our_gallery(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(2048)
    except OSError:
        return False
    return f'<meta name="generator" content="{HTML_GENERATOR}" />'.encode() in head


def write_html(found: Collection, arr: Arrangement, path: str | os.PathLike, thumb: int = 160,
               overwrite: bool = False) -> Path:
    """Write the gallery; an existing file is replaced only when vqclip wrote it (its generator tag), or with
    `overwrite`."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm", ".xhtml"):
        raise bad_arg("--html", "the gallery is an HTML file", str(path), "Give a path ending in .html.")
    check_html_places(arr)  # before any file is touched
    if (path.exists() or path.is_symlink()) and not overwrite and not _is_our_gallery(path):
        raise bad_arg("--html", "a file vqclip did not write is in the way", str(path),
                      "Choose another --html path, or pass --overwrite to replace it.")
    write_text(path, render_html(found, arr, path.parent, thumb))
    return path
