"""Generation in the testbed world: prompts, the table, the directions, the CLI's checks (the end-to-end run is in
test_testbed.py, on the quick testbed's CLIPs)."""

from __future__ import annotations

import pytest

from vqclip.errors import VqclipError
from vqclip.testbed.generate import (GenerationConfig, GenMargins, batch_args, check_directions, markdown_table,
                                     prompts_csv, table_rows, write_page)


def _images(text: dict[str, float], n: int = 20) -> list[dict]:
    """n images per space, the given share of them with text (and the object seen on the others)."""
    out = []
    for space, share in text.items():
        k = round(share * n)
        for i in range(n):
            out.append({"space": space, "template": "word", "class": "star", "text": i < k, "word_read": i < k // 2,
                        "object_seen": i >= k})
    return out


def test_prompt_file_has_one_row_per_class_and_template():
    text = prompts_csv(("star", "moon"), ("phrase", "word"))
    lines = text.strip().splitlines()
    assert lines[0] == "prompt,id,word_type"
    assert lines[1:] == ["an image of a star,star-phrase,phrase", "an image of a moon,moon-phrase,phrase",
                         "star,star-word,word", "moon,moon-word,word"]


def test_table_counts_per_space_with_wilson_intervals():
    rows = table_rows(_images({"clip": 0.5, "learn": 0.9, "forget": 0.1}))
    assert rows["clip"]["text"]["k"] == 10 and rows["clip"]["text"]["n"] == 20
    assert rows["learn"]["object_seen"]["rate"] == pytest.approx(0.1)
    lo, hi = rows["forget"]["text"]["ci95"]
    assert lo < 0.1 < hi and hi < 0.35
    table = markdown_table(rows)
    assert "| learn | 20 | 90 [" in table and table.count("\n") == 5
    assert "clip_sees" not in rows["clip"] and table.strip().endswith("| – |")  # no CLIP verdicts given


def _by_template(word: dict[str, float], phrase: dict[str, float]) -> dict:
    return {"word": table_rows(_images(word)), "phrase": table_rows(_images(phrase))}


def test_each_direction_is_checked_on_its_own_template():
    margins = GenMargins(forget_less_text=0.2, learn_more_text=0.05)
    # bare words: CLIP writes, forget must write less; phrases: CLIP draws, learn must write more
    good = _by_template(word={"clip": 0.5, "learn": 0.5, "forget": 0.1}, phrase={"clip": 0.1, "learn": 0.6,
                                                                                  "forget": 0.2})
    checks = check_directions({0: good}, margins)
    assert [(c["key"], c["template"]) for c in checks] == [("forget_less_text", "word"), ("learn_more_text", "phrase")]
    assert all(c["passed"] for c in checks) and checks[0]["value"] == pytest.approx(0.4)
    # the same numbers on the other templates fail both
    swapped = {"word": good["phrase"], "phrase": good["word"]}
    assert {c["key"] for c in check_directions({0: swapped}, margins) if not c["passed"]} == {
        "forget_less_text", "learn_more_text"}
    # the median over CLIP seeds tolerates one odd seed, not two
    checks = check_directions({0: good, 1: swapped, 2: good}, margins)
    assert all(c["passed"] for c in checks) and "seeds 0, 1, 2" in checks[0]["detail"]
    assert not all(c["passed"] for c in check_directions({0: good, 1: swapped, 2: swapped}, margins))
    # a template that was not generated leaves its direction unchecked
    assert [c["key"] for c in check_directions({0: {"word": good["word"]}}, margins)] == ["forget_less_text"]


def test_config_is_checked():
    with pytest.raises(VqclipError, match="templates"):
        GenerationConfig(templates=("photo",))
    with pytest.raises(VqclipError, match="--gen-steps"):
        GenerationConfig(steps=0)
    with pytest.raises(VqclipError, match="--gen-seeds"):
        GenerationConfig(seeds=())
    with pytest.raises(VqclipError, match="--lr"):
        GenerationConfig(lr=0)
    assert GenerationConfig(margins={"forget_less_text": 0.3}).margins.forget_less_text == 0.3


def test_one_clip_seed_is_held_to_a_lower_forget_margin_than_the_median_of_three():
    assert GenMargins.for_seeds(3) == GenMargins() and GenMargins().forget_less_text == 0.2
    assert GenMargins.for_seeds(1).forget_less_text == 0.1
    assert GenMargins.for_seeds(1).learn_more_text == GenMargins().learn_more_text


def test_every_image_starts_from_the_blank_page_at_the_papers_learning_rate(tmp_path):
    """From VQGAN noise the small CLIP is fooled by stripe textures in every space (docs/testbed.md); the batch
    starts each image from a blank page of the world's page colour instead, at lr 0.05."""
    import numpy as np
    from PIL import Image

    config = GenerationConfig(size=64, page=(240, 240, 230))
    page = tmp_path / "page.png"
    write_page(page, config)
    pixels = np.asarray(Image.open(page))
    assert pixels.shape == (64, 64, 3) and (pixels == (240, 240, 230)).all()
    args = batch_args(tmp_path / "run", tmp_path / "vqgan.safetensors", tmp_path / "p.csv", tmp_path / "out", config,
                      page)
    assert args[args.index("--init-image") + 1] == str(page) and args[args.index("--lr") + 1] == "0.05"


def test_cli_refuses_generation_flags_without_generate(capsys):
    from vqclip.cli import main

    assert main(["testbed", "--quick", "--gen-steps", "10", "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip()
    flags = "--gen-seeds/--gen-steps/--world-models/--methods/--gen-templates/--textoff-mode"
    assert f"{flags}: only apply with --generate" in err and len(err.splitlines()) == 1
    assert main(["testbed", "--quick", "--generate", "--gen-steps", "0", "--out", "unused"]) == 2
    assert "--gen-steps: must be at least 1" in capsys.readouterr().err
    assert main(["testbed", "--quick", "--generate", "--gen-seeds", "x", "--out", "unused"]) == 2
    assert capsys.readouterr().err.startswith("vqclip testbed: error: --gen-seeds: ")  # not --seeds
    assert main(["testbed", "--quick", "--generate", "--world-models", "nowhere", "--out", "unused"]) == 2
    assert "--world-models: needs vqgan.json and detector.json" in capsys.readouterr().err


def test_the_experiment_runs_the_papers_recipe_unless_told_otherwise(tmp_path):
    from vqclip.testbed.generate import GenerationConfig, batch_args

    args = batch_args(tmp_path, tmp_path / "vqgan.safetensors", tmp_path / "p.csv", tmp_path / "out",
                      GenerationConfig(), tmp_path / "page.png")
    assert args[args.index("--recipe") + 1] == "paper"
    other = batch_args(tmp_path, tmp_path / "vqgan.safetensors", tmp_path / "p.csv", tmp_path / "out",
                       GenerationConfig(recipe="nerdyrodent"), tmp_path / "page.png")
    assert other[other.index("--recipe") + 1] == "nerdyrodent"


def test_the_library_batch_is_the_batch_its_command_line_makes(tmp_path):
    """The generation batch goes through `vqclip.batch` now, not `vqclip batch`: the plan it makes records what the
    command made of `batch_args` (settings once the recipe fills them, models, items, jobs, projections), and it runs
    with the same group size, device and precision."""
    from vqclip.batch import BatchSpec, load_prompt_files, make_plan, parse_spaces
    from vqclip.batch.plan import base_settings_record, model_identity
    from vqclip.cli import build_parser
    from vqclip.cli.batch import projections_from_args, seeds_from_args
    from vqclip.cli.generate import fill_recipe_defaults, settings_from_args
    from vqclip.generation.groups import parse_group_size
    from vqclip.testbed.gen_pipeline import DEVICE, PRECISION, plan_batch
    from vqclip.testbed.generate import SPACES

    config = GenerationConfig(seeds=(2, 0), steps=7, cutn=3)
    gen = tmp_path / "run" / "generation"
    gen.mkdir(parents=True)
    (gen / "prompts.csv").write_text(prompts_csv(("star", "moon"), config.templates))
    write_page(gen / "page.png", config)
    where = (tmp_path / "run", tmp_path / "vqgan.safetensors", gen / "prompts.csv", gen / "batch", config,
             gen / "page.png")
    batch = plan_batch(*where, SPACES)

    args = build_parser().parse_args(batch_args(*where))
    fill_recipe_defaults(args)
    base = settings_from_args(args, "")
    items, spaces, seeds = load_prompt_files(args.files, args.word_type), parse_spaces(args.spaces), \
        seeds_from_args(args)
    spec = BatchSpec(base_settings_record(base), model_identity(args.clip, args.pretrained, args.vqgan,
                                                                args.vqgan_config, args.vqgan_checkpoint,
                                                                args.precision),
                     items, spaces, seeds, make_plan(items, spaces, seeds), projections_from_args(args, spaces))
    assert batch.spec.to_record() == spec.to_record()
    assert batch.base.with_recipe() == base.with_recipe()
    assert parse_group_size(args.group_size) == parse_group_size(config.group_size)
    assert (args.device, args.precision) == (DEVICE, PRECISION) and batch.vqgan == args.vqgan is None
    assert batch.action == "new" and batch.done == 0 and len(batch.mine) == len(spec.jobs) == 2 * 2 * 2 * 3


def test_a_subset_of_templates_and_spaces_has_a_folder_of_its_own_and_checks_what_it_holds():
    """The suite's guard generates only the cells its directions read; such an experiment never shares a batch
    folder with the paper's whole table, and a direction whose spaces it lacks is left unchecked."""
    config = GenerationConfig(templates=("word",), spaces=("forget", "clip"), methods="forget+negative")
    assert config.spaces == ("clip", "forget") and config.columns == ("clip", "forget", "forget+negative")
    assert config.gen_dir == "generation-methods-word-clip-forget" and config.to_dict()["spaces"] == ["clip", "forget"]
    assert GenerationConfig(templates=("phrase", "word")).gen_dir == "generation"
    assert GenerationConfig(templates=("word",)).gen_dir == "generation-word"
    for bad in (("blur",), ()):
        with pytest.raises(VqclipError, match="spaces: must name some of clip, learn, forget"):
            GenerationConfig(spaces=bad)
    margins = GenMargins.for_seeds(1)
    word = table_rows(_images({"clip": 0.5, "forget": 0.1}), spaces=("clip", "forget"))
    phrase = table_rows(_images({"clip": 0.1, "forget": 0.6}), spaces=("clip", "forget"))
    checks = check_directions({0: {"word": word, "phrase": phrase}}, margins)
    assert [(c["key"], c["passed"]) for c in checks] == [("forget_less_text", True)]
