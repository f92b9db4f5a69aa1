"""`vqclip train` and `vqclip eval retrieval` end to end on a generated image folder with a tiny CLIP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import class_photos
from vqclip.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def images(tmp_path) -> Path:
    root = class_photos(tmp_path / "photos")
    (root / "grape" / "corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    return root


def _data_args(images, clip_id):
    return ["--images", str(images), "--clip", clip_id, "--words", "12", "--workers", "0", "-q",
            "--val-fraction", "0.2", "--test-fraction", "0.2", "--class-renders", "1"]


def test_train_then_eval_then_generator_lookup(tmp_path, images, tiny_clip_id, capsys):
    from vqclip.models.clip import load_clip
    from vqclip.projections import projection_path, resolve_space

    args = _data_args(images, tiny_clip_id)
    assert main(["train", "--space", "forget", *args, "--epochs", "2", "--batch-size", "4",
                 "--json", str(tmp_path / "train.json")]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "x_it->y_t" in out and "wrote" in out
    # 10 training tuples, batch 4, 2 epochs: 6 steps, far too few at lr 1e-4; said even with -q, in one line
    warning = [line for line in captured.err.splitlines() if "optimisation steps" in line]
    assert len(warning) == 1 and "only 6 optimisation steps" in warning[0] and "too few steps" in out
    assert json.loads((tmp_path / "train.json").read_text())["warnings"] == [warning[0].split(": ", 1)[1]]
    clip = load_clip(tiny_clip_id, device="cpu")
    path = projection_path("forget", clip.identity)
    assert path.is_file()
    space = resolve_space("forget", clip.identity, clip.embed_dim)  # what `vqclip generate --space forget` does
    assert space.W.shape == (16, 32)
    meta = space.metadata
    assert json.loads(meta["loss_weights"]) == {"L1": 1.0, "L2": 1.0, "L5": -1.0, "L6": 1.0}
    sizes = json.loads(meta["split_sizes"])
    assert sizes["train"] + sizes["val"] + sizes["test"] == 18  # the corrupt image was skipped
    recipe = json.loads(meta["data_recipe"])
    assert recipe["words"]["count"] == 12 and recipe["style"]["font_files"]
    assert json.loads(meta["training"])["epochs"] == 2
    assert "test" in json.loads(meta["metrics"])
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary["projection"] == str(path) and summary["dim"] == 16

    # a second training run reuses the feature cache and refuses to overwrite without --overwrite
    shards = sorted(Path(summary["features"]).glob("shard-*"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    assert main(["train", "--space", "forget", *args, "--epochs", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["train", "--space", "learn", *args, "--epochs", "1", "--batch-size", "4", "--dim", "4",
                 "--weights", "L1=-1,L3=1,L4=1,L5=1", "--mask-duplicates"]) == 0
    assert [p.stat().st_mtime_ns for p in shards] == stamps

    # evaluation: CLIP and both cached projections side by side, plus an explicit file
    assert main(["eval", "retrieval", *args, "--projection", str(path), "--json", str(tmp_path / "eval.json")]) == 0
    table = capsys.readouterr().out
    assert "vis.comp img" in table and "forget" in table and "learn" in table
    result = json.loads((tmp_path / "eval.json").read_text())
    assert set(result["metrics"]) == {"clip", "learn", "forget", "forget:forget"}
    assert result["metrics"]["forget"] == result["metrics"]["forget:forget"]
    assert result["metrics"]["clip"]["x_t->y_t"]["n"] == result["tuples"]
    assert [p.stat().st_mtime_ns for p in shards] == stamps

    # training straight from a feature folder, without naming the CLIP
    target = tmp_path / "from_features.safetensors"
    assert main(["train", "--space", "learn", "--features", summary["features"], "--epochs", "1",
                 "--batch-size", "4", "--out-file", str(target), "-q"]) == 0
    assert target.is_file()


def test_bad_inputs_fail_cleanly(tmp_path, images, tiny_clip_id, capsys):
    from vqclip.models.tiny import make_clip_dir

    args = _data_args(images, tiny_clip_id)
    cache = tmp_path / "cache"

    def fails(argv, fragment):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert fragment in err, err
        assert "Traceback" not in err

    fails(["train", "--space", "learn", *args, "--weights", "L9=1"], "unknown loss term")
    fails(["train", "--space", "learn", *args, "--dim", "40"], "--dim")
    fails(["train", "--space", "learn", *args, "--dim", "0"], "--dim")
    assert not (cache / "features").exists()  # refused before any extraction
    (tmp_path / "empty").mkdir()
    fails(["train", "--space", "forget", *_data_args(tmp_path / "empty", tiny_clip_id)], "--images")
    (tmp_path / "broken.ttf").write_bytes(b"nope")
    fails(["train", "--space", "forget", *args, "--font", str(tmp_path / "broken.ttf")], "--font")
    fails(["train", "--space", "forget", "--clip", tiny_clip_id], "--images")
    fails(["train", "--space", "forget", *args, "--prompt-template", "a photo of {thing}"], "--prompt-template")

    # features of one CLIP, used with another
    assert main(["train", "--space", "forget", *args, "--extract-only"]) == 0
    folder = capsys.readouterr().out.strip().splitlines()[-1]
    other = make_clip_dir(tmp_path / "other_clip", seed=1)
    fails(["train", "--space", "forget", "--features", folder, "--clip", other], "written by CLIP")
    fails(["eval", "retrieval", "--features", folder, "--spaces", "learn"], "no learn projection")
    # a projection trained for another CLIP is refused by the evaluation
    from vqclip.projections import save_projection

    save_projection(tmp_path / "alien.safetensors", torch.eye(32)[:8], "learn", "ViT-B-32/openai")
    fails(["eval", "retrieval", "--features", folder, "--projection", str(tmp_path / "alien.safetensors")],
          "trained for CLIP")
