"""Comparison grids of generated images: rows are prompts, columns are spaces (or seeds, or any varying setting).

Reads a batch folder (batch.json + manifest.jsonl) or a folder of `vqclip generate` runs; draws labelled PNG pages
with Pillow and writes a static, offline HTML gallery. Missing or failed cells are drawn empty with a note.
"""

from __future__ import annotations

import functools
import glob
import html
import json
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import bad_arg, choices_hint
from .io import atomic_path, check_writable, inside, read_jsonl, write_text
from .spaces import SPACES
from .untrusted import open_image

SETTING_FIELDS = ("steps", "size", "lr", "optimizer", "method", "loss", "cutn", "cut_pow", "augment", "noise",
                  "init_image", "init_weight")
FIELDS = ("prompt", "space", "seed", "word_type") + SETTING_FIELDS
# Fields added to the columns, in this order, when cells would otherwise share a place in the grid.
AUTO_ORDER = ("space", "seed", "prompt") + SETTING_FIELDS + ("word_type",)
STATUS_NOTES = {"missing": "not run yet", "failed": "failed", "lost": "image file missing",
                "refused": "image path leads outside the folder (refused)"}


@dataclass
class Cell:
    """One image (or one planned image that is not there): its fields, file and status."""

    fields: dict[str, Any]  # FIELDS -> hashable values; "prompt" is the item id in batches
    image: Path | None = None
    status: str = "ok"  # ok | failed | missing | lost
    note: str | None = None
    prompt_text: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # for the HTML page
    info: dict[str, Any] = field(default_factory=dict)  # loss, seconds, record path


@dataclass
class Collection:
    """Cells of a folder and a title for them."""

    folder: Path
    cells: list[Cell]
    title: str
    kind: str  # batch | runs


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _settings_fields(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _hashable(settings.get(k)) for k in SETTING_FIELDS}


def _read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # unreadable, not UTF-8, not JSON, nested too deep
        return None
    return obj if isinstance(obj, dict) else None


def _manifest_view(folder: Path) -> dict[str, dict]:
    """Job id -> its deciding manifest line: the latest, except that a later failure does not undo an ok."""
    out: dict[str, dict] = {}
    for line in read_jsonl(folder / "manifest.jsonl"):
        key = str(line.get("id"))
        if key in out and out[key].get("status") == "ok" and line.get("status") != "ok" and \
                out[key].get("fingerprint") == line.get("fingerprint"):
            continue
        out[key] = line
    return out


def _batch_cell(folder: Path, job: Mapping[str, Any], item: Mapping[str, Any], base: Mapping[str, Any],
                line: Mapping[str, Any] | None) -> Cell:
    settings = {**base, **_dict(item.get("overrides"))}
    fields = {"prompt": _scalar(item.get("id", job.get("item"))), "space": job["space"], "seed": job["seed"],
              "word_type": _scalar(item.get("word_type")), **_settings_fields(settings)}
    cell = Cell(fields, prompt_text=str(item.get("prompt", "")), settings=settings, status="missing")
    if line and job.get("fingerprint") and line.get("fingerprint") not in (None, job["fingerprint"]):
        line = None  # written by an earlier batch with other settings
    if line is None:
        cell.note = STATUS_NOTES["missing"]
    elif line.get("status") == "ok" and line.get("image"):
        image = inside(folder, line["image"])  # manifests are untrusted: never follow one out of the folder
        cell.image, cell.status = ((image, "ok") if image is not None and image.is_file() else
                                   (None, "lost" if image is not None else "refused"))
        cell.note = None if cell.status == "ok" else STATUS_NOTES[cell.status]
    else:
        cell.status, cell.note = "failed", f"failed: {line.get('error') or line.get('status')}"
    if line:
        cell.info = {k: line.get(k) for k in ("loss", "seconds", "record", "image", "error") if line.get(k) is not None}
    return cell


def _dict(value: Any) -> dict:
    """`value` when it is a JSON object, else {}: batch.json, run.json and manifest lines are untrusted input."""
    return value if isinstance(value, dict) else {}


def _scalar(value: Any) -> Any:
    """A field value usable as a grid key (hashable, printable), whatever type the file gave."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else json.dumps(value, default=str)


def collect_batch(folder: Path) -> Collection:
    """Cells of every planned job of a batch folder, found or not; malformed jobs and lines are left out."""
    record = _read_json(folder / "batch.json") or {}
    items = _dict(record.get("items"))
    base = _dict(record.get("settings"))
    lines = _manifest_view(folder)
    cells, planned = [], set()
    jobs = record.get("jobs") if isinstance(record.get("jobs"), list) else []
    for job in jobs:
        if not isinstance(job, dict) or not isinstance(job.get("id"), str):
            continue
        job = {**job, "space": _scalar(job.get("space")), "seed": _scalar(job.get("seed"))}
        planned.add(job["id"])
        item = _dict(items.get(job.get("item")) if isinstance(job.get("item"), str) else None) or \
            {"id": _scalar(job.get("item")), "prompt": str(job.get("item"))}
        cells.append(_batch_cell(folder, job, item, base, lines.get(job["id"])))
    for job_id, line in lines.items():  # finished jobs of a plan written after batch.json was read
        if job_id in planned or line.get("status") != "ok" or not line.get("image"):
            continue
        record_path = inside(folder, line.get("record"))
        run = (_read_json(record_path) if record_path is not None else None) or {}
        item = {"id": _scalar(line.get("item")) or job_id.split("/")[0], "prompt": str(line.get("prompt", "")),
                "word_type": _scalar(line.get("word_type"))}
        job = {"id": job_id, "space": _scalar(line.get("space")), "seed": _scalar(line.get("seed"))}
        cells.append(_batch_cell(folder, job, item, _dict(run.get("settings")) or base, line))
    n_items = len({c.fields["prompt"] for c in cells})
    title = f"{folder.name}: {n_items} prompts"
    return Collection(folder, cells, title, "batch")


def collect_runs(folder: Path) -> Collection:
    """Cells of `vqclip generate` run folders (run.json + image) anywhere under `folder`."""
    cells = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if "run.json" not in filenames:
            continue
        dirnames[:] = []  # a run owns its sub-folders (frames)
        run = _read_json(Path(dirpath) / "run.json")
        if run is None:
            continue
        recorded = run.get("space")
        space = run.get("space_name") or (recorded.get("space") if isinstance(recorded, dict) else recorded)
        settings = _dict(run.get("settings"))
        prompt = str(run.get("prompt", ""))
        fields = {"prompt": prompt, "space": _scalar(space) or "clip", "seed": _scalar(run.get("seed")),
                  "word_type": _scalar(run.get("word_type")), **_settings_fields(settings)}
        image = inside(dirpath, run.get("image") or "image.png")  # run.json is untrusted: stay in its folder
        cell = Cell(fields, prompt_text=prompt, settings=settings,
                    info={k: run.get(k) for k in ("loss", "steps_done") if run.get(k) is not None})
        if image is None:
            cell.status, cell.note = "refused", STATUS_NOTES["refused"]
        elif not image.is_file():
            cell.status, cell.note = "lost", STATUS_NOTES["lost"]
        else:
            cell.image = image
            if run.get("status") != "finished":
                cell.note = f"{run.get('status')}: {run.get('message') or ''}".strip(": ")
        cells.append(cell)
    return Collection(folder, cells, f"{folder.name}: {len({c.fields['prompt'] for c in cells})} prompts", "runs")


def collect(folder: str | os.PathLike) -> Collection:
    """Cells of a batch folder or of a folder of runs; a folder with neither is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise bad_arg("DIR", "must be a batch folder or a folder of runs", str(folder),
                      "Give the --out folder of `vqclip batch` or `vqclip generate`.")
    if (folder / "batch.json").is_file() or (folder / "manifest.jsonl").is_file():
        found = collect_batch(folder)
    else:
        found = collect_runs(folder)
    if not found.cells:
        raise bad_arg("DIR", "holds no runs (no batch.json or manifest.jsonl, and no run.json below it)",
                      str(folder), "Run `vqclip batch FILE --out DIR` (or `vqclip generate`) first.")
    return found


# ---------------------------------------------------------------------------------------------------------------
# Arranging cells into rows and columns.

def _sort_key(field_name: str, value: Any, first_seen: Mapping[Any, int]) -> tuple:
    if field_name == "space":
        return (SPACES.index(value) if value in SPACES else len(SPACES), str(value))
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


# ---------------------------------------------------------------------------------------------------------------
# Drawing.

@dataclass(frozen=True)
class GridStyle:
    """Sizes of a grid page in pixels."""

    thumb: int = 160
    font_size: int = 14
    label_width: int | None = None  # default: about 1.5 thumbnails, 140..320 px
    pad: int = 6
    max_rows: int = 16
    max_cols: int = 12

    def label_w(self) -> int:
        return self.label_width or max(140, min(320, int(self.thumb * 1.5)))


@dataclass
class Page:
    """One page of a grid: a slice of the rows and columns, and where every part is drawn."""

    rows: list[Any]
    cols: list[tuple]
    number: int
    count: int
    size: tuple[int, int] = (0, 0)
    title: str = ""
    cell_boxes: dict[tuple[int, int], tuple[int, int, int, int]] = field(default_factory=dict)
    row_label_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    col_label_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    row_labels: list[str] = field(default_factory=list)
    col_labels: list[str] = field(default_factory=list)
    font_file: str | None = None  # None: Pillow's own font; else a font that covers the labels' scripts


def paginate(arr: Arrangement, style: GridStyle) -> list[Page]:
    """Split the table into pages of at most max_rows × max_cols cells."""
    row_chunks = [arr.rows[i:i + style.max_rows] for i in range(0, len(arr.rows), style.max_rows)] or [[]]
    col_chunks = [arr.cols[i:i + style.max_cols] for i in range(0, len(arr.cols), style.max_cols)] or [[]]
    chunks = [(r, c) for r in row_chunks for c in col_chunks]
    return [Page(r, c, n + 1, len(chunks)) for n, (r, c) in enumerate(chunks)]


FONT_ENV = "VQCLIP_FONT"
# Fonts tried for labels Pillow's own font cannot draw (it covers Latin only): DejaVu Sans (Latin, Greek, Cyrillic,
# Hebrew, Arabic, many symbols) and Noto where the system has them, then matplotlib's bundled DejaVu Sans. Emoji
# stay boxes unless a font that has them is installed here or named by $VQCLIP_FONT.
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansHebrew-Regular.ttf", "/usr/share/fonts/truetype/noto/NotoSansArabic-Regular.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf", "/Library/Fonts/Arial Unicode.ttf",
    "C:/Windows/Fonts/segoeui.ttf", "C:/Windows/Fonts/arial.ttf",
)


@functools.lru_cache(maxsize=1)
def font_files() -> tuple[str, ...]:
    """Font files that exist here, in the order they are tried ($VQCLIP_FONT first)."""
    import importlib.util

    paths = [os.environ[FONT_ENV]] if os.environ.get(FONT_ENV) else []
    paths += FONT_CANDIDATES
    spec = importlib.util.find_spec("matplotlib")  # found, not imported
    for root in (spec.submodule_search_locations or []) if spec else []:
        paths.append(os.path.join(root, "mpl-data", "fonts", "ttf", "DejaVuSans.ttf"))
    return tuple(dict.fromkeys(p for p in paths if os.path.isfile(p)))


@functools.lru_cache(maxsize=64)
def _load_font(path: str | None, size: int):
    from PIL import ImageFont

    if path is None:
        return ImageFont.load_default(size=size)
    try:
        return ImageFont.truetype(path, size)
    except OSError:  # a broken font file falls back to Pillow's own font
        return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=8192)
def _has_glyph(path: str | None, char: str) -> bool:
    """A glyph is missing when the font draws it exactly as its .notdef box (what U+FFFF, a non-character, gets)."""
    font = _load_font(path, 24)
    try:
        mask, missing = font.getmask(char), font.getmask("\uffff")
    except Exception:  # noqa: BLE001 - a character the font engine rejects is not covered
        return False
    return not (mask.size == missing.size and bytes(mask) == bytes(missing))


def pick_font_file(texts: Iterable[str]) -> str | None:
    """The font (None: Pillow's own) that can draw the most characters of `texts`; earlier fonts win ties."""
    chars = {c for t in texts for c in str(t) if not c.isspace() and c != "…"}
    if all(ord(c) < 0x250 for c in chars):  # Latin: Pillow's own font draws it
        return None
    best, best_count = None, sum(_has_glyph(None, c) for c in chars)
    for path in font_files():
        count = sum(_has_glyph(path, c) for c in chars)
        if count > best_count:
            best, best_count = path, count
        if count == len(chars):
            break
    return best


def _fonts(style: GridStyle, font_file: str | None = None):
    return (_load_font(font_file, style.font_size), _load_font(font_file, max(9, style.font_size * 4 // 5)),
            _load_font(font_file, style.font_size + 3))


def wrap_text(text: str, font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to `width` pixels; words longer than a line are broken; overflow ends with '…'."""
    lines: list[str] = []
    for paragraph in str(text).splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while font.getlength(word) > width and len(word) > 1:  # break a long word
                cut = 1
                while cut < len(word) and font.getlength(word[:cut + 1]) <= width:
                    cut += 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and font.getlength(last + "…") > width:
            last = last[:-1]
        lines[-1] = last + "…"
    return lines


def _line_height(font) -> int:
    top, bottom = font.getbbox("Ågy")[1::2]
    return int((bottom - top) * 1.25) + 1


def layout_page(page: Page, arr: Arrangement, style: GridStyle, title: str) -> Page:
    """Compute the page size and the boxes of labels and cells (pure geometry; nothing is drawn)."""
    page.title = title + (f"  |  page {page.number}/{page.count}" if page.count > 1 else "")
    page.col_labels = [arr.col_label(c) for c in page.cols]
    page.row_labels = [arr.row_label(r) for r in page.rows]
    page.font_file = pick_font_file([page.title, *page.col_labels, *page.row_labels,
                                     *(arr.row_notes.get(r, "") for r in page.rows)])
    font, _, big = _fonts(style, page.font_file)
    pad, thumb, label_w = style.pad, style.thumb, style.label_w()
    lh = _line_height(font)
    col_w = thumb + pad
    header_lines = max([len(wrap_text(t, font, col_w - pad, 3)) for t in page.col_labels] or [1])
    title_lines = wrap_text(page.title, big, max(label_w + col_w * len(page.cols), 200), 2)
    title_h = pad + len(title_lines) * _line_height(big) + pad
    header_h = header_lines * lh + pad
    top = title_h + header_h
    left = pad + label_w + pad
    width = left + col_w * len(page.cols)
    height = top + (thumb + pad) * len(page.rows) + pad
    page.size = (max(width, 200), height)
    page.col_label_boxes = [(left + j * col_w, title_h, left + j * col_w + thumb, top - pad // 2)
                            for j in range(len(page.cols))]
    page.row_label_boxes = [(pad, top + i * (thumb + pad), pad + label_w, top + i * (thumb + pad) + thumb)
                            for i in range(len(page.rows))]
    page.cell_boxes = {(i, j): (left + j * col_w, top + i * (thumb + pad), left + j * col_w + thumb,
                                top + i * (thumb + pad) + thumb)
                       for i in range(len(page.rows)) for j in range(len(page.cols))}
    return page


def _draw_lines(draw, box, lines: Sequence[str], font, fill, center: bool = False, valign: str = "top") -> None:
    x0, y0, x1, y1 = box
    lh = _line_height(font)
    y = y0 if valign == "top" else y0 + max(0, (y1 - y0 - lh * len(lines)) // 2)
    for line in lines:
        x = x0 + max(0, (x1 - x0 - int(font.getlength(line))) // 2) if center else x0
        draw.text((x, y), line, font=font, fill=fill)
        y += lh


def render_page(page: Page, arr: Arrangement, style: GridStyle):
    """Draw a laid-out page: title, column labels, row labels, thumbnails and empty cells with their notes."""
    from PIL import Image, ImageDraw, ImageOps

    font, small, big = _fonts(style, page.font_file)
    image = Image.new("RGB", page.size, "white")
    draw = ImageDraw.Draw(image)
    _draw_lines(draw, (style.pad, style.pad, page.size[0] - style.pad, page.size[1]),
                wrap_text(page.title, big, page.size[0] - 2 * style.pad, 2), big, (20, 20, 20))
    for box, text in zip(page.col_label_boxes, page.col_labels):
        lines = wrap_text(text, font, box[2] - box[0] + style.pad, 3)
        _draw_lines(draw, (box[0] - style.pad // 2, box[1], box[2] + style.pad // 2, box[3]), lines, font,
                    (20, 20, 20), center=True)
    for i, (box, row) in enumerate(zip(page.row_label_boxes, page.rows)):
        note = arr.row_notes.get(row, "")
        max_lines = max(1, (box[3] - box[1]) // _line_height(font) - (1 if note else 0))
        lines = wrap_text(page.row_labels[i], font, box[2] - box[0], max_lines)
        _draw_lines(draw, box, lines, font, (20, 20, 20), valign="middle")
        if note:
            y = box[1] + (box[3] - box[1] + _line_height(font) * len(lines)) // 2
            _draw_lines(draw, (box[0], y, box[2], box[3]), wrap_text(note, small, box[2] - box[0], 1), small,
                        (110, 110, 110))
    for (i, j), box in page.cell_boxes.items():
        cell = arr.table.get((page.rows[i], page.cols[j]))
        _draw_cell(image, draw, box, cell, small, ImageOps)
    return image


def _draw_cell(image, draw, box, cell: Cell | None, small, ImageOps) -> None:
    x0, y0, x1, y1 = box
    if cell is not None and cell.image is not None:
        try:
            with open_image(cell.image) as im:  # a run folder is untrusted: refuse decompression bombs
                thumb = ImageOps.contain(im.convert("RGB"), (x1 - x0, y1 - y0))
            image.paste(thumb, (x0 + (x1 - x0 - thumb.width) // 2, y0 + (y1 - y0 - thumb.height) // 2))
            if cell.note:  # e.g. an interrupted run: show it, but say so
                _draw_lines(draw, (x0 + 2, y1 - _line_height(small) - 2, x1, y1),
                            wrap_text(cell.note, small, x1 - x0 - 4, 1), small, (200, 30, 30))
            return
        except OSError as e:
            cell = Cell(cell.fields, status="lost", note=f"unreadable image ({e})")
    draw.rectangle(box, fill=(238, 238, 238), outline=(190, 190, 190))
    note = "no image" if cell is None else cell.note or STATUS_NOTES.get(cell.status, cell.status)
    _draw_lines(draw, (x0 + 4, y0 + 4, x1 - 4, y1 - 4), wrap_text(note, small, x1 - x0 - 8, 6), small,
                (120, 120, 120), center=True, valign="middle")


def grid_title(found: Collection, arr: Arrangement) -> str:
    shared = " · ".join(show(f, v) for f, v in arr.shared.items() if f in ("steps", "size", "method", "lr", "cutn"))
    return f"{found.title}  |  rows: {arr.row_field} · columns: {', '.join(arr.col_fields)}" + \
        (f"  |  {shared}" if shared else "")


def page_paths(out: Path, count: int) -> list[Path]:
    """`grid.png` for one page, else `grid-001.png`, `grid-002.png`, ..."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{n:03d}{out.suffix}") for n in range(1, count + 1)]


# Every page carries this PNG text chunk naming the grid it belongs to: {"grid": "grid.png", "page": 2, "pages": 4}.
# It is how a later grid of the same name knows which files it may replace or remove: those it wrote, no others.
PAGE_CHUNK = "vqclip-grid"


def grid_page_owner(path: Path) -> str | None:
    """The grid file name recorded in a page vqclip wrote, or None for any other file (or an unreadable one)."""
    if path.is_symlink() or not path.is_file():
        return None
    try:
        with open_image(path) as im:  # text chunks before the image data are read without decoding pixels
            value = im.info.get(PAGE_CHUNK)
        record = json.loads(value) if isinstance(value, str) else None
    except Exception:  # noqa: BLE001 - any file we cannot read as our page is simply not ours
        return None
    return str(record.get("grid")) if isinstance(record, dict) else None


def _check_replaceable(out: Path, paths: Sequence[Path], overwrite: bool) -> None:
    """Refuse to replace a file that is not a page of this same grid, unless `overwrite`."""
    if overwrite:
        return
    for path in paths:
        if (path.exists() or path.is_symlink()) and grid_page_owner(path) != out.name:
            raise bad_arg("--out", "a file that is not a page of this grid is in the way (grids replace only the "
                          "pages they wrote)", str(path), "Choose another --out, or pass --overwrite to replace it.")


def _remove_stale_pages(out: Path, keep: Sequence[Path]) -> list[Path]:
    """Pages left by an earlier, larger grid of the same name would mislead; remove those (recorded as pages of
    this grid in their own text chunk), never a user's file that merely has a similar name."""
    pattern = re.compile(re.escape(out.stem) + r"(-\d{3})?" + re.escape(out.suffix))
    removed = []
    for p in out.parent.glob(f"{glob.escape(out.stem)}*{glob.escape(out.suffix)}"):
        if pattern.fullmatch(p.name) and p not in keep and grid_page_owner(p) == out.name:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_grid(found: Collection, arr: Arrangement, out: str | os.PathLike, style: GridStyle = GridStyle(),
               overwrite: bool = False) -> list[Path]:
    """Render every page and save it (atomically); returns the page files.

    An existing file is replaced only when it is a page of this same grid, or with `overwrite`.
    """
    from PIL import PngImagePlugin

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise bad_arg("--out", "the grid is written as PNG", str(out), "Give a path ending in .png.")
    pages = paginate(arr, style)
    paths = page_paths(out, len(pages))
    _check_replaceable(out, paths, overwrite)
    title = grid_title(found, arr)
    for page, path in zip(pages, paths):
        image = render_page(layout_page(page, arr, style, title), arr, style)
        info = PngImagePlugin.PngInfo()
        info.add_itxt(PAGE_CHUNK, json.dumps({"grid": out.name, "page": page.number, "pages": page.count}))
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG", pnginfo=info)
    _remove_stale_pages(out, paths)
    return paths


# ---------------------------------------------------------------------------------------------------------------
# The static HTML gallery.

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


def _settings_list(cell: Cell) -> str:
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
    details = f"<details><summary>settings</summary>{_settings_list(cell)}</details>"
    if cell.image is None:
        note = cell.note or STATUS_NOTES.get(cell.status, cell.status)
        return f'<td><div class="empty">{_e(note)}</div><figcaption>{caption}</figcaption>{details}</td>'
    href = _href(cell.image, base)
    alt = f"{cell.prompt_text} ({cell.fields.get('space')}, seed {cell.fields.get('seed')})"
    note = f'<br /><span class="sub">{_e(cell.note)}</span>' if cell.note else ""
    return (f'<td><figure><a href="{href}"><img src="{href}" alt="{_e(alt)}" title="{_e(alt)}" width="{thumb}" '
            f'loading="lazy" /></a><figcaption>{caption}{note}</figcaption>{details}</figure></td>')


def render_html(found: Collection, arr: Arrangement, base: Path, thumb: int = 160) -> str:
    """The gallery as one XHTML-compatible page; image paths are relative to `base` (the page's folder)."""
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
    if (path.exists() or path.is_symlink()) and not overwrite and not _is_our_gallery(path):
        raise bad_arg("--html", "a file vqclip did not write is in the way", str(path),
                      "Choose another --html path, or pass --overwrite to replace it.")
    write_text(path, render_html(found, arr, path.parent, thumb))
    return path


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
        check_writable((Path(out) if out else Path(folder) / "grid.png").parent, "--out")
    if html_path is not None:
        check_writable(Path(html_path).parent, "--html")
    found = collect(folder)
    arr = arrange(found.cells, rows, cols, where)
    written = {"pages": [], "html": None, "rows": len(arr.rows), "cols": len(arr.cols),
               "col_fields": arr.col_fields, "missing": sum(c.status != "ok" for c in arr.table.values()) +
               len(arr.rows) * len(arr.cols) - len(arr.table)}
    if png:
        written["pages"] = write_grid(found, arr, Path(out) if out else found.folder / "grid.png", style, overwrite)
    if html_path is not None:
        written["html"] = write_html(found, arr, html_path, style.thumb, overwrite)
    return written
