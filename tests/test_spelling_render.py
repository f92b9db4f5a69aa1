"""Rendering x_t and x_it: deterministic for a seed, light background, dark text, fonts and recipe."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqclip.errors import VqclipError
from vqclip.spelling.render import (TextStyle, available_fonts, draw_word, parse_colors, render_word, resolve_fonts,
                                    resize_center_crop)


def _arr(im):
    return np.asarray(im, dtype=np.int16)


def test_at_least_three_font_families_offline():
    fonts = available_fonts()
    assert len(fonts) >= 3
    names = {Path(f).stem.split("-")[0] for f in fonts}
    assert len(names) >= 3  # e.g. DejaVuSans, DejaVuSerif, DejaVuSansMono, STIXGeneralBol


def test_render_word_is_deterministic_and_seed_dependent():
    style = TextStyle().with_fonts()
    a = render_word("strength", 96, style, 5)
    b = render_word("strength", 96, style, random.Random(5))
    c = render_word("strength", 96, style, 6)
    assert a.size == (96, 96) and a.mode == "RGB"
    assert (_arr(a) == _arr(b)).all()
    assert not (_arr(a) == _arr(c)).all()
    assert (_arr(render_word("strength", 96, style)) == _arr(render_word("strength", 96, style))).all()


def test_x_t_is_dark_text_on_light_background():
    style = TextStyle(text_colors=((0, 0, 0),), background_colors=((255, 255, 255),)).with_fonts()
    im = _arr(render_word("house", 128, style, 1))
    assert (im[0, 0] == 255).all() and (im[-1, -1] == 255).all()  # corners keep the background
    dark = (im.sum(-1) < 100)
    assert 0.01 < dark.mean() < 0.4  # the word is there and does not fill the image
    rows, cols = np.nonzero(dark)
    assert abs(rows.mean() - 64) < 20 and abs(cols.mean() - 64) < 20  # centred (up to jitter)


def test_draw_word_crops_and_boxes():
    photo = Image.new("RGB", (300, 200), (20, 90, 40))
    style = TextStyle(box_colors=((255, 255, 255),), text_colors=((0, 0, 0),), jitter=0.0).with_fonts()
    out = draw_word(photo, "kwaxr", style, 3, size=128)
    assert out.size == (128, 128)
    arr = _arr(out)
    assert (arr[0, 0] == (20, 90, 40)).all()  # the photo around the box is untouched
    assert (arr[64].sum(-1) >= 3 * 250).any()  # the light box crosses the centre row
    assert (arr.sum(-1) < 60).any()  # dark text inside
    plain = draw_word(photo, "kwaxr", style, 3, box=False)
    assert plain.size == photo.size and not (_arr(plain).sum(-1) >= 3 * 250).any()
    assert (_arr(out) == _arr(draw_word(photo, "kwaxr", style, 3, size=128))).all()
    assert photo.getpixel((0, 0)) == (20, 90, 40)  # the input is not modified


def test_long_words_fit_and_multiword_names_wrap():
    style = TextStyle(size_range=(0.5, 0.5), background_colors=((255, 255, 255),), jitter=0.0).with_fonts()
    im = _arr(render_word("wwwwwwww", 64, style, 0))
    cols = np.nonzero((im.sum(-1) < 3 * 200).any(0))[0]
    assert cols.min() > 0 and cols.max() < 63  # shrunk to fit the width
    name = _arr(render_word("great white shark", 128, style, 0))
    ink_rows = np.nonzero((name.sum(-1) < 3 * 200).any(1))[0]
    assert ink_rows.max() - ink_rows.min() > 30  # two lines, not one tiny line


def test_resize_center_crop():
    im = Image.new("RGB", (200, 100), (0, 0, 0))
    im.paste((255, 0, 0), (0, 0, 50, 100))  # red stripe on the left quarter is cropped away
    out = resize_center_crop(im, 50)
    assert out.size == (50, 50)
    assert out.getpixel((25, 25)) == (0, 0, 0)


def test_style_recipe_round_trip():
    style = TextStyle(size_range=(0.1, 0.2), text_colors=((1, 2, 3),), seed=9).with_fonts()
    d = style.to_dict()
    assert d["seed"] == 9 and d["size_range"] == [0.1, 0.2] and len(d["font_files"]) == len(style.fonts)
    assert all(len(f["sha256"]) == 16 for f in d["font_files"])
    back = TextStyle.from_dict(d)
    assert back == style


def test_font_folder_and_names(tmp_path):
    src = available_fonts()[0]
    (tmp_path / "fonts").mkdir()
    shutil.copy(src, tmp_path / "fonts" / "MyFont.ttf")
    fonts = available_fonts(tmp_path / "fonts")
    assert str(tmp_path / "fonts" / "MyFont.ttf") in fonts
    assert resolve_fonts(["MyFont"], tmp_path / "fonts") == (str(tmp_path / "fonts" / "MyFont.ttf"),)
    assert resolve_fonts(["DejaVuSerif-Bold"])[0].endswith("DejaVuSerif-Bold.ttf")


def test_bad_fonts_are_clear_errors(tmp_path):
    (tmp_path / "broken.ttf").write_bytes(b"not a font")
    with pytest.raises(VqclipError, match="--font.*broken.ttf"):
        resolve_fonts([str(tmp_path / "broken.ttf")])
    with pytest.raises(VqclipError, match="Available:"):
        resolve_fonts(["NoSuchFont"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(VqclipError, match="--font-dir"):
        available_fonts(tmp_path / "empty")


def test_bad_style_values():
    with pytest.raises(VqclipError, match="--text-size"):
        TextStyle(size_range=(0.3, 0.1))
    with pytest.raises(VqclipError, match="--jitter"):
        TextStyle(jitter=0.7)
    assert parse_colors("#000000,#1e1e1e", "--text-colors") == ((0, 0, 0), (30, 30, 30))
    assert parse_colors("0 0 0;30 30 30", "--text-colors") == ((0, 0, 0), (30, 30, 30))
    with pytest.raises(VqclipError, match="--box-colors"):
        parse_colors("light", "--box-colors")
