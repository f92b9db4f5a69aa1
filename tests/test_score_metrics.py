"""Text-in-image measures: edit distance, legibility, Wilson intervals, grouping, tables (no OCR engine)."""

from __future__ import annotations

import math

import pytest

from vqclip.evaluate.ocr import Detection
from vqclip.evaluate.textscore import (any_text, edit_distance, markdown_table, normalise_text,
                                       normalised_edit_distance, prompt_words, rate, score_detections, summarise,
                                       wilson_interval, word_legibility)


def det(text, conf=0.9, x=0.0, y=0.0):
    return Detection(((x, y), (x + 10, y), (x + 10, y + 10), (x, y + 10)), text, conf)


def test_edit_distance_known_pairs():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("flaw", "lawn") == 2
    assert normalised_edit_distance("apple", "appla") == pytest.approx(0.2)
    assert normalised_edit_distance("", "") == 0.0
    assert normalise_text("  Ap-ple!3 ") == "apple"


def test_legibility_on_hand_made_detections():
    # a close misreading is legible but not exact
    r = word_legibility(["apple"], [det("APPIE", 0.5), det("zzz", 0.9)], max_distance=0.3)
    assert r["best_text"] == "appie" and r["best_distance"] == pytest.approx(0.2)
    assert r["legible"] and not r["exact"]
    # case and punctuation do not matter for an exact match
    r = word_legibility(["apple"], [det("Apple!")])
    assert r["exact"] and r["legible"] and r["best_distance"] == 0.0
    # a word split by OCR into two detections is matched through the joined reading
    r = word_legibility(["window"], [det("dow", x=50), det("win", x=0)])
    assert r["exact"]
    # a word inside a longer detected phrase is matched by its token
    assert word_legibility(["cat"], [det("the cat sat")])["exact"]
    # too far, nothing, or below the confidence floor
    assert not word_legibility(["apple"], [det("orange")])["legible"]
    r = word_legibility(["apple"], [])
    assert r["best_distance"] == 1.0 and not r["legible"]
    assert not word_legibility(["apple"], [det("apple", 0.1)], min_confidence=0.5)["legible"]
    # the threshold is inclusive and decides
    assert word_legibility(["abcde"], [det("abcdx")], max_distance=0.2)["legible"]
    assert not word_legibility(["abcde"], [det("abcdx")], max_distance=0.19)["legible"]


def test_any_text_is_strictly_above_threshold():
    dets = [det("a", 0.25), det("b", 0.1)]
    assert any_text(dets, 0.0) and not any_text(dets, 0.25) and not any_text([], 0.0)
    s = score_detections(dets, ["apple"], thresholds=(0.0, 0.25))
    assert s["any_text"] == {"0.0": True, "0.25": False}
    assert s["max_confidence"] == 0.25 and s["n_detections"] == 2


def test_prompt_words_from_run_metadata_and_raw_prompts():
    assert prompt_words(prompts=[{"text": "apple", "weight": 1.0}, {"text": "text", "weight": -1}]) == ["apple"]
    assert prompt_words("Zorbl") == ["zorbl"]
    assert prompt_words("a photo of a cat:2|blurry:-1") == ["photo", "cat"]
    assert prompt_words("") == [] and prompt_words(None, None) == []


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    lo, hi = wilson_interval(81, 263)  # Wilson (1927) style textbook case: 0.308 [0.255, 0.366]
    assert lo == pytest.approx(0.2553, abs=1e-3) and hi == pytest.approx(0.3662, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert rate(0, 0)["rate"] is None
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def _record(space, word_type, conf, legible, extra=None):
    return {"status": "ok", "space": space, "word_type": word_type,
            "any_text": {"0.0": conf is not None, "0.25": conf is not None and conf > 0.25},
            "legibility": None if legible is None else {"legible": legible, "exact": False},
            "meta": extra or {}}


def test_grouping_by_space_and_word_type_with_marginals():
    recs = ([_record("clip", "real", 0.9, True)] * 3 + [_record("clip", "real", None, False)] +
            [_record("clip", "nonsense", 0.1, False)] * 2 + [_record("forget", "real", None, False)] * 4 +
            [_record("forget", None, 0.5, None, {"steps": 50})])
    groups = summarise(recs, ["space", "word_type"], (0.0, 0.25))
    by = {(g["key"]["space"], g["key"]["word_type"]): g for g in groups}
    assert by[("clip", "real")]["metrics"]["any_text>0.0"] == rate(3, 4)
    assert by[("clip", "nonsense")]["metrics"]["any_text>0.0"]["k"] == 2
    assert by[("clip", "nonsense")]["metrics"]["any_text>0.25"]["k"] == 0
    assert by[("clip", "all")]["metrics"]["any_text>0.0"] == rate(5, 6)
    assert by[("forget", "all")]["n"] == 5 and by[("forget", "unknown")]["n"] == 1
    # legibility is counted only where a prompt word is known
    assert by[("forget", "all")]["metrics"]["legible"] == rate(0, 4)
    # order: the paper's space order, then all / nonsense / real
    assert [tuple(g["key"].values()) for g in groups][:3] == [("clip", "all"), ("clip", "nonsense"), ("clip", "real")]
    # any other metadata field, reached inside the record's meta
    g2 = summarise(recs, ["space", "steps"], (0.0,))
    keys = {(g["key"]["space"], g["key"]["steps"]) for g in g2}
    assert ("forget", "50") in keys and ("forget", "unknown") in keys and ("forget", "all") in keys


def test_markdown_table_has_spaces_as_columns_and_paper_reference():
    recs = [_record("learn", "real", 0.9, True), _record("clip", "real", None, False),
            _record("forget", "nonsense", None, False)]
    table = markdown_table(summarise(recs), (0.0, 0.25))
    header = table.splitlines()[0]
    assert header.index("clip") < header.index("learn") < header.index("forget")  # as in grid and ui (issue 25)
    assert "paper (CLIP / learn / forget)" in header
    row = next(l for l in table.splitlines() if "conf > 0.0 | all" in l)
    assert "100.0 [" in row and "(1/1)" in row and "33.0 / 53.3 / 3.3" in row
    learn_col = [c.strip() for c in header.split("|")].index("learn")
    assert math.isclose(float(row.split("|")[learn_col].split()[0]), 100.0)


def test_collect_single_runs_and_describe_their_prompt(tmp_path):
    import json as _json

    from PIL import Image

    from vqclip.evaluate.sources import collect_images, describe_item
    from vqclip.io import save_png

    run = tmp_path / "run1"
    save_png(Image.new("RGB", (8, 8)), run / "image.png", text={"prompt": "apple", "space": "forget", "seed": 3})
    Image.new("RGB", (8, 8)).save(run / "frames_0001.png")  # progress frames in a run folder are not scored
    (run / "run.json").write_text(_json.dumps({"prompt": "apple:1|text:-1", "space": "forget", "seed": 3,
                                               "image": "image.png"}))
    items, skipped = collect_images([run, run / "image.png"])  # the same image twice counts once
    assert [i.path.name for i in items] == ["image.png"] and not skipped
    info = describe_item(items[0])
    assert info["words"] == ["apple"] and info["space"] == "forget" and info["seed"] == 3
    (tmp_path / "run2").mkdir()
    (tmp_path / "run2" / "run.json").write_text(_json.dumps({"prompt": "x", "image": "gone.png"}))
    items, skipped = collect_images([tmp_path / "run2"])
    assert not items and "missing" in skipped[0]["reason"]


def test_chart_bars_follow_the_table_columns_clip_learn_forget(tmp_path, monkeypatch):
    """Issue 25: score's chart, like its table, puts the spaces in grid and ui's order clip | learn | forget."""
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    from vqclip.evaluate.textscore import bar_chart

    labels = []
    real_bar = Axes.bar
    monkeypatch.setattr(Axes, "bar", lambda self, *a, **k: labels.append(k.get("label")) or real_bar(self, *a, **k))
    recs = [_record("forget", "real", None, False), _record("learn", "real", 0.9, True),
            _record("clip", "real", None, False)]
    bar_chart(summarise(recs, ["space", "word_type"], (0.0,)), tmp_path / "chart.png", (0.0,))
    assert labels[:3] == ["clip", "learn", "forget"] and (tmp_path / "chart.png").stat().st_size > 1000
