"""Comparison grids of generated images: rows are prompts, columns are spaces (or seeds, or any varying setting).

Reads a batch folder (batch.json + manifest.jsonl) or a folder of `vqclip generate` runs; draws labelled PNG pages
with Pillow and writes a static, offline HTML gallery. Missing or failed cells are drawn empty with a note.

The package's parts: `collect` (cells of a folder), `arrange` (rows × columns), `png` (pages) and `html` (the
gallery); `vqclip ui` shares the first two.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import bad_arg
from ..io import check_writable
from .arrange import Arrangement, arrange, grid_title, parse_where, show
from .collect import (AUTO_ORDER, FIELDS, SETTING_FIELDS, STATUS_NOTES, Cell, Collection, collect, collect_batch,
                      collect_runs, collect_tree, is_batch_dir)
from .html import HTML_GENERATOR, check_html_places, render_html, settings_list, write_html
from .png import (PAGE_CHUNK, GridStyle, Page, font_files, grid_page_owner, layout_page, page_paths, paginate,
                  pick_font_file, render_page, wrap_text, write_grid)
from .png import _has_glyph  # noqa: F401 - tests check glyph coverage through vqclip.grid

__all__ = ["AUTO_ORDER", "FIELDS", "HTML_GENERATOR", "PAGE_CHUNK", "SETTING_FIELDS", "STATUS_NOTES", "Arrangement",
           "Cell", "Collection", "GridStyle", "Page", "arrange", "collect", "collect_batch", "collect_runs",
           "collect_tree", "font_files", "grid_page_owner", "grid_title", "is_batch_dir", "layout_page", "make_grid",
           "page_paths", "paginate", "parse_where", "pick_font_file", "render_html", "render_page", "settings_list",
           "show", "wrap_text", "write_grid", "write_html"]


def make_grid(folder: str | os.PathLike, out: str | os.PathLike | None = None, rows: str = "prompt",
              cols: Sequence[str] = ("space",), where: Mapping[str, str] | None = None,
              style: GridStyle = GridStyle(), html_path: str | os.PathLike | None = None,
              png: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Collect, arrange and write the grid pages (and the HTML gallery); returns what was written.

    Only files this grid wrote are replaced or removed, unless `overwrite`.
    """
    if style.thumb < 16 or style.font_size < 6:
        raise bad_arg("--thumb/--font-size", "too small to read", f"{style.thumb}/{style.font_size}",
                      "Use --thumb 64 or more and --font-size 10 or more.")
    if png:
        check_writable((Path(out) if out else Path(folder) / "grid.png").parent, "--out-file")
    if html_path is not None:
        check_writable(Path(html_path).parent, "--html")
    found = collect(folder)
    arr = arrange(found.cells, rows, cols, where)
    if html_path is not None:
        check_html_places(arr)  # refused before any page is written
    written = {"pages": [], "html": None, "rows": len(arr.rows), "cols": len(arr.cols),
               "col_fields": arr.col_fields, "missing": sum(c.status != "ok" for c in arr.table.values()) +
               len(arr.rows) * len(arr.cols) - len(arr.table), "statuses": {}}
    for cell in arr.table.values():
        written["statuses"][cell.status] = written["statuses"].get(cell.status, 0) + 1
    if len(arr.table) < len(arr.rows) * len(arr.cols):  # places no image or plan fills
        written["statuses"]["empty"] = len(arr.rows) * len(arr.cols) - len(arr.table)
    if png:
        written["pages"] = write_grid(found, arr, Path(out) if out else found.folder / "grid.png", style, overwrite)
    if html_path is not None:
        written["html"] = write_html(found, arr, html_path, style.thumb, overwrite)
    return written
