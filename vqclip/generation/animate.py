"""Zoom / pan / rotate animations: each frame starts from the previous one, moved, and runs a few more steps.

After nerdyrodent/VQGAN-CLIP's zoom video (`-zvid`: every `--zoom_save_every` iterations the image is zoomed about
its centre, shifted with wrap-around, re-encoded by the VQGAN and optimised on with a fresh optimiser) and Crowson's
zoom-and-shift notebooks. Frame i is a run of `run()` with seed `seed + i`; the loss is computed in the chosen space
exactly as for a still image.

Every finished frame is saved at once (frames/NNNNNN.png, atomically) with a state file holding the recipe, so
re-running the same command continues from the last saved frame. The next frame always starts from the saved PNG,
never from the unrounded tensor, so a resumed animation has the frames of an uninterrupted one (bit for bit on the
CPU).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from .. import __version__
from ..errors import SEED_MAX, VqclipError, bad_arg, choices_hint
from .loop import Result, Settings, StepInfo, run

EDGES = ("wrap", "reflect", "border", "black")
STATE_NAME = "animation.json"
STATE_FORMAT = "vqclip.animation"
VIDEO_FORMATS = ("mp4", "gif")
_FRAME = re.compile(r"(\d{6})\.png")


@dataclass(frozen=True)
class Motion:
    """How a frame is moved before the next one is optimised from it: zoomed and rotated about the centre, then
    shifted. `edge` fills what the move uncovers: wrap (the image tiles the plane, like nerdyrodent's
    ImageChops.offset), reflect (mirrored at the border), border (edge pixels repeated) or black (like PIL's crop
    beyond the image in nerdyrodent's zoom_at)."""

    zoom: float = 1.0  # per frame; 1.02 = 2 % closer, 0.98 = 2 % farther
    shift: tuple[float, float] = (0.0, 0.0)  # pixels per frame; +x moves the picture right, +y down
    rotate: float = 0.0  # degrees per frame, counter-clockwise as seen on screen
    edge: str = "wrap"

    def checked(self) -> "Motion":
        """The motion with plain floats, after refusing values that cannot work (one-line errors naming the flag)."""
        zoom = _number(self.zoom, "--zoom", "Try --zoom 1.02 (closer each frame) or 0.98 (farther).")
        if not zoom > 0:
            raise bad_arg("--zoom", "the zoom per frame must be above 0 (1 = no zoom, 1.02 = 2 % closer each frame)",
                          self.zoom, "Try --zoom 1.02 (closer each frame) or 0.98 (farther).")
        try:
            dx, dy = self.shift
        except (TypeError, ValueError):
            raise bad_arg("--shift", "the shift is two numbers, DX DY pixels per frame", self.shift,
                          "Write e.g. --shift 2 0.") from None
        shift = (_number(dx, "--shift", "Write e.g. --shift 2 0."), _number(dy, "--shift", "Write e.g. --shift 2 0."))
        rotate = _number(self.rotate, "--rotate", "Write e.g. --rotate 0.5 (degrees per frame).")
        if self.edge not in EDGES:
            raise bad_arg("--edge", "unknown way to fill uncovered edges", self.edge, choices_hint(EDGES))
        return Motion(zoom, shift, rotate, self.edge)

    @property
    def is_identity(self) -> bool:
        return self.zoom == 1 and self.shift == (0, 0) and self.rotate % 360 == 0

    def to_dict(self) -> dict:
        return {"zoom": self.zoom, "shift": list(self.shift), "rotate": self.rotate, "edge": self.edge}


def _number(value: Any, arg: str, fix: str) -> float:
    if isinstance(value, bool):
        raise bad_arg(arg, "must be a number", value, fix)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise bad_arg(arg, "must be a number", value, fix) from None
    if not math.isfinite(number):
        raise bad_arg(arg, "must be a finite number", value, fix)
    return number


def _source_coordinates(height: int, width: int, motion: Motion) -> tuple[torch.Tensor, torch.Tensor]:
    """For every output pixel, the (x, y) pixel coordinates in the input that the motion brings there: the inverse
    of p -> centre + zoom * R(rotate) (p - centre) + shift, with R counter-clockwise on screen (y points down)."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")  # (H, W) each
    cx, cy = (width - 1) / 2, (height - 1) / 2
    u = (xs - motion.shift[0] - cx) / motion.zoom
    v = (ys - motion.shift[1] - cy) / motion.zoom
    theta = math.radians(motion.rotate)
    cos, sin = math.cos(theta), math.sin(theta)
    return cx + u * cos - v * sin, cy + u * sin + v * cos


def transform_image(image: torch.Tensor, motion: Motion) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] moved by `motion` (bicubic resampling, clamped to [0, 1]).

    No motion returns an exact copy; a whole-pixel shift with edge wrap is an exact roll (ImageChops.offset)."""
    motion = motion.checked()
    if motion.is_identity:
        return image.clone()
    n, c, h, w = image.shape
    dx, dy = motion.shift
    if motion.edge == "wrap" and motion.zoom == 1 and motion.rotate % 360 == 0 and dx.is_integer() \
            and dy.is_integer():
        return torch.roll(image, shifts=(int(dy), int(dx)), dims=(2, 3))
    x, y = _source_coordinates(h, w, motion)  # (H, W) float64
    source, padding, pad = image.float(), "border", 0
    if motion.edge == "wrap":
        pad = 2  # the reach of the bicubic kernel: taps beyond the border read the opposite side
        x, y = torch.remainder(x, w), torch.remainder(y, h)
        source = F.pad(source, (pad, pad, pad, pad), mode="circular")
    elif motion.edge == "reflect":
        padding = "reflection"
    # pixel coordinates -> grid_sample's [-1, 1] (align_corners=False: pixel i spans [i - 0.5, i + 0.5])
    gx = (2 * (x + pad) + 1) / (w + 2 * pad) - 1
    gy = (2 * (y + pad) + 1) / (h + 2 * pad) - 1
    grid = torch.stack([gx, gy], dim=-1).to(torch.float32).unsqueeze(0).expand(n, h, w, 2)
    out = F.grid_sample(source, grid.to(image.device), mode="bicubic", padding_mode=padding, align_corners=False)
    if motion.edge == "black":
        inside = (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)  # (H, W)
        out = out * inside.to(out.dtype).to(image.device)
    return out.clamp(0, 1).to(image.dtype)


def pil_to_tensor(image) -> torch.Tensor:
    """PIL image -> (1, 3, H, W) float in [0, 1]."""
    import numpy as np

    array = np.asarray(image.convert("RGB")).copy()  # (H, W, 3) uint8
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).float().div(255)


def check_animation_args(frames: int, steps_per_frame: int, motion: Motion, video: str | None = None,
                         fps: int = 12) -> Motion:
    """Refuse values that cannot make an animation, before any model is loaded; returns the checked motion."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise bad_arg("--frames", "an animation needs at least one frame", frames, "Try --frames 100.")
    if isinstance(steps_per_frame, bool) or not isinstance(steps_per_frame, int) or steps_per_frame < 1:
        raise bad_arg("--steps-per-frame", "each frame after the first needs at least one optimisation step",
                      steps_per_frame, "Try --steps-per-frame 10.")
    if video is not None:
        if video not in VIDEO_FORMATS:
            raise bad_arg("--video", "unknown video format", video, choices_hint(VIDEO_FORMATS))
        if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
            raise bad_arg("--fps", "the frame rate must be a whole number above 0", fps, "Try --fps 12.")
    return motion.checked()


def check_seed_range(seed: int | None, frames: int) -> None:
    """Frame i uses seed + i: the last one must still be a valid seed."""
    if seed is not None and isinstance(seed, int) and seed + frames - 1 > SEED_MAX:
        raise bad_arg("--seed", f"frame i uses seed + i, so the seed plus --frames - 1 ({frames - 1}) must be at "
                      f"most {SEED_MAX}", seed, "Use a smaller seed, e.g. --seed 42.")


def frame_settings(base: Settings, index: int, steps_per_frame: int) -> Settings:
    """The settings of frame `index`: frame 0 is `base`; frame i > 0 runs `steps_per_frame` steps with seed
    base.seed + i. Prompt phases ("a ^ b", change_every) count the steps of the whole animation: see
    `frame_first_step`."""
    if index == 0:
        return base
    return dataclasses.replace(base, seed=int(base.seed) + index, steps=steps_per_frame)


def frame_first_step(base: Settings, index: int, steps_per_frame: int) -> int:
    """How many steps of the animation come before frame `index` (frame 0 runs base.steps)."""
    return 0 if index == 0 else base.steps + (index - 1) * steps_per_frame


def recipe(base: Settings, models, space, steps_per_frame: int, motion: Motion) -> dict:
    """What determines the frames (the seed aside): a folder is resumed only by a command with the same recipe.

    --frames is left out (raising it extends an animation); so are the device, file paths, --video and --fps."""
    settings = base.to_dict()
    settings.pop("seed", None)
    info = models.describe()
    vqgan = {k: v for k, v in info.get("vqgan", {}).items() if k not in ("checkpoint", "config")}
    return {"settings": settings, "animation": {"steps_per_frame": steps_per_frame, **motion.to_dict()},
            "clip": info.get("clip", {}), "vqgan": vqgan,
            "space": {k: v for k, v in space.describe().items() if k != "path"}}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _differences(old: Any, new: Mapping) -> list[str]:
    """The recipe entries ("settings.prompts", "animation.zoom") whose values differ."""
    if not isinstance(old, Mapping):
        return ["the whole recipe"]
    out = []
    for part in sorted(set(old) | set(new)):
        a, b = old.get(part), new.get(part)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += [f"{part}.{k}" for k in sorted(set(a) | set(b)) if _digest(a.get(k)) != _digest(b.get(k))]
        elif _digest(a) != _digest(b):
            out.append(part)
    return out


def read_state(out: str | Path) -> dict | None:
    """The animation state vqclip wrote in `out`, or None (no file, or not one of vqclip's)."""
    try:
        from ..untrusted import read_json

        state = read_json(Path(out) / STATE_NAME)
    except (OSError, ValueError):  # absent, or not a bounded, UTF-8 JSON file: not vqclip's state
        return None
    ok = (isinstance(state, dict) and state.get("format") == STATE_FORMAT and isinstance(state.get("recipe"), dict)
          and isinstance(state.get("frames"), list) and isinstance(state.get("seed"), int))
    return state if ok else None


def check_animation_dir(out: str | Path, overwrite: bool = False) -> Path:
    """Before any model is loaded: a folder holding vqclip's animation state may be resumed (decided once the
    recipe is known); any other folder goes through the usual run-folder checks."""
    from ..io import check_writable
    from ..outputs import check_run_dir

    out = Path(out)
    if read_state(out) is not None:
        return check_writable(out, "--out")
    return check_run_dir(out, overwrite)


def _frame_path(out: Path, index: int) -> Path:
    from ..outputs import FRAMES_DIR

    return out / FRAMES_DIR / f"{index:06d}.png"


def _remove_frames(out: Path, first: int = 0) -> None:
    """Remove the frames vqclip wrote from index `first` on (only frames/NNNNNN.png files; nothing else)."""
    from ..outputs import FRAMES_DIR

    folder = out / FRAMES_DIR
    if not folder.is_dir() or folder.is_symlink():
        return
    for path in folder.iterdir():
        m = _FRAME.fullmatch(path.name)
        if m and int(m.group(1)) >= first and path.is_file() and not path.is_symlink():
            path.unlink()


def _remove_videos(out: Path) -> None:
    from ..outputs import VIDEO_NAMES

    for name in VIDEO_NAMES:
        video = out / name
        if video.is_file() or video.is_symlink():
            video.unlink()


@dataclass
class Animation:
    """The outcome of `animate`: which frames exist, how the run ended, and what was written."""

    out: Path
    status: str  # finished | interrupted | nonfinite
    message: str | None
    frames: int  # asked for
    frames_done: int  # saved, 0 .. frames
    resumed_from: int  # the first frame this call made (0 for a new animation)
    seeds: list[int]
    image: Path | None = None  # image.png: the last saved frame, with its recipe
    video: Path | None = None
    record: dict = field(default_factory=dict)


def animate(settings: Settings, models, space, out: str | Path, *, frames: int, steps_per_frame: int,
            motion: Motion = Motion(), overwrite: bool = False, video: str | None = None, fps: int = 12,
            prompt: str | None = None, callback: Callable[[int, StepInfo], None] | None = None,
            say: Callable[[str], None] | None = None, record_extra: Mapping[str, Any] | None = None) -> Animation:
    """Make `frames` frames in folder `out`: frame 0 runs `settings.steps` steps from random codes or the init
    image; frame i > 0 moves frame i - 1 by `motion` and runs `steps_per_frame` steps from it with seed seed + i.

    `models`: a loaded `Models`; `space`: the Space of the loss (as for `run`). A folder that already holds this
    recipe's frames is continued from its last saved frame (the seed comes from the folder when `settings.seed` is
    None); a folder holding another animation is refused unless `overwrite`. `callback(frame, StepInfo)` runs as in
    `run`; raising KeyboardInterrupt in it stops after the frames already saved. At the end: image.png (the last
    frame), run.json with an `animation` section and, when `video` is "mp4" or "gif", the video of all frames.
    """
    say = say or (lambda text: None)
    motion = check_animation_args(frames, steps_per_frame, motion, video, fps)
    plan = _plan(settings, models, space, Path(out), frames, steps_per_frame, motion, overwrite, video, say)
    seeds = [int(plan.base.seed) + i for i in range(frames)]
    first = len(plan.done)
    status, message, last_image = _make_frames(plan, models, space, callback)
    animation = Animation(plan.out, status, message, frames, len(plan.done), first, seeds)
    if plan.done:
        _write_outputs(animation, plan, models, space, last_image, prompt, video, fps, record_extra)
    return animation


@dataclass
class _Plan:
    """What the frames of one `animate` call share: the folder, the resolved settings (with the folder's seed when
    resuming), the recipe kept in the state file, and the frames saved so far (appended to as each is saved)."""

    out: Path
    base: Settings
    wanted: dict
    done: list[dict]
    frames: int
    steps_per_frame: int
    motion: Motion


def _plan(settings: Settings, models, space, out: Path, frames: int, steps_per_frame: int, motion: Motion,
          overwrite: bool, video: str | None, say: Callable[[str], None]) -> _Plan:
    """Check the video support and the seeds, resolve the settings against the VQGAN, and open the folder: resume
    this recipe's frames (dropping any saved after the state was last written), start over, or start new."""
    from ..outputs import check_video_support

    if video:
        check_video_support(video)  # before the frames, not after them
    requested_seed = settings.seed
    check_seed_range(requested_seed, frames)
    base, notices = settings.resolved(models.vqgan.factor)
    for notice in notices:
        say(f"note: {notice}")
    wanted = recipe(base, models, space, steps_per_frame, motion)
    base, done = _open_folder(out, base, wanted, requested_seed, frames, overwrite)
    check_seed_range(int(base.seed), frames)
    first = len(done)
    if first:
        _remove_frames(out, first)  # a frame saved just before a crash, whose state was never written
        say(f"resuming: {_span(first)} of {frames} done; continuing with frame {first}"
            if first < frames else f"all {frames} frames are already done")
    return _Plan(out, base, wanted, done, frames, steps_per_frame, motion)


def _make_frames(plan: _Plan, models, space, callback) -> tuple[str, str | None, Any]:
    """Run and save the frames not yet done, each from the previous saved frame moved by the motion, writing the
    state after each. Returns (status, message, the last saved frame's image or None)."""
    from ..outputs import save_frame

    out, base, done, first = plan.out, plan.base, plan.done, len(plan.done)
    previous = _load_frame(_frame_path(out, first - 1)) if first else None
    status, message = "finished", None
    try:
        for index in range(first, plan.frames):
            current = frame_settings(base, index, plan.steps_per_frame)
            start = None if previous is None else transform_image(pil_to_tensor(previous), plan.motion)
            wrapped = None if callback is None else (lambda info, i=index: callback(i, info))
            result = run(current, models.clip, models.vqgan, space, wrapped, start=start,
                         step_offset=frame_first_step(base, index, plan.steps_per_frame))
            if result.status != "finished":
                status = result.status
                message = f"frame {index} was not saved: {result.message}"
                break
            save_frame(out, index, result.image)
            done.append(_frame_entry(index, frame_first_step(base, index, plan.steps_per_frame), result))
            _write_state(out, base, plan.wanted, done)
            if index == first:
                _remove_videos(out)  # an older video lacks the new frames
            previous = result.image
    except KeyboardInterrupt:
        status, message = "interrupted", None
    if status == "interrupted":
        saved = f"{_span(len(done))} saved" if done else "no frame saved"
        message = f"interrupted during frame {len(done)} of {plan.frames} (counted from 0); {saved}"
    return status, message, previous


def _write_outputs(animation: Animation, plan: _Plan, models, space, image, prompt: str | None, video: str | None,
                   fps: int, record_extra: Mapping[str, Any] | None) -> None:
    """image.png (the last saved frame) and run.json with its `animation` section, and the video once every frame
    is done; fills in `animation`."""
    from ..outputs import build_record, write_run, write_video

    base, done = plan.base, plan.done
    extra = {"space_name": space.name, **dict(record_extra or {}),
             "animation": _animation_record(base, plan.frames, plan.steps_per_frame, plan.motion, done,
                                            animation.seeds, video, fps)}
    record_result = _record_result(base, image, done, animation.status, animation.message)
    animation.record = build_record(record_result, models.describe(), space.describe(), prompt or _prompt_text(base),
                                    extra)
    animation.image = write_run(plan.out, record_result, animation.record)
    if video and animation.status == "finished":
        animation.video = write_video(plan.out, fps, video)


def _open_folder(out: Path, base: Settings, wanted: dict, requested_seed: int | None, frames: int,
                 overwrite: bool) -> tuple[Settings, list[dict]]:
    """Resume the animation of this recipe in `out`, start over (`overwrite`), or start a new one in a folder the
    run-folder rules allow. Returns the settings (with the folder's seed when resuming) and the frames done."""
    from ..outputs import prepare_run_dir

    state = read_state(out)
    if state is None:
        prepare_run_dir(out, overwrite)
        return base, []
    differ = _differences(state["recipe"], wanted)
    if requested_seed is not None and requested_seed != state["seed"]:
        differ.append("seed")
    if not differ:
        base = dataclasses.replace(base, seed=state["seed"])
        done = [dict(f) for f in state["frames"] if isinstance(f, dict)]
        _check_resumable(out, done, frames, base)
        return base, done
    if not overwrite:
        raise bad_arg("--out", f"this folder holds an animation made with other settings (they differ in: "
                      f"{', '.join(differ[:6])}{' ...' if len(differ) > 6 else ''})", str(out),
                      "Run its own command again to continue it, choose another --out, or add --overwrite to "
                      "start it over.")
    # The state file shows the folder holds vqclip's animation: remove only the names vqclip writes there.
    _remove_frames(out)
    _remove_videos(out)
    (out / STATE_NAME).unlink()
    return base, []


def _span(count: int) -> str:
    """`frame 0` or `frames 0-4`: the first `count` frames."""
    return "frame 0" if count == 1 else f"frames 0-{count - 1}"


def _check_resumable(out: Path, done: list[dict], frames: int, base: Settings) -> None:
    count = len(done)
    if count > frames:
        raise bad_arg("--frames", f"this folder already holds {count} frames of this animation", frames,
                      f"Ask for at least --frames {count}, or add --overwrite to start it over.")
    missing = [i for i in range(count) if not _frame_path(out, i).is_file()]
    if missing:
        raise bad_arg("--out", f"frame {missing[0]:06d}.png of this animation is missing, so it cannot be "
                      "continued", str(out), "Add --overwrite to start it over, or choose another --out.")
    if count:
        size = _load_frame(_frame_path(out, count - 1)).size
        if tuple(size) != tuple(base.size):
            raise bad_arg("--out", f"the last frame is {size[0]}x{size[1]} pixels, not the {base.size[0]}x"
                          f"{base.size[1]} of this animation", str(out),
                          "Add --overwrite to start it over, or choose another --out.")


def _load_frame(path: Path):
    from ..untrusted import open_image

    try:
        with open_image(path) as im:
            return im.convert("RGB")
    except OSError as e:
        raise VqclipError(f"--out: could not read {path} to continue the animation ({e}). Add --overwrite to start "
                          "it over, or choose another --out.") from e


def _frame_entry(index: int, first_step: int, result: Result) -> dict:
    entry = {"frame": index, "seed": result.seed, "first_step": first_step, "steps": result.steps_done,
             "loss": result.loss, "losses": result.losses, "seconds": round(result.seconds, 3)}
    if result.best_step is not None:
        entry["best_step"] = result.best_step
    return entry


def _write_state(out: Path, base: Settings, wanted: dict, done: list[dict]) -> None:
    from ..io import write_json

    write_json(out / STATE_NAME, {"format": STATE_FORMAT, "vqclip_version": __version__, "seed": int(base.seed),
                                  "fingerprint": _digest(wanted), "recipe": wanted, "frames_done": len(done),
                                  "frames": done})


def _animation_record(base, frames, steps_per_frame, motion, done, seeds, video, fps) -> dict:
    return {"frames": frames, "frames_done": len(done), "first_frame_steps": base.steps,
            "steps_per_frame": steps_per_frame, **motion.to_dict(), "seeds": seeds[:len(done)],
            "seed_rule": "frame i uses seed + i", "video": f"video.{video}" if video and len(done) == frames else None,
            "fps": fps if video else None, "state": STATE_NAME, "per_frame": done}


def _record_result(base: Settings, image, done: list[dict], status: str, message: str | None) -> Result:
    """A Result for run.json and image.png: the last saved frame, the animation's settings, the steps of all."""
    last = done[-1]
    return Result(image=image, latent=torch.empty(0), loss=last.get("loss", float("nan")),
                  losses=dict(last.get("losses") or {}), history=[], settings=base,
                  steps_done=sum(int(f.get("steps", 0)) for f in done), status=status, message=message,
                  seconds=sum(float(f.get("seconds", 0)) for f in done))


def _prompt_text(settings: Settings) -> str:
    return " | ".join(p.text for p in settings.prompts)
