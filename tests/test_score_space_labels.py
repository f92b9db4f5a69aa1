"""`vqclip score` on `vqclip generate` run folders: run.json holds the whole space description; the columns and the
chart legend are labelled with the space name, and a short suffix only where two spaces share a name
(issue 15, new-user item)."""

from __future__ import annotations

import json

from PIL import Image

from test_score_ocr import CountingReader


def _run(folder, space: dict, shade: int):
    folder.mkdir(parents=True)
    Image.new("RGB", (32, 32), (shade, shade, shade)).save(folder / "image.png")
    (folder / "run.json").write_text(json.dumps({"prompt": "apple", "space": space, "seed": 0, "image": "image.png",
                                                 "status": "finished"}))


def _forget(path: str, dim: int = 64) -> dict:
    return {"space": "forget", "dim": dim, "embed_dim": 512, "clip_model": "ViT-B-32/openai", "path": path,
            "sha256": path[-8:] * 8}


def test_space_columns_are_named_not_dumped(tmp_path, monkeypatch):
    from vqclip.cli import main

    _run(tmp_path / "runs" / "a-clip", {"space": "clip", "dim": None, "embed_dim": None}, 10)
    _run(tmp_path / "runs" / "a-learn", {"space": "learn", "dim": 64, "embed_dim": 512,
                                         "clip_model": "ViT-B-32/openai", "path": "/c/learn.safetensors"}, 250)
    _run(tmp_path / "runs" / "a-forget", _forget("/cache/forget.safetensors"), 10)
    monkeypatch.setattr("vqclip.evaluate.ocr.EasyOcrReader", lambda device="auto": CountingReader())
    out = tmp_path / "report"
    runs = [str(p) for p in sorted((tmp_path / "runs").iterdir())]
    assert main(["score", *runs, "--out", str(out), "-q", "--no-chart"]) == 0
    table = (out / "table.md").read_text()
    assert "{" not in table and "'dim'" not in table
    summary = json.loads((out / "summary.json").read_text())
    spaces = {g["key"]["space"] for g in summary["groups"]}
    assert spaces == {"clip", "learn", "forget"}
    record = json.loads((out / "scores.jsonl").read_text().splitlines()[0])
    assert isinstance(record["space"], str) and record["space_detail"]["space"] == record["space"]


def test_two_spaces_that_differ_only_in_projection_get_a_short_suffix():
    from vqclip.evaluate.scoring import label_spaces

    infos = [{"space": _forget("/cache/forget.safetensors")}, {"space": _forget("/mine/forget_d128.pt", 128)},
             {"space": _forget("/cache/forget.safetensors")}, {"space": "clip"}, {"space": None},
             {"space": {"space": "learn", "dim": 64}}]
    label_spaces(infos)
    labels = [i["space"] for i in infos]
    assert labels[3:] == ["clip", None, "learn"]
    assert labels[0] == labels[2] != labels[1]
    assert labels[0].startswith("forget") and labels[1].startswith("forget") and len(labels[1]) <= 24
    assert "forget_d128" in labels[1] and "{" not in labels[1]
    same_stem = [{"space": _forget("/a/forget.pt")}, {"space": _forget("/b/forget.pt")}]
    label_spaces(same_stem)
    assert same_stem[0]["space"] != same_stem[1]["space"]  # told apart by their content hash instead
