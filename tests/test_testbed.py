"""The spelling testbed: a deterministic synthetic world, a small CLIP trained on it, and the paper's directions."""

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


# ---------------------------------------------------------------------------------------------- end to end
# The science checks, in two groups of about equal cost (one thread each, measured): under xdist (`-n 2 --dist
# loadgroup`, README) each group runs on one worker from the start, the short tests filling the gaps. The costly
# stages (a CLIP per seed, about 4.5 min; the world models, about 7; the generation, about 8) are computed once by
# conftest.once, by whichever worker needs them first. Group A: CLIP seeds 0 and 1, then the generation on seed 0;
# group B: the world models, CLIP seed 2, the median over the three seeds, the CLI's reuse of seed 0.
QUICK_SEEDS = (0, 1, 2)
GROUP_A, GROUP_B = pytest.mark.xdist_group("testbed-a"), pytest.mark.xdist_group("testbed-b")


def _quick_seed(tmp_path_factory, seed: int) -> tuple[Path, dict]:
    """(the shared testbed folder, run_testbed's results) of the reduced testbed for one CLIP seed, in seed-N/."""
    from conftest import once, shared_folder
    from vqclip.testbed.config import TestbedConfig
    from vqclip.testbed.run import run_testbed

    root = shared_folder(tmp_path_factory) / "testbed"

    def run() -> dict:
        run_testbed(TestbedConfig.quick(seed), root / f"seed-{seed}", progress=False)
        return json.loads((root / f"seed-{seed}" / "results.json").read_text())

    return root, once(tmp_path_factory, f"testbed-seed-{seed}", run)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The reduced testbed on three seeds: world, small CLIP, five-tuples, learn / forget and evaluations per seed,
    and the directions on the median over the seeds (docs/testbed.md says why the median)."""
    from vqclip.testbed.config import TestbedConfig
    from vqclip.testbed.run import summarise_seeds

    results = {}
    for seed in QUICK_SEEDS:
        root, results[seed] = _quick_seed(tmp_path_factory, seed)
    seconds = sum(r["seconds"]["total"] for r in results.values())
    return root, summarise_seeds(TestbedConfig.quick(), results, root, seconds)


@pytest.fixture(scope="module")
def world_models(tmp_path_factory) -> dict:
    """The world VQGAN and the judges with their default recipes, as `vqclip testbed --generate` trains them."""
    from conftest import once, shared_folder
    from vqclip.testbed.config import TestbedConfig
    from vqclip.testbed.generate import load_world_models, world_models_stage

    folder = shared_folder(tmp_path_factory) / "world"
    made = once(tmp_path_factory, "world-models",
                lambda: world_models_stage(TestbedConfig.quick(0).world(), folder, progress=False)["folder"])
    return load_world_models(made)


@pytest.mark.testbed
@GROUP_B
def test_world_models_are_good_enough_judges(world_models):
    """The text detector the generation's directions rest on, and the VQGAN that draws, on held-out pictures."""
    detector, vqgan = world_models["detector"]["heldout"], world_models["vqgan"]["heldout"]
    assert detector["clean"]["text_present"] >= 0.95 and detector["clean"]["text_false_positive_on_clutter"] <= 0.05
    assert detector["clean"]["object"] >= 0.9
    assert vqgan["psnr"] > 15 and vqgan["codebook_usage"] > 0.5


@pytest.mark.testbed
@pytest.mark.parametrize("seed", [pytest.param(0, marks=GROUP_A), pytest.param(1, marks=GROUP_A),
                                  pytest.param(2, marks=GROUP_B)])
def test_quick_testbed_writes_a_loadable_clip_projections_and_reports(tmp_path_factory, seed):
    from vqclip.models.clip import load_clip
    from vqclip.projections import load_projection

    root, result = _quick_seed(tmp_path_factory, seed)
    out = root / f"seed-{seed}"
    assert result == json.loads((out / "results.json").read_text()) and result["config"]["seed"] == seed
    clip = load_clip(f"local-dir:{out / 'clip'}", device="cpu")
    for space, dim in (("learn", 16), ("forget", 64)):  # the presets' d/D = 1/8 and 1/2 of D = 128
        projection = load_projection(out / f"{space}.safetensors", space, clip.embed_dim)
        projection.check_clip(clip.identity, clip.embed_dim)
        assert projection.dim == dim == result["rows"][space]["dim"]
    assert 0 <= result["attacked_object_probe"] <= 1
    report = (out / "results.md").read_text()
    for space in ("clip", "learn", "forget"):
        assert f"| {space} |" in report
    annotation = json.loads((out / "attacks" / "annotation.json").read_text())
    assert len(annotation) == 2 * result["config"]["n_attacks"]
    assert all((out / "attacks" / name).is_file() for name in annotation)


@pytest.mark.testbed
@GROUP_B
def test_quick_testbed_reproduces_the_papers_directions(quick_run):
    root, summary = quick_run
    failed = [f"{c['claim']}: {c['detail']}" for c in summary["checks"] if not c["passed"]]
    assert not failed, "\n".join(failed)
    assert summary["all_passed"] and len(summary["checks"]) == 5 and summary["seeds"] == list(QUICK_SEEDS)
    assert "median" in (root / "summary.md").read_text()


@pytest.mark.testbed
@GROUP_B
def test_median_checks_are_the_medians_of_the_seeds(quick_run):
    from vqclip.testbed.report import direction_values

    _, summary = quick_run
    per_seed = [direction_values(run["rows"]) for run in summary["per_seed"].values()]
    for check in summary["checks"]:
        assert check["value"] == sorted(v[check["key"]] for v in per_seed)[1]


@pytest.mark.testbed
@GROUP_B
def test_cli_reuses_the_small_clip_and_reproduces_the_numbers(tmp_path_factory, tmp_path, capsys):
    import shutil

    from vqclip.cli import main

    root, result = _quick_seed(tmp_path_factory, 0)
    out = tmp_path / "seed-0"  # the CLIP alone, copied: the shared run stays as the other tests read it
    shutil.copytree(root / "seed-0" / "clip", out / "clip")
    # one seed alone is checked on its own numbers: its exit status follows its own checks
    expected = 0 if result["all_passed"] else 1
    assert main(["testbed", "--quick", "--out", str(out), "--reuse-clip", "--no-progress"]) == expected
    assert "| forget |" in capsys.readouterr().out
    again = json.loads((out / "results.json").read_text())
    assert again["clip"]["reused"] and again["rows"] == result["rows"]  # same seed, same numbers


# ---------------------------------------------------------------------------------------------- generation
def _generation(tmp_path_factory, world_models, **config) -> tuple[Path, Path, dict]:
    """The generation experiment on the seed-0 quick CLIP and its projections with the world models: `vqclip batch`
    from a blank page with generation seeds 0-2 (with fewer, one image moves a share by 17 points), `vqclip score
    --detector world:...`, the object classifier, the table, the grid and the directions, under the default recipe
    (the paper's); only the cells the directions read (`config`), in two runs the two xdist workers share."""
    from vqclip.testbed.generate import GenerationConfig, run_generation
    from vqclip.testbed.config import TestbedConfig

    root, _ = _quick_seed(tmp_path_factory, 0)
    out = tmp_path_factory.mktemp("generation")
    config = GenerationConfig(**config)
    return root / "seed-0" / config.gen_dir, out, run_generation(
        {0: root / "seed-0"}, TestbedConfig.quick(0).world(), out, config, models_dir=world_models["folder"],
        progress=False)


# Issue 27's guard: vqclip's own text direction, as a negative target, writes the bare word on fewer images than
# clip space (a direction, no margin; measured over CLIP seeds 0-5 on both kernel paths, README and docs/testbed.md).
GUARD_METHOD = "textoff"


@pytest.fixture(scope="module")
def generation_word(tmp_path_factory, world_models):
    """The bare class words in clip and forget space and with GUARD_METHOD: 6 words x 3 seeds x 3 = 54 images."""
    return _generation(tmp_path_factory, world_models, templates=("word",), spaces=("clip", "forget"),
                       methods=(GUARD_METHOD,))


@pytest.fixture(scope="module")
def generation_phrase(tmp_path_factory, world_models):
    """"an image of a ..." in clip and learn space: 6 x 3 x 2 = 36 images."""
    return _generation(tmp_path_factory, world_models, templates=("phrase",), spaces=("clip", "learn"))


@pytest.mark.testbed
@GROUP_A
def test_generation_forget_writes_the_bare_word_less_than_clip(generation_word):
    """The paper's direction in the world (docs/testbed.md), against the one-seed margin."""
    _, _, summary = generation_word
    assert summary["models"]["detector"]["clean"]["text_present"] >= 0.95  # the judge the directions rest on
    failed = [f"{c['claim']}: {c['detail']}" for c in summary["checks"] if not c["passed"]]
    assert not failed, "\n".join(failed)
    assert [c["key"] for c in summary["checks"]] == ["forget_less_text"]


@pytest.mark.testbed
@GROUP_B
def test_generation_learn_writes_the_phrase_more_than_clip(generation_phrase):
    _, _, summary = generation_phrase
    failed = [f"{c['claim']}: {c['detail']}" for c in summary["checks"] if not c["passed"]]
    assert not failed, "\n".join(failed)
    assert [c["key"] for c in summary["checks"]] == ["learn_more_text"]


@pytest.mark.testbed
@GROUP_A
def test_generation_guard_method_writes_less_than_clip(generation_word):
    """Issue 27: GUARD_METHOD writes the bare word on fewer of its 18 images than clip (a direction, no margin)."""
    _, _, summary = generation_word
    rows = summary["by_template"]["word"]
    assert rows[GUARD_METHOD]["text"]["n"] == rows["clip"]["text"]["n"] == 18
    assert rows[GUARD_METHOD]["text"]["k"] < rows["clip"]["text"]["k"], rows


@pytest.mark.testbed
@GROUP_A
def test_generation_goes_through_batch_score_and_grid(generation_word):
    gen, out, summary = generation_word
    columns = ("clip", "forget", GUARD_METHOD)
    manifest = [json.loads(line) for line in (gen / "batch" / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 54 and all(line["status"] == "ok" for line in manifest)  # 6 words x 3 seeds x 3
    assert {line["id"].split("/")[1].split("-")[0] for line in manifest} == set(columns)
    score = json.loads((gen / "score" / "summary.json").read_text())
    assert score["detector"]["key"].startswith("world-text-") and score["n_scored"] == 54
    # the table counts what the detector and the object classifier said about each image
    images = json.loads((gen / "generation.json").read_text())["images"]
    assert len(images) == 54 and {im["template"] for im in images} == {"word"}
    for space in columns:
        mine = [im for im in images if im["space"] == space]
        assert summary["per_seed"][0]["by_template"]["word"][space]["text"]["k"] == sum(im["text"] for im in mine)
        assert summary["per_seed"][0]["by_template"]["word"][space]["object_seen"]["n"] == 18
    records = [json.loads(line) for line in (gen / "score" / "scores.jsonl").read_text().splitlines()]
    assert sorted(bool(r["detections"]) for r in records) == sorted(im["text"] for im in images)
    summary_md = (out / "generation-methods-word-clip-forget_summary.md").read_text()
    assert (gen / "grid.png").is_file() and "| forget | 18 |" in summary_md and f"| {GUARD_METHOD} | 18 |" in summary_md
