"""The page's gallery: every run and batch under the outputs folder, as the grid arranges them (rows prompts,
columns spaces), with each image's settings and, where `vqclip score` has written one, its OCR score.

Built on the grid's collection and arrangement code (`vqclip.grid`), so the gallery and `vqclip grid` place the
same images in the same cells. Thumbnails are embedded in the page (data URIs): the server never has to hand out
files by path.
"""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import VqclipError, bad_arg
from ..grid import STATUS_NOTES, Cell, arrange, collect_tree, settings_list, show
from ..io import read_jsonl, sha256_file
from ..untrusted import open_image

ALL = "(all)"
SCORES_FILE = "scores.jsonl"  # what `vqclip score` writes into its report folder (evaluate/scoring.py)
MAX_ROWS = 60  # a page of a few MB at most; narrow it with the filters


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def load_scores(root: Path) -> dict[str, dict]:
    """sha256 of an image -> its latest OCR record from any scores.jsonl under `root` (newest file wins)."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if SCORES_FILE in filenames:
            path = Path(dirpath) / SCORES_FILE
            try:
                files.append((path.stat().st_mtime, path))
            except OSError:
                continue
    scores: dict[str, dict] = {}
    for _, path in sorted(files):
        for record in read_jsonl(path):
            if record.get("status") == "ok" and isinstance(record.get("sha256"), str):
                scores[record["sha256"]] = record
    return scores


def score_text(record: Mapping[str, Any] | None) -> str | None:
    """One line of what OCR read in the image: text found or not, and whether the prompt word is legible."""
    if not record:
        return None
    conf = record.get("max_confidence")
    found = (f"text found (max confidence {conf:.2f})" if isinstance(conf, (int, float)) and
             record.get("n_detections") else "no text found")
    legibility = record.get("legibility")
    if isinstance(legibility, dict) and legibility.get("best_word"):
        word = legibility["best_word"]
        dist = legibility.get("best_distance")
        verdict = "legible" if legibility.get("legible") else "not legible"
        found += f"; word {word!r} {verdict}" + (f" (distance {dist:.2f})" if isinstance(dist, (int, float)) else "")
    return "OCR: " + found


def thumbnail_uri(path: Path, size: int) -> str:
    """The image as a PNG thumbnail in a data URI (decompression bombs refused like everywhere else)."""
    from PIL import ImageOps

    with open_image(path) as im:
        thumb = ImageOps.contain(im.convert("RGB"), (size, size))
    buf = io.BytesIO()
    thumb.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass
class Gallery:
    html: str
    summary: str
    seeds: list[str]
    word_types: list[str]
    images: int


def folder_choices(root: Path) -> list[str]:
    """The outputs folder itself and every folder directly below it (job folders of the page, batches, runs)."""
    if not root.is_dir():
        return [ALL]
    return [ALL] + sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def resolve_folder(root: Path, choice: str | None) -> Path:
    """The folder the gallery shows: the root, or one folder directly below it (never anything outside it)."""
    if not choice or choice == ALL:
        return root
    target = root / str(choice)
    if os.sep in str(choice) or "/" in str(choice) or str(choice) in (".", "..") or not target.is_dir():
        raise bad_arg("folder", "must be one of the folders in the outputs folder", choice,
                      f"Pick one from the list (folders directly below {root}).")
    return target


def build_gallery(root: str | os.PathLike, folder: str | None = None, seed: str | None = None,
                  word_type: str | None = None, thumb: int = 160) -> Gallery:
    """The gallery of `folder` (a folder directly below `root`, or all of `root`), filtered by seed and word type."""
    root = Path(root)
    where_folder = resolve_folder(root, folder)
    found = collect_tree(where_folder)
    seeds = sorted({str(c.fields.get("seed")) for c in found.cells if c.fields.get("seed") is not None},
                   key=lambda s: (len(s), s))
    word_types = sorted({str(c.fields["word_type"]) for c in found.cells if c.fields.get("word_type")})
    if not found.cells:
        return Gallery(f"<p class='vq-empty'>No runs in {_e(where_folder)} yet: start one on the Generate tab, or "
                       "run <code>vqclip generate</code> or <code>vqclip batch</code>.</p>", "no images", seeds,
                       word_types, 0)
    where = {k: v for k, v in (("seed", seed), ("word_type", word_type)) if v and v != ALL}
    try:
        arr = arrange(found.cells, "prompt", ("space",), where)
    except VqclipError:
        return Gallery("<p class='vq-empty'>No image matches these filters.</p>", "no image matches", seeds,
                       word_types, 0)
    scores = load_scores(root)
    rows = arr.rows[:MAX_ROWS]
    head = "".join(f"<th>{_e(arr.col_label(c))}</th>" for c in arr.cols)
    body, shown = [], 0
    for row in rows:
        note = arr.row_notes.get(row)
        label = _e(arr.row_label(row)) + (f'<br /><span class="vq-sub">{_e(note)}</span>' if note else "")
        cells = []
        for col in arr.cols:
            cell = arr.table.get((row, col))
            cells.append(_cell_html(cell, scores, thumb))
            shown += cell is not None and cell.image is not None
        body.append(f'<tr><th class="vq-row">{label}</th>{"".join(cells)}</tr>')
    more = len(arr.rows) - len(rows)
    summary = (f"{_count(shown, 'image')}, {_count(len(arr.rows), 'prompt')} × {_count(len(arr.cols), 'column')} "
               f"({', '.join(arr.col_fields)})"
               + (f"; showing the first {len(rows)} prompts, narrow with the filters" if more else ""))
    table = (f'<table class="vq-gallery"><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
             "</table>")
    return Gallery(table, summary, seeds, word_types, shown)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _cell_html(cell: Cell | None, scores: Mapping[str, dict], thumb: int) -> str:
    if cell is None:
        return '<td><div class="vq-none">no image</div></td>'
    caption = _e(" · ".join(show(f, cell.fields.get(f)) for f in ("space", "seed")))
    loss = cell.info.get("loss")
    if isinstance(loss, (int, float)) and not isinstance(loss, bool):
        caption += f" · loss {float(loss):.4f}"
    extra = []
    if cell.note:
        extra.append(f'<span class="vq-note">{_e(cell.note)}</span>')
    image = ""
    if cell.image is not None:
        try:
            score = score_text(scores.get(sha256_file(cell.image)))
            uri = thumbnail_uri(cell.image, thumb)
        except OSError as e:
            image = f'<div class="vq-none">unreadable image ({_e(e)})</div>'
        else:
            alt = f"{cell.prompt_text} ({cell.fields.get('space')}, seed {cell.fields.get('seed')})"
            image = f'<img src="{uri}" alt="{_e(alt)}" title="{_e(alt)}" />'
            if score:
                extra.append(f'<span class="vq-score">{_e(score)}</span>')
    else:
        image = f'<div class="vq-none">{_e(cell.note or STATUS_NOTES.get(cell.status, cell.status))}</div>'
    run = f'<div class="vq-sub">{_e(cell.fields.get("run"))}</div>'
    return (f'<td class="vq-cell">{image}<div class="vq-caption">{caption}</div>{"<br />".join(extra)}{run}'
            f'<details><summary>settings</summary>{settings_list(cell)}</details></td>')
