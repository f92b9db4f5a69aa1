"""Remote files: mirrors, resumable verified downloads, folder locks, and where the default training images land.

Every download vqclip makes goes through here (VQGAN checkpoints, the paper's projection folder, ImageNetV2, the
paper's typographic-attack photos): to a `.part` file, resumed with an HTTP Range request, verified (sha256,
exact size, or a lower size bound), then renamed into place; a folder lock makes parallel processes fetch once.
This module sits at the bottom of the layers (docs/architecture.md): it knows files and URLs, not models.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .cache import cache_dir, writable_dir
from .errors import MissingExtraError, VqclipError, bad_arg, quote_error
from .io import sha256_file

NO_HASH = "unverified (no published hash)"
MIN_SIZE_FRACTION = 0.8  # approximate sizes come from community scripts ("980 MB"); anything far smaller is wrong
CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: mirrors holding the same bytes, and what is known to verify it."""

    filename: str
    urls: tuple[str, ...]
    sha256: str | None = None      # published hash; None where none is published
    size: int | None = None        # exact size in bytes, where published
    approx_size: int | None = None  # size reported by the community download scripts (not exact)

    def verification(self) -> str:
        """How a downloaded copy is checked: by sha256, by exact size, or only by a lower size bound."""
        if self.sha256:
            return "sha256"
        if self.size:
            return f"size only ({NO_HASH})"
        return NO_HASH


# ----------------------------------------------------------------------------------------------------- verifying

def part_path(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def human_size(n: int | None) -> str:
    """980 MB, 1.2 GB (decimal units, as the download scripts quote them)."""
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def verify_file(path: Path, remote: RemoteFile, arg: str = "--vqgan") -> None:
    """Check a file against what the registry knows (sha256, exact size, plausible size); raise if it fails."""
    size = path.stat().st_size
    fix = f"Delete {path} (or replace it with a good copy) and run the command again."
    if remote.size is not None and size != remote.size:
        raise bad_arg(arg, f"{remote.filename} has the wrong size (expected {remote.size} bytes): partial or corrupt",
                      f"{path} ({size} bytes)", fix)
    if remote.approx_size is not None and size < MIN_SIZE_FRACTION * remote.approx_size:
        raise bad_arg(arg, f"{remote.filename} is far smaller than the published ~{human_size(remote.approx_size)}"
                      " (a truncated download or an error page saved as a file)", f"{path} ({size} bytes)", fix)
    if remote.sha256:
        digest = sha256_file(path)
        if digest != remote.sha256:
            raise bad_arg(arg, f"{remote.filename} fails the sha256 check (expected {remote.sha256}, "
                          f"found {digest}): corrupt or a different file", str(path), fix)


# ---------------------------------------------------------------------------------------------------- downloading

class IncompleteDownload(OSError):
    """The connection closed before the announced number of bytes arrived."""


Opener = Callable[..., object]


def _fetch(url: str, part: Path, opener: Opener, timeout: float, progress: bool, label: str) -> None:
    """Append `url` to `part`, resuming with an HTTP Range request when `part` already holds bytes."""
    from tqdm import tqdm

    from . import __version__

    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": f"vqclip/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = opener(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range not satisfiable: the part file is already complete
            return
        raise
    with response:
        status = getattr(response, "status", None) or getattr(response, "code", None)
        if have and status != 206:  # the server (or a file:// URL) ignored the range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        with open(part, "ab" if have else "wb") as f, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=label, disable=not progress,
                     leave=False) as bar:
            while block := response.read(CHUNK):
                f.write(block)
                bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
    got = part.stat().st_size
    if total is not None and got < total:
        raise IncompleteDownload(f"connection closed after {got} of {total} bytes")


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return f"{e.reason}"
    return quote_error(e)


def download_file(remote: RemoteFile, dest: str | os.PathLike, progress: bool = True, opener: Opener | None = None,
                  timeout: float = 60.0, arg: str = "--vqgan") -> Path:
    """Fetch `remote` from its mirrors into `dest`: to a .part file, resumed, verified, then renamed into place."""
    dest = Path(dest)
    writable_dir(dest.parent)
    part = part_path(dest)
    opener = opener or urllib.request.urlopen
    failures = []
    for url in remote.urls:
        try:
            _fetch(url, part, opener, timeout, progress, remote.filename)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            failures.append(f"{url} ({_reason(e)})")
            continue
        try:
            verify_file(part, remote, arg)
        except VqclipError as e:
            part.unlink(missing_ok=True)  # a corrupt payload is never kept, not even to resume
            failures.append(f"{url} (downloaded but rejected: {e})")
            continue
        os.replace(part, dest)
        return dest
    kept = (f" A partial download ({human_size(part.stat().st_size)}) is kept at {part} and will be resumed."
            if part.is_file() else "")
    raise bad_arg(arg, f"could not download {remote.filename} from any mirror", "; ".join(failures),
                  f"If this machine is offline, download it elsewhere from one of: {', '.join(remote.urls)} and put "
                  f"it at {dest}, then run the command again.{kept}")


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` so parallel ranks download and convert a model once.

    A run that fails (offline, interrupted) leaves no trace: the lock file, and the folders this call created,
    are removed when nothing else was written there."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    writable_dir(folder)
    lock = folder / ".lock"
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; atomic renames still keep files whole
        yield
        return
    failed = True
    try:
        with open(lock, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
                failed = False
            finally:
                if failed and not any(p.name != ".lock" for p in folder.iterdir()):
                    lock.unlink(missing_ok=True)
                fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        if failed:
            for p in created:  # innermost first; stops at the first that is not empty
                try:
                    p.rmdir()
                except OSError:
                    break


def gdown_folder(url: str, output: Path, progress: bool) -> None:
    """Download a public Google Drive folder with gdown (which handles Drive's listing and confirmation pages)."""
    try:
        import gdown
    except ImportError as e:
        raise MissingExtraError("gdown is not installed (a vqclip dependency, used to fetch the paper's "
                                "projections): pip install gdown") from e
    import logging

    verbose = progress and logging.getLogger().isEnabledFor(logging.INFO)  # gdown's listing chatter only with -v
    files = gdown.download_folder(url=url, output=str(output), quiet=not verbose, use_cookies=False)
    if not files:  # older gdown versions return None instead of raising
        raise OSError("gdown downloaded nothing (the folder is empty, private, moved or over its download quota)")


def first_line(e: BaseException, limit: int = 200) -> str:
    """A short reason for a failed fetch: network failures said plainly, anything else as its first line."""
    text = str(e).strip()
    if any(s in text for s in ("NameResolutionError", "Failed to resolve", "Name or service not known",
                               "Network is unreachable", "Connection refused")):
        return "the host cannot be reached: no network or no DNS on this machine?"
    line = text.splitlines()[0] if text else "no details"
    return f"{type(e).__name__}: {line[:limit]}{'...' if len(line) > limit else ''}"


def clean_stale_downloads(folder: Path) -> None:
    """Temporary download folders of an earlier, killed run (vqclip's own, by their name) are removed."""
    import shutil

    for stale in folder.glob(".download-*"):
        shutil.rmtree(stale, ignore_errors=True)


# ------------------------------------------------------------------------- the default training images
# ImageNetV2 matched-frequency: what `vqclip train` downloads first. Where it lands is known here, below the
# projections, so a missing-projection hint can say what training would fetch (vqclip.spelling.sources
# extracts and reads it).

IMAGENETV2_URL = ("https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/"
                  "imagenetv2-matched-frequency.tar.gz")
IMAGENETV2_BYTES = 1_260_000_000  # as published ("1.26 GB"); no exact size or sha256 is published
IMAGENETV2 = RemoteFile("imagenetv2-matched-frequency.tar.gz", (IMAGENETV2_URL,), approx_size=IMAGENETV2_BYTES)
IMAGENETV2_IMAGES = 10_000
EXTRACTED = "matched-frequency"
RECORD = "source.json"


def data_root(root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None) -> Path:
    return Path(root).expanduser() if root else cache_dir(cache) / "datasets"


def dataset_dir(root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None) -> Path:
    return data_root(root, cache) / "imagenetv2"


def is_ready(root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None) -> bool:
    return (dataset_dir(root, cache) / EXTRACTED / RECORD).is_file()


def download_note(cache: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> str:
    """What the default training run downloads first, for hints."""
    if is_ready(root, cache):
        return "its training images (ImageNetV2) are already in the cache"
    return (f"it first downloads ImageNetV2 matched-frequency (~{IMAGENETV2_BYTES / 1e9:.2f} GB, "
            f"{IMAGENETV2_IMAGES:,} images) once")
