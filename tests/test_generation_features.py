"""What users of the other VQGAN+CLIP tools rely on: story phases, noise prompts, save-best, image prompts through
cutouts, and an init weight that acts with codebook sampling."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vqclip.errors import VqclipError
from vqclip.generation import Settings, parse_prompts, run
from vqclip.generation.targets import active_targets, encode_targets
from vqclip.generation.prompts import parse_noise_prompt, parse_story
from vqclip.spaces import Space


def _settings(**kw):
    base = dict(prompts=parse_prompts("an apple"), size=(32, 32), steps=4, cutn=4, seed=0)
    base.update(kw)
    return Settings(**base)


def test_story_phases_change_every_n_steps_and_repeat():
    phases = parse_story("a forest | moss:0.5 ^ a city ^ a desert")
    assert [[p.text for p in phase] for phase in phases] == [["a forest", "moss"], ["a city"], ["a desert"]]
    labelled = [[phase[0].text] for phase in phases]
    order = [active_targets(labelled, [], 3, step)[0] for step in range(12)]
    assert order == ["a forest"] * 3 + ["a city"] * 3 + ["a desert"] * 3 + ["a forest"] * 3
    with pytest.raises(VqclipError, match="empty"):
        parse_story("a forest ^^ a city")


def test_a_story_run_switches_its_targets_and_needs_change_every(tiny_clip, tiny_vqgan):
    phases = parse_story("an apple ^ written text")
    with pytest.raises(VqclipError, match="--change-every"):
        run(_settings(prompts=phases[0], story=phases[1:]), tiny_clip, tiny_vqgan, Space("clip"))
    seen = []
    r = run(_settings(prompts=phases[0], story=phases[1:], change_every=2, steps=4), tiny_clip, tiny_vqgan,
            Space("clip"), lambda info: seen.append(len(info.losses)))
    assert r.status == "finished" and list(r.losses) == ["written text"]  # the last step was in phase 2
    assert r.settings.to_dict()["story"] == [[{"text": "written text", "weight": 1.0, "stop": None}]]


def test_noise_prompts_are_seeded_targets(tiny_clip, tiny_vqgan):
    p = parse_noise_prompt("42:0.5")
    assert (p.text, p.weight) == ("42", 0.5)
    for bad in ("x:1", "-3", "4.5"):
        with pytest.raises(VqclipError, match="--noise-prompt"):
            parse_noise_prompt(bad)
    s = _settings(noise_prompts=[p], steps=2)
    a = run(s, tiny_clip, tiny_vqgan, Space("clip"))
    b = run(s, tiny_clip, tiny_vqgan, Space("clip"))
    plain = run(_settings(steps=2), tiny_clip, tiny_vqgan, Space("clip"))
    assert "noise:42" in a.losses and a.history == b.history and a.history != plain.history


def test_save_best_keeps_the_image_of_the_lowest_loss(tiny_clip, tiny_vqgan):
    from vqclip.generation.loop import to_pil

    frames = {}
    r = run(_settings(steps=8, lr=0.5, save_best=True), tiny_clip, tiny_vqgan, Space("clip"),
            lambda info: frames.__setitem__(info.step, to_pil(info.image)))
    best = int(np.argmin(r.history)) + 1
    assert r.best_step == best and r.loss == min(r.history)
    assert r.image.tobytes() == frames[best].tobytes()
    last = run(_settings(steps=8, lr=0.5), tiny_clip, tiny_vqgan, Space("clip"))
    assert last.best_step is None and last.history == r.history  # same run, only the kept image differs


def test_image_prompts_go_through_the_runs_cutouts_by_default(tiny_clip, tmp_path):
    from vqclip.generation.cutouts import MakeCutouts

    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "red.png")
    s = _settings(image_prompts=parse_prompts(f"{tmp_path / 'red.png'}:0.5"))
    s, _ = s.resolved(8)
    cutouts = MakeCutouts(tiny_clip.input_size, 4, 1.0, s.augment, s.noise)
    _, always = encode_targets(s, tiny_clip, Space("clip"), cutouts, torch.Generator().manual_seed(0))
    assert always[0].embeds.shape == (4, tiny_clip.embed_dim)  # one target per cutout, as in Crowson's notebook
    centre = dataclasses.replace(s, image_prompt_mode="centre")
    _, always = encode_targets(centre, tiny_clip, Space("clip"), cutouts, torch.Generator().manual_seed(0))
    assert always[0].embeds.shape == (1, tiny_clip.embed_dim)
    with pytest.raises(VqclipError, match="--image-prompt-mode"):
        _settings(image_prompt_mode="middle").resolved(8)


def test_a_centre_image_prompt_is_loaded_at_clips_width_and_height(tiny_clip, tmp_path, monkeypatch):
    """load_image takes (W, H); CLIP's input_size is (H, W): a non-square CLIP must get its own shape."""
    import vqclip.generation.targets as targets

    Image.new("RGB", (40, 40), (0, 90, 200)).save(tmp_path / "blue.png")
    asked = []

    def fake_load(path, size, device, arg, fit="fit"):
        asked.append(tuple(size))
        return torch.rand(1, 3, size[1], size[0])

    monkeypatch.setattr(targets, "load_image", fake_load)
    monkeypatch.setattr(tiny_clip, "input_size", (24, 40))
    monkeypatch.setattr(tiny_clip, "encode_image", lambda images: torch.ones(len(images), tiny_clip.embed_dim))
    s = dataclasses.replace(_settings(image_prompts=parse_prompts(str(tmp_path / "blue.png")),
                                      image_prompt_mode="centre").resolved(8)[0])
    encode_targets(s, tiny_clip, Space("clip"))
    assert asked == [(40, 24)]


def test_init_weight_moves_a_codebook_run(tiny_clip, tiny_vqgan, tmp_path):
    """The anchor of --method codebook used to be codebook[argmax], which has no gradient: the weight changed the
    reported loss and nothing else."""
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    base = _settings(method="codebook", steps=4, init_image=str(tmp_path / "red.png"), lr=0.2)
    # The start logits keep the init's codes (latents.START_CODE_PROBABILITY), so 4 steps leave the argmax image
    # as it was: the pull shows in the logits, hence in the last step's sample (the same random draws in both runs).
    samples = {}
    free = run(base, tiny_clip, tiny_vqgan, Space("clip"), callback=lambda i: samples.__setitem__("free", i.image))
    pulled = run(dataclasses.replace(base, init_weight=50.0), tiny_clip, tiny_vqgan, Space("clip"),
                 callback=lambda i: samples.__setitem__("pulled", i.image))
    assert free.steps_done == pulled.steps_done == 4
    assert not torch.equal(samples["free"], samples["pulled"])


def test_the_cli_records_story_noise_and_best_in_run_json(tiny_model_flags, tmp_path):
    from vqclip.cli import main

    out = tmp_path / "run"
    assert main(["generate", "an apple ^ a pear", "--change-every", "2", "--noise-prompt", "7:0.3", "--save-best",
                 "--size", "32", "32", "--steps", "4", "--seed", "1", "--out", str(out)] + tiny_model_flags) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["settings"]["story"][0][0]["text"] == "a pear" and record["settings"]["change_every"] == 2
    assert record["settings"]["noise_prompts"] == [{"text": "7", "weight": 0.3, "stop": None}]
    assert record["settings"]["save_best"] is True and 1 <= record["best_step"] <= 4


def test_the_new_settings_work_from_a_config_file_and_a_prompt_file(tiny_model_flags, tmp_path, capsys):
    from vqclip.cli import main
    from vqclip.io import read_jsonl

    (tmp_path / "cfg.yaml").write_text("change_every: 2\nsave_best: true\nimage_prompt_mode: centre\n")
    (tmp_path / "p.yaml").write_text("- prompt: an apple ^ a pear\n  noise_prompts: '5:0.2 | 6'\n- prompt: a plum\n")
    out = tmp_path / "b"
    assert main(["batch", str(tmp_path / "p.yaml"), "--config", str(tmp_path / "cfg.yaml"), "--size", "32", "32",
                 "--steps", "3", "--out", str(out)] + tiny_model_flags) == 0
    lines = {line["prompt"]: line for line in read_jsonl(out / "manifest.jsonl")}
    first = json.loads((out / lines["an apple ^ a pear"]["record"]).read_text())
    assert first["settings"]["change_every"] == 2 and first["settings"]["save_best"] is True
    assert [p["text"] for p in first["settings"]["noise_prompts"]] == ["5", "6"]
    (tmp_path / "bad.yaml").write_text("- prompt: an apple\n  save_best: maybe\n")
    assert main(["batch", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "c")] + tiny_model_flags) == 2
    assert "save_best" in capsys.readouterr().err
