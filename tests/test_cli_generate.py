import json

import pytest

from vqclip.cli import main
from vqclip.io import png_text
from vqclip.models.tiny import write_taming_files


@pytest.fixture()
def model_args(tiny_model_flags):
    return tiny_model_flags + ["--size", "32", "32"]


def test_generate_writes_png_with_metadata_and_run_json(model_args, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["generate", "an apple | text:-0.5", "--steps", "3", "--seed", "5", "--out", str(out)] + model_args)
    assert rc == 0
    assert capsys.readouterr().out.strip().endswith("image.png")
    record = json.loads((out / "run.json").read_text())
    assert record["seed"] == 5 and record["status"] == "finished" and record["steps_done"] == 3
    assert record["prompt"] == "an apple | text:-0.5"
    assert [p["weight"] for p in record["prompts"]] == [1.0, -0.5]
    assert record["space"]["space"] == "clip"
    assert record["models"]["clip"]["identity"].startswith("local-dir:")
    assert len(record["models"]["vqgan"]["checkpoint_sha256"]) == 64
    assert record["settings"]["steps"] == 3 and record["settings"]["lr"] == 0.1
    chunks = png_text(out / "image.png")
    assert chunks["prompt"] == "an apple | text:-0.5" and chunks["seed"] == "5" and chunks["space"] == "clip"
    assert json.loads(chunks["settings"])["cutn"] == 2


def test_same_seed_same_png_through_the_cli(model_args, tmp_path):
    for name in ("a", "b"):
        assert main(["generate", "apple", "--steps", "2", "--seed", "1", "--out", str(tmp_path / name)] + model_args) == 0
    from PIL import Image

    assert Image.open(tmp_path / "a" / "image.png").tobytes() == Image.open(tmp_path / "b" / "image.png").tobytes()


def test_existing_run_is_not_overwritten_without_flag(model_args, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["generate", "apple", "--steps", "1", "--seed", "1", "--out", str(out)] + model_args) == 0
    before = (out / "image.png").read_bytes()
    assert main(["generate", "pear", "--steps", "1", "--seed", "2", "--out", str(out)] + model_args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "image.png").read_bytes() == before
    assert main(["generate", "pear", "--steps", "1", "--seed", "2", "--out", str(out), "--overwrite"] + model_args) == 0
    assert json.loads((out / "run.json").read_text())["prompt"] == "pear"


def test_frames_and_gif_video(model_args, tmp_path):
    out = tmp_path / "run"
    rc = main(["generate", "apple", "--steps", "4", "--seed", "1", "--out", str(out), "--save-every", "2",
               "--video", "gif"] + model_args)
    assert rc == 0
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["000002.png", "000004.png"]
    assert (out / "video.gif").stat().st_size > 0


def test_config_file_sets_defaults_and_flags_win(model_args, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("steps: 2\nseed: 11\ncut_pow: 2.0\n")
    out = tmp_path / "run"
    assert main(["generate", "apple", "--config", str(cfg), "--seed", "12", "--out", str(out)] + model_args) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["settings"]["steps"] == 2 and record["settings"]["cut_pow"] == 2.0 and record["seed"] == 12


def test_config_file_with_unknown_key_lists_valid_ones(model_args, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("stepz: 2\n")
    assert main(["generate", "apple", "--config", str(cfg), "--out", str(tmp_path / "r")] + model_args) == 2
    err = capsys.readouterr().err
    assert "stepz" in err and "steps" in err


def test_interrupted_run_still_writes_image_and_record(model_args, tmp_path, monkeypatch):
    import vqclip.generation.loop as loop

    real = loop.prompt_loss
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(loop, "prompt_loss", flaky)
    out = tmp_path / "run"
    rc = main(["generate", "apple", "--steps", "10", "--seed", "1", "--out", str(out)] + model_args)
    assert rc == 130
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "interrupted" and record["steps_done"] == 2
    assert (out / "image.png").is_file()


def test_learn_space_without_projection_says_how_to_train(model_args, tmp_path, capsys):
    rc = main(["generate", "apple", "--space", "learn", "--out", str(tmp_path / "r")] + model_args)
    assert rc == 2
    assert "vqclip train --space learn" in capsys.readouterr().err


def test_forget_space_with_a_projection_file(model_args, tmp_path, tiny_clip):
    import torch

    from vqclip.projections import save_projection

    q, _ = torch.linalg.qr(torch.randn(32, 8, generator=torch.Generator().manual_seed(0)))
    proj = save_projection(tmp_path / "f.safetensors", q.T, "forget", tiny_clip.identity)
    out = tmp_path / "run"
    assert main(["generate", "apple", "--space", "forget", "--projection", str(proj), "--steps", "1", "--seed", "1",
                 "--out", str(out)] + model_args) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["space"]["space"] == "forget" and record["space"]["dim"] == 8


@pytest.mark.parametrize("extra, match", [
    (["--size", "1", "1"], "--size"),
    (["--steps", "-2"], "--steps"),
    (["--cutn", "0"], "--cutn"),
    (["--init-image", "/nope.png"], "--init-image"),
    (["--video"], "--save-every"),
])
def test_bad_arguments_are_one_line_errors(model_args, tmp_path, capsys, extra, match):
    rc = main(["generate", "apple", "--out", str(tmp_path / "r")] + model_args + extra)
    assert rc == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing is created for a run that cannot start


def test_missing_prompt_is_an_error(model_args, tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path / "r")] + model_args) == 2
    assert "PROMPT" in capsys.readouterr().err


def test_unknown_space_is_rejected_by_argparse(model_args):
    with pytest.raises(SystemExit):
        main(["generate", "apple", "--space", "spell"] + model_args)


def test_converted_safetensors_needs_no_config(tiny_clip_id, tmp_path):
    from vqclip.models.vqgan import convert_checkpoint

    config, ckpt = write_taming_files(tmp_path / "vqgan")
    converted = convert_checkpoint(config, ckpt, tmp_path / "tiny.safetensors")
    out = tmp_path / "run"
    rc = main(["generate", "apple", "--clip", tiny_clip_id, "--vqgan-checkpoint", str(converted), "--device", "cpu",
               "--size", "32", "32", "--cutn", "2", "--steps", "1", "--seed", "0", "--quiet", "--out", str(out)])
    assert rc == 0 and (out / "image.png").is_file()


def test_mp4_video_holds_every_saved_frame(model_args, tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    import imageio.v3 as iio

    out = tmp_path / "run"
    rc = main(["generate", "apple", "--steps", "6", "--seed", "1", "--out", str(out), "--save-every", "2",
               "--video"] + model_args)
    assert rc == 0
    video = out / "video.mp4"
    assert video.stat().st_size > 0
    frames = iio.imread(video)
    assert frames.shape[0] == 3 and frames.shape[1:3] == (32, 32)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_an_empty_video_file_is_an_error_not_a_result(tmp_path, monkeypatch):
    import imageio.v3 as iio
    from PIL import Image

    from vqclip.errors import VqclipError
    from vqclip.outputs import save_frame, write_video

    save_frame(tmp_path, 1, Image.new("RGB", (16, 16)))
    monkeypatch.setattr(iio, "imwrite", lambda *a, **k: None)  # a writer that fails silently, as ffmpeg can
    with pytest.raises(VqclipError, match="empty file"):
        write_video(tmp_path, 12, "gif")
    assert not (tmp_path / "video.gif").exists()


@pytest.mark.parametrize("extra, match", [
    (["--fps", "0"], "--fps"),
    (["--fps", "-3"], "--fps"),
    (["--save-every", "5"], "at most --steps"),
])
def test_video_options_are_checked_before_the_run(model_args, tmp_path, capsys, monkeypatch, extra, match):
    import vqclip.cli.generate as gen

    monkeypatch.setattr(gen, "load_models_from_args", lambda args: pytest.fail("models loaded before the check"))
    rc = main(["generate", "apple", "--steps", "3", "--out", str(tmp_path / "r"), "--video", "gif",
               "--save-every", "1"] + model_args + extra)
    assert rc == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_missing_imageio_ffmpeg_is_reported_before_the_run(model_args, tmp_path, capsys, monkeypatch):
    import sys

    import vqclip.cli.generate as gen

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails as if not installed
    monkeypatch.setattr(gen, "load_models_from_args", lambda args: pytest.fail("models loaded before the check"))
    rc = main(["generate", "apple", "--steps", "2", "--save-every", "1", "--video", "--out", str(tmp_path / "r")]
              + model_args)
    assert rc == 2
    err = capsys.readouterr().err
    assert 'pip install -e ".[video]" in the vqclip clone' in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("seed", ["-1", str(2**63), str(10**30)])
def test_seed_out_of_range_is_a_clear_error(model_args, tmp_path, capsys, seed):
    rc = main(["generate", "apple", "--steps", "1", "--seed", seed, "--out", str(tmp_path / "r")] + model_args)
    assert rc == 2
    err = capsys.readouterr().err
    assert "--seed" in err and str(2**63 - 1) in err and "Traceback" not in err


def test_largest_seed_is_accepted(model_args, tmp_path):
    out = tmp_path / "r"
    assert main(["generate", "apple", "--steps", "1", "--seed", str(2**63 - 1), "--out", str(out)] + model_args) == 0
    assert json.loads((out / "run.json").read_text())["seed"] == 2**63 - 1


@pytest.mark.parametrize("text, match", [
    ("size: 40\n", "size"),
    ("steps: abc\n", "steps"),
    ("video: avi\n", "video"),
    ("quiet: 3\n", "quiet"),
    ("image_prompt: {a: 1}\n", "image_prompt"),
])
def test_config_values_are_checked_like_flags(model_args, tmp_path, capsys, text, match):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    rc = main(["generate", "apple", "--config", str(cfg), "--out", str(tmp_path / "r")] + model_args)
    assert rc == 2  # checked even where a flag on the command line overrides the value
    err = capsys.readouterr().err
    assert f"--config {cfg}: {match}" in err and "Traceback" not in err


def test_config_list_values_are_accepted(model_args, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("size: [40, 24]\nsteps: 1\nseed: 3\n")
    out = tmp_path / "r"
    args = [a for a in model_args]
    i = args.index("--size")
    del args[i:i + 3]
    assert main(["generate", "apple", "--config", str(cfg), "--out", str(out)] + args) == 0
    assert json.loads((out / "run.json").read_text())["settings"]["size"] == [40, 24]


def test_a_rule_broken_by_a_config_value_names_the_file_and_key(model_args, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("cut-pow: -1\n")
    rc = main(["generate", "apple", "--config", str(cfg), "--out", str(tmp_path / "r")] + model_args)
    assert rc == 2
    err = capsys.readouterr().err
    assert "--cut-pow" in err and f"--config {cfg}, key 'cut-pow'" in err
    # the same value given on the command line is blamed on the flag alone
    rc = main(["generate", "apple", "--cut-pow", "-1", "--out", str(tmp_path / "r")] + model_args)
    assert rc == 2 and "--config" not in capsys.readouterr().err


def _projection(tmp_path, clip, space="forget"):
    import torch

    from vqclip.projections import save_projection

    q, _ = torch.linalg.qr(torch.randn(32, 8, generator=torch.Generator().manual_seed(0)))
    return save_projection(tmp_path / f"{space}.safetensors", q.T, space, clip.identity)


def test_projection_without_space_uses_the_files_space(model_args, tmp_path, tiny_clip):
    proj = _projection(tmp_path, tiny_clip, "learn")
    out = tmp_path / "run"
    assert main(["generate", "apple", "--projection", str(proj), "--steps", "1", "--seed", "1", "--out", str(out)]
                + model_args) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["space"]["space"] == "learn" and record["space_name"] == "learn"


def test_explicit_clip_space_with_a_projection_is_an_error(model_args, tmp_path, tiny_clip, capsys):
    proj = _projection(tmp_path, tiny_clip, "learn")
    rc = main(["generate", "apple", "--space", "clip", "--projection", str(proj), "--steps", "1",
               "--out", str(tmp_path / "r")] + model_args)
    assert rc == 2
    err = capsys.readouterr().err
    assert "--space" in err and "clip" in err and "takes no projection" in err
    assert not (tmp_path / "r").exists()


def test_unreadable_init_image_creates_no_run_folder(model_args, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rc = main(["generate", "apple", "--init-image", str(bad), "--out", str(tmp_path / "r")] + model_args)
    assert rc == 2
    assert "--init-image" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_run_that_fails_before_writing_removes_the_folder_it_created(model_args, tmp_path, monkeypatch):
    import vqclip.generation as generation

    def broken(*a, **k):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(generation, "run", broken)
    assert main(["generate", "apple", "--steps", "1", "--out", str(tmp_path / "r")] + model_args) == 70
    assert not (tmp_path / "r").exists()


def test_missing_projection_hint_is_a_runnable_command(model_args, tmp_path, tiny_clip_id, capsys):
    import shlex

    rc = main(["generate", "apple", "--space", "learn", "--cache-dir", str(tmp_path / "c"),
               "--out", str(tmp_path / "r")] + model_args)
    assert rc == 2
    err = capsys.readouterr().err
    command = err.split("Train one with: ")[1].split("  — ")[0]
    argv = shlex.split(command)
    path = tiny_clip_id.split(":", 1)[1]
    assert argv[argv.index("--clip") + 1] == f"local-dir:{path}"
    assert argv[argv.index("--cache-dir") + 1] == str(tmp_path / "c")
    assert "--pretrained" not in argv
