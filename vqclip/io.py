"""Atomic file writes, hashing and PNG metadata: nothing half-written is ever left under its final name."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from PIL import Image, PngImagePlugin

from .errors import bad_arg


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path`, on error removed.

    The temporary name is hidden and ends in the real extension (`.video.mp4.XXXX.part.mp4`): writers such as
    ffmpeg pick the container from the name, and a `.part` ending makes them fail without raising.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one JSON line with a single O_APPEND write, so concurrent writers never interleave a line.

    A short write (a full disk) raises OSError naming the file: the torn line is never reported as written (readers
    skip it, and `end_torn_line` ends it before the next append).
    """
    line = (json.dumps(record, default=str) + "\n").encode("utf-8")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        try:
            written = os.write(fd, line)
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(path)) from e
        if written != len(line):
            raise OSError(errno.ENOSPC, f"short write: {written} of {len(line)} bytes of a line were written "
                                        "(the disk is probably full)", str(path))
    finally:
        os.close(fd)


def check_writable(path: str | os.PathLike, arg: str = "--out") -> Path:
    """Before any work: can files be created in folder `path` (or, when it does not exist yet, in the nearest
    existing folder above it, where it will be made)? Creates nothing that stays."""
    path = Path(path)
    probe_dir = path.absolute()
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise bad_arg(arg, "a file is in the way of the output folder", str(probe_dir),
                      f"Choose another {arg} path.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".vqclip-write-test-", dir=probe_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        from .errors import OutputError

        error = OutputError(f"{arg}: vqclip cannot write to {probe_dir} ({e.strerror or e}); got {str(path)!r}. "
                            f"Choose a folder you can write to, on a disk with free space.")
        error.arg = arg
        raise error from e
    return path


def inside(folder: str | os.PathLike, name: Any) -> Path | None:
    """`folder/name` when that path (links followed) stays inside `folder`, else None: a path read from run.json or
    a manifest is untrusted and must not lead to /etc/passwd or ../../."""
    if not isinstance(name, str) or not name or "\x00" in name or os.path.isabs(name):
        return None
    base = Path(folder).resolve()
    target = (base / name).resolve()
    return base / name if target == base or base in target.parents else None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file of records (objects), ignoring a torn last line left by a crash and non-record lines."""
    records = []
    p = Path(path)
    if not p.exists():
        return records
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(record, dict):  # a line that is not a record (a list, a number) is skipped like a torn one
            records.append(record)
    return records


def save_png(image: Image.Image, path: str | os.PathLike, text: Mapping[str, Any] | None = None) -> None:
    """Save a PNG atomically with `text` as tEXt/iTXt chunks (non-strings are JSON-encoded)."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_itxt(key, value if isinstance(value, str) else json.dumps(value, default=str))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)


def png_text(path: str | os.PathLike) -> dict[str, str]:
    """The text chunks of a PNG file."""
    from .untrusted import open_image

    with open_image(path) as im:
        return dict(getattr(im, "text", {}) or {})


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
