"""`vqclip animate`: the frame motion, frames and record, resuming, and the checks of every new option."""

import json

import pytest
import torch

from vqclip.cli import main
from vqclip.errors import VqclipError
from vqclip.generation import Settings, parse_prompts
from vqclip.generation.animate import (STATE_NAME, Motion, animate, check_animation_args, frame_first_step,
                                       frame_settings, transform_image)
from vqclip.generation.targets import active_targets

# ----------------------------------------------------------------------------------------------- the motion


def _marker(h=32, w=32, x=3, y=5):
    image = torch.zeros(1, 3, h, w)
    image[0, :, y, x] = torch.tensor([1.0, 0.5, 0.25])
    return image


def test_no_motion_is_an_exact_copy():
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for motion in (Motion(), Motion(rotate=360.0), Motion(edge="black")):
        out = transform_image(image, motion)
        assert torch.equal(out, image) and out is not image


def test_whole_pixel_shift_moves_the_pattern_and_wraps():
    image = _marker()
    out = transform_image(image, Motion(shift=(4, 2)))
    assert torch.equal(out[0, :, 7, 7], image[0, :, 5, 3]) and out.sum() == image.sum()
    wrapped = transform_image(image, Motion(shift=(30, -6)))  # x 3 + 30 -> 1, y 5 - 6 -> 31
    assert torch.equal(wrapped[0, :, 31, 1], image[0, :, 5, 3]) and wrapped.sum() == image.sum()


def test_shift_with_black_edges_moves_by_the_pixels_and_blackens_what_it_uncovers():
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = transform_image(image, Motion(shift=(3, 2), edge="black"))
    assert torch.allclose(out[..., 2:, 3:], image[..., :-2, :-3], atol=1e-5)
    assert out[..., :2, :].abs().max() == 0 and out[..., :, :3].abs().max() == 0


def test_fractional_shift_interpolates_a_ramp():
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32).contiguous()
    out = transform_image(ramp, Motion(shift=(0.5, 0), edge="border"))
    step = 1 / 31
    assert torch.allclose(out[..., 4:28], ramp[..., 4:28] - step / 2, atol=1e-5)


def test_zoom_is_about_the_centre():
    w = 32
    ramp = torch.linspace(0, 1, w).view(1, 1, 1, w).expand(1, 3, w, w).contiguous()
    closer = transform_image(ramp, Motion(zoom=2.0, edge="border"))
    c = (w - 1) / 2
    expected = (c + (torch.arange(w) - c) / 2) / (w - 1)  # each output pixel shows the input halfway to the centre
    # PyTorch's bicubic kernel (a = -0.75) follows a ramp to within a few hundredths of a pixel step
    assert torch.allclose(closer[0, 0, 16], expected, atol=0.1 / (w - 1))
    farther = transform_image(torch.ones(1, 3, w, w), Motion(zoom=0.5, edge="black"))
    assert farther[0, :, 0, 0].max() == 0 and farther[0, :, 16, 16].min() == 1  # black corners, centre kept


def test_rotate_turns_counter_clockwise_about_the_centre():
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    turned = transform_image(image, Motion(rotate=90.0))
    assert torch.allclose(turned, torch.rot90(image, 1, dims=(2, 3)), atol=1e-5)
    right_of_centre = _marker(x=31, y=15)  # on screen: after a quarter turn to the left it is at the top
    top = transform_image(right_of_centre, Motion(rotate=90.0))
    assert torch.allclose(top[0, :, 0, 15], right_of_centre[0, :, 15, 31], atol=1e-5)


@pytest.mark.parametrize("motion, flag", [
    (Motion(zoom=0), "--zoom"), (Motion(zoom=-1), "--zoom"), (Motion(zoom=float("inf")), "--zoom"),
    (Motion(shift=(1,)), "--shift"), (Motion(shift=("a", 0)), "--shift"), (Motion(rotate=float("nan")), "--rotate"),
    (Motion(edge="mirror"), "--edge")])
def test_bad_motion_is_refused_naming_the_flag(motion, flag):
    with pytest.raises(VqclipError) as e:
        check_animation_args(3, 2, motion)
    assert e.value.arg == flag and str(e.value).startswith(flag)


def test_frame_seeds_and_prompt_phases():
    base = Settings(prompts=parse_prompts("a"), story=[parse_prompts("b")], change_every=3, steps=4, seed=10)
    frames = [frame_settings(base, i, 2) for i in range(4)]
    assert frames[0] is base
    assert [f.seed for f in frames] == [10, 11, 12, 13] and [f.steps for f in frames] == [4, 2, 2, 2]
    # later frames start at steps 4, 6, 8 of the whole animation, and phases go on counting the animation's steps
    firsts = [frame_first_step(base, i, 2) for i in range(4)]
    assert firsts == [0, 4, 6, 8] and frames[1].story == base.story and frames[1].change_every == 3
    labels = [["a"], ["b"]]
    phase = [active_targets(labels, [], 3, first + k)[0] for first in firsts[1:] for k in range(2)]
    assert phase == ["b", "b", "a", "a", "a", "b"]  # steps 4..9: 4,5 -> b; 6,7,8 -> a; 9 -> b


# --------------------------------------------------------------------------------------- the Python API


@pytest.fixture()
def models(tiny_clip, tiny_vqgan):
    from vqclip.generation import Models

    return Models(tiny_clip, tiny_vqgan)


def _settings(seed=7):
    return Settings(prompts=parse_prompts("an apple"), size=(32, 32), steps=2, cutn=2, seed=seed)


def _frames(folder):
    return {p.name: p.read_bytes() for p in sorted((folder / "frames").glob("*.png"))}


def test_resume_after_an_interruption_gives_the_frames_of_an_uninterrupted_run(models, tmp_path, one_thread):
    from vqclip.spaces import identity_space

    space, motion = identity_space(), Motion(zoom=1.1, shift=(1.5, -1), rotate=3.0)
    whole = animate(_settings(), models, space, tmp_path / "whole", frames=3, steps_per_frame=2, motion=motion)
    assert whole.status == "finished" and whole.frames_done == 3 and whole.seeds == [7, 8, 9]

    def stop_in_frame_2(frame, info):
        if frame == 2:
            raise KeyboardInterrupt

    part = animate(_settings(), models, space, tmp_path / "part", frames=3, steps_per_frame=2, motion=motion,
                   callback=stop_in_frame_2)
    assert part.status == "interrupted" and part.frames_done == 2 and "frame 2" in part.message
    assert sorted(_frames(tmp_path / "part")) == ["000000.png", "000001.png"]
    assert json.loads((tmp_path / "part" / "run.json").read_text())["status"] == "interrupted"
    # the same recipe without a seed: the folder's seed is used, and frame 2 starts from the saved frame 1
    rest = animate(_settings(seed=None), models, space, tmp_path / "part", frames=3, steps_per_frame=2, motion=motion)
    assert rest.status == "finished" and rest.resumed_from == 2 and rest.seeds == [7, 8, 9]
    assert _frames(tmp_path / "part") == _frames(tmp_path / "whole")
    assert (tmp_path / "part" / "image.png").read_bytes() != b""
    record = json.loads((tmp_path / "part" / "run.json").read_text())
    assert record["status"] == "finished" and record["animation"]["seeds"] == [7, 8, 9]
    assert [f["frame"] for f in record["animation"]["per_frame"]] == [0, 1, 2]
    assert record["steps_done"] == 2 + 2 + 2 and record["seed"] == 7 and record["settings"]["steps"] == 2


def test_the_motion_reaches_the_next_frame(models, tmp_path, one_thread, monkeypatch):
    """Frame i > 0 is optimised from frame i - 1 moved by the motion (encoded by the VQGAN), frame 0 from scratch."""
    import vqclip.generation.animate as anim
    from vqclip.spaces import identity_space

    starts, real_run = [], anim.run

    def spy(settings, clip, vqgan, space, callback=None, *, start=None, **kw):
        starts.append(start)
        return real_run(settings, clip, vqgan, space, callback, start=start, **kw)

    monkeypatch.setattr(anim, "run", spy)
    motion = Motion(shift=(5, 0))
    animate(_settings(), models, identity_space(), tmp_path / "a", frames=2, steps_per_frame=1, motion=motion)
    assert starts[0] is None
    saved = anim.pil_to_tensor(anim._load_frame(tmp_path / "a" / "frames" / "000000.png"))
    assert torch.equal(starts[1], torch.roll(saved, 5, dims=3))


def test_a_frame_whose_loss_turns_nonfinite_stops_the_animation_and_is_not_saved(models, tmp_path, monkeypatch,
                                                                                 one_thread):
    import dataclasses

    import vqclip.generation.animate as anim
    from vqclip.spaces import identity_space

    real_run = anim.run

    def nan_in_frame_1(settings, clip, vqgan, space, callback=None, *, start=None, **kw):
        result = real_run(settings, clip, vqgan, space, callback, start=start, **kw)
        if start is not None:
            return dataclasses.replace(result, status="nonfinite", message="the loss became nan at step 2")
        return result

    monkeypatch.setattr(anim, "run", nan_in_frame_1)
    out = tmp_path / "a"
    result = animate(_settings(), models, identity_space(), out, frames=3, steps_per_frame=1, video="gif")
    assert result.status == "nonfinite" and result.frames_done == 1 and "frame 1 was not saved" in result.message
    assert sorted(_frames(out)) == ["000000.png"] and result.video is None and not (out / "video.gif").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "nonfinite"


# ---------------------------------------------------------------------------------------------- the CLI


@pytest.fixture()
def flags(tiny_model_flags):
    return tiny_model_flags + ["--size", "32", "32", "--steps", "2", "--steps-per-frame", "1"]


def test_cli_writes_frames_state_record_and_gif(flags, tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    rc = main(["animate", "an apple", "--frames", "3", "--zoom", "1.05", "--shift", "1", "0", "--rotate", "-2",
               "--seed", "4", "--video", "gif", "--fps", "5", "--out", str(out)] + flags)
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(out / "video.gif")
    assert sorted(_frames(out)) == ["000000.png", "000001.png", "000002.png"]
    assert (out / "video.gif").stat().st_size > 0 and (out / STATE_NAME).is_file()
    from PIL import Image

    assert Image.open(out / "video.gif").n_frames == 3
    anim = json.loads((out / "run.json").read_text())["animation"]
    assert anim["seeds"] == [4, 5, 6] and anim["zoom"] == 1.05 and anim["shift"] == [1.0, 0.0]
    assert anim["rotate"] == -2.0 and anim["edge"] == "wrap" and anim["video"] == "video.gif" and anim["fps"] == 5
    assert anim["first_frame_steps"] == 2 and anim["steps_per_frame"] == 1
    assert [f["steps"] for f in anim["per_frame"]] == [2, 1, 1]


def test_cli_interrupt_keeps_frames_says_how_to_resume_and_the_same_command_continues(flags, tmp_path, capsys,
                                                                                    monkeypatch, one_thread):
    import vqclip.generation.animate as anim

    real_run, calls = anim.run, []

    def stop_in_second_frame(settings, clip, vqgan, space, callback=None, *, start=None, **kw):
        calls.append(1)
        if len(calls) == 2:
            def callback(info):
                raise KeyboardInterrupt
        return real_run(settings, clip, vqgan, space, callback, start=start, **kw)

    monkeypatch.setattr(anim, "run", stop_in_second_frame)
    out = tmp_path / "run"
    argv = ["animate", "an apple", "--frames", "3", "--zoom", "1.1", "--seed", "1", "--out", str(out)] + flags
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "To continue from frame 1, run the same command again" in err
    assert sorted(_frames(out)) == ["000000.png"]
    assert main(argv) == 0
    assert "resuming: frame 0 of 3 done; continuing with frame 1" in capsys.readouterr().err
    assert sorted(_frames(out)) == ["000000.png", "000001.png", "000002.png"]
    assert main(argv[:3] + ["5"] + argv[4:]) == 0  # a higher --frames extends the animation
    assert len(_frames(out)) == 5 and json.loads((out / "run.json").read_text())["animation"]["frames_done"] == 5
    capsys.readouterr()
    assert main(argv[:3] + ["4"] + argv[4:]) == 2  # fewer frames than the folder holds
    assert "--frames: this folder already holds 5 frames" in capsys.readouterr().err and len(_frames(out)) == 5


def test_cli_refuses_another_animation_in_the_folder_unless_overwrite(flags, tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    base = ["animate", "an apple", "--frames", "2", "--seed", "1", "--out", str(out)] + flags
    assert main(base + ["--zoom", "1.1"]) == 0
    (out / "notes.txt").write_text("mine")
    before = _frames(out)
    assert main(base + ["--zoom", "1.2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "animation.zoom" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert _frames(out) == before
    assert main(base + ["--seed", "2"] + ["--zoom", "1.1"]) == 2  # another seed is another animation
    assert "seed" in capsys.readouterr().err
    (out / "run.json").unlink()  # as if the first animation had been killed before writing it
    assert main(base + ["--zoom", "1.2", "--overwrite"]) == 0
    assert json.loads((out / "run.json").read_text())["animation"]["zoom"] == 1.2
    assert (out / "notes.txt").read_text() == "mine"  # never a file vqclip did not write


def test_cli_never_overwrites_a_folder_of_other_files(flags, tmp_path, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.png").write_bytes(b"x")
    assert main(["animate", "an apple", "--frames", "2", "--out", str(out), "--overwrite"] + flags) == 2
    assert "never deletes files it did not write" in capsys.readouterr().err
    assert (out / "holiday.png").read_bytes() == b"x"


@pytest.mark.parametrize("extra, flag", [(["--frames", "0"], "--frames"), (["--frames", "-3"], "--frames"),
                                         (["--zoom", "0"], "--zoom"), (["--zoom", "-1"], "--zoom"),
                                         (["--zoom", "inf"], "--zoom"), (["--shift", "nan", "0"], "--shift"),
                                         (["--steps-per-frame", "0"], "--steps-per-frame"),
                                         (["--video", "gif", "--fps", "0"], "--fps"),
                                         (["--video", "gif", "--frames", "0"], "--frames"),
                                         (["--seed", str(2**63 - 2), "--frames", "5"], "--seed")])
def test_cli_bad_values_are_one_line_errors_before_any_model_loads(extra, flag, tmp_path, capsys):
    # --clip names nothing that exists: the check must come first
    rc = main(["animate", "an apple", "--clip", "no-such-clip", "--out", str(tmp_path / "r"), "-q"] + extra)
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vqclip animate: error: {flag}") and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_cli_unknown_video_format_is_refused_by_its_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["animate", "an apple", "--video", "avi"])
    assert e.value.code == 2 and "--video" in capsys.readouterr().err


def test_config_file_sets_animation_options_and_names_the_key_of_a_bad_value(flags, tmp_path, capsys, one_thread):
    cfg = tmp_path / "anim.yaml"
    cfg.write_text("zoom: 0\nframes: 1\n")
    assert main(["animate", "an apple", "--config", str(cfg), "--out", str(tmp_path / "bad")] + flags) == 2
    err = capsys.readouterr().err
    assert "--zoom" in err and "key 'zoom'" in err
    cfg.write_text("zoom: 1.03\nshift: [1, 2]\nrotate: 4\nedge: reflect\nframes: 1\nsteps_per_frame: 3\n")
    out = tmp_path / "good"
    assert main(["animate", "an apple", "--config", str(cfg), "--out", str(out)] + flags[:-2]) == 0
    anim = json.loads((out / "run.json").read_text())["animation"]
    assert (anim["zoom"], anim["shift"], anim["rotate"], anim["edge"]) == (1.03, [1.0, 2.0], 4.0, "reflect")
    assert anim["steps_per_frame"] == 3 and anim["frames"] == 1
