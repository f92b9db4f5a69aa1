"""Recipes (issue 24): each recipe's loop equals a re-statement of its anchor on the same random draws
(tests/anchors.py), run.json records the recipe and its overrides, and the three behaviours the audit found
drifting: init from the quantized latent, image prompts sized like the notebook, save-best under codebook."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import anchors
from vqclip.errors import VqclipError
from vqclip.generation import Settings, parse_prompts, run
from vqclip.generation.images import load_image, whole_picture_size
from vqclip.generation.latents import initial_latent
from vqclip.generation.targets import active_targets, encode_targets
from vqclip.generation.recipes import RECIPES, get_recipe
from vqclip.spaces import Space

pytestmark = pytest.mark.usefixtures("one_thread")


def _text_target(clip, text="an apple"):
    with torch.no_grad():
        return clip.encode_text([text]).float()


def _image_tensor(result_image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(result_image).copy()).float().permute(2, 0, 1) / 255


# --------------------------------------------------------------------------------------- the recipes as data
def test_a_recipe_fills_what_is_not_given_and_records_explicit_values_as_overrides():
    paper = Settings(prompts=parse_prompts("an apple"), recipe="paper", cutn=16, seed=0).resolved(16)[0]
    assert (paper.method, paper.size, paper.cutn, paper.augment, paper.noise, paper.lr, paper.optimizer) == \
        ("codebook", (480, 480), 16, (), 0.0, 0.05, "adamw")
    assert paper.overrides == {"cutn": 16}
    assert paper.recipe_record() == {"name": "paper", "anchor": RECIPES["paper"].anchor, "overrides": {"cutn": 16}}
    # a value equal to the recipe's is not an override, and resolving again keeps the first record
    same = Settings(prompts=parse_prompts("an apple"), recipe="paper", cutn=64, seed=0).resolved(16)[0]
    assert same.overrides == {} and same.resolved(16)[0].overrides == {}
    nr = Settings(prompts=parse_prompts("an apple"), recipe="nerdyrodent", seed=0).resolved(16)[0]
    assert (nr.size, nr.steps, nr.method, nr.lr, nr.noise) == ((512, 512), 500, "zquant", 0.1, 0.1)
    default = Settings(prompts=parse_prompts("an apple"), seed=0).resolved(16)[0]
    assert (default.recipe, default.size, default.steps, default.cutn) == ("vqclip", (480, 480), 300, 32)
    with pytest.raises(VqclipError, match="--recipe: unknown recipe.*nerdyrodent"):
        get_recipe("crowson")


def test_cli_records_the_recipe_and_its_overrides_in_run_json(tiny_model_flags, tmp_path, capsys):
    from vqclip.cli import main

    out = tmp_path / "run"
    assert main(["generate", "an apple", "--recipe", "paper", "--size", "32", "32", "--steps", "2", "--seed", "1",
                 "--out", str(out), *tiny_model_flags]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["recipe"]["name"] == "paper" and record["settings"]["recipe"] == "paper"
    assert record["recipe"]["overrides"] == {"size": [32, 32], "steps": 2, "cutn": 2}  # cutn 2 is in the fixture
    assert record["settings"]["method"] == "codebook" and record["settings"]["noise"] == 0.0
    assert record["settings"]["augment"] == []


def test_a_config_file_names_the_recipe_and_a_flag_still_wins(tiny_model_flags, tmp_path):
    from vqclip.cli import main

    config = tmp_path / "run.yaml"
    config.write_text("recipe: nerdyrodent\nsteps: 2\nsize: [32, 32]\n")
    out = tmp_path / "run"
    assert main(["generate", "an apple", "--config", str(config), "--noise", "0.05", "--seed", "1", "--out", str(out),
                 *tiny_model_flags]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["recipe"]["name"] == "nerdyrodent"
    assert record["recipe"]["overrides"] == {"size": [32, 32], "steps": 2, "cutn": 2, "noise": 0.05}


def test_an_augmentation_nerdyrodent_lacks_is_refused_before_any_model_loads(capsys):
    from vqclip.cli import main

    assert main(["generate", "x", "--recipe", "nerdyrodent", "--augment", "affine,flip", "--clip",
                 "local-dir:/nonexistent"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--augment: the nerdyrodent recipe has no such augmentation" in err[0]


def test_the_paper_recipe_defaults_to_the_papers_vqgan():
    from vqclip.generation.recipes import recipe_vqgan

    assert recipe_vqgan("paper", None) == "vqgan_imagenet_f16_1024"
    assert recipe_vqgan("nerdyrodent", None) == recipe_vqgan(None, None) == "vqgan_imagenet_f16_16384"
    assert recipe_vqgan("paper", "vqgan_imagenet_f16_16384") == "vqgan_imagenet_f16_16384"  # explicit wins
    assert recipe_vqgan("paper", None, checkpoint="model.ckpt") is None  # a file names its own model


# --------------------------------------------------------------------------------------- equal to the anchors
# 64² images under the tiny CLIP's 32² input: the notebook's crops (sides 32..64) are resampled with its Lanczos
# prefilter and bicubic step, and nerdyrodent's pooling halves the image, so a change to the resampling shows in the
# losses; enough steps that the image moves well beyond rounding (checked against the start).
SIZE, STEPS = (64, 64), 10


def _moved(result, start_image) -> float:
    return float((_image_tensor(result.image) - start_image).abs().mean())


@pytest.mark.parametrize("seed, image_prompt", [(0, False), (3, True)])
def test_paper_recipe_is_the_notebooks_seed_n_run(tiny_clip, tiny_vqgan, tmp_path, seed, image_prompt):
    """`--recipe paper --seed N` is the notebook's seed-N run: its seeding (torch.manual_seed(N), then one global
    stream for the logits, the image prompt's cutouts, each step's token samples and cutouts), standard normal
    logits, a categorical draw per token with the softmax's gradient, AdamW without weight decay, its Lanczos
    cutouts clamped, no augmentations, no noise."""
    prompt_tensor, image_prompts = None, []
    if image_prompt:
        path = tmp_path / "prompt.png"
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(path)
        image_prompts = parse_prompts(str(path) + ":0.5", "--image-prompt")
        prompt_tensor = load_image(str(path), SIZE, torch.device("cpu"), "--image-prompt", fit="whole")
    settings = Settings(prompts=parse_prompts("an apple"), image_prompts=image_prompts, recipe="paper", size=SIZE,
                        steps=STEPS, cutn=6, seed=seed)
    ours = run(settings, tiny_clip, tiny_vqgan, Space("clip"))
    target = _text_target(tiny_clip)
    if image_prompt:  # the image prompt's weight 0.5: the re-statement's second prompt, scaled
        losses, image = anchors.notebook_run(tiny_clip, tiny_vqgan, target, size=SIZE, steps=STEPS, cutn=6,
                                             seed=seed, image_prompt=prompt_tensor, image_weight=0.5)
    else:
        losses, image = anchors.notebook_run(tiny_clip, tiny_vqgan, target, size=SIZE, steps=STEPS, cutn=6, seed=seed)
    # same draws; the only differences are float rounding (vqclip decodes in channels_last on the CPU)
    assert ours.history == pytest.approx(losses, rel=1e-5, abs=1e-6)
    assert (_image_tensor(ours.image) - image[0]).abs().max() <= 1 / 255 + 1e-6
    _, start = anchors.notebook_run(tiny_clip, tiny_vqgan, target, size=SIZE, steps=0, cutn=6, seed=seed)
    assert _moved(ours, start[0]) > 2 / 255  # the argmax image moved from that of the start logits


def test_the_loop_tests_see_the_resampling(tiny_clip, tiny_vqgan, monkeypatch):
    """At 32² under the 32² CLIP every crop was the whole image and the notebook's Lanczos resample never ran: a
    nearest-neighbour resample still equalled the notebook there. At the tests' 64² it no longer does."""
    import torch.nn.functional as F

    from vqclip.generation import anchor_cutouts

    monkeypatch.setattr(anchor_cutouts, "_resample", lambda x, size: F.interpolate(x, size, mode="nearest"))
    target = _text_target(tiny_clip)
    for size, sees_it in (((32, 32), False), (SIZE, True)):
        settings = Settings(prompts=parse_prompts("an apple"), recipe="paper", size=size, steps=3, cutn=6, seed=0)
        ours = run(settings, tiny_clip, tiny_vqgan, Space("clip"))
        losses, _ = anchors.notebook_run(tiny_clip, tiny_vqgan, target, size=size, steps=3, cutn=6, seed=0)
        assert (ours.history != pytest.approx(losses, rel=1e-5, abs=1e-6)) == sees_it


@pytest.mark.parametrize("seed, init_weight", [(2, 0.5), (5, 0.0)])
def test_nerdyrodent_recipe_is_its_generate_loop_on_the_same_draws(tiny_clip, tiny_vqgan, seed, init_weight):
    """Pooled cutouts with kornia's Af/Pe/Ji/Er and noise, Adam 0.1 on z, z clamped, init weight as z -> 0 decay."""
    settings = Settings(prompts=parse_prompts("an apple"), recipe="nerdyrodent", size=SIZE, steps=STEPS, cutn=6,
                        seed=seed, init_weight=init_weight)
    seen = {}
    ours = run(settings, tiny_clip, tiny_vqgan, Space("clip"),
               callback=lambda info: seen.setdefault(info.step, info.image[0].clone()))
    losses, image = anchors.nerdyrodent_run(tiny_clip, tiny_vqgan, _text_target(tiny_clip), size=SIZE, steps=STEPS,
                                            cutn=6, seed=seed, init_weight=init_weight)
    assert ours.history == pytest.approx(losses, rel=1e-5, abs=1e-6)
    assert (_image_tensor(ours.image) - image[0]).abs().max() <= 1 / 255 + 1e-6
    assert _moved(ours, seen[1]) > 2 / 255  # the image moved from the start


def test_the_anchor_recipes_are_grouped_like_any_other(tiny_clip, tiny_vqgan):
    from vqclip.generation.loop import run_many

    for recipe in ("paper", "nerdyrodent"):
        jobs = [Settings(prompts=parse_prompts(p), recipe=recipe, size=(32, 32), steps=3, cutn=4, seed=s)
                for p, s in (("an apple", 0), ("a pear", 1))]
        together = run_many(jobs, tiny_clip, tiny_vqgan, [Space("clip")] * 2)
        alone = [run(job, tiny_clip, tiny_vqgan, Space("clip")) for job in jobs]
        for a, b in zip(together, alone):
            assert a.history == pytest.approx(b.history, rel=1e-4, abs=1e-5)


def test_nerdyrodent_story_drops_image_and_noise_prompts_at_the_first_change():
    phases = [["a"], ["b"]]
    assert active_targets(phases, ["img"], 2, 1, keep_always=False) == ["a", "img"]
    assert active_targets(phases, ["img"], 2, 2, keep_always=False) == ["b"]
    assert active_targets(phases, ["img"], 2, 4, keep_always=False) == ["a"]  # and they never come back
    assert active_targets(phases, ["img"], 2, 4) == ["a", "img"]  # vqclip and paper keep them


# --------------------------------------------------------------------------------------- what the audit found
def test_an_init_image_starts_from_its_quantized_latent(tiny_vqgan, tmp_path):
    """As taming's encode gives it to Crowson and nerdyrodent: every start token is a codebook entry."""
    path = tmp_path / "init.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    settings = Settings(prompts=parse_prompts("x"), size=(32, 32), init_image=str(path), seed=0).resolved(
        tiny_vqgan.factor)[0]
    z0 = initial_latent(settings, tiny_vqgan, torch.Generator().manual_seed(0))
    tokens = z0.movedim(1, 3).reshape(-1, z0.shape[1])
    codebook = tiny_vqgan.codebook.detach()
    assert torch.cdist(tokens, codebook).min(dim=1).values.max() == 0


def test_image_prompts_keep_the_whole_picture_and_are_never_upscaled(tiny_clip, tmp_path, monkeypatch):
    """The notebook's resize_image: a 451x300 photo at a 480² run keeps all of it (ImageOps.fit kept 66.5 %)."""
    assert whole_picture_size((451, 300), (480, 480)) == (451, 300)
    assert whole_picture_size((1200, 800), (480, 480)) == (588, 392)  # area 480², aspect kept
    path = tmp_path / "wide.png"
    array = np.zeros((30, 90, 3), dtype=np.uint8)
    array[:, :10] = (255, 0, 0)  # a red band at the left edge, which a centre crop to a square cuts off
    Image.fromarray(array).save(path)
    seen = []

    def capture(image, generators):
        seen.append(image)
        return torch.zeros(2, 3, *tiny_clip.input_size)

    settings = Settings(prompts=parse_prompts("x"), image_prompts=parse_prompts(str(path) + ":1", "--image-prompt"),
                        size=(96, 96), seed=0).resolved(16)[0]
    encode_targets(settings, tiny_clip, Space("clip"), capture, torch.Generator())
    assert seen[0].shape[-2:] == (30, 90)  # smaller than the run: kept as it is
    assert seen[0][0, 0, :, :5].min() > 0.9  # the red band is there
    assert load_image(str(path), (48, 48), torch.device("cpu"), "--image-prompt", fit="fit").shape[-2:] == (48, 48)


def test_save_best_under_codebook_keeps_the_image_that_was_scored(tiny_clip, tiny_vqgan):
    """The loss of a codebook step is measured on that step's sample; the kept image must be that sample's decode,
    not the argmax of the logits."""
    seen = {}
    settings = Settings(prompts=parse_prompts("an apple"), method="codebook", size=(32, 32), steps=6, cutn=4, seed=5,
                        save_best=True)
    result = run(settings, tiny_clip, tiny_vqgan, Space("clip"),
                 callback=lambda info: seen.__setitem__(info.step, info.image[0].clone()))
    assert result.best_step is not None
    scored = seen[result.best_step]
    assert (_image_tensor(result.image) - scored).abs().max() <= 0.5 / 255 + 1e-6
    assert result.loss == result.history[result.best_step - 1] == min(result.history)


@pytest.mark.parametrize("spec, rule", [
    ("an apple:1:nan", "stop value must be a number"),
    ("an apple:1:-1", "never stops"),
    ("an apple:-1:0.5", "negated distance"),
    ("an apple:1e-320", "weight of 0"),
])
def test_prompt_weights_and_stops_that_cannot_act_are_refused(spec, rule):
    with pytest.raises(VqclipError, match=rule):
        parse_prompts(spec)


@pytest.mark.parametrize("field, value, flag", [("noise", math.nan, "--noise"), ("noise", math.inf, "--noise"),
                                                ("init_weight", math.nan, "--init-weight"),
                                                ("init_weight", math.inf, "--init-weight"), ("steps", 0, "--steps")])
def test_settings_that_cannot_give_an_image_are_refused_by_their_flag(field, value, flag):
    with pytest.raises(VqclipError, match=f"^{flag}:"):
        Settings(prompts=parse_prompts("x"), seed=0, **{field: value}).resolved(16)
