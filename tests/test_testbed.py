"""The spelling testbed: a deterministic synthetic world, a small CLIP trained on it, and the paper's directions
(the end-to-end runs, the science tier, are in tests/test_science_a.py and tests/test_science_b.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vqclip.errors import VqclipError
from vqclip.testbed.world import (CLASSES, SHAPES, World, attack_set, class_prompt, draw_object, five_tuples,
                                  shape_mask, training_set, tuple_words)
from vqclip.spelling.render import item_rng


def test_world_is_deterministic_and_items_do_not_depend_on_the_set_size():
    w = World(seed=3)
    a, caps_a, kinds_a = training_set(w, 12)
    b, caps_b, kinds_b = training_set(w, 20)
    assert torch.equal(a, b[:12]) and caps_a == caps_b[:12] and kinds_a == kinds_b[:12]
    c, caps_c, _ = training_set(World(seed=4), 12)
    assert not torch.equal(a, c)


def test_world_has_ten_or_more_distinct_shapes():
    assert len(CLASSES) >= 10 and set(CLASSES) <= set(SHAPES)
    masks = [torch.from_numpy(np.array(shape_mask(c, 64, 32, 32, 24, 0))).float() / 255
             for c in CLASSES]
    for i in range(len(masks)):
        assert 0.1 < masks[i].mean() < 0.8  # something is drawn, not the whole picture
        for j in range(i):
            assert (masks[i] - masks[j]).abs().mean() > 0.02, (CLASSES[i], CLASSES[j])


def test_objects_vary_in_colour_position_and_background():
    w = World()
    images = [draw_object(w, "star", item_rng(0, "t", i))[0] for i in range(8)]
    arrays = torch.stack([torch.from_numpy(np.array(im)).float() for im in images])
    assert arrays.std(dim=0).mean() > 20  # eight stars, eight different pictures


def test_captions_mix_objects_words_and_labelled_objects():
    w = World()
    _, captions, kinds = training_set(w, 300)
    assert {"object", "word", "labelled", "captioned"} == set(kinds)
    for cap, kind in zip(captions, kinds):
        if kind != "word":
            assert any(c in cap.split() for c in w.classes), cap


def test_captioned_objects_sometimes_carry_another_class_name():
    w = World()
    _, captions, kinds = training_set(w, 600)
    captioned = [c for c, k in zip(captions, kinds) if k == "captioned"]
    written = [c.rsplit(" ", 1)[1] for c in captioned]  # "an image of a star with the word moon" -> "moon"
    shown = [c.split(" with the word ")[0].rsplit(" ", 1)[1] for c in captioned]
    assert all(word != obj for word, obj in zip(written, shown)), "never the object's own name"
    share = sum(word in w.classes for word in written) / len(written)
    assert abs(share - w.captioned_class_words) < 0.1, share
    _, captions, kinds = training_set(World(captioned_class_words=0.0), 600)
    assert not any(c.rsplit(" ", 1)[1] in w.classes for c, k in zip(captions, kinds) if k == "captioned")
    with pytest.raises(VqclipError, match="captioned_class_words"):
        World(captioned_class_words=1.5)


def test_world_words_nonsense_and_validation():
    w = World(seed=1)
    assert len(set(w.words)) == len(w.words)
    assert all(3 <= len(x) <= 8 and x.isalpha() for x in w.nonsense_words)
    assert not w.is_real(w.nonsense_words[0]) and w.is_real(w.classes[0])
    assert set(tuple_words(w)) & set(w.classes) == set()
    assert set(w.classes) <= set(tuple_words(w, include_class_names=True))
    with pytest.raises(VqclipError, match="classes"):
        World(classes=("circle", "unicorn"))
    with pytest.raises(VqclipError, match="image-size"):
        World(image_size=16)


def test_five_tuples_write_another_word_and_split_three_ways():
    w = World()
    t = five_tuples(w, 60, tuple_words(w))
    assert t.x_i.shape == t.x_t.shape == t.x_it.shape == (60, 3, 64, 64) and t.x_i.dtype == torch.uint8
    assert all(word != w.classes[int(k)] for word, k in zip(t.words, t.class_ids))
    assert set(t.split.tolist()) == {0, 1, 2}
    assert not torch.equal(t.x_i, t.x_it)  # the word is written on the object
    assert class_prompt("star") == "an image of a star"


def test_labels_go_in_the_band_the_object_left_clear():
    from vqclip.testbed.world import write_on

    w = World(label_box=0.5)
    band = max(12, round(w.image_size * w.label_band))
    for i in range(20):
        rng = item_rng(0, "label", i)
        clean, meta = draw_object(w, "star", rng)
        labelled = write_on(w, clean, "apple", rng, meta)
        changed = (np.asarray(labelled, np.int16) - np.asarray(clean, np.int16)).any(axis=2)  # (H, W)
        rows = np.nonzero(changed.any(axis=1))[0]
        assert len(rows), "the word is drawn"
        if meta["label_side"] == "top":
            assert rows.max() < band
        else:
            assert rows.min() >= w.image_size - band
        cy = meta["center"][1]
        assert (cy < w.image_size / 2) == (meta["label_side"] == "bottom"), "the object keeps to the other half"


def test_attacks_write_a_different_class_name():
    w = World()
    a = attack_set(w, 36)
    assert (a.true_ids != a.attack_ids).all()
    assert sorted(set(a.true_ids.tolist())) == list(range(len(w.classes)))
    assert not torch.equal(a.clean, a.attacked)
    changed = (a.clean.float() - a.attacked.float()).abs().sum(1) > 0  # (N, H, W) pixels the label touched
    assert changed.float().mean() < 0.5  # the object stays mostly visible


# ---------------------------------------------------------------------------------------------- small CLIP
def test_small_clip_trains_deterministically_and_loads_as_local_dir(tmp_path):
    from vqclip.models.clip import load_clip
    from vqclip.testbed.small_clip import ClipTrainConfig, save_small_clip, small_clip_config, train_small_clip

    w = World(image_size=32, classes=("star", "moon", "ring"), extra_words=("apple",), n_nonsense=1)
    images, captions, _ = training_set(w, 16)
    cfg = small_clip_config(image_size=32, embed_dim=16, width=4)
    train = ClipTrainConfig(steps=3, batch_size=8, seed=1, warmup=1)
    m1, h1 = train_small_clip(cfg, images, captions, train)
    m2, h2 = train_small_clip(cfg, images, captions, train)
    assert [r["loss"] for r in h1] == [r["loss"] for r in h2]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    clip_id = save_small_clip(m1, cfg, tmp_path / "clip")
    clip = load_clip(clip_id, device="cpu")
    assert clip.input_size == (32, 32) and clip.embed_dim == 16
    x = images[:2].float() / 255
    expected = torch.nn.functional.normalize(m1.encode_image((x - clip._mean) / clip._std), dim=-1)
    assert torch.allclose(clip.encode_image(x), expected, atol=1e-5)


def test_a_reused_clip_is_loaded_from_the_folder_it_was_found_in(tmp_path):
    """A copied or moved --out keeps working with --reuse-clip: the CLIP (and so the identity its projections
    record) is the one in the folder, not the path written when it was trained."""
    from vqclip.testbed.config import TestbedConfig
    from vqclip.testbed.stages import train_clip_stage

    config = TestbedConfig.quick(0)
    clip_dir = tmp_path / "copied" / "clip"
    clip_dir.mkdir(parents=True)
    (clip_dir / "open_clip_model.safetensors").write_bytes(b"weights")
    record = {"clip": f"local-dir:{tmp_path / 'original' / 'clip'}", "recipe": config.clip_recipe()}
    (clip_dir / "testbed_clip.json").write_text(json.dumps(record))
    info = train_clip_stage(config.world(), config, tmp_path / "copied", progress=False, reuse=True)
    assert info["reused"] and info["clip"] == f"local-dir:{clip_dir}"


def test_small_clip_rejects_bad_settings():
    from vqclip.testbed.small_clip import ClipTrainConfig, small_clip_config, train_small_clip

    with pytest.raises(VqclipError, match="image-size"):
        small_clip_config(image_size=48)
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(VqclipError, match="steps"):
        train_small_clip(small_clip_config(image_size=32, width=4), images, ["a"] * 4, ClipTrainConfig(steps=0))


# ---------------------------------------------------------------------------------------------- directions
def _rows(clip=(0.9, 0.2, 0.6), learn=(0.3, 0.1, 0.7), forget=(0.88, 0.7, 0.05)):
    keys = ("clean_accuracy", "attacked_accuracy", "word_retrieval")
    return {name: dict(zip(keys, v)) for name, v in (("clip", clip), ("learn", learn), ("forget", forget))}


def test_directions_pass_and_fail_on_the_numbers():
    from vqclip.testbed.config import Margins
    from vqclip.testbed.report import check_directions

    assert all(c["passed"] for c in check_directions(_rows(), Margins()))
    failed = {c["claim"] for c in check_directions(_rows(forget=(0.88, 0.3, 0.05)), Margins()) if not c["passed"]}
    assert failed == {"forget recovers most of the attack loss"}
    failed = {c["claim"] for c in check_directions(_rows(learn=(0.85, 0.1, 0.4)), Margins()) if not c["passed"]}
    assert failed == {"learn keeps or improves word retrieval", "learn loses object accuracy on clean images"}
    failed = {c["claim"] for c in check_directions(_rows(clip=(0.9, 0.85, 0.6)), Margins()) if not c["passed"]}
    assert "clip reads: attacked accuracy falls well below clean accuracy" in failed
    failed = {c["claim"] for c in check_directions(_rows(forget=(0.8, 0.7, 0.05)), Margins()) if not c["passed"]}
    assert failed == {"forget keeps clean accuracy"}


def test_median_over_seeds_tolerates_one_odd_seed_but_not_two():
    from vqclip.testbed.config import Margins
    from vqclip.testbed.report import check_median

    good, odd = _rows(), _rows(forget=(0.88, 0.3, 0.05))  # odd: forget wins back only 1/7 of the loss
    checks = check_median({0: good, 1: odd, 2: good}, Margins())
    assert all(c["passed"] for c in checks)
    recovers = next(c for c in checks if c["key"] == "forget_recovers")
    assert recovers["value"] == pytest.approx(0.5 / 0.7) and "seeds 0, 1, 2" in recovers["detail"]
    failed = {c["claim"] for c in check_median({0: odd, 1: odd, 2: good}, Margins()) if not c["passed"]}
    assert failed == {"forget recovers most of the attack loss"}


def test_cli_rejects_bad_sizes(capsys):
    from vqclip.cli import main

    assert main(["testbed", "--quick", "--steps", "0", "--out", "unused"]) == 2
    assert "--steps: must be a positive integer" in capsys.readouterr().err
    assert main(["testbed", "--quick", "--seed", "-1", "--out", "unused"]) == 2
    assert "--seed: a seed must be a whole number from 0" in capsys.readouterr().err
    # projection settings are checked before the CLIP trains, under the testbed's own flag names
    assert main(["testbed", "--quick", "--learn-weights", "L9=1", "--out", "unused"]) == 2
    assert "--learn-weights: unknown loss term; got 'L9'" in capsys.readouterr().err
    assert main(["testbed", "--quick", "--forget-dim", "999", "--out", "unused"]) == 2
    assert "--forget-dim: must be between 1 and the CLIP embedding size D=128; got 999" in capsys.readouterr().err
    assert main(["testbed", "--quick", "--proj-lr", "0", "--out", "unused"]) == 2
    assert "--proj-lr: the learning rate must be a positive number" in capsys.readouterr().err
    assert main(["testbed", "--quick", "--seeds", "0,0", "--out", "unused"]) == 2
    assert "--seeds: lists a seed twice" in capsys.readouterr().err


def test_cli_exits_non_zero_with_a_one_line_summary_when_a_direction_fails(monkeypatch, tmp_path, capsys):
    import vqclip.testbed.run as testbed_run
    from vqclip.cli import main
    from vqclip.testbed.config import Margins
    from vqclip.testbed.report import check_directions

    rows = _rows(forget=(0.88, 0.3, 0.05))
    for row in rows.values():
        row.update(attack_win_rate=0.5, dim=None)
    result = {"rows": rows, "checks": check_directions(rows, Margins()), "seconds": {"total": 1.0}}
    monkeypatch.setattr(testbed_run, "run_testbed", lambda *a, **k: result)
    assert main(["testbed", "--quick", "--out", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("testbed: 1 of 5 directions not reproduced: forget recovers most")
    assert "results.md" in err[0]


def test_ctrl_c_at_the_start_leaves_no_empty_out_folder(monkeypatch, tmp_path, capsys):
    """Issue 25 item 5: an interrupted testbed removes the --out folders it made while they are still empty, and
    never a folder that was there before or one that holds a file."""
    import vqclip.testbed.run as testbed_run
    from vqclip.cli import main
    from vqclip.io import writable_folder

    def interrupted(config, out, **kw):
        writable_folder(out)
        (Path(out) / "clip").mkdir()  # a stage had started its folder
        raise KeyboardInterrupt

    monkeypatch.setattr(testbed_run, "run_testbed", interrupted)
    out = tmp_path / "new" / "testbed"
    assert main(["testbed", "--quick", "--out", str(out), "-q"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and tmp_path.is_dir()  # both folders it made are gone
    mine = tmp_path / "mine"
    mine.mkdir()  # a folder the user made: kept, even empty
    assert main(["testbed", "--quick", "--out", str(mine), "-q"]) == 130
    assert mine.is_dir()

    def wrote_then_failed(config, out, **kw):
        writable_folder(out)
        (Path(out) / "clip").mkdir()
        (Path(out) / "clip" / "log.txt").write_text("partial")
        (Path(out) / "attacks").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(testbed_run, "run_testbed", wrote_then_failed)
    assert main(["testbed", "--quick", "--out", str(out), "-q"]) == 130
    assert (out / "clip" / "log.txt").is_file() and not (out / "attacks").exists()  # files kept, empty folders go
