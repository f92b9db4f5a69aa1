"""Atomic file writes, hashing and PNG metadata: nothing half-written is ever left under its final name."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from PIL import Image, PngImagePlugin

from .errors import bad_arg


NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Every temporary vqclip writes carries a name only vqclip writes, with the host and process that made it:
# `.image.png.vqclip-1a2b3c4d-4242-k3j_x9a2.part.png` (an atomic write) or `.vqclip-write-test-1a2b3c4d-4242-k3j_x9a2`
# (a write probe). Cleanup removes a temporary only when its process is this one or is dead (`own_temporary`).
TEMP_NAME = re.compile(r"\.(?:.+\.)?vqclip-(?:write-test-)?(?P<host>[0-9a-f]{8})-(?P<pid>\d{1,10})-[a-z0-9_]{8}"
                       r"(?:\.part(?:\.[A-Za-z0-9]+)?)?")
OTHER_HOST_TEMP_SECONDS = 3600.0  # a temporary of another host (a shared disk) is only removed after this long


def host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _temp_prefix() -> str:
    return f"vqclip-{host_tag()}-{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (a process of another user counts as alive)."""
    if pid <= 0:
        return True  # never a process vqclip could have been
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, OSError):
        return True
    return True


def own_temporary(path: str | os.PathLike, now: float | None = None) -> bool:
    """True when `path` is a temporary vqclip wrote (by its name) whose writer is gone or is this process, and it
    is a regular file (never a link): the only files temporary cleanup may remove."""
    path = Path(path)
    m = TEMP_NAME.fullmatch(path.name)
    if m is None:
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    pid = int(m.group("pid"))
    if m.group("host") != host_tag():
        return (now or time.time()) - st.st_mtime > OTHER_HOST_TEMP_SECONDS
    return pid == os.getpid() or not pid_alive(pid)


def _as_os_error(e: BaseException, path: Path) -> OSError | None:
    """A writer's I/O failure that is not an OSError (safetensors raises its own `SafetensorError: I/O error: No
    space left on device (os error 28)`) as the OSError it stands for, naming the final file; else None."""
    if isinstance(e, OSError):
        return None
    text = str(e)
    m = re.search(r"os error (\d+)", text)
    code = int(m.group(1)) if m else None
    if code is None:
        for number, words in ((errno.ENOSPC, "No space left on device"), (errno.EDQUOT, "Disk quota exceeded"),
                              (errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied"),
                              (errno.EIO, "Input/output error")):
            if words.lower() in text.lower():
                code = number
                break
    if code is None:
        return None
    return OSError(code, os.strerror(code), str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path`, on error removed.

    The temporary name is hidden, recognisably vqclip's (with this host and process) and ends in the real extension
    (`.video.mp4.vqclip-1a2b3c4d-4242-XXXXXXXX.part.mp4`): writers such as ffmpeg pick the container from the name,
    and a `.part` ending makes them fail without raising. The temporary is made with O_EXCL (never through a
    planted link), and the rename replaces a link at `path` itself, never the file it points to. A writer's I/O
    error that is not an OSError (safetensors) is raised as the OSError it stands for (ENOSPC...), naming `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_temp_prefix()}", suffix=f".part{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, path)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        as_os = _as_os_error(e, path) if isinstance(e, Exception) else None
        if as_os is not None:
            raise as_os from e
        raise


def save_safetensors(tensors: Mapping[str, Any], path: str | os.PathLike,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Write a .safetensors file atomically; a full disk is the usual OSError(ENOSPC) naming `path`, and nothing
    partial is left (safetensors' own "I/O error" would otherwise reach the user as an unexpected error)."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata) if metadata is not None else None)
    return path


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
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:  # a link planted where vqclip appends: never followed
            raise OSError(errno.ELOOP, "is a symbolic link; vqclip appends only to a file it made", str(path)) from e
        raise
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
        fd, tmp = tempfile.mkstemp(prefix=f".vqclip-write-test-{host_tag()}-{os.getpid()}-", dir=probe_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        from .errors import OutputError

        error = OutputError(f"{arg}: vqclip cannot write to {probe_dir} ({e.strerror or e}); got {str(path)!r}. "
                            f"Choose a folder you can write to, on a disk with free space.")
        error.arg = arg
        raise error from e
    return path


def writable_folder(path: str | os.PathLike, arg: str = "--out") -> Path:
    """Create folder `path` if needed and check that files can be created in it (a probe made with O_EXCL, so a
    link planted under a probe's name is never followed, and removed at once). A file in the way is a usage error
    (exit 2); a read-only, full or forbidden disk an OutputError (exit 74), both naming `arg`."""
    from .errors import DISK_ERRNOS, OutputError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".vqclip-write-test-{host_tag()}-{os.getpid()}-", dir=path)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        if e.errno in DISK_ERRNOS:
            error = OutputError(f"{arg}: must be a folder vqclip can write to ({DISK_ERRNOS[e.errno]}); got "
                                f"{str(path)!r}. Choose a folder you can write to, on a disk with free space.")
            error.arg = arg
            raise error from e
        raise bad_arg(arg, "must be a folder vqclip can write to", str(path),
                      f"Choose another folder with {arg} ({e.strerror or e}).") from e
    return path


@contextlib.contextmanager
def no_empty_folders_left(path: str | os.PathLike) -> Iterator[Path]:
    """For a command that makes output folder `path`: when it fails or is interrupted (Ctrl-C), the folders it
    created are removed again if they hold nothing (empty sub-folders aside), so a failed first run leaves no empty
    --out behind. A folder that existed before, or one that holds any file, is never touched."""
    path = Path(path).expanduser()
    created = [p for p in (path, *path.parents) if not p.exists() and not p.is_symlink()]  # innermost first
    try:
        yield path
    except BaseException:
        remove_empty_created(created)
        raise


def remove_empty_created(created: Sequence[Path]) -> None:
    """Remove `created` (folders this process made, innermost first) and the empty folders below the innermost,
    stopping at the first that holds anything."""
    if not created:
        return
    if created[0].is_dir() and not created[0].is_symlink():  # everything below a folder this process made is its own
        for root, dirs, _ in os.walk(created[0], topdown=False):
            for name in dirs:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(root, name))  # only empty ones go; a link to a folder is not removed
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            break


@contextlib.contextmanager
def disk_errors(arg: str, kept: str) -> Iterator[None]:
    """A full disk, a quota or a read-only folder while writing the output named by `arg` becomes one OutputError
    line (exit 74) that names the file and says what is kept; other errors pass unchanged."""
    from .errors import DISK_ERRNOS, OutputError, is_disk_error

    try:
        yield
    except OSError as e:
        if not is_disk_error(e):
            raise
        error = OutputError(f"{arg}: could not write {e.filename or 'a file'}: {DISK_ERRNOS[e.errno]}; {kept}. "
                            f"Free some space (or choose another {arg}) and run again.")
        error.arg = arg
        raise error from e


def linked_part(base: str | os.PathLike, rel: str | os.PathLike) -> Path | None:
    """The first existing part of `base/rel` below `base` that is a symbolic link (vqclip never writes through a link
    it did not make), else None. `base` itself may be a link: the user chose it."""
    here = Path(base)
    for part in Path(rel).parts:
        here = here / part
        if here.is_symlink():
            return here
        if not here.exists():
            return None
    return None


# ---------------------------------------------------------------------------------------------------------------
# Which files vqclip wrote: a hidden ledger per output folder (name -> sha256 of what vqclip wrote). A fixed output
# name (table.md, report.json...) is replaced only when the file there is the one vqclip wrote (same content), or
# with --overwrite: a user's file of the same name is never replaced silently.

LEDGER_NAME = ".vqclip-written.json"
LEDGER_FORMAT = "vqclip.written/1"
_LEDGER_MAX_BYTES = 8 << 20


def _read_ledger(folder: Path) -> dict[str, str]:
    path = folder / LEDGER_NAME
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _LEDGER_MAX_BYTES:
            return {}  # a link or a huge file is not vqclip's ledger
        from .untrusted import read_json

        record = read_json(path, max_bytes=_LEDGER_MAX_BYTES)
    except (OSError, ValueError):
        return {}
    files = record.get("files") if isinstance(record, dict) and record.get("format") == LEDGER_FORMAT else None
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(files, dict) else {}


def vqclip_wrote(path: str | os.PathLike) -> bool:
    """True when `path` is a regular file (not a link) that the folder's ledger says vqclip wrote, unchanged since."""
    path = Path(path)
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        want = _read_ledger(path.parent).get(path.name)
        return want is not None and want == sha256_file(path)
    except OSError:
        return False


def check_replaceable(paths: Iterable[str | os.PathLike], overwrite: bool = False, arg: str = "--out") -> None:
    """Before any work: refuse when a file vqclip would write over is there and vqclip did not write it (unless
    `overwrite`); refuse a folder in the way always. Creates nothing."""
    for path in paths:
        path = Path(path)
        if not os.path.lexists(path):
            continue
        if path.is_dir() and not path.is_symlink():
            raise bad_arg(arg, "a folder is in the way of an output file", str(path), f"Choose another {arg}.")
        if overwrite or vqclip_wrote(path):
            continue
        raise bad_arg(arg, "a file vqclip did not write (or that was changed since) is in the way, and vqclip "
                      "never replaces a file it did not write", str(path),
                      f"Choose another {arg}, or pass --overwrite to replace it.")


def record_written(*paths: str | os.PathLike) -> None:
    """Note in each folder's ledger that vqclip wrote `paths` (their current content)."""
    by_folder: dict[Path, list[Path]] = {}
    for p in paths:
        by_folder.setdefault(Path(p).parent, []).append(Path(p))
    for folder, files in by_folder.items():
        ledger = _read_ledger(folder)
        for f in files:
            try:
                if stat.S_ISREG(os.lstat(f).st_mode):
                    ledger[f.name] = sha256_file(f)
            except OSError:
                ledger.pop(f.name, None)
        write_json(folder / LEDGER_NAME, {"format": LEDGER_FORMAT, "files": dict(sorted(ledger.items()))})


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
    from .untrusted import MAX_JSON_BYTES, parse_json, read_bytes

    records = []
    p = Path(path)
    if not p.exists():
        return records
    # bounded (a regular file of at most MAX_JSON_BYTES); a line that is not UTF-8, not JSON or nested too deep
    # is skipped like a torn one
    for raw in read_bytes(p, MAX_JSON_BYTES, what="JSON-lines file").splitlines():
        raw = raw.strip()
        if not raw:
            continue
        try:
            record = parse_json(raw.decode("utf-8"), p)
        except ValueError:  # UnicodeDecodeError and UntrustedFileError are ValueErrors
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
