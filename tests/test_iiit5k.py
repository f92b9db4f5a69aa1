"""IIIT5K OCR by retrieval: the .mat format (tiny fixture), planted embeddings, the CLI with a tiny CLIP."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vqclip.errors import VqclipError
from vqclip.evaluate.iiit5k import evaluate_iiit5k, iiit5k_table, read_iiit5k, retrieve_words
from vqclip.spaces import Space

VOCAB = ["private", "house", "cat", "dog", "sale", "open"]


def _cell(words):
    c = np.empty((len(words), 1), dtype=object)
    for i, w in enumerate(words):
        c[i, 0] = np.array([w])
    return c


def make_iiit5k(root, items, missing=()):
    """testdata.mat as released: a 1 x N struct with ImgName, GroundTruth, smallLexi, mediumLexi (upper case)."""
    sio = pytest.importorskip("scipy.io")
    dt = [("ImgName", "O"), ("GroundTruth", "O"), ("smallLexi", "O"), ("mediumLexi", "O")]
    table = np.zeros((1, len(items)), dtype=dt)
    (root / "test").mkdir(parents=True, exist_ok=True)
    for i, (word, small) in enumerate(items):
        name = f"test/{100 + i}_1.png"
        if name not in missing:
            Image.new("RGB", (60, 20), (40 * VOCAB.index(word) + 10, 0, 0)).save(root / name)
        table[0, i] = (name, word.upper(), _cell([w.upper() for w in small]), _cell([w.upper() for w in VOCAB]))
    sio.savemat(str(root / "testdata.mat"), {"testdata": table})
    return root / "testdata.mat"


class WordEncoder:
    """A fake CLIP with a known answer: image i codes its word in red; the text of word w is one-hot at w.

    Crops of 'cat' are coded as 'dog' in the image (a confusable pair) unless the lexicon lacks 'dog'.
    """

    input_size = (8, 8)
    device = torch.device("cpu")

    def encode_image(self, x):
        idx = ((x[:, 0].mean(dim=(1, 2)) * 255 - 10) / 40).round().long()  # (B,)
        e = torch.zeros(x.shape[0], len(VOCAB))
        for b, j in enumerate(idx.tolist()):
            e[b, j] = 1.0
            if VOCAB[j] == "cat":
                e[b, VOCAB.index("dog")] = 1.5
        return torch.nn.functional.normalize(e, dim=-1)

    def encode_text(self, texts):
        e = torch.zeros(len(texts), len(VOCAB))
        for i, t in enumerate(texts):
            e[i, VOCAB.index(t)] = 1.0
        return e


ITEMS = [("private", ["private", "house"]), ("house", ["house", "sale"]), ("cat", ["cat", "open"]),
         ("sale", ["sale", "private"])]


def test_reads_the_mat_format_and_lists_missing_images(tmp_path):
    mat = make_iiit5k(tmp_path / "IIIT5K", ITEMS + [("open", ["open", "cat"])], missing={"test/104_1.png"})
    data = read_iiit5k(tmp_path / "IIIT5K")  # the folder works as well as the file
    assert data.annotation == mat and [c.word for c in data.crops] == ["private", "house", "cat", "sale"]
    assert data.crops[0].small == ["private", "house"] and data.crops[0].medium == VOCAB
    assert data.skipped == [{"path": str(tmp_path / "IIIT5K" / "test/104_1.png"), "reason": "image file missing"}]
    assert data.full == ["cat", "house", "private", "sale"]


def test_retrieval_accuracy_from_planted_embeddings(tmp_path):
    make_iiit5k(tmp_path, ITEMS)
    data = read_iiit5k(tmp_path / "testdata.mat")
    eye = torch.eye(len(VOCAB))
    drop_dog = Space("forget", eye[[i for i, w in enumerate(VOCAB) if w != "dog"]])
    report = evaluate_iiit5k(data, WordEncoder(), {"clip": Space("clip"), "nodog": drop_dog}, progress=False)
    r = report["results"]
    # small lexicon has no 'dog': every crop is right; medium (all words) and full: 'cat' is read as 'dog'
    assert r["clip"]["small"]["k"] == 4 and r["clip"]["medium"]["k"] == 3
    # full = the test words only (no 'dog' among them), so the cat crop is right again
    assert r["clip"]["full"]["k"] == 4
    # a space that drops the 'dog' direction reads 'cat' correctly everywhere
    assert r["nodog"]["medium"]["k"] == 4
    assert report["lexicon_sizes"] == {"small": 2, "medium": 6, "full": 4}
    assert "| small | 2 |" in iiit5k_table(report)


def test_retrieve_words_respects_each_images_lexicon():
    img = torch.eye(3)
    words = ["a", "b", "c"]
    assert retrieve_words(img, torch.eye(3), words, None) == ["a", "b", "c"]
    assert retrieve_words(img, torch.eye(3), words, [["b", "c"], ["b"], ["a", "c"]]) == ["b", "b", "c"]


def test_bad_annotation_files_are_clear_errors(tmp_path):
    pytest.importorskip("scipy.io")
    with pytest.raises(VqclipError, match="no testdata.mat"):
        read_iiit5k(tmp_path)
    (tmp_path / "testdata.mat").write_bytes(b"not matlab")
    with pytest.raises(VqclipError, match="not a readable MATLAB .*download IIIT5K again"):
        read_iiit5k(tmp_path / "testdata.mat")
    make_iiit5k(tmp_path / "nope", [("cat", ["cat"])], missing={"test/100_1.png"})
    with pytest.raises(VqclipError, match="no usable word images"):
        read_iiit5k(tmp_path / "nope")


def test_eval_ocr_cli_with_tiny_clip(tmp_path, tiny_clip_id):
    from vqclip.cli import main

    make_iiit5k(tmp_path / "IIIT5K", ITEMS)
    out = tmp_path / "report"
    assert main(["eval", "ocr", "--annotations", str(tmp_path / "IIIT5K"), "--clip", tiny_clip_id, "--device", "cpu",
                 "--lexicon", "small,full", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["results"]) == ["clip"] and set(report["results"]["clip"]) == {"small", "full"}
    assert report["results"]["clip"]["small"]["n"] == 4 and report["lexicon_sizes"]["full"] == 4
    assert main(["eval", "ocr", "--annotations", str(tmp_path / "IIIT5K"), "--lexicon", "huge"]) == 2
