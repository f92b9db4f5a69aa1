"""`vqclip eval typographic` end to end with a tiny CLIP and tiny projections."""

from __future__ import annotations

import json

import torch
from PIL import Image

from vqclip.cli import main
from vqclip.projections import projection_path, save_projection


def orthonormal(d, D, seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, d, generator=g))
    return q.T.contiguous()  # (d, D)


def photo_set(ds):
    """Four small photos (two objects, two attack words) and their annotation.json, in the paper's format."""
    ds.mkdir()
    entries = {}
    for i, (obj, attack) in enumerate([("apple", ""), ("apple", "ipod"), ("cup", "good"), ("cup", "")]):
        Image.new("RGB", (40, 30), (60 * i, 100, 30)).save(ds / f"IMG_{i}.JPG")
        entries[f"IMG_{i}.JPG"] = {"true object": obj, "typographic attack label": attack}
    (ds / "annotation.json").write_text(json.dumps(entries))
    return ds


def test_cli_compares_spaces_on_an_annotation_set_and_on_synthetic_attacks(tmp_path, tiny_clip, tiny_clip_id,
                                                                          capsys):
    ds = photo_set(tmp_path / "photos")
    learn = save_projection(tmp_path / "learn.safetensors", orthonormal(8, 32, 0), "learn", tiny_clip.identity)
    save_projection(projection_path("forget", tiny_clip.identity), orthonormal(16, 32, 1), "forget", tiny_clip.identity)
    out = tmp_path / "report"
    common = ["--clip", tiny_clip_id, "--device", "cpu", "--no-progress"]
    assert main(["eval", "typographic", "--dataset", str(ds), "--projection", str(learn), "--out", str(out),
                 *common]) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["results"]) == ["clip", "forget", "learn"]  # the cached forget projection is found too
    assert report["classes"] == {"objects": ["apple", "cup"], "union": ["apple", "cup", "good", "ipod"]}
    preds = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 4
    for space, res in report["results"].items():  # the rates agree with the per-image predictions
        for proto in ("objects", "union"):
            attacked = [p for p in preds if p["attack"]]
            assert res[proto]["attacked"]["n"] == 2 and res[proto]["clean"]["n"] == 2
            assert res[proto]["attacked"]["k"] == sum(p[f"{space}/{proto}"] == p["true object"] for p in attacked)
            assert res[proto]["attack_wins"]["k"] == sum(p[f"{space}/{proto}"] == p["attack"] for p in attacked)
        assert {p[f"{space}/objects"] for p in preds} <= {"apple", "cup"}
    table = (out / "table.md").read_text()
    assert "| clip | forget | learn |" in table

    # synthetic attacks from a class folder; a second run reuses the set built with the same recipe
    src = tmp_path / "src"
    for obj in ("apple", "cup", "dog"):
        (src / obj).mkdir(parents=True)
        Image.new("RGB", (50, 40), (20, 200, 90)).save(src / obj / "a.png")
    syn = tmp_path / "syn"
    args = ["eval", "typographic", "--synthetic", str(src), "--synthetic-out", str(syn), "--size", "32",
            "--spaces", "clip", "--out", str(tmp_path / "r2"), *common]
    assert main(args) == 0
    stamp = (syn / "images" / "00000_attack.png").stat().st_mtime_ns
    rep2 = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert rep2["dataset"]["format"] == "synthetic" and rep2["dataset"]["recipe"]["seed"] == 0
    assert rep2["dataset"]["clean"] == 3 and rep2["dataset"]["attacked"] == 3 and list(rep2["results"]) == ["clip"]
    assert main(args) == 0
    assert (syn / "images" / "00000_attack.png").stat().st_mtime_ns == stamp
    # an explicit space without a projection is a clear error naming the training command
    capsys.readouterr()
    assert main(["eval", "typographic", "--dataset", str(ds), "--spaces", "clip,learn", *common]) == 2
    assert f"vqclip train --space learn --clip {tiny_clip_id} " in capsys.readouterr().err  # runnable as printed


def test_a_missing_synthetic_source_names_the_synthetic_flag(tmp_path, capsys):
    assert main(["eval", "typographic", "--synthetic", str(tmp_path / "nope"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--synthetic:" in err and "--images" not in err
