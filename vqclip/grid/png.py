"""The grid as labelled PNG pages drawn with Pillow; pages record which grid they belong to."""

from __future__ import annotations

import functools
import glob
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import bad_arg
from ..io import atomic_path
from ..untrusted import open_image
from .arrange import Arrangement, grid_title
from .collect import STATUS_NOTES, Cell, Collection


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
    title_lines: list[str] = field(default_factory=list)  # the title wrapped only between settings
    row_label_lines: list[list[str]] = field(default_factory=list)  # each row's label, wrapped, never cut short
    row_note_lines: list[list[str]] = field(default_factory=list)  # each row's note (word type, prompt id)
    loss_boxes: dict[tuple[int, int], tuple[int, int, int, int]] = field(default_factory=dict)  # under each image
    font_file: str | None = None  # None: Pillow's own font; else a font that covers the labels' scripts


def paginate(arr: Arrangement, style: GridStyle) -> list[Page]:
    """Split the table into pages of at most max_rows × max_cols places, leaving out the pages where no cell
    (image, failure or planned job) falls: a sparse table (each prompt with its own seeds, or a manifest whose lines
    all differ in two fields) has rows × columns places but only as many cells as lines, and the pages follow the
    cells, in time linear in them."""
    row_index = {r: i // style.max_rows for i, r in enumerate(arr.rows)}
    col_index = {c: i // style.max_cols for i, c in enumerate(arr.cols)}
    chunks = sorted({(row_index[r], col_index[c]) for r, c in arr.table if r in row_index and c in col_index}) \
        or [(0, 0)]

    def part(values: list, n: int, size: int) -> list:
        return values[n * size:(n + 1) * size]

    return [Page(part(arr.rows, r, style.max_rows), part(arr.cols, c, style.max_cols), n + 1, len(chunks))
            for n, (r, c) in enumerate(chunks)]


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


WORD_JOINTS = ("+", "-", "_", "/")  # where a word too long for a line is broken first (method labels, file names)


def wrap_text(text: str, font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to `width` pixels; words longer than a line are broken, after a '+', '-', '_' or '/' where
    one fits, else between letters; overflow ends with '…'."""
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
                joint = max(word.rfind(j, 0, cut) for j in WORD_JOINTS)  # after a '+' of "forget+negative", ...
                cut = joint + 1 if joint > 0 else cut
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return _cut_to(lines, font, width, max_lines, "…")


# Where a title or label may wrap: between settings ("steps 300 · lr 0.1"), between list items and parts of the
# title, never inside one setting (a line ending "lr" above one starting "0.1" reads as two settings).
SEPARATORS = ("  |  ", " · ", ", ")


def split_parts(text: str) -> list[str]:
    """`text` cut after each separator: the pieces a line may end with, separators kept (joined they give `text`)."""
    parts, start, i = [], 0, 0
    while i < len(text):
        sep = next((s for s in SEPARATORS if text.startswith(s, i)), None)
        if sep is None:
            i += 1
            continue
        parts.append(text[start:i + len(sep)])
        start = i = i + len(sep)
    if start < len(text):
        parts.append(text[start:])
    return parts or [""]


def wrap_parts(text: str, font, width: int, max_lines: int) -> list[str]:
    """Wrap `text` only between its parts (see `split_parts`): a part is never split unless it is wider than a line
    by itself, and then it is word-wrapped as `wrap_text` does. Lines carry no trailing separator."""
    lines: list[str] = []
    line = ""
    for part in split_parts(str(text)):
        candidate = line + part
        if font.getlength(candidate.rstrip(" ·,|")) <= width or not line:
            line = candidate
        else:
            lines.append(line)
            line = part
        if font.getlength(line.rstrip(" ·,|")) > width:  # one part wider than a line: words, then letters
            pieces = wrap_text(line.strip(), font, width, 1000)
            lines += pieces[:-1]
            line = pieces[-1] + (line[len(line.rstrip()):] if line.rstrip() != line else "")
    lines.append(line)
    lines = [l.strip().rstrip(" ·,|").rstrip() for l in lines]
    lines = [l for l in lines if l] or [""]
    return _cut_to(lines, font, width, max_lines, " …")


def _cut_to(lines: list[str], font, width: int, max_lines: int, mark: str) -> list[str]:
    """At most `max_lines` lines; when some are dropped, the last kept one ends in `mark` within `width`."""
    if len(lines) <= max_lines:
        return lines
    lines = lines[:max_lines]
    last = lines[-1]
    while last and font.getlength(last + mark) > width:
        last = last[:-1]
    lines[-1] = last + mark
    return lines


# A row grows to show its whole label and note (issue 25: labels were cut to the thumbnail's height), up to this many
# lines; cli/grid.py bounds a page's pixels with it.
ROW_LINES = 8


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
    font, small, big = _fonts(style, page.font_file)
    pad, thumb, label_w = style.pad, style.thumb, style.label_w()
    lh, small_lh = _line_height(font), _line_height(small)
    col_w = thumb + pad
    header_lines = max([len(wrap_text(t, font, col_w - pad, 3)) for t in page.col_labels] or [1])
    width = max(pad + label_w + pad + col_w * len(page.cols), 200)
    page.title_lines = wrap_parts(page.title, big, width - 2 * pad, 8)
    title_h = pad + len(page.title_lines) * _line_height(big) + pad
    header_h = header_lines * lh + pad
    top = title_h + header_h
    left = pad + label_w + pad
    # the loss under each image, as the HTML gallery shows it, when any cell of the page has one
    loss_h = small_lh + 2 if any(_loss_text(arr.table.get((r, c))) for r in page.rows for c in page.cols) else 0
    page.row_label_lines, page.row_note_lines, heights = [], [], []
    for row, label in zip(page.rows, page.row_labels):
        note = arr.row_notes.get(row, "")
        fit = max(ROW_LINES, (thumb + loss_h) // lh)  # lines of the label font the row has room for
        note_lines = wrap_parts(note, small, label_w, 2) if note else []
        label_lines = wrap_text(label, font, label_w, max(1, fit - len(note_lines)))
        page.row_label_lines.append(label_lines)
        page.row_note_lines.append(note_lines)
        heights.append(max(thumb + loss_h, len(label_lines) * lh + len(note_lines) * small_lh))
    ys = [top]
    for h in heights:
        ys.append(ys[-1] + h + pad)
    page.size = (width, ys[-1] + pad)
    page.col_label_boxes = [(left + j * col_w, title_h, left + j * col_w + thumb, top - pad // 2)
                            for j in range(len(page.cols))]
    page.row_label_boxes = [(pad, ys[i], pad + label_w, ys[i] + heights[i]) for i in range(len(page.rows))]
    page.cell_boxes = {(i, j): (left + j * col_w, ys[i], left + j * col_w + thumb, ys[i] + thumb)
                       for i in range(len(page.rows)) for j in range(len(page.cols))}
    page.loss_boxes = {(i, j): (x0, y1, x1, y1 + loss_h) for (i, j), (x0, _, x1, y1) in page.cell_boxes.items()
                       if loss_h and _loss_text(arr.table.get((page.rows[i], page.cols[j])))}
    return page


def _loss_text(cell: Cell | None, font=None, width: int = 0) -> str:
    """`loss 0.1234` for a cell whose run reported a final loss (the HTML gallery's caption has the same); with a
    font and a width, the longest of `loss 0.1234`, `0.1234`, `0.123` that fits under the thumbnail."""
    loss = None if cell is None else cell.info.get("loss")
    if isinstance(loss, bool) or not isinstance(loss, (int, float)):
        return ""
    texts = [f"loss {float(loss):.4f}", f"{float(loss):.4f}", f"{float(loss):.3f}", f"{float(loss):.2f}"]
    return next((t for t in texts if font is None or font.getlength(t) <= width), texts[-1])


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
    _draw_lines(draw, (style.pad, style.pad, page.size[0] - style.pad, page.size[1]), page.title_lines, big,
                (20, 20, 20))
    for box, text in zip(page.col_label_boxes, page.col_labels):
        lines = wrap_text(text, font, box[2] - box[0] + style.pad, 3)
        _draw_lines(draw, (box[0] - style.pad // 2, box[1], box[2] + style.pad // 2, box[3]), lines, font,
                    (20, 20, 20), center=True)
    for box, lines, notes in zip(page.row_label_boxes, page.row_label_lines, page.row_note_lines):
        text_h = _line_height(font) * len(lines) + _line_height(small) * len(notes)
        y = box[1] + max(0, (box[3] - box[1] - text_h) // 2)  # the label and its note, centred in the row
        _draw_lines(draw, (box[0], y, box[2], box[3]), lines, font, (20, 20, 20))
        if notes:
            y += _line_height(font) * len(lines)
            _draw_lines(draw, (box[0], y, box[2], box[3]), notes, small, (110, 110, 110))
    for (i, j), box in page.cell_boxes.items():
        cell = arr.table.get((page.rows[i], page.cols[j]))
        _draw_cell(image, draw, box, cell, small, ImageOps)
        if (i, j) in page.loss_boxes:
            x0, y0, x1, y1 = page.loss_boxes[(i, j)]
            _draw_lines(draw, (x0 - style.pad // 2, y0, x1 + style.pad // 2, y1),
                        [_loss_text(cell, small, x1 - x0 + style.pad - 2)], small, (90, 90, 90), center=True)
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
            raise bad_arg("--out-file", "a file that is not a page of this grid is in the way (grids replace only the "
                          "pages they wrote)", str(path),
                          "Choose another --out-file, or pass --overwrite to replace it.")


def _remove_stale_pages(out: Path, keep: Sequence[Path]) -> list[Path]:
    """Pages left by an earlier, larger grid of the same name would mislead; remove those (recorded as pages of
    this grid in their own text chunk), never a user's file that merely has a similar name."""
    pattern = re.compile(re.escape(out.stem) + r"(-\d{3,})?" + re.escape(out.suffix))
    kept = {p.name for p in keep}  # a set: a grid of thousands of pages checks each name once, not against all
    removed = []
    for p in out.parent.glob(f"{glob.escape(out.stem)}*{glob.escape(out.suffix)}"):
        if pattern.fullmatch(p.name) and p.name not in kept and grid_page_owner(p) == out.name:
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
        raise bad_arg("--out-file", "the grid is written as PNG", str(out), "Give a path ending in .png.")
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
