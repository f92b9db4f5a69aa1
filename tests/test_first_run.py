"""Issue 25 item 8: what a first `vqclip generate` tells: the seed it drew, that a few steps cannot tell the
spaces apart."""

import json
import re

import torch

from vqclip.cli import main


def test_generate_prints_the_drawn_seed_and_warns_that_few_steps_do_not_tell_spaces_apart(
        tiny_model_flags, tiny_clip, tmp_path, capsys):
    from vqclip.projections import save_projection

    D = tiny_clip.embed_dim
    q, _ = torch.linalg.qr(torch.randn(D, 4, generator=torch.Generator().manual_seed(0)))
    proj = save_projection(tmp_path / "f.safetensors", q.T, "forget", tiny_clip.identity)
    out = tmp_path / "r"
    rc = main(["generate", "apple", "--steps", "3", "--projection", str(proj), "--out", str(out), "--size", "32",
               "32"] + [f for f in tiny_model_flags if f != "--quiet"])
    assert rc == 0
    err = capsys.readouterr().err
    drawn = re.search(r"seed (\d+) \(drawn; --seed \1 repeats this run\)", err)
    assert drawn, err
    assert int(drawn.group(1)) == json.loads((out / "run.json").read_text())["settings"]["seed"]
    assert "pixel-identical" in err


def test_out_is_a_folder_everywhere_and_the_file_commands_take_out_file(tmp_path, capsys):
    """Issue 25 item 8: `--out` where grid and train write one file is refused in one line naming --out-file."""
    for argv in (["grid", str(tmp_path), "--out", str(tmp_path / "cmp.png")],
                 ["train", "--space", "learn", "--out", str(tmp_path / "p.safetensors")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--out-file " + str(argv[-1]) in err, err
        assert not any(tmp_path.iterdir())
    from vqclip.cli import build_parser

    for name in ("grid", "train"):
        text = build_parser()._subparsers._group_actions[0].choices[name].format_help()
        assert "--out-file" in text and "--out " not in text.replace("--out-file", "")


def test_a_long_run_says_its_time_estimate_after_the_first_measured_steps(tiny_model_flags, tmp_path, capsys,
                                                                         monkeypatch):
    import vqclip.cli.generate as generate_cli
    from vqclip.cli import main

    monkeypatch.setattr(generate_cli, "LONG_RUN_SECONDS", 0.0)
    flags = [f for f in tiny_model_flags if f != "--quiet"]
    assert main(["generate", "an apple", "--size", "32", "32", "--steps", "4", "--seed", "0", "--out",
                 str(tmp_path / "run"), *flags]) == 0
    err = capsys.readouterr().err
    assert err.count("minutes for 4 steps on cpu") == 1 and "s a step measured" in err
