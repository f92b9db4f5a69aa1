"""Comparison grids and the HTML gallery: size, cell placement, labels, pages, missing cells, well-formed HTML."""

import json
from xml.etree import ElementTree

import pytest
from PIL import Image

from test_batch_support import fake_generate, job_color, make_batch, run_fake
from vqclip.cli import main
from vqclip.errors import VqclipError
from vqclip.grid import (GridStyle, arrange, collect, grid_title, layout_page, make_grid, paginate, render_html,
                         wrap_text)

XHTML = "{http://www.w3.org/1999/xhtml}"


@pytest.fixture()
def batch(tmp_path):
    """2 prompts × 2 seeds × 3 spaces, all finished, each image a solid colour that encodes its job."""
    spec, base = make_batch(tmp_path, prompt_text="#: word_type: real\napple\n#: word_type: nonsense\nblick\n",
                            size=(24, 24))
    out = tmp_path / "batch"
    run_fake(spec, base, out)
    return spec, base, out


def pages_of(out, **style):
    found = collect(out)
    arr = arrange(found.cells, **{k: style.pop(k) for k in ("rows", "cols", "where") if k in style})
    st = GridStyle(**style)
    return found, arr, st, [layout_page(p, arr, st, grid_title(found, arr)) for p in paginate(arr, st)]


def center(box):
    return (box[0] + box[2]) // 2, (box[1] + box[3]) // 2


def test_grid_size_cell_placement_and_labels(batch):
    spec, _, out = batch
    written = make_grid(out, style=GridStyle(thumb=40))
    image = Image.open(written["pages"][0])
    found, arr, st, pages = pages_of(out, thumb=40)
    page = pages[0]
    assert len(pages) == 1 and image.size == page.size
    assert arr.col_fields == ["space", "seed"]  # two seeds in each (prompt, space): the seed joins the columns
    assert page.row_labels == ["apple", "blick"]
    assert page.col_labels == ["clip · seed 0", "clip · seed 1", "learn · seed 0", "learn · seed 1",
                               "forget · seed 0", "forget · seed 1"]
    for (i, j), box in page.cell_boxes.items():
        space, seed = page.cols[j]
        assert image.getpixel(center(box)) == job_color(page.rows[i], space, seed)
    for box in page.row_label_boxes + page.col_label_boxes:  # labels are drawn (dark text on white)
        region = image.crop(box).convert("L")
        assert region.getextrema()[0] < 100
    assert arr.row_notes == {"apple": "real", "blick": "nonsense"}


def test_rows_and_columns_can_be_any_varying_field(batch):
    _, _, out = batch
    _, arr, _, pages = pages_of(out, rows="space", cols=["seed"], thumb=32)
    assert arr.rows == ["clip", "learn", "forget"] and arr.col_fields == ["seed", "prompt"]
    assert pages[0].col_labels[:2] == ["seed 0 · apple", "seed 0 · blick"]
    _, arr, _, pages = pages_of(out, where={"seed": "1"}, thumb=32)
    assert arr.col_fields == ["space"] and pages[0].col_labels == ["clip", "learn", "forget"]
    with pytest.raises(VqclipError, match="--rows: unknown field"):
        arrange(collect(out).cells, rows="colour")


def test_pages_split_a_large_grid_and_stale_pages_go(batch, tmp_path):
    _, _, out = batch
    target = tmp_path / "g" / "grid.png"
    target.parent.mkdir()
    earlier = make_grid(out, target, style=GridStyle(thumb=32, max_rows=1, max_cols=1))  # a larger grid before
    assert len(earlier["pages"]) == 12 and (target.parent / "grid-009.png").exists()
    (target.parent / "grid-notes.png").write_bytes(b"keep")
    written = make_grid(out, target, style=GridStyle(thumb=32, max_rows=1, max_cols=4))
    names = [p.name for p in written["pages"]]
    assert names == ["grid-001.png", "grid-002.png", "grid-003.png", "grid-004.png"]  # 2 row pages × 2 column pages
    assert not (target.parent / "grid-009.png").exists() and (target.parent / "grid-notes.png").exists()
    found, arr, st, pages = pages_of(out, thumb=32, max_rows=1, max_cols=4)
    assert [len(p.cols) for p in pages] == [4, 2, 4, 2] and [p.rows for p in pages] == [["apple"]] * 2 + [["blick"]] * 2
    assert Image.open(written["pages"][1]).size == pages[1].size


def test_partial_batch_draws_missing_and_failed_cells_with_a_note(tmp_path):
    spec, base = make_batch(tmp_path, spaces=("clip", "learn"), seeds=(0,), size=(24, 24))
    out = tmp_path / "batch"

    def fail_pear_learn(settings, clip, vqgan, space, callback=None):
        if settings.prompts[0].text == "pear" and space.name == "learn":
            raise RuntimeError("boom")
        return fake_generate(settings, clip, vqgan, space, callback)

    run_fake(spec, base, out, jobs=spec.jobs[1:], generate=fail_pear_learn)  # apple/clip never ran
    written = make_grid(out, style=GridStyle(thumb=48), html_path=out / "index.html")
    assert written["missing"] == 2
    image = Image.open(written["pages"][0])
    found, arr, _, pages = pages_of(out, thumb=48)
    statuses = {(r, c[0]): arr.table[(r, c)].status for r in arr.rows for c in arr.cols}
    assert statuses == {("apple", "clip"): "missing", ("apple", "learn"): "ok", ("pear", "clip"): "ok",
                        ("pear", "learn"): "failed"}
    assert "boom" in arr.table[("pear", ("learn",))].note
    page = pages[0]
    empty = page.cell_boxes[(0, 0)]
    assert image.getpixel((empty[0] + 2, empty[1] + 2)) == (238, 238, 238)
    assert image.crop(empty).convert("L").getextrema()[0] < 200  # the note is written in the empty cell
    html = (out / "index.html").read_text()
    assert "not run yet" in html and "boom" in html


def test_html_gallery_is_well_formed_and_references_every_image(batch, tmp_path):
    spec, base, out = batch
    page = tmp_path / "site" / "gallery.html"
    written = make_grid(out, html_path=page, png=False)
    assert written["pages"] == [] and written["html"] == page
    root = ElementTree.fromstring(page.read_text(encoding="utf-8"))  # XML parser: well-formed or it raises
    srcs = [img.get("src") for img in root.iter(f"{XHTML}img")]
    assert len(srcs) == len(spec.jobs) == 12
    assert {(page.parent / s).resolve() for s in srcs} == {(out / j.folder / "image.png").resolve() for j in spec.jobs}
    text = ElementTree.tostring(root, encoding="unicode")
    assert "nonsense" in text and "seed" in text and "steps" in text


def test_html_escapes_prompt_text(tmp_path):
    spec, base = make_batch(tmp_path, prompt_text='a <b>bold</b> & "quoted" sign\n', spaces=("clip",), seeds=(0,))
    out = tmp_path / "batch"
    run_fake(spec, base, out)
    found = collect(out)
    html = render_html(found, arrange(found.cells), out)
    root = ElementTree.fromstring(html)
    assert root.find(f".//{XHTML}b") is None
    assert 'a <b>bold</b> & "quoted" sign' in "".join(root.itertext())


def test_grid_of_plain_generate_runs(tmp_path):
    from vqclip.outputs import build_record, write_run

    spec, base = make_batch(tmp_path, spaces=("clip",), seeds=(0,))
    from vqclip.batch.plan import job_settings
    from test_batch_support import FakeModels

    models = FakeModels()
    for space in ("clip", "forget"):
        settings = job_settings(base, spec.items[0], 5)
        result = fake_generate(settings, None, None, models.space(space))
        record = build_record(result, models.describe(), models.space(space).describe(), "apple",
                              {"space_name": space})
        write_run(tmp_path / "runs" / f"apple-{space}", result, record)
    found = collect(tmp_path / "runs")
    arr = arrange(found.cells)
    assert found.kind == "runs" and arr.rows == ["apple"] and arr.cols == [("clip",), ("forget",)]
    assert main(["grid", str(tmp_path / "runs"), "--thumb", "32"]) == 0
    assert (tmp_path / "runs" / "grid.png").is_file()
    # a run folder is untrusted: a decompression bomb in it is drawn as an unreadable cell, not decoded
    from PIL import Image

    Image.new("1", (20000, 20000)).save(tmp_path / "runs" / "apple-forget" / "image.png", optimize=True)
    assert main(["grid", str(tmp_path / "runs"), "--thumb", "32", "--overwrite"]) == 0


def test_wrap_text_breaks_long_words_and_ellipsises():
    from PIL import ImageFont

    font = ImageFont.load_default(size=12)
    lines = wrap_text("a " + "x" * 80 + " tail words here", font, 60, 3)
    assert len(lines) == 3 and lines[-1].endswith("…") and all(font.getlength(l) <= 60 for l in lines)


def test_a_method_label_too_long_for_its_column_breaks_after_a_plus():
    from PIL import ImageFont

    font = ImageFont.load_default(size=12)
    width = int(font.getlength("forget+negati"))  # "forget+negative" does not fit; "forget+" does
    assert wrap_text("forget+negative · seed 0", font, width, 3)[:2] == ["forget+", "negative ·"]
    lines = wrap_text("forgetnegative", font, width, 3)  # no joint: between letters, as before
    assert "".join(lines) == "forgetnegative" and len(lines) == 2 and len(lines[0]) > len("forget+")


def test_grid_cli_errors(tmp_path, capsys):
    assert main(["grid", str(tmp_path / "nope")]) == 2
    assert "DIR" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "batch.json").write_text(json.dumps({"format": "vqclip.batch/1", "jobs": []}))
    assert main(["grid", str(tmp_path / "b")]) == 2
    assert "holds no runs" in capsys.readouterr().err
    assert main(["grid", str(tmp_path / "b"), "--no-png"]) == 2
    assert "--html" in capsys.readouterr().err


def test_runs_whose_grid_fields_coincide_each_keep_a_place(tmp_path):
    """Issue 15: two runs of the same prompt, space, seed and settings (e.g. made with two CLIP models) are two
    cells, not one: the run folder joins the columns when no other field tells them apart."""
    from vqclip.batch.plan import job_settings
    from vqclip.outputs import build_record, write_run
    from test_batch_support import FakeModels

    spec, base = make_batch(tmp_path, spaces=("clip",), seeds=(0,))
    models = FakeModels()
    folders = ["apple-clip-a", "apple-clip-b", "pear-clip"]
    for name in folders:
        item = spec.items[1] if name.startswith("pear") else spec.items[0]
        result = fake_generate(job_settings(base, item, 5), None, None, models.space("clip"))
        record = build_record(result, models.describe(), models.space("clip").describe(), item.prompt,
                              {"space_name": "clip"})
        write_run(tmp_path / "runs" / name, result, record)
    found = collect(tmp_path / "runs")
    arr = arrange(found.cells)
    placed = {str(cell.image.parent.name) for cell in arr.table.values()}
    assert placed == set(folders) and arr.duplicates == 0
    assert arr.col_fields == ["space", "run"]
    assert [arr.col_label(c) for c in arr.cols] == ["clip · run apple-clip-a", "clip · run apple-clip-b",
                                                     "clip · run pear-clip"]
    written = make_grid(tmp_path / "runs", style=GridStyle(thumb=32), html_path=tmp_path / "runs" / "index.html")
    assert written["cols"] == 3 and written["rows"] == 2
    html = (tmp_path / "runs" / "index.html").read_text(encoding="utf-8")
    assert "3 ok" in html and html.count("<img ") == 3
    # a chosen layout that cannot tell the runs apart still gives each image a place
    arr = arrange(found.cells, rows="seed", cols=["space"])
    assert len(arr.table) == 3 and arr.col_fields[-1] == "run"


def test_grid_cli_says_what_it_placed_unless_quiet(batch, capsys):
    _, _, out = batch
    assert main(["grid", str(out), "--thumb", "32"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().endswith("grid.png")
    assert "2 rows x 6 columns (space, seed): 12 ok" in captured.err
    assert main(["grid", str(out), "--thumb", "32", "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_title_wraps_only_between_settings():
    """Issue 25: the PNG title wrapped inside "lr 0.1"; it breaks only at its separators (" · ", ", ", " | ")."""
    from PIL import ImageFont

    from vqclip.grid.png import wrap_parts

    font = ImageFont.load_default(size=17)
    title = "batch: 2 prompts  |  rows: prompt · columns: space, seed  |  steps 300 · size 32x32 · lr 0.1 · cutn 32"
    settings = ["steps 300", "size 32x32", "lr 0.1", "cutn 32"]
    for width in range(60, 800, 7):
        lines = wrap_parts(title, font, width, 20)
        assert all(font.getlength(l) <= width for l in lines if " " in l), (width, lines)
        for setting in settings:  # a setting that fits on a line is on one line: "lr" and "0.1" never apart
            assert font.getlength(setting) > width or any(setting in l for l in lines), (width, setting, lines)
        assert not any(l.endswith(("·", ",", "|")) for l in lines)
    assert wrap_parts(title, font, 10_000, 2) == [title]


def test_png_rows_show_whole_labels_and_each_cell_its_loss(tmp_path):
    """Issue 25: a row label was cut to the thumbnail's height ("scene ·…") and the PNG had no loss per cell,
    while the HTML has one; labels now wrap over lines (the row grows) and a loss is written under each image."""
    prompt = "a scene · with the word apple written on a sign in the morning light"
    spec, base = make_batch(tmp_path, prompt_text=f"#: word_type: real\n{prompt}\npear\n", spaces=("clip", "forget"),
                            seeds=(0,))
    out = tmp_path / "batch"
    run_fake(spec, base, out)
    found, arr, st, pages = pages_of(out, thumb=32)
    page = pages[0]
    lines = page.row_label_lines[0]
    assert len(lines) > 1 and " ".join(lines) == prompt and not any("…" in l for l in lines)
    label_box, cell_box = page.row_label_boxes[0], page.cell_boxes[(0, 0)]
    assert label_box[3] - label_box[1] > 32  # the row grew to hold the label
    assert set(page.loss_boxes) == set(page.cell_boxes)  # every image has its loss
    written = make_grid(out, style=GridStyle(thumb=32))
    image = Image.open(written["pages"][0])
    for (i, j), box in page.loss_boxes.items():
        assert box[1] >= page.cell_boxes[(i, j)][3]  # under the image, not over it
        assert image.crop(box).convert("L").getextrema()[0] < 160  # text drawn
    assert image.getpixel(center(cell_box)) == job_color(prompt, "clip", 0)
