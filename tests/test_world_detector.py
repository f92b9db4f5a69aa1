"""The testbed world's own judges (issue 16): text present / which word / which object, and `vqclip score
--detector world:FILE`. Thresholds were measured on seeds 0-2 (also with ATEN_CPU_CAPABILITY=avx2) with margin."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vqclip.errors import VqclipError
from vqclip.spelling.render import item_rng
from vqclip.testbed import detector as D
from vqclip.testbed.world import draw_object, word_image


@pytest.fixture(scope="module")
def world():
    from vqclip.testbed.run import TestbedConfig  # imported here: pytest would try to collect a Test* class

    return TestbedConfig.quick().world()


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    """The quick config trained once (about 25 s on one busy CPU thread)."""
    out = tmp_path_factory.mktemp("detector")
    record = D.train_detector_stage(world, D.DetectorConfig.quick(), out, progress=False)
    return out, record


def test_config_is_validated_with_the_rule_and_the_fix():
    with pytest.raises(VqclipError, match=r"steps: must be a positive integer; got 0"):
        D.DetectorConfig(steps=0)
    with pytest.raises(VqclipError, match=r"degrade: must be a share between 0 and 1"):
        D.DetectorConfig(degrade=1.5)
    with pytest.raises(VqclipError, match=r"object_steps: must be at least 20"):
        D.DetectorConfig(object_steps=10)  # was a ZeroDivisionError inside the one-cycle schedule


def test_training_is_deterministic(world):
    cfg = D.DetectorConfig.quick(n_train=48, steps=20, object_steps=20)
    a = D.train_detectors(world, cfg)
    b = D.train_detectors(world, cfg)
    for m, n in ((a[0], b[0]), (a[1], b[1])):
        sa, sb = m.state_dict(), n.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_heldout_accuracies_and_reuse(world, trained):
    out, record = trained
    clean, degraded = record["heldout"]["clean"], record["heldout"]["degraded"]
    assert clean["text_present"] >= 0.85 and degraded["text_present"] >= 0.8  # measured 0.925-0.96, 0.905-0.93
    assert clean["text_false_positive_on_clutter"] <= 0.25  # letter-free mess is not text (measured 0.10-0.11)
    assert clean["object"] >= 0.5  # measured 0.575-0.68 (quick: objects partly learned, see the config)
    assert clean["word"] is not None and degraded["word"] is not None  # quick: words near chance (see config)
    saved = json.loads((out / D.RECORD_FILE).read_text())
    assert saved["recipe"] == D.detector_recipe(world, D.DetectorConfig.quick())
    again = D.train_detector_stage(world, D.DetectorConfig.quick(), out, progress=False, reuse=True)
    assert again["reused"] and again["heldout"] == record["heldout"]


def test_reader_follows_the_ocr_protocol(world, trained):
    out, _ = trained
    reader = D.WorldTextReader(out / D.TEXT_FILE)
    assert reader.key.startswith("world-text-") and len(reader.key) == len("world-text-") + 12
    words = [np.asarray(word_image(world, w, item_rng(0, "reader-test", w)).resize((96, 96))) for w in world.words]
    blank = np.full((50, 70, 3), 200, np.uint8)
    found = reader.read(words + [blank])
    assert len(found) == len(words) + 1 and found[-1] == []
    seen = [d for d in found[:-1] if d]
    assert len(seen) >= 0.8 * len(words)  # text is seen on clean word images of any size
    for dets in seen:
        (det,) = dets
        assert det.text in world.words and 0.0 < det.confidence <= 1.0
        assert det.box == ((0.0, 0.0), (96.0, 0.0), (96.0, 96.0), (0.0, 96.0))
    assert reader.read([]) == []


def test_object_classifier_and_damaged_files(world, trained, tmp_path):
    out, _ = trained
    clf = D.load_object_classifier(out / D.OBJECT_FILE)
    images = [np.asarray(draw_object(world, c, item_rng(0, "clf-test", c, i))[0]) for c in world.classes
              for i in range(3)]
    labels, probs = clf.predict(images)
    assert probs.shape == (len(images), len(world.classes) + 1) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert all(lbl in (*world.classes, "none") for lbl in labels)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    for path, kind in ((bad, "object"), (out / D.TEXT_FILE, "object"), (tmp_path / "missing.safetensors", "text")):
        with pytest.raises(VqclipError) as e:
            D.load_object_classifier(path) if kind == "object" else D.WorldTextReader(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value) and "train_detector_stage" in str(e.value)


def test_score_cli_with_the_world_detector(world, trained, tmp_path, capsys):
    from vqclip.cli import main

    out, _ = trained
    folder = tmp_path / "imgs"
    folder.mkdir()
    for w in world.words[6:12]:
        word_image(world, w, item_rng(1, "cli-test", w)).save(folder / f"{w}.png")
    for c in world.classes:
        draw_object(world, c, item_rng(1, "cli-test", c))[0].save(folder / f"{c}.png")
    report = tmp_path / "report"
    assert main(["score", str(folder), "--detector", f"world:{out / D.TEXT_FILE}", "--out", str(report), "-q",
                 "--no-chart", "--cache-dir", str(tmp_path / "cache")]) == 0
    records = [json.loads(line) for line in (report / "scores.jsonl").read_text().splitlines()]
    text_on = {r["words"][0]: r["n_detections"] > 0 for r in records}
    assert sum(text_on[w] for w in world.words[6:12]) >= 5
    assert sum(text_on[c] for c in world.classes) <= 1
    summary = json.loads((report / "summary.json").read_text())
    assert summary["detector"]["name"] == "world" and summary["ocr"].startswith("world-text-")
    capsys.readouterr()
    assert main(["score", str(folder), "--detector", "tesseract", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--detector" in err and "tesseract" in err and len(err.splitlines()) == 1
    assert main(["score", str(folder), "--detector", f"world:{tmp_path / 'nope.safetensors'}", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--detector" in err and "nope.safetensors" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_full_config_reads_words(tmp_path):
    """The full config on the full world (2.5-6 min on one CPU thread, depending on the machine's load)."""
    from vqclip.testbed.world import World

    world = World()
    record = D.train_detector_stage(world, D.DetectorConfig(), tmp_path, progress=False)
    clean, degraded = record["heldout"]["clean"], record["heldout"]["degraded"]
    assert clean["text_present"] >= 0.97 and degraded["text_present"] >= 0.95
    assert clean["word"] >= 0.45 and degraded["word"] >= 0.3
    assert clean["object"] >= 0.7 and degraded["object"] >= 0.6
    reader = D.WorldTextReader(tmp_path / D.TEXT_FILE)
    words = world.words[:12]
    found = reader.read([np.asarray(word_image(world, w, item_rng(0, "slow-reader", w))) for w in words])
    assert sum(bool(d) and d[0].text == w for w, d in zip(words, found)) >= 6  # the prompt word is read
