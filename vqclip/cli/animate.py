"""`vqclip animate PROMPT`: a zoom / pan / rotate video, each frame grown from the previous one (resumable)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import bad_arg
from .common import add_quiet_arg, check_memory, command_parser, output_errors, sigterm_as_interrupt
from .generate import VIDEO_FORMATS, add_model_args, add_settings_args, load_models_from_args, settings_from_args

PROG = "vqclip animate"


def register(sub) -> None:
    from .choices import EDGES

    p = command_parser(
        sub, "animate", help="zoom / pan / rotate video, each frame grown from the previous one",
        description="Make an animation with VQGAN+CLIP: frame 0 is a still image (--steps steps); every later frame "
                    "takes the one before, zooms and rotates it about the centre, shifts it, and optimises it for "
                    "--steps-per-frame steps with seed --seed + its number (like nerdyrodent's -zvid zoom video). "
                    "The CLIP loss is in the clip, learn or forget space, as for `vqclip generate`. Each frame is "
                    "saved as frames/NNNNNN.png as soon as it is done: running the same command again (same --out) "
                    "continues from the last saved frame, and a higher --frames extends a finished animation.",
        examples=['vqclip animate "a city of glass, trending on artstation" --frames 120 --steps-per-frame 10 '
                  '--zoom 1.02 --video --out outputs/glass-city',
                  'vqclip animate "an ancient forest" --space forget --frames 60 --shift 2 0 --rotate 0.5 '
                  '--edge reflect --video gif --fps 8'])
    p.add_argument("prompt", nargs="?", default=None, metavar="PROMPT", help="text prompt(s)")
    p.add_argument("--space", default=None, choices=("clip", "learn", "forget"),
                   help="embedding space of the CLIP loss (default: the space of the --projection file, else clip)")
    add_settings_args(p)
    p._option_string_actions["--steps"].help = ("optimisation steps of frame 0, from random codes or --init-image "
                                                "(default 300); later frames run --steps-per-frame")
    g = p.add_argument_group("animation")
    g.add_argument("--frames", type=int, default=100, help="number of frames, frame 0 included (default 100)")
    g.add_argument("--steps-per-frame", type=int, default=10, metavar="K",
                   help="optimisation steps of each frame after the first (default 10; nerdyrodent's "
                        "--zoom_save_every)")
    g.add_argument("--zoom", type=float, default=1.0,
                   help="zoom about the centre per frame, above 0: 1.02 = 2%% closer, 0.98 = 2%% farther (default 1, "
                        "no zoom)")
    g.add_argument("--shift", nargs=2, type=float, default=[0.0, 0.0], metavar=("DX", "DY"),
                   help="pixels per frame; positive DX moves the picture right, positive DY down (default 0 0)")
    g.add_argument("--rotate", type=float, default=0.0, metavar="DEG",
                   help="degrees per frame, counter-clockwise; negative turns clockwise (default 0)")
    g.add_argument("--edge", default="wrap", choices=EDGES,
                   help="what fills the parts a move uncovers: wrap (the opposite side, like nerdyrodent's shift), "
                        "reflect (a mirror image), border (the edge pixels repeated) or black (default wrap)")
    add_model_args(p)
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="run folder (default outputs/<date>-<time>-<prompt>); give it to be able to resume")
    g.add_argument("--outputs-root", default="outputs", metavar="DIR", help="where default run folders go")
    g.add_argument("--overwrite", action="store_true",
                   help="start over in an --out folder that holds another run or animation (its frames and video "
                        "are removed; files vqclip did not write are never touched)")
    g.add_argument("--video", nargs="?", const="mp4", default=None, choices=VIDEO_FORMATS,
                   help="assemble the frames into video.mp4 (the bare flag; needs imageio-ffmpeg: pip install "
                        "-e \".[video]\") or video.gif once every frame is done; without it only the frames, "
                        "image.png and run.json are written")
    g.add_argument("--fps", type=int, default=12, help="video frame rate, above 0 (default 12)")
    g.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="YAML file of option values (e.g. `zoom: 1.02`); command-line flags override it")
    add_quiet_arg(p, help="no progress bar")
    p.set_defaults(func=run_animate, _parser=p)


def motion_from_args(args: argparse.Namespace):
    from ..generation.animate import Motion

    return Motion(zoom=args.zoom, shift=tuple(args.shift), rotate=args.rotate, edge=args.edge)


def run_animate(args: argparse.Namespace) -> int:
    from ..generation.animate import check_animation_args, check_animation_dir, check_seed_range
    from ..outputs import check_video_support, default_run_dir

    if not args.prompt and not args.image_prompt:
        raise bad_arg("PROMPT", "a text prompt (or --image-prompt) is required", args.prompt,
                      'Try: vqclip animate "a city of glass" --frames 60 --zoom 1.02.')
    motion = check_animation_args(args.frames, args.steps_per_frame, motion_from_args(args), args.video, args.fps)
    if args.video:
        check_video_support(args.video)
    prompt = args.prompt or ""
    settings = settings_from_args(args, prompt)
    settings.resolved(1)  # every check that does not need the VQGAN, before loading it
    check_seed_range(settings.seed, args.frames)
    out = Path(args.out) if args.out else default_run_dir(prompt or "image-prompt", args.outputs_root)
    check_animation_dir(out, args.overwrite)
    check_memory([(settings.size, settings.cutn, "")], args.device, args)
    with sigterm_as_interrupt():
        return _animate(args, settings, motion, prompt, out)


def _animate(args: argparse.Namespace, settings, motion, prompt: str, out: Path) -> int:
    from tqdm import tqdm

    from ..generation.animate import animate
    from ..outputs import discard_empty_run_dir

    models = load_models_from_args(args, spaces=[(args.space, args.projection, "--projection")], prog=PROG)
    space = models.space(args.space, args.projection)
    created = not out.exists()
    bar = None
    seen = {"frame": -1, "step": 0}  # the frame being run and its last reported step

    def on_step(frame: int, info) -> None:
        nonlocal bar
        if bar is None:  # the first step tells which frame this call starts from (a resumed one is past 0)
            before = 0 if frame == 0 else settings.steps + (frame - 1) * args.steps_per_frame
            total = settings.steps + (args.frames - 1) * args.steps_per_frame
            bar = tqdm(total=total, initial=before, unit="step", disable=args.quiet, dynamic_ncols=True)
        if frame != seen["frame"]:
            seen.update(frame=frame, step=0)
            bar.set_description(f"{space.name} frame {frame + 1}/{args.frames}", refresh=False)  # 1-based: 6 of 6
        bar.update(info.step - seen["step"])
        seen["step"] = info.step
        if info.step % 10 == 0 or info.step == info.steps:
            bar.set_postfix(loss=f"{info.loss:.4f}", refresh=False)

    def say(text: str) -> None:
        print(f"{PROG}: {text}", file=sys.stderr)

    try:
        with output_errors(out, "the frames saved so far are kept; run the same command again to continue"):
            result = animate(settings, models, space, out, frames=args.frames, steps_per_frame=args.steps_per_frame,
                             motion=motion, overwrite=args.overwrite, video=args.video, fps=args.fps, prompt=prompt,
                             callback=on_step, say=say,
                             record_extra={"load_seconds": round(models.load_seconds, 3)})
    except BaseException:
        if created:
            discard_empty_run_dir(out)  # an animation that failed before its first frame leaves no empty folder
        raise
    finally:
        if bar is not None:
            bar.close()
    again = "run the same command again" if args.out else f"run the same command again with --out {out}"
    if result.frames_done == 0:
        if created:
            discard_empty_run_dir(out)
        say(f"{result.message or result.status}; nothing was written")
        return 130 if result.status == "interrupted" else 1
    print(result.video or result.image)
    if result.status == "interrupted":
        say(f"{result.message}; wrote image.png and run.json. To continue from frame {result.frames_done}, {again}")
        return 130
    if result.status == "nonfinite":
        say(f"error: {result.message}; {result.frames_done} frame(s) saved before it")
        return 1
    return 0
