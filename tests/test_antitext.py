"""Ways of keeping text out besides the forget space (issue 27): negative prompts and the text direction, as
generation options of the loop and the Python API, recorded in run.json."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vqclip.errors import VqclipError
from vqclip.generation import Settings, parse_prompts, run
from vqclip.generation.antitext import METHODS, method_label, parse_anti_text, parse_method
from vqclip.generation.ops import prompt_loss
from vqclip.generation.targets import encode_targets
from vqclip.spaces import Space, identity_space
from vqclip.spelling.direction import write_direction
from test_reproduce import fake_ocr, projections  # noqa: F401 - fixtures of the reproduce tests


def test_methods_parse_into_a_space_and_anti_text_parts_and_back():
    for label in METHODS:
        space, parts = parse_method(label)
        assert method_label(space, parts) == label
    assert parse_method("forget+negative") == ("forget", ("negative",))
    assert parse_method("textoff+negative") == ("clip", ("negative", "textoff"))  # canonical order
    assert parse_anti_text("none") == () and parse_anti_text(["textoff", "negative"]) == ("negative", "textoff")
    with pytest.raises(VqclipError, match="--anti-text: unknown way of keeping text out; got 'nospell'"):
        parse_anti_text("negative+nospell")
    with pytest.raises(VqclipError, match="at most one space"):
        parse_method("forget+learn")
    with pytest.raises(VqclipError, match="unknown method part"):
        parse_method("forget+blur")


def test_a_text_direction_is_removed_from_every_embedding_or_kept_as_a_target():
    g = torch.Generator().manual_seed(0)
    t = F.normalize(torch.randn(32, generator=g), dim=0)
    e = torch.randn(5, 32, generator=g)
    W = torch.linalg.qr(torch.randn(32, 8, generator=g))[0].T  # (8, 32) orthonormal rows
    for base in (identity_space(), Space("forget", W)):
        removed = base.without_text(t, "project", {"source": "test"})
        if base.W is None:
            assert torch.allclose(removed.project(e) @ t, torch.zeros(5), atol=1e-5)
        expected = base.project(e - (e @ t)[:, None] * t)
        assert torch.allclose(removed.project(e), expected, atol=1e-6)
        kept = base.without_text(t, "target")
        assert torch.equal(kept.project(e), base.project(e))  # a target run leaves the projection alone
        assert torch.allclose(kept.text_target(), base.project(t[None]), atol=1e-6)
        assert removed.describe()["textoff"] == {"mode": "project", "source": "test"}
    with pytest.raises(VqclipError, match="--textoff-mode: unknown way"):
        identity_space().without_text(t, "subtract")


def test_the_negative_prompt_and_the_direction_are_targets_in_every_story_phase(tiny_clip):
    t = F.normalize(torch.randn(tiny_clip.embed_dim), dim=0)
    space = identity_space().without_text(t, "target")
    s = Settings(prompts=parse_prompts("an apple"), story=[parse_prompts("a pear")], change_every=2,
                 anti_text=("negative", "textoff"), negative_text="written words", negative_weight=-0.7,
                 textoff_weight=-0.3)
    phases, always = encode_targets(s, tiny_clip, space)
    for phase in phases:
        labels = {x.label: x.prompt.weight for x in phase}
        assert labels == {phase[0].label: 1.0, "negative:written words": -0.7, "textoff": -0.3}
    negative = next(x for x in phases[0] if x.label.startswith("negative"))
    assert torch.allclose(negative.embeds, space.project(tiny_clip.encode_text(["written words"])), atol=1e-6)
    off = next(x for x in phases[0] if x.label == "textoff")
    assert torch.allclose(off.embeds, F.normalize(t[None], dim=-1), atol=1e-6) and always == []
    # a negative target pushes away: the loss term is the spherical distance times the (negative) weight
    embeds = F.normalize(torch.randn(3, tiny_clip.embed_dim), dim=-1)
    assert float(prompt_loss(embeds, off.embeds, -0.3, float("-inf"))) < 0
    with pytest.raises(VqclipError, match="the space holds no text direction"):
        encode_targets(s, tiny_clip, identity_space())


@pytest.mark.parametrize("weight, flag", [(0.5, "--negative-weight"), (0.0, "--negative-weight")])
def test_a_negative_prompt_must_push_away(weight, flag, tiny_vqgan):
    s = Settings(prompts=parse_prompts("an apple"), anti_text="negative", negative_weight=weight, size=(16, 16))
    with pytest.raises(VqclipError, match=f"{flag}: a negative prompt's weight must be below zero"):
        s.resolved(tiny_vqgan.factor)
    with pytest.raises(VqclipError, match="--textoff-weight: the text direction is pushed away from"):
        Settings(prompts=parse_prompts("x"), anti_text="textoff", textoff_weight=0.1, size=(16, 16)).resolved(4)


def test_the_negative_prompt_changes_the_image_and_is_recorded(tiny_clip, tiny_vqgan):
    from vqclip.outputs import build_record

    base = dict(prompts=parse_prompts("an apple"), size=(16, 16), steps=3, cutn=2, seed=3, augment="none")
    plain = run(Settings(**base), tiny_clip, tiny_vqgan, identity_space())
    neg = run(Settings(**base, anti_text="negative"), tiny_clip, tiny_vqgan, identity_space())
    again = run(Settings(**base, anti_text="negative"), tiny_clip, tiny_vqgan, identity_space())
    assert (np.asarray(neg.image) == np.asarray(again.image)).all() and torch.equal(neg.latent, again.latent)
    assert set(plain.losses) == {"an apple"} and neg.losses["negative:written text"] < 0  # a term of its own
    record = build_record(neg, {}, identity_space().describe(), "an apple")
    assert record["text_method"] == "negative" and record["settings"]["anti_text"] == ["negative"]
    assert record["settings"]["negative_text"] == "written text" and record["settings"]["negative_weight"] == -0.5
    assert build_record(plain, {}, identity_space().describe(), "x")["text_method"] == "clip"


def test_the_api_uses_the_cached_direction_for_its_clip_and_refuses_another(tiny_clip_id, tmp_path):
    from vqclip.generation.api import generate, load_models
    from vqclip.models.tiny import write_taming_files

    config, ckpt = write_taming_files(tmp_path / "vqgan")
    models = load_models(tiny_clip_id, None, vqgan_config=str(config), vqgan_checkpoint=str(ckpt), device="cpu")
    with pytest.raises(VqclipError, match="no text direction for CLIP .* vqclip train --direction textoff"):
        generate("an apple", space="textoff", models=models, size=(16, 16), steps=1, cutn=2, seed=0)
    d = F.normalize(torch.randn(models.clip.embed_dim), dim=0)
    write_direction(d, models.clip.identity)
    result = generate("an apple", space="textoff", models=models, size=(16, 16), steps=1, cutn=2, seed=0)
    assert result.settings.anti_text == ("textoff",) and result.settings.text_method("clip") == "textoff"
    space = models.space("clip", anti_text="textoff")
    assert space.text_mode == "target" and torch.allclose(space.text_direction, d, atol=1e-6)
    other = write_direction(d, "ViT-B-32/openai", tmp_path / "other.safetensors")
    with pytest.raises(VqclipError, match="--textoff: the text direction was computed for CLIP 'ViT-B-32/openai'"):
        generate("an apple", space="clip", anti_text="textoff", textoff=str(other), textoff_mode="project",
                 models=models, size=(16, 16), steps=1, cutn=2, seed=0)


def test_the_cli_trains_a_direction_and_generates_with_each_way_of_keeping_text_out(tmp_path, tiny_model_flags,
                                                                                      capsys):
    """`vqclip train --direction textoff` from cached features, then `generate --anti-text ...` and
    `--space forget`: each runs and run.json records how text was kept out."""
    import json

    from conftest import class_photos
    from vqclip.cli import main
    from vqclip.projections import projection_path, save_projection

    root = class_photos(tmp_path / "photos")
    clip_flags = tiny_model_flags[:2]
    data = ["--images", str(root), "--words", "12", "--workers", "0", "-q", "--val-fraction", "0.2",
            "--test-fraction", "0.2", "--class-renders", "1"]
    assert main(["train", "--direction", "textoff", *clip_flags, *data, "--json", str(tmp_path / "d.json")]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "textoff.safetensors" in out and "text direction of" in out
    summary = json.loads((tmp_path / "d.json").read_text())
    assert summary["held_out"]["n"] > 0 and 0 <= summary["held_out"]["share_written_further"] <= 1
    assert main(["train", "--direction", "textoff", *clip_flags, *data]) == 2  # never replaced without --overwrite
    assert "--out-file: a text direction already exists there" in capsys.readouterr().err
    identity = json.loads((tmp_path / "d.json").read_text())["clip_model"]
    W = torch.linalg.qr(torch.randn(32, 16, generator=torch.Generator().manual_seed(0)))[0].T
    save_projection(projection_path("forget", identity), W, "forget", identity)
    cases = {"negative": ["--anti-text", "negative"], "textoff": ["--anti-text", "textoff"],
             "forget": ["--space", "forget"], "forget+negative": ["--space", "forget", "--anti-text", "negative"],
             "negative+textoff": ["--anti-text", "textoff+negative", "--textoff-mode", "project"]}
    for label, flags in cases.items():
        run_dir = tmp_path / "runs" / label
        assert main(["generate", "an apple", *tiny_model_flags, "--size", "16", "16", "--steps", "1", *flags,
                     "--out", str(run_dir)]) == 0, capsys.readouterr().err
        record = json.loads((run_dir / "run.json").read_text())
        assert record["text_method"] == label
        assert ("textoff" in record["space"]) == ("textoff" in label)
    assert record["space"]["textoff"]["mode"] == "project" and record["space"]["textoff"]["clip_model"] == identity
    assert main(["generate", "an apple", *tiny_model_flags, "--anti-text", "nospell", "--out",
                 str(tmp_path / "bad")]) == 2
    assert "--anti-text: unknown way of keeping text out; got 'nospell'" in capsys.readouterr().err


def test_a_batch_lays_out_ways_of_keeping_text_out_as_a_column_and_the_grid_shows_it(tiny_model_flags, tiny_clip,
                                                                                       tmp_path, capsys):
    import json

    from vqclip.batch import parse_spaces
    from vqclip.cli import main
    from vqclip.grid import arrange, collect
    from vqclip.projections import projection_path, save_projection

    assert parse_spaces("clip, Negative ,negative+forget") == ("clip", "negative", "forget+negative")
    with pytest.raises(VqclipError, match="--spaces: unknown embedding space; got 'blur'.*forget\\+negative"):
        parse_spaces("clip,blur")
    with pytest.raises(VqclipError, match="listed twice"):
        parse_spaces("forget+negative,negative+forget")
    W = torch.linalg.qr(torch.randn(32, 8, generator=torch.Generator().manual_seed(0)))[0].T
    save_projection(projection_path("forget", tiny_clip.identity), W, "forget", tiny_clip.identity)
    prompts = tmp_path / "words.txt"
    prompts.write_text("apple\n")
    out = tmp_path / "batch"
    cmd = ["batch", str(prompts), "--spaces", "clip,negative,forget,forget+negative,textoff", "--out", str(out),
           *tiny_model_flags, "--size", "16", "16", "--steps", "1"]
    assert main(cmd) == 2  # the text direction is missing: said before the first image
    assert "no text direction for CLIP" in capsys.readouterr().err and not (out / "manifest.jsonl").exists()
    write_direction(F.normalize(torch.randn(32), dim=0), tiny_clip.identity)
    assert main(cmd) == 0
    for label in ("clip", "negative", "forget", "forget+negative", "textoff"):
        record = json.loads((out / f"apple/{label}-s0/run.json").read_text())
        assert record["text_method"] == label and record["space"]["space"] == label.split("+")[0].replace(
            "negative", "clip").replace("textoff", "clip")
    arr = arrange(collect(out).cells)
    assert [c[0] for c in arr.cols] == ["clip", "negative", "textoff", "forget", "forget+negative"]


def test_the_page_keeps_text_out_in_every_space_it_compares():
    from vqclip.ui.runner import ANTI_TEXT_CHOICES, Form, check_form

    checked = check_form(Form("an apple", ["clip", "forget"], 0, 64, 64, 10, None, 8, anti_text="negative+textoff"))
    assert checked.settings.anti_text == ("negative", "textoff") and checked.spaces == ["clip", "forget"]
    assert checked.settings.text_method("forget") == "forget+negative+textoff"
    assert check_form(Form("an apple", ["clip"], 0, 64, 64, 10, None, 8)).settings.anti_text == ()
    assert ANTI_TEXT_CHOICES[0] == "none"
    with pytest.raises(VqclipError, match="also keep text out: unknown choice; got 'blur'"):
        check_form(Form("an apple", ["clip"], 0, 64, 64, 10, None, 8, anti_text="blur"))


@pytest.mark.usefixtures("fake_ocr", "projections")
def test_reproduce_ocr_puts_the_extra_methods_beside_the_papers_columns(tiny_model_flags, tiny_clip, tmp_path, capsys):
    import json

    from vqclip.cli import main
    from vqclip.evaluate.textscore import PAPER_ANY_TEXT

    write_direction(F.normalize(torch.randn(32), dim=0), tiny_clip.identity)
    words_file = tmp_path / "words.txt"
    words_file.write_text("apple,real\nzezr,nonsense\n")
    out = tmp_path / "r"
    cmd = ["reproduce", "ocr", "--words", str(words_file), "--size", "16", "16", "--steps", "1", "--out", str(out),
           "--grid-words", "1", "--methods", "clip,forget,negative,textoff,forget+negative", "--judge-clip", "none",
           *tiny_model_flags]  # the object judge: tests/test_object_judge.py
    assert main(cmd) == 0, capsys.readouterr().err
    ocr = json.loads((out / "report.json").read_text())["sections"]["ocr"]
    assert ocr["spaces"] == ["clip", "learn", "forget", "negative", "textoff", "forget+negative"]
    assert ocr["jobs"]["planned"] == 2 * 6 and ocr["jobs"]["scored"] == 12
    rows = {(r["threshold"], r["word_type"], r["space"]): r for r in ocr["rows"]}
    for space in ("clip", "learn", "forget"):  # the paper's columns keep the paper's numbers
        assert rows[(0.0, "all", space)]["paper"] == PAPER_ANY_TEXT[(0.0, "all")][space]
    for method in ("negative", "textoff", "forget+negative"):
        assert rows[(0.25, "all", method)]["n"] == 2 and rows[(0.25, "all", method)]["paper"] is None
    header = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| OCR confidence"))
    assert header.index("forget | paper") < header.index("negative | paper") < header.index("forget+negative | paper")
    manifest = [json.loads(line) for line in (out / "ocr" / "batch" / "manifest.jsonl").read_text().splitlines()]
    record = json.loads((out / "ocr" / "batch" / manifest[0]["image"]).with_name("run.json").read_text())
    assert record["recipe"]["name"] == "paper"  # every column, the extra ones too, runs the paper's recipe
    assert main(cmd[:-len(tiny_model_flags)] + ["--anti-text", "negative", *tiny_model_flags]) == 2
    assert "--anti-text: reproduce runs the paper's columns as the paper did" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["target", "project"])
def test_the_testbed_measures_the_methods_in_a_batch_of_their_own_that_its_command_line_makes(mode, tmp_path):
    """`vqclip testbed --generate --methods ...`: the extra columns follow the spaces, with the world's negative
    prompt and the run's own text direction, in generation-methods/; the plan is what `vqclip batch` makes of the
    printed command line."""
    from vqclip.batch import BatchSpec, load_prompt_files, make_plan, parse_spaces
    from vqclip.batch.plan import base_settings_record, base_space, model_identity
    from vqclip.cli import build_parser
    from vqclip.cli.batch import projections_from_args, seeds_from_args
    from vqclip.cli.generate import fill_recipe_defaults, settings_from_args
    from vqclip.testbed.gen_pipeline import plan_batch
    from vqclip.testbed.generate import GenerationConfig, batch_args, prompts_csv, write_page

    config = GenerationConfig(seeds=(0,), steps=2, cutn=2, methods="clip,negative,textoff,forget+negative",
                              textoff_mode=mode)
    assert config.columns == ("clip", "learn", "forget", "negative", "textoff", "forget+negative")
    assert config.gen_dir == {"target": "generation-methods", "project": "generation-methods-project"}[mode]
    assert GenerationConfig().gen_dir == "generation"
    with pytest.raises(VqclipError, match="--textoff-mode: unknown way"):
        GenerationConfig(methods="textoff", textoff_mode="sideways")
    assert config.to_dict()["methods"] == ["negative", "textoff", "forget+negative"]
    with pytest.raises(VqclipError, match="--methods: unknown embedding space"):
        GenerationConfig(methods="blur")
    gen = tmp_path / "run" / config.gen_dir
    gen.mkdir(parents=True)
    (gen / "prompts.csv").write_text(prompts_csv(("star",), config.templates))
    write_page(gen / "page.png", config)
    where = (tmp_path / "run", tmp_path / "vqgan.safetensors", gen / "prompts.csv", gen / "batch", config,
             gen / "page.png")
    batch = plan_batch(*where, config.columns)
    args = build_parser().parse_args(batch_args(*where))
    fill_recipe_defaults(args)
    base = settings_from_args(args, "")
    assert base.negative_text == "the word" and base.textoff == str(tmp_path / "run" / "textoff.safetensors")
    assert base.textoff_mode == batch.base.textoff_mode == mode
    items, spaces, seeds = load_prompt_files(args.files, args.word_type), parse_spaces(args.spaces), \
        seeds_from_args(args)
    bases = tuple(dict.fromkeys(base_space(s) for s in spaces))
    spec = BatchSpec(base_settings_record(base), model_identity(args.clip, args.pretrained, args.vqgan,
                                                                args.vqgan_config, args.vqgan_checkpoint,
                                                                args.precision),
                     items, spaces, seeds, make_plan(items, spaces, seeds), projections_from_args(args, bases))
    assert batch.spec.to_record() == spec.to_record() and len(spec.jobs) == 2 * 6


def test_a_batch_without_anti_text_records_the_settings_as_before_so_old_batches_resume():
    from vqclip.batch.plan import ANTI_TEXT_FIELDS, base_settings_record

    base = Settings(prompts=[], size=(16, 16), steps=1, cutn=2)
    assert not set(ANTI_TEXT_FIELDS) & set(base_settings_record(base))
    record = base_settings_record(Settings(prompts=[], size=(16, 16), steps=1, cutn=2, negative_text="the word",
                                           anti_text="negative"))
    assert record["negative_text"] == "the word" and record["anti_text"] == ["negative"]
    assert "textoff_mode" not in record
