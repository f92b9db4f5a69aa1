"""Typographic-attack benchmark: dataset formats, synthetic attacks, zero-shot protocols with planted embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vqclip.errors import VqclipError
from vqclip.evaluate.synthetic_attacks import build_synthetic_attacks
from vqclip.evaluate.typographic import (evaluate_typographic, open_typographic_dataset,
                                         parse_attack_filename, typographic_table)
from vqclip.spaces import Space

OBJECTS = ["apple", "cup", "dog"]
WORDS = ["apple", "cup", "dog", "ipod", "good"]  # written words; the first three are also objects
K = len(WORDS)


def coded_image(obj: str, attack: str | None, size=40) -> Image.Image:
    """The object is coded in the red channel, the written word in the green channel (0 = no word)."""
    g = 0 if attack is None else 40 * (WORDS.index(attack) + 1)
    return Image.new("RGB", (size, size), (40 * (OBJECTS.index(obj) + 1), g, 0))


class PlantedEncoder:
    """A fake CLIP whose answer is known: visual dims [0, K) for the object, written dims [K, 2K) for the word.

    Images: 1 on the object's visual dim, 2 on the written word's dim (the word dominates, as in CLIP).
    Prompts 'a photo of a X.': 1 on X's visual dim and 1 on X's written dim.
    """

    input_size = (8, 8)
    device = torch.device("cpu")

    def encode_image(self, x):
        r = (x[:, 0].mean(dim=(1, 2)) * 255 / 40).round().long() - 1  # (B,)
        g = (x[:, 1].mean(dim=(1, 2)) * 255 / 40).round().long() - 1  # (B,), -1 = no word
        e = torch.zeros(x.shape[0], 2 * K)
        for b in range(x.shape[0]):
            e[b, WORDS.index(OBJECTS[r[b]])] = 1.0
            if g[b] >= 0:
                e[b, K + g[b]] = 2.0
        return torch.nn.functional.normalize(e, dim=-1)

    def encode_text(self, texts):
        e = torch.zeros(len(texts), 2 * K)
        for i, t in enumerate(texts):
            w = t.removeprefix("a photo of a ").removesuffix(".")
            e[i, WORDS.index(w)] = 1.0
            e[i, K + WORDS.index(w)] = 1.0
        return torch.nn.functional.normalize(e, dim=-1)


def planted_spaces():
    eye = torch.eye(2 * K)
    return {"clip": Space("clip"), "learn": Space("learn", eye[K:]), "forget": Space("forget", eye[:K])}


def make_annotation_set(root, extra_entries=None, name="annotation.json"):
    entries = {}
    plan = [("apple", None), ("apple", "ipod"), ("cup", None), ("cup", "dog"), ("dog", "good"), ("dog", "apple")]
    root.mkdir(parents=True, exist_ok=True)
    for i, (obj, attack) in enumerate(plan):
        coded_image(obj, attack).save(root / f"IMG_{i}.png")
        entries[f"IMG_{i}.png"] = {"true object": obj, "typographic attack label": attack or ""}
    entries.update(extra_entries or {})
    (root / name).write_text(json.dumps(entries))
    return plan


def test_annotation_format_lists_bad_entries_and_unknown_files(tmp_path):
    make_annotation_set(tmp_path / "ds", {"gone.png": {"true object": "cup", "typographic attack label": ""},
                                          "IMG_0b.png": {"true object": "cup"}}, name="annotations.json")
    coded_image("cup", None).save(tmp_path / "ds" / "IMG_0b.png")
    coded_image("cup", None).save(tmp_path / "ds" / "stray.png")
    ds = open_typographic_dataset(tmp_path / "ds")
    assert ds.format == "annotation" and len(ds.samples) == 6
    assert sum(s.attack is None for s in ds.samples) == 2
    reasons = {json.dumps(s) for s in ds.skipped}
    assert any("gone.png" in r and "missing" in r for r in reasons)
    assert any("IMG_0b.png" in r and "typographic attack label" in r for r in reasons)
    assert any("stray.png" in r and "not in the annotation" in r for r in reasons)


def test_planted_embeddings_give_the_known_accuracies(tmp_path):
    make_annotation_set(tmp_path / "ds")
    (tmp_path / "ds" / "IMG_5.png").write_bytes(b"")  # an unreadable photo is skipped and listed
    ds = open_typographic_dataset(tmp_path / "ds")
    report = evaluate_typographic(ds, PlantedEncoder(), planted_spaces(), progress=False)
    r = report["results"]
    # original space: the written word (weight 2) beats the object (weight 1) whenever it is a candidate
    assert r["clip"]["union"]["clean"]["rate"] == 1.0
    assert r["clip"]["union"]["attacked"] == {**r["clip"]["union"]["attacked"], "k": 0, "n": 3}
    assert r["clip"]["union"]["attack_wins"]["k"] == 3
    # objects only: 'ipod' and 'good' are not candidates, so those photos are classified by their object
    assert r["clip"]["objects"]["attacked"]["k"] == 2  # apple+ipod, dog+good right; cup+dog wrong
    assert r["clip"]["objects"]["attack_wins"] == {**r["clip"]["objects"]["attack_wins"], "k": 1, "n": 1}
    # forget keeps only the visual dims: always the object
    assert r["forget"]["union"]["attacked"]["rate"] == 1.0 and r["forget"]["union"]["attack_wins"]["k"] == 0
    # learn keeps only the written dims: attacked photos are read as their word
    assert r["learn"]["union"]["attack_wins"]["rate"] == 1.0
    assert report["dataset"]["evaluated"] == 5
    assert any("IMG_5.png" in s["path"] and "unreadable" in s["reason"] for s in report["dataset"]["skipped"])
    table = typographic_table(report)
    assert "| clip | learn | forget |" in table and "49.4 / 77.2" in table


def test_filename_convention(tmp_path):
    root = tmp_path / "rta"
    root.mkdir()
    coded_image("apple", "ipod").save(root / "label=apple_text=ipod.png")
    coded_image("cup", "dog").save(root / "label=cup_text=dog.jpg")
    coded_image("dog", "good").save(root / "label=dog_text=good.png")
    coded_image("dog", None).save(root / "random.png")
    assert parse_attack_filename("label=teddy_bear_text=pizza.jpg") == ("teddy bear", "pizza")
    ds = open_typographic_dataset(root)
    assert ds.format == "filename" and {(s.label, s.attack) for s in ds.samples} == {
        ("apple", "ipod"), ("cup", "dog"), ("dog", "good")}
    assert [s["path"].endswith("random.png") for s in ds.skipped] == [True]
    report = evaluate_typographic(ds, PlantedEncoder(), planted_spaces(), progress=False)
    assert report["results"]["clip"]["union"]["attack_wins"]["k"] == 3
    assert report["results"]["clip"]["union"]["clean"]["n"] == 0


def test_synthetic_attacks_write_a_wrong_word_reproducibly(tmp_path):
    from vqclip.spelling.images import image_folder
    from vqclip.spelling.render import TextStyle

    src = tmp_path / "src"
    for obj in OBJECTS:
        (src / obj).mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (48, 64), (30 * j, 90, 200)).save(src / obj / f"{j}.png")
    (src / "cup" / "broken.png").write_bytes(b"oops")
    style = TextStyle(size_range=(0.3, 0.3), seed=0)
    ds = build_synthetic_attacks(image_folder(src), tmp_path / "syn", seed=3, size=32, style=style, progress=False)
    assert ds.format == "synthetic" and ds.recipe["seed"] == 3 and ds.recipe["style"]["font_files"]
    attacked = [s for s in ds.samples if s.attack]
    assert len(attacked) == 6 and all(s.attack != s.label and s.attack in OBJECTS for s in attacked)
    assert [s["path"] for s in ds.skipped if "unreadable" in s["reason"]] == [str(src / "cup" / "broken.png")]
    im = Image.open(attacked[0].path)
    assert im.size == (32, 32)
    clean = Image.open(attacked[0].path.with_name(attacked[0].path.name.replace("_attack", "_clean")))
    assert (np.asarray(im) != np.asarray(clean)).any()  # the word is really drawn
    # same recipe -> same words and pixels; rebuilding elsewhere matches, another seed differs
    again = build_synthetic_attacks(image_folder(src), tmp_path / "syn2", seed=3, size=32, style=style,
                                    progress=False)
    assert [(s.label, s.attack) for s in again.samples] == [(s.label, s.attack) for s in ds.samples]
    assert Image.open(again.samples[1].path).tobytes() == Image.open(ds.samples[1].path).tobytes()
    other = build_synthetic_attacks(image_folder(src), tmp_path / "syn3", seed=4, size=32, style=style,
                                    attack_words=["ipod", "good"], progress=False)
    assert {s.attack for s in other.samples if s.attack} <= {"ipod", "good"}
    # the saved folder is the paper's format and reads back as such
    assert open_typographic_dataset(tmp_path / "syn").format == "synthetic"


def test_empty_and_invalid_datasets_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VqclipError, match="not a typographic-attack folder"):
        open_typographic_dataset(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "annotation.json").write_text(json.dumps({"a.png": {"true object": "cup"}}))
    with pytest.raises(VqclipError, match="no usable images"):
        open_typographic_dataset(tmp_path / "bad")
    (tmp_path / "bad" / "annotation.json").write_text("{not json")
    with pytest.raises(VqclipError, match="is not valid JSON"):
        open_typographic_dataset(tmp_path / "bad")
    make_annotation_set(tmp_path / "ok")
    with pytest.raises(VqclipError, match="--template"):
        evaluate_typographic(open_typographic_dataset(tmp_path / "ok"), PlantedEncoder(), planted_spaces(),
                             template="a photo of {name}", progress=False)


@pytest.mark.parametrize("content, match", [
    (["a.png", "b.png"], "item 0 is a str"),
    ([], "lists no images"),
    ({}, "lists no images"),
])
def test_annotation_file_format_problems_are_named(tmp_path, content, match):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "annotation.json").write_text(json.dumps(content))
    with pytest.raises(VqclipError, match=match):
        open_typographic_dataset(tmp_path)
