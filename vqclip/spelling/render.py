"""Word images for the five-tuples (docs/method.md §3): x_t (dark bold word on a light background) and x_it (word
on a photo).

Rendering is deterministic: every random choice (font, size, colour, position) comes from the `rng` passed in, a
`random.Random` or a seed. Fonts are files; the defaults are the bold DejaVu and STIX faces that matplotlib ships,
so they exist offline wherever vqclip[train] is installed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

from ..errors import MissingExtraError, bad_arg, pip_extra
from ..errors import quote_error

Color = tuple[int, int, int]
Size = int | tuple[int, int]

# Bold faces from three+ families; matplotlib bundles all four, Linux distributions usually have the DejaVu ones.
DEFAULT_FONT_FILES = ("DejaVuSans-Bold.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono-Bold.ttf", "STIXGeneralBol.ttf")
FONT_SUFFIXES = (".ttf", ".otf", ".ttc")
SYSTEM_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts",
                    "/Library/Fonts", "/System/Library/Fonts", "C:/Windows/Fonts")


@dataclass(frozen=True)
class TextStyle:
    """How words are drawn: font files, size range, colours, box and position jitter, plus the default seed."""

    fonts: tuple[str, ...] = ()  # font files; empty means available_fonts()
    size_range: tuple[float, float] = (0.14, 0.24)  # font size as a fraction of the image's shorter side
    max_width: float = 0.9  # a long word is shrunk to fit this fraction of the image width
    text_colors: tuple[Color, ...] = ((0, 0, 0), (30, 30, 30), (15, 25, 90), (90, 15, 15))
    background_colors: tuple[Color, ...] = ((255, 255, 255), (245, 245, 238), (236, 240, 246))
    box_colors: tuple[Color, ...] = ((255, 255, 255), (246, 246, 240), (255, 250, 226))
    box_padding: float = 0.25  # box margin around the text, as a fraction of the font size
    jitter: float = 0.05  # largest offset of the word's centre, as a fraction of the image side
    seed: int = 0

    def __post_init__(self):
        lo, hi = self.size_range
        if not (0 < lo <= hi <= 1):
            raise bad_arg("--text-size", "must be MIN,MAX fractions of the image side with 0 < MIN <= MAX <= 1",
                          self.size_range, "For example --text-size 0.14,0.24.")
        if not (0 < self.max_width <= 1):
            raise bad_arg("max_width", "must be in (0, 1]", self.max_width, "Use e.g. 0.9.")
        if not (0 <= self.jitter < 0.5):
            raise bad_arg("--jitter", "must be in [0, 0.5)", self.jitter, "Use e.g. 0.05.")
        for name in ("text_colors", "background_colors", "box_colors"):
            colors = getattr(self, name)
            if not colors or any(len(c) != 3 or not all(0 <= int(v) <= 255 for v in c) for c in colors):
                raise bad_arg(name, "must be a non-empty list of RGB colours (0-255)", colors, "Use e.g. #000000.")

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain JSON types; `font_files` names each font with a content hash."""
        d = asdict(self)
        d["fonts"] = list(self.fonts)
        d["size_range"] = list(self.size_range)
        for name in ("text_colors", "background_colors", "box_colors"):
            d[name] = [list(c) for c in getattr(self, name)]
        d["font_files"] = [{"name": Path(f).name, "sha256": font_fingerprint(f)} for f in self.fonts]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TextStyle":
        kw = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        kw["fonts"] = tuple(kw.get("fonts", ()))
        if "size_range" in kw:
            kw["size_range"] = tuple(float(v) for v in kw["size_range"])
        for name in ("text_colors", "background_colors", "box_colors"):
            if name in kw:
                kw[name] = tuple(tuple(int(v) for v in c) for c in kw[name])
        return cls(**kw)

    def with_fonts(self, font_dir: str | os.PathLike | None = None) -> "TextStyle":
        """This style with its fonts resolved to loadable files (the defaults when none are named)."""
        return replace(self, fonts=resolve_fonts(self.fonts or None, font_dir))


def font_fingerprint(path: str | os.PathLike) -> str:
    """Short sha256 of a font file, so a recipe names the exact face whatever folder it lives in."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return "missing"


def _font_search_dirs() -> list[Path]:
    import importlib.util

    dirs = []
    spec = importlib.util.find_spec("matplotlib")  # locate its bundled fonts without importing it
    if spec is not None and spec.origin:
        dirs.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf")
    dirs += [Path(d).expanduser() for d in SYSTEM_FONT_DIRS]
    return [d for d in dirs if d.is_dir()]


def _fonts_in(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in FONT_SUFFIXES and p.is_file())


@functools.lru_cache(maxsize=1)
def _default_fonts() -> tuple[str, ...]:
    """The default bold faces found on this machine (searched once per process)."""
    found: dict[str, str] = {}
    for folder in _font_search_dirs():
        for name in DEFAULT_FONT_FILES:
            if name in found:
                continue
            if (folder / name).is_file():
                found[name] = str(folder / name)
            else:
                hits = sorted(folder.rglob(name))
                if hits:
                    found[name] = str(hits[0])
    return tuple(found[n] for n in DEFAULT_FONT_FILES if n in found)


def available_fonts(extra_dir: str | os.PathLike | None = None) -> list[str]:
    """Font files usable offline: the default bold faces found on this machine, then every font in `extra_dir`."""
    fonts = list(_default_fonts())
    if extra_dir is not None:
        folder = Path(extra_dir).expanduser()
        extra = _fonts_in(folder) if folder.is_dir() else []
        if not extra:
            raise bad_arg("--font-dir", "must be a folder holding .ttf/.otf/.ttc font files", str(folder),
                          "Point it at a folder of fonts.")
        fonts += [f for f in extra if f not in fonts]
    if not fonts:
        raise MissingExtraError(f"vqclip found no fonts to render words with: {pip_extra('train')} "
                          "(matplotlib ships the DejaVu fonts), or pass --font-dir FOLDER_OF_TTF_FILES.")
    return fonts


def resolve_fonts(fonts: Sequence[str] | None = None, font_dir: str | os.PathLike | None = None) -> tuple[str, ...]:
    """Turn font names or paths into loadable font files; None means all available fonts."""
    pool = available_fonts(font_dir)
    if not fonts:
        chosen = pool
    else:
        by_name = {}
        for p in pool:
            by_name.setdefault(Path(p).stem.lower(), p)
            by_name.setdefault(Path(p).name.lower(), p)
        chosen = []
        for f in fonts:
            path = Path(f).expanduser()
            if path.is_file():
                chosen.append(str(path))
            elif f.lower() in by_name:
                chosen.append(by_name[f.lower()])
            else:
                raise bad_arg("--font", "must be a font file or the name of an available font", f,
                              "Available: " + ", ".join(sorted({Path(p).stem for p in pool})) + ".")
    for f in chosen:
        load_font(f, 12)
    return tuple(chosen)


@functools.lru_cache(maxsize=512)
def load_font(path: str, px: int) -> ImageFont.FreeTypeFont:
    """A FreeType font at `px` pixels; a file Pillow cannot load is a user error naming the file."""
    try:
        return ImageFont.truetype(str(path), int(px))
    except (OSError, ValueError) as e:
        raise bad_arg("--font", "must be a TrueType/OpenType font file that Pillow can load", str(path),
                      f"Pass another font file or folder ({quote_error(e)}).") from e


def make_rng(rng: random.Random | int | str | None, style: TextStyle | None = None) -> random.Random:
    """A `random.Random` from a generator, a seed, or (None) the style's seed."""
    if isinstance(rng, random.Random):
        return rng
    if rng is None:
        rng = style.seed if style is not None else 0
    return random.Random(rng)


def item_rng(seed: int | str, *keys: Any) -> random.Random:
    """An independent, order-free generator for one item (string seeds hash with sha512, not PYTHONHASHSEED)."""
    return random.Random(":".join(str(k) for k in (seed, *keys)))


def _wh(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    w, h = size
    return int(w), int(h)


def resize_center_crop(image: Image.Image, size: Size) -> Image.Image:
    """Resize the shorter side to fit `size` (bicubic) and centre-crop, like CLIP's preprocessing."""
    w, h = _wh(size)
    image = image.convert("RGB")
    scale = max(w / image.width, h / image.height)
    rw, rh = max(w, round(image.width * scale)), max(h, round(image.height * scale))
    image = image.resize((rw, rh), Image.Resampling.BICUBIC)
    left, top = (rw - w) // 2, (rh - h) // 2
    return image.crop((left, top, left + w, top + h))


def _text_bbox(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int, int, int]:
    return draw.textbbox((0, 0), text, font=font, align="center")


def _fit_text(draw: ImageDraw.ImageDraw, word: str, font_path: str, px: int, max_w: float):
    """Largest font size <= px at which `word` fits max_w; long multi-word names wrap onto two lines."""
    text = word
    for _ in range(2):
        size = px
        while True:
            font = load_font(font_path, size)
            l, t, r, b = _text_bbox(draw, text, font)
            if r - l <= max_w or size <= 4:
                break
            size = max(4, min(size - 1, int(size * max_w / (r - l))))
        if size >= 0.6 * px or " " not in word or "\n" in text:
            return text, font
        words = word.split(" ")  # split where the two lines are most even
        cut = min(range(1, len(words)), key=lambda i: abs(len(" ".join(words[:i])) - len(" ".join(words[i:]))))
        text = " ".join(words[:cut]) + "\n" + " ".join(words[cut:])
    return text, font


def _place_word(draw: ImageDraw.ImageDraw, word: str, width: int, height: int, style: TextStyle,
                rng: random.Random, box_color: Color | None) -> None:
    """Draw `word` near the image centre (jittered), optionally on a padded box; all choices from `rng`."""
    fonts = style.fonts or _default_fonts() or available_fonts()
    font_path = fonts[rng.randrange(len(fonts))]
    color = style.text_colors[rng.randrange(len(style.text_colors))]
    side = min(width, height)
    px = max(4, round(rng.uniform(*style.size_range) * side))
    dx = rng.uniform(-style.jitter, style.jitter) * width
    dy = rng.uniform(-style.jitter, style.jitter) * height
    pad = style.box_padding * px
    max_w = style.max_width * width - (2 * pad if box_color is not None else 0)
    text, font = _fit_text(draw, word, font_path, px, max(4.0, max_w))
    l, t, r, b = _text_bbox(draw, text, font)
    x = width / 2 + dx - (l + r) / 2  # the ink box's centre lands on the jittered image centre
    y = height / 2 + dy - (t + b) / 2
    if box_color is not None:
        draw.rectangle((x + l - pad, y + t - pad, x + r + pad, y + b + pad), fill=box_color)
    draw.text((x, y), text, font=font, fill=color, align="center")


def render_word(word: str, size: Size, style: TextStyle | None = None,
                rng: random.Random | int | str | None = None) -> Image.Image:
    """x_t: `word` in dark bold text on a plain light background, `size` = side or (width, height)."""
    style = style or TextStyle()
    rng = make_rng(rng, style)
    w, h = _wh(size)
    background = style.background_colors[rng.randrange(len(style.background_colors))]
    image = Image.new("RGB", (w, h), background)
    _place_word(ImageDraw.Draw(image), word, w, h, style, rng, None)
    return image


def draw_word(image: Image.Image, word: str, style: TextStyle | None = None,
              rng: random.Random | int | str | None = None, box: bool = True, size: Size | None = None) -> Image.Image:
    """x_it: a copy of `image` (resized and centre-cropped to `size` if given) with `word` centred in a light box."""
    style = style or TextStyle()
    rng = make_rng(rng, style)
    out = resize_center_crop(image, size) if size is not None else image.convert("RGB").copy()
    box_color = style.box_colors[rng.randrange(len(style.box_colors))]
    _place_word(ImageDraw.Draw(out), word, out.width, out.height, style, rng, box_color if box else None)
    return out


def parse_colors(text: str, arg: str) -> tuple[Color, ...]:
    """'#000000,#1e1e1e' or '0 0 0;30 30 30' -> RGB tuples."""
    colors = []
    for part in re.split(r"[,;]\s*(?=#)|;", text.strip()):
        part = part.strip()
        if not part:
            continue
        if re.fullmatch(r"#?[0-9a-fA-F]{6}", part):
            h = part.lstrip("#")
            colors.append((int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)))
        elif re.fullmatch(r"\d{1,3}[ ,]+\d{1,3}[ ,]+\d{1,3}", part):
            rgb = tuple(int(v) for v in re.split(r"[ ,]+", part))
            if max(rgb) > 255:
                raise bad_arg(arg, "RGB values must be 0-255", part, "Use e.g. #1e1e1e or '30 30 30'.")
            colors.append(rgb)
        else:
            raise bad_arg(arg, "must be colours like #000000,#1e1e1e (or 'R G B;R G B')", text,
                          "Give hex colours separated by commas.")
    if not colors:
        raise bad_arg(arg, "must name at least one colour", text, "Give e.g. #000000.")
    return tuple(colors)
