"""`vqclip score`: the real EasyOCR on offline weights, the content-hash cache, bad inputs, the CLI end to end."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from vqclip.evaluate.ocr import Detection, EasyOcrReader, OcrCache, ocr_images
from vqclip.io import save_png


@pytest.fixture(scope="session")
def easyocr_reader():
    """One real EasyOCR reader per test session (loading it takes seconds on a CPU)."""
    pytest.importorskip("easyocr")
    return EasyOcrReader(device="cpu")


def word_image(word: str, size=(256, 128)) -> Image.Image:
    from vqclip.spelling.render import TextStyle, render_word, resolve_fonts

    style = TextStyle(fonts=resolve_fonts(["DejaVuSans-Bold"]), size_range=(0.45, 0.45), jitter=0.0)
    return render_word(word, size, style, rng=0)


class CountingReader:
    """A fake OCR engine that 'reads' the word stored in the image's red channel mean, and counts its calls."""

    key = "fake-reader"

    def __init__(self, text="apple"):
        self.calls, self.images, self.text = 0, 0, text

    def read(self, images):
        self.calls += 1
        self.images += len(images)
        return [[Detection(((0, 0), (1, 0), (1, 1), (0, 1)), self.text, 0.8)] if im.mean() < 250 else []
                for im in images]


def test_real_easyocr_reads_a_large_word_and_nothing_on_a_blank(easyocr_reader):
    word = np.asarray(word_image("apple"))
    blank = np.full((128, 256, 3), 255, np.uint8)
    found, empty = easyocr_reader.read([word, blank])  # same shape: one batched detection call
    assert empty == []
    assert any(d.text.lower() == "apple" and d.confidence > 0.5 for d in found)
    assert len(found[0].box) == 4


def test_cache_hits_skip_ocr_and_new_images_only_are_read(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"im{i}.png"
        Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(p)
        paths.append(p)
    reader, cache = CountingReader(), OcrCache("fake-reader", tmp_path / "c")
    first = ocr_images(paths[:2], reader, cache, batch_size=8, progress=False)
    assert reader.images == 2 and not any(r.cached for r in first)
    again = ocr_images(paths, reader, cache, batch_size=8, progress=False)
    assert reader.images == 3  # only the new image was read
    assert [r.cached for r in again] == [True, True, False]
    assert again[0].detections == first[0].detections
    # a copy with the same bytes under another name is a cache hit too (content hash)
    (tmp_path / "copy.png").write_bytes(paths[0].read_bytes())
    assert ocr_images([tmp_path / "copy.png"], reader, cache, progress=False)[0].cached
    # another engine or setting does not reuse these results
    assert OcrCache("other-reader", tmp_path / "c").get(again[0].sha256) is None


def test_bad_images_are_recorded_not_fatal(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (32, 32), "black").save(good)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not a png at all")

    class Exploding(CountingReader):
        def read(self, images):
            if any(im.shape[0] == 16 for im in images):
                raise RuntimeError("engine fell over")
            return super().read(images)

    odd = tmp_path / "odd.png"
    Image.new("RGB", (16, 16), "black").save(odd)
    res = ocr_images([good, tmp_path / "empty.png", tmp_path / "junk.png", odd], Exploding(), None, progress=False)
    assert res[0].detections and res[0].error is None
    assert "empty" in res[1].error and "unreadable" in res[2].error
    assert res[3].detections is None and "engine fell over" in res[3].error


def test_missing_ocr_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "easyocr", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[ocr\]" in the vqclip clone'):
        EasyOcrReader(device="cpu")


def _make_batch(root, images):
    """A batch folder as `vqclip batch` writes it: manifest.jsonl + one sub-folder per job."""
    lines = []
    for i, (space, word, word_type, im) in enumerate(images):
        job = root / f"{i:04d}_{space}_{word}"
        save_png(im, job / "image.png", text={"prompt": word, "space": space, "seed": i})
        (job / "run.json").write_text(json.dumps({"prompt": word, "space": space, "seed": i, "image": "image.png",
                                                  "prompts": [{"text": word, "weight": 1.0, "stop": None}],
                                                  "settings": {"steps": 10}}))
        lines.append({"id": f"job{i}", "prompt": word, "space": space, "seed": i, "status": "ok",
                      "image": f"{job.name}/image.png", "word_type": word_type})
    lines.append({"id": "jobX", "prompt": "zzz", "space": "clip", "status": "failed", "error": "OOM"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))


def test_score_cli_end_to_end_on_a_batch_folder(tmp_path, monkeypatch, easyocr_reader, capsys):
    from vqclip.cli import main

    blank = Image.new("RGB", (256, 128), "white")
    batch = tmp_path / "batch"
    _make_batch(batch, [("learn", "apple", "real", word_image("apple")),
                        ("clip", "apple", "real", blank),
                        ("forget", "zorbl", "nonsense", blank)])
    (batch / "0002_forget_zorbl" / "image.png").write_bytes(b"")  # a broken output is skipped and counted
    monkeypatch.setattr("vqclip.evaluate.ocr.EasyOcrReader", lambda device="auto": easyocr_reader)
    assert main(["score", str(batch), "-q", "--group-by", "settings.steps"]) == 0
    printed = capsys.readouterr().out
    out = batch / "score"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_scored"] == 2 and summary["n_skipped"] == 2 and summary["n_cached"] == 0
    reasons = " ".join(s["reason"] for s in summary["skipped"])
    assert "failed" in reasons and "empty" in reasons
    groups = {(g["key"]["space"], g["key"]["word_type"], g["key"]["settings.steps"]): g["metrics"]
              for g in summary["groups"]}
    assert groups[("learn", "real", "10")]["any_text>0.0"]["k"] == 1
    assert groups[("learn", "all", "all")]["legible"]["k"] == 1
    assert groups[("clip", "real", "10")]["any_text>0.0"] == {"k": 0, "n": 1, "rate": 0.0, "ci95": [0.0, groups[
        ("clip", "real", "10")]["any_text>0.0"]["ci95"][1]]}
    records = [json.loads(l) for l in (out / "scores.jsonl").read_text().splitlines()]
    learn = next(r for r in records if r.get("space") == "learn")
    assert learn["legibility"]["exact"] and learn["detections"][0]["text"].lower() == "apple"
    table = (out / "table.md").read_text()
    # columns clip | learn | forget as in grid and ui (issue 25), in table.md and in the printed table
    assert "| clip | learn | paper (CLIP / learn / forget) |" in table and "33.0 / 53.3 / 3.3" in table
    assert table in printed
    assert (out / "chart.png").stat().st_size > 1000
    # re-scoring is served from the cache: the OCR engine is not touched
    monkeypatch.setattr("vqclip.evaluate.ocr.EasyOcrReader", lambda device="auto": _NoRead(easyocr_reader.key))
    assert main(["score", str(batch), "-q"]) == 0
    assert json.loads((out / "summary.json").read_text())["n_cached"] == 2


class _NoRead:
    """Same engine key as the real reader, but fails if asked to read."""

    def __init__(self, key):
        self.key = key

    def read(self, images):
        raise AssertionError("cached images must not be read again")


def test_score_plain_folder_uses_words_file_and_folder_spaces(tmp_path, monkeypatch):
    from vqclip.cli import main

    for space in ("clip", "forget"):
        (tmp_path / "imgs" / space).mkdir(parents=True)
        Image.new("RGB", (32, 32), "black").save(tmp_path / "imgs" / space / "apple_001.png")
        Image.new("RGB", (32, 32), "white").save(tmp_path / "imgs" / space / "zorbl_002.png")
    (tmp_path / "words.txt").write_text("# word,type\napple,real\nzorbl,nonsense\n")
    monkeypatch.setattr("vqclip.evaluate.ocr.EasyOcrReader", lambda device="auto": CountingReader("appla"))
    out = tmp_path / "report"
    assert main(["score", str(tmp_path / "imgs"), "--words", str(tmp_path / "words.txt"), "--out", str(out),
                 "-q", "--no-chart"]) == 0
    records = [json.loads(l) for l in (out / "scores.jsonl").read_text().splitlines()]
    assert {(r["space"], r["words"][0], r["word_type"]) for r in records} == {
        ("clip", "apple", "real"), ("clip", "zorbl", "nonsense"), ("forget", "apple", "real"),
        ("forget", "zorbl", "nonsense")}
    apple = next(r for r in records if r["words"] == ["apple"])
    assert apple["legibility"]["legible"] and not apple["legibility"]["exact"]  # "appla" is 1 edit from apple
    assert not (out / "chart.png").exists()
    # a report left inside the image folder is not scored as images next time
    assert main(["score", str(tmp_path / "imgs"), "-q"]) == 0
    assert main(["score", str(tmp_path / "imgs"), "--out", str(tmp_path / "r3"), "-q"]) == 0
    assert json.loads((tmp_path / "r3" / "summary.json").read_text())["n_scored"] == 4
    # no images at all is a clear error, not an empty report
    (tmp_path / "none").mkdir()
    assert main(["score", str(tmp_path / "none"), "-q"]) == 2


def test_score_cli_without_the_ocr_extra_prints_the_install_command(tmp_path, monkeypatch, capsys):
    from vqclip.cli import main

    Image.new("RGB", (32, 32), "white").save(tmp_path / "a.png")
    monkeypatch.setitem(sys.modules, "easyocr_en_models", None)
    assert main(["score", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert 'pip install -e ".[ocr]" in the vqclip clone' in err and "Traceback" not in err


def test_an_interrupted_scoring_keeps_what_it_gathered(tmp_path):
    from vqclip.evaluate.scoring import score_paths
    from vqclip.evaluate.sources import collect_images

    for i in range(3):
        Image.new("RGB", (32, 32), (i, 0, 0)).save(tmp_path / f"word{i}.png")

    class Interrupted(CountingReader):
        def read(self, images):
            if self.calls == 2:
                raise KeyboardInterrupt
            return super().read(images)

    items, skipped = collect_images([tmp_path])
    cache = OcrCache("fake-reader", tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        score_paths(items, skipped, tmp_path / "out", Interrupted(), cache, batch_size=1, progress=False)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["partial"] is True and summary["n_scored"] == 2
    # the next run resumes from the cache and reads only the image left
    reader = CountingReader()
    summary = score_paths(items, skipped, tmp_path / "out", reader, cache, batch_size=1, progress=False)
    assert reader.images == 1 and summary["n_cached"] == 2 and summary["partial"] is False


def test_unknown_group_by_field_is_refused_before_ocr_listing_known_ones(tmp_path, monkeypatch, capsys):
    from vqclip.cli import main

    batch = tmp_path / "batch"
    _make_batch(batch, [("learn", "apple", "real", Image.new("RGB", (32, 32), "white"))])
    monkeypatch.setattr("vqclip.evaluate.ocr.EasyOcrReader",
                        lambda device="auto": pytest.fail("OCR started before --group-by was checked"))
    assert main(["score", str(batch), "-q", "--group-by", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "--group-by: no image has this metadata field" in err and "nosuch" in err
    assert "settings.steps" in err and "seed" in err and "Traceback" not in err
    assert not (batch / "score").exists()


def test_score_leaves_nothing_in_a_fresh_home(tmp_path):
    """Issue 36 item 14: `vqclip score` used to leave ~/.EasyOCR/user_network/ (empty; EasyOCR creates it for custom
    recognisers) and ~/.config/matplotlib/ plus ~/.cache/matplotlib/ (matplotlib's config and font cache, on import
    for the chart). A fresh HOME keeps only vqclip's own cache folder; a MPLCONFIGDIR the user set is kept."""
    import os
    import subprocess
    import sys

    pytest.importorskip("easyocr")
    pytest.importorskip("matplotlib")
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (48, 48), "white").save(images / "a.png")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VQCLIP_CACHE", "MPLCONFIGDIR", "EASYOCR_MODULE_PATH",
                                                             "MODULE_PATH", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "vqclip", "score", str(images), "--out", str(tmp_path / "score"),
                           "--device", "cpu", "-q"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "score" / "chart.png").is_file()  # matplotlib did run
    left = sorted(str(p.relative_to(home)) for p in home.rglob("*") if not str(p.relative_to(home)).startswith(
        os.path.join(".cache", "vqclip")))
    assert left == [".cache"], left


def test_matplotlib_goes_to_vqclips_cache_only_when_the_user_chose_nothing(monkeypatch, tmp_path):
    import os
    import sys

    from vqclip.cache import matplotlib_dir

    monkeypatch.delitem(sys.modules, "matplotlib", raising=False)
    monkeypatch.setenv("VQCLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mine"))
    matplotlib_dir()
    assert os.environ["MPLCONFIGDIR"] == str(tmp_path / "mine")
    monkeypatch.delenv("MPLCONFIGDIR")
    matplotlib_dir()
    assert os.environ["MPLCONFIGDIR"] == str(tmp_path / "cache" / "matplotlib")
