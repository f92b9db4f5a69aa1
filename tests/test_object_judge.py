"""Issue 27: is the prompted object still there? A second CLIP (--judge-clip) classifies each real word's image
zero-shot over the run's real words; `reproduce ocr` reports "object kept (judge)" and "object kept, no text"
beside each space / method column. Tiny models built in code, a fake OCR engine, no network."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vqclip.cli import main
from vqclip.errors import VqclipError
from vqclip.evaluate.objectjudge import (DEFAULT_JUDGE_CLIP, check_judge_clip, judge_features, judge_images,
                                         kept_rates, parse_judge_clip)
from vqclip.evaluate.ocr import Detection
from vqclip.io import read_jsonl
from test_reproduce import projections  # noqa: F401 - fixture of the reproduce tests

WORDS = ["tree", "apple", "house"]  # not sorted: a verdict must follow the list's order, not the alphabet's


def test_the_top1_word_and_kept_follow_the_nearest_word_prompt():
    words_feats = torch.eye(3, 4)  # tree -> e0, apple -> e1, house -> e2
    images = F.normalize(torch.tensor([[0.2, 0.9, 0.1, 0.0],    # nearest apple, prompt apple: kept
                                       [0.9, 0.1, 0.3, 0.1],    # nearest tree, prompt house: not kept
                                       [0.1, 0.5, 0.6, 0.0],    # nearest house (barely), prompt house: kept
                                       [0.0, 0.1, 0.0, 1.0]]), dim=1)  # nearest apple, prompt tree: not kept
    verdicts = judge_features(images, words_feats, WORDS, ["apple", "house", "house", "tree"])
    assert [v["top1"] for v in verdicts] == ["apple", "tree", "house", "apple"]
    assert [v["kept"] for v in verdicts] == [True, False, True, False]
    assert verdicts[2]["similarity"] == pytest.approx(float(images[2, 2]), abs=1e-5)
    assert judge_features(images[:0], words_feats, WORDS, []) == []
    with pytest.raises(ValueError, match="2 images but 1 prompt words"):
        judge_features(images[:2], words_feats, WORDS, ["apple"])


class ColourEncoder:
    """A fake CLIP: an image's feature is its mean colour, a word prompt's is red / green / blue by the word."""

    input_size = (8, 8)
    device = torch.device("cpu")
    colour = {"a photo of a tree": [0.0, 1.0, 0.0], "a photo of a apple": [1.0, 0.0, 0.0],
              "a photo of a house": [0.0, 0.0, 1.0]}

    def encode_image(self, images):
        return F.normalize(images.mean(dim=(2, 3)), dim=1)

    def encode_text(self, texts):
        return F.normalize(torch.tensor([self.colour[t] for t in texts]), dim=1)


def test_image_files_are_judged_in_order_and_an_unreadable_one_is_left_out(tmp_path):
    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    Image.new("RGB", (20, 12), (230, 20, 10)).save(red)
    Image.new("RGB", (16, 16), (0, 0, 230)).save(blue)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    out = judge_images(ColourEncoder(), [red, blue, tmp_path / "broken.png", red],
                       ["apple", "tree", "house", "house"], WORDS + ["apple"])
    assert [(v["word"], v["top1"], v["kept"]) for v in out] == [("apple", "apple", True), ("tree", "house", False),
                                                                ("house", None, None), ("house", "apple", False)]
    assert "unreadable image" in out[2]["error"]
    with pytest.raises(ValueError, match="not in the word list: pear"):
        judge_images(ColourEncoder(), [red], ["pear"], WORDS)


def test_kept_rates_count_per_column_and_on_the_images_without_text():
    records = [{"space": "clip", "kept": True, "no_text": False}, {"space": "clip", "kept": False, "no_text": True},
               {"space": "clip", "kept": True, "no_text": True}, {"space": "forget", "kept": True, "no_text": True},
               {"space": "forget", "kept": None, "no_text": True}]  # unreadable: not counted
    rates = kept_rates(records)
    assert (rates["clip"]["kept"]["k"], rates["clip"]["kept"]["n"]) == (2, 3)
    assert (rates["clip"]["kept_no_text"]["k"], rates["clip"]["kept_no_text"]["n"]) == (1, 2)
    assert (rates["forget"]["kept"]["k"], rates["forget"]["kept"]["n"]) == (1, 1)
    lo, hi = rates["clip"]["kept"]["ci95"]
    assert lo < 2 / 3 < hi


def test_the_flag_parses_models_folders_and_none():
    assert parse_judge_clip("none") is None and parse_judge_clip("None") is None and parse_judge_clip("") is None
    assert parse_judge_clip(DEFAULT_JUDGE_CLIP) == ("ViT-B-16", "laion2b_s34b_b88k")
    assert parse_judge_clip("ViT-B-16:/w/judge:v2.bin") == ("ViT-B-16", "/w/judge:v2.bin")
    assert parse_judge_clip("local-dir:/m/c:1") == ("local-dir:/m/c:1", None)
    assert parse_judge_clip("hf-hub:org/repo") == ("hf-hub:org/repo", None)
    for no_weights in ("ViT-B-16", "ViT-B-16:", ":openai"):  # open_clip would build a random CLIP
        with pytest.raises(VqclipError, match=r"^--judge-clip: a named model needs its weights after a colon"):
            parse_judge_clip(no_weights)


def test_a_judge_equal_to_the_guide_is_refused_and_another_accepted(tiny_clip_id, tmp_path):
    from vqclip.cli.choices import JUDGE_CLIP
    from vqclip.models.tiny import make_clip_dir

    assert JUDGE_CLIP == DEFAULT_JUDGE_CLIP  # the parser's literal is the library's
    assert check_judge_clip("none", tiny_clip_id, None) is None
    with pytest.raises(VqclipError, match=r"^--judge-clip: must be another CLIP than the one that guides .*got '"
                                          + tiny_clip_id + r"'\. .*--judge-clip none"):
        check_judge_clip(tiny_clip_id, tiny_clip_id, None)
    # the same weights under another spelling are the same CLIP (OpenAI's ViT-B/32 is built with QuickGELU)
    with pytest.raises(VqclipError, match="must be another CLIP"):
        check_judge_clip("ViT-B-32-quickgelu:openai", "ViT-B-32", "openai")
    with pytest.raises(VqclipError, match=r"got 'ViT-B-16:laion2b_s34b_b88k'\. .*--judge-clip ViT-B-32:openai"):
        check_judge_clip(DEFAULT_JUDGE_CLIP, "ViT-B-16", "laion2b_s34b_b88k")
    assert check_judge_clip(DEFAULT_JUDGE_CLIP, "ViT-B-32", "openai") == ("ViT-B-16", "laion2b_s34b_b88k")
    other = make_clip_dir(tmp_path / "judge", seed=1)
    assert check_judge_clip(other, tiny_clip_id, None) == (other, None)
    with pytest.raises(VqclipError, match=r"^--judge-clip: not a model name open_clip knows; got 'ViT-B-99'"):
        check_judge_clip("ViT-B-99:openai", tiny_clip_id, None)


def test_a_judge_that_cannot_be_loaded_is_one_line_naming_the_flag(tmp_path):
    from vqclip.evaluate.objectjudge import load_judge
    from vqclip.models.tiny import make_clip_dir

    judge = make_clip_dir(tmp_path / "judge", seed=1)
    weights = next(p for p in (tmp_path / "judge").iterdir() if p.suffix != ".json")
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with pytest.raises(VqclipError) as e:
        load_judge(judge, device="cpu")
    assert str(e.value).startswith(f"--judge-clip: could not load {tmp_path / 'judge'} as weights") and \
        "\n" not in str(e.value) and str(e.value).endswith("--judge-clip none skips the object check)")
    assert e.value.arg == "--judge-clip"


class HalfTextReader:
    """A fake OCR engine that finds text in about half the images (those whose first pixel's red value is odd)."""

    key = "fake-half-text"

    def read(self, images):
        return [[Detection(((0, 0), (4, 0), (4, 4), (0, 4)), "word", 0.9)] if int(im[0, 0, 0]) % 2 else []
                for im in images]


@pytest.fixture()
def half_text_ocr(monkeypatch):
    from vqclip.reproduce import ocr

    monkeypatch.setattr(ocr, "ocr_reader", lambda device="auto": HalfTextReader())


def _run(tiny_model_flags, tmp_path, *extra):
    words = tmp_path / "words.txt"
    words.write_text("apple,real\nhouse,real\nzezr,nonsense\nqwpx,nonsense\n")
    out = tmp_path / "r"
    cmd = ["reproduce", "ocr", "--words", str(words), "--size", "16", "16", "--steps", "1", "--out", str(out),
           "--grid-words", "0", *extra, *tiny_model_flags]
    return main(cmd), out


@pytest.mark.usefixtures("half_text_ocr", "projections")
def test_reproduce_ocr_reports_the_judged_object_beside_each_column(tiny_model_flags, tmp_path, capsys):
    from vqclip.evaluate.common import to_input
    from vqclip.models.clip import load_clip
    from vqclip.models.tiny import make_clip_dir

    judge = make_clip_dir(tmp_path / "judge", seed=1)
    code, out = _run(tiny_model_flags, tmp_path, "--methods", "negative", "--judge-clip", judge)
    assert code == 0, capsys.readouterr().err
    ocr = json.loads((out / "report.json").read_text())["sections"]["ocr"]
    obj = ocr["object"]
    assert obj["judge"]["clip"] == judge and obj["judge"]["words"] == 2 and obj["judge"]["chance_percent"] == 50
    assert [r["space"] for r in obj["rows"]] == ["clip", "learn", "forget", "negative"]
    verdicts = read_jsonl(out / "ocr" / "judge" / "judgements.jsonl")
    assert len(verdicts) == obj["judged"] == 2 * 4 and {v["word"] for v in verdicts} == {"apple", "house"}
    scores = {r["id"]: r for r in read_jsonl(out / "ocr" / "score" / "scores.jsonl")}
    for v in verdicts:  # "no text" is the OCR's verdict on the same image
        assert v["no_text"] == (not scores[v["id"]]["any_text"]["0.0"])
    for row in obj["rows"]:
        mine = [v for v in verdicts if v["space"] == row["space"]]
        bare = [v for v in mine if v["no_text"]]
        assert (row["kept"]["k"], row["kept"]["n"]) == (sum(v["kept"] for v in mine), 2)
        assert row["kept_no_text"]["n"] in (len(bare), None) and (row["kept_no_text"]["k"] or 0) == \
            sum(v["kept"] for v in bare)
    assert 0 < sum(v["no_text"] for v in verdicts) < len(verdicts)  # both kinds of image are there
    # one verdict recomputed by hand with the judge CLIP: its nearest word prompt
    clip = load_clip(judge, device="cpu")
    v = verdicts[0]
    x = to_input(Image.open(v["path"]).convert("RGB"), clip.input_size)[None]
    sims = clip.encode_image(x) @ clip.encode_text(["a photo of a apple", "a photo of a house"]).T
    assert v["top1"] == ["apple", "house"][int(sims.argmax())]
    md = (out / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| measure | words | clip"))
    assert header == "| measure | words | clip | learn | forget | negative |"
    assert "| object kept (judge) | real |" in md and "| object kept, no text | real |" in md
    assert "a proxy" in md and "OCR found no text at confidence > 0" in md
    assert "Object kept, judged by" in capsys.readouterr().out


@pytest.mark.usefixtures("half_text_ocr", "projections")
def test_the_guide_as_judge_is_refused_and_none_runs_without_the_check(tiny_model_flags, tiny_clip_id, tmp_path,
                                                                       capsys):
    code, out = _run(tiny_model_flags, tmp_path, "--judge-clip", tiny_clip_id)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--judge-clip: must be another CLIP" in err
    assert not out.exists()  # refused before anything is written
    code, out = _run(tiny_model_flags, tmp_path, "--judge-clip", "none")
    assert code == 0, capsys.readouterr().err
    assert "object" not in json.loads((out / "report.json").read_text())["sections"]["ocr"]
    assert "object kept" not in (out / "report.md").read_text()


@pytest.mark.usefixtures("half_text_ocr", "projections")
def test_the_default_judge_missing_offline_is_one_line_before_any_image(tiny_model_flags, tmp_path, monkeypatch,
                                                                         capsys):
    from vqclip import preflight

    monkeypatch.setattr(preflight, "probe_network", lambda *a, **k: False)
    code, out = _run(tiny_model_flags, tmp_path, "--methods", "negative")  # the tiny guide is here, the judge not
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("vqclip reproduce: error: --judge-clip: the judge CLIP's weights are not on this machine")
    assert "got 'ViT-B-16:laion2b_s34b_b88k'" in err and "huggingface.co/laion/CLIP-ViT-B-16-laion2B-s34B-b88K" in err
    assert "--judge-clip none" in err
    assert not (out / "ocr" / "batch").exists()
    # without --methods the paper's table alone needs no judge: the same offline run goes through without one
    code, out = _run(tiny_model_flags, tmp_path)
    assert code == 0, capsys.readouterr().err
    assert "object" not in json.loads((out / "report.json").read_text())["sections"]["ocr"]
