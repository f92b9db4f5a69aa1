"""Run folders: the image with its recipe in PNG text chunks, run.json, frames and video; all writes atomic."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

from . import __version__
from .cache import slug
from .errors import MissingExtraError, VqclipError, bad_arg, pip_extra
from .io import check_writable, save_png, write_json

IMAGE_NAME = "image.png"
RECORD_NAME = "run.json"
FRAMES_DIR = "frames"


def default_run_dir(prompt: str, root: str | os.PathLike = "outputs") -> Path:
    """`outputs/<date>-<time>-<slug of the prompt>`."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{stamp}-{slug(prompt.lower(), 48)}"


VIDEO_NAMES = ("video.mp4", "video.gif")
FRAME_NAME = re.compile(r"\d{6}\.png")  # what save_frame writes


def is_run_dir(path: str | os.PathLike) -> bool:
    """True when `path` holds a run.json that vqclip wrote (a JSON object with its `vqclip_version`)."""
    try:
        from .untrusted import read_json

        record = read_json(Path(path) / RECORD_NAME)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "vqclip_version" in record and "settings" in record


def check_run_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse a file, a folder that already holds files unless `overwrite`, and (even with `overwrite`) a folder
    that is not a vqclip run: --overwrite replaces a run, never a user's files. Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise bad_arg("--out", "must be a folder, not a file", str(path), "Choose another --out path.")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise bad_arg("--out", "the folder already holds files and runs are never overwritten silently",
                          str(path), "Choose another --out, or add --overwrite to replace its run.")
        if not is_run_dir(path):
            raise bad_arg("--out", "--overwrite replaces only a vqclip run (a folder with vqclip's run.json), and "
                          "this folder holds other files", str(path),
                          "Choose a new or empty --out folder; vqclip never deletes files it did not write.")
    if (path / FRAMES_DIR).is_symlink():
        raise bad_arg("--out", f"{FRAMES_DIR}/ in the run folder is a symbolic link, and vqclip never writes through "
                      "a link it did not make", str(path / FRAMES_DIR),
                      "Remove the link (or choose another --out); what it points to is left alone.")
    check_writable(path, "--out")
    return path


def prepare_run_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Create the folder (after `check_run_dir`); with `overwrite`, drop the previous run's frames and video.

    Only vqclip's own names go (frames/NNNNNN.png, video.mp4, video.gif); anything else in the folder is kept.
    image.png and run.json are left to be replaced atomically, so a failed new run leaves the old one whole.
    """
    path = check_run_dir(path, overwrite)
    if path.is_dir():
        frames = path / FRAMES_DIR
        if frames.is_dir() and not frames.is_symlink():
            for frame in frames.iterdir():
                if FRAME_NAME.fullmatch(frame.name) and frame.is_file() and not frame.is_symlink():
                    frame.unlink()
            with contextlib.suppress(OSError):
                frames.rmdir()  # only when nothing else is in it
        for name in VIDEO_NAMES:
            video = path / name
            if video.is_file() or video.is_symlink():
                video.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def discard_empty_run_dir(path: str | os.PathLike) -> bool:
    """Remove a run folder that holds no files (empty sub-folders aside); True if it was removed."""
    path = Path(path)
    if not path.is_dir() or any(p.is_file() or p.is_symlink() for p in path.rglob("*")):
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def png_metadata(record: Mapping[str, Any]) -> dict[str, Any]:
    """The text chunks written into every generated PNG."""
    return {"prompt": record.get("prompt", ""), "space": record.get("space", {}).get("space", ""),
            "seed": str(record.get("seed", "")), "settings": record.get("settings", {}),
            "software": f"vqclip {__version__}"}


def build_record(result, models_info: Mapping[str, Any], space_info: Mapping[str, Any], prompt: str,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run.json record of a generation result."""
    record = {
        "prompt": prompt,
        "prompts": [p.to_dict() for p in result.settings.prompts],
        "image_prompts": [p.to_dict() for p in result.settings.image_prompts],
        "space": dict(space_info),
        "text_method": result.settings.text_method(space_info.get("space")),  # clip, forget, negative, ...
        "seed": result.seed,
        "image": IMAGE_NAME,
        "status": result.status,
        "message": result.message,
        "steps_done": result.steps_done,
        "best_step": getattr(result, "best_step", None),
        "group_size": getattr(result, "group_size", 1),
        "loss": result.loss,
        "losses": result.losses,
        "settings": result.settings.to_dict(),
        "recipe": result.settings.recipe_record(),
        "models": dict(models_info),
        "timings": {"loop_seconds": round(result.seconds, 3),
                    "seconds_per_step": round(result.seconds / max(result.steps_done, 1), 4)},
        "vqclip_version": __version__,
        "python": platform.python_version(),
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    record.update(extra or {})
    return record


def write_run(run_dir: str | os.PathLike, result, record: Mapping[str, Any]) -> Path:
    """Write image.png (with metadata chunks) and then run.json; run.json last marks the run complete."""
    run_dir = Path(run_dir)
    save_png(result.image, run_dir / IMAGE_NAME, png_metadata(record))
    write_json(run_dir / RECORD_NAME, record)
    return run_dir / IMAGE_NAME


# Frames saved by this process, per run folder: a video is made from these (and from earlier processes' frames
# that carry vqclip's mark), never from whatever else sits in frames/.
_SAVED_FRAMES: dict[str, set[str]] = {}
FRAME_MARK = "vqclip frame"


def _frames_dir(run_dir: Path) -> Path:
    frames = run_dir / FRAMES_DIR
    if frames.is_symlink():
        raise bad_arg("--out", f"{FRAMES_DIR}/ in the run folder is a symbolic link, and vqclip never writes through a "
                      "link it did not make", str(frames),
                      "Remove the link (or choose another --out); what it points to is left alone.")
    return frames


def save_frame(run_dir: str | os.PathLike, step: int, image) -> Path:
    """Save one progress frame (a PIL image) as frames/NNNNNN.png, marked as vqclip's (never through a link)."""
    run_dir = Path(run_dir)
    path = _frames_dir(run_dir) / f"{step:06d}.png"
    save_png(image, path, {"software": f"vqclip {__version__}", "vqclip": FRAME_MARK})
    _SAVED_FRAMES.setdefault(str(run_dir.absolute()), set()).add(path.name)
    return path


def run_frames(run_dir: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """(frames vqclip wrote for this run, in order; other files in frames/ that are left alone and ignored).

    A frame is vqclip's when this process saved it, or when it has vqclip's name (NNNNNN.png) and mark."""
    from .io import png_text

    run_dir = Path(run_dir)
    frames = _frames_dir(run_dir)
    if not frames.is_dir():
        return [], []
    mine = _SAVED_FRAMES.get(str(run_dir.absolute()), set())
    ours, others = [], []
    for f in sorted(frames.iterdir()):
        if f.name.startswith(".") and not f.is_symlink():
            continue  # in-flight temporaries
        ok = FRAME_NAME.fullmatch(f.name) is not None and f.is_file() and not f.is_symlink()
        if ok and f.name not in mine:
            try:
                ok = png_text(f).get("vqclip") == FRAME_MARK
            except Exception:  # noqa: BLE001 - not a readable PNG: not a frame vqclip wrote
                ok = False
        (ours if ok else others).append(f)
    return ours, others


def check_video_support(fmt: str) -> None:
    """Refuse a video format whose writer is not installed (MP4 needs imageio-ffmpeg), before any work starts."""
    if fmt == "mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError as e:
            raise MissingExtraError(f"--video mp4 needs imageio-ffmpeg: {pip_extra('video')} "
                                    "(or use --video gif)") from e


def write_video(run_dir: str | os.PathLike, fps: int = 12, fmt: str = "mp4") -> Path:
    """Assemble the frames vqclip saved for this run (`run_frames`) into video.mp4 (needs imageio-ffmpeg) or
    video.gif; any other file in frames/ is left alone and ignored."""
    import imageio.v3 as iio
    import numpy as np

    from .io import atomic_path

    if not (isinstance(fps, int) and fps > 0):
        raise bad_arg("--fps", "the frame rate must be a whole number above 0", fps, "Try --fps 12.")
    check_video_support(fmt)
    frames, _ = run_frames(run_dir)  # a user's file in frames/ is left alone and not put in the video
    if not frames:
        raise bad_arg("--video", "no frames were saved to make a video from", str(run_dir),
                      "Add --save-every N (e.g. 10), at most --steps.")
    out = Path(run_dir) / f"video.{fmt}"
    from .untrusted import open_image

    arrays = []
    for f in frames:
        with open_image(f) as im:
            arrays.append(np.asarray(im.convert("RGB")))
    with atomic_path(out) as tmp:
        if fmt == "gif":
            iio.imwrite(tmp, arrays, extension=".gif", duration=1000 / fps, loop=0)
        else:
            iio.imwrite(tmp, arrays, extension=".mp4", fps=fps, codec="libx264", macro_block_size=1)
        if tmp.stat().st_size == 0:  # ffmpeg reports some failures only on its stderr, leaving an empty file
            raise VqclipError(f"--video {fmt}: the video writer produced an empty file from {len(frames)} frames "
                              f"in {Path(run_dir) / FRAMES_DIR}; the frames are kept. Try --video gif, or "
                              "reinstall imageio-ffmpeg.")
    return out
