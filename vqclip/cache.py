"""Where vqclip keeps weights, projections and features: `--cache-dir`, else $VQCLIP_CACHE, else ~/.cache/vqclip."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import bad_arg

ENV_VAR = "VQCLIP_CACHE"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache root (not created until something is written)."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path("~/.cache/vqclip").expanduser()


def writable_dir(path: str | os.PathLike, arg: str = "--cache-dir") -> Path:
    """Create `path` if needed and check that files can be written there."""
    import tempfile

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        # an O_EXCL probe (mkstemp): a link planted under the probe's name is never followed
        fd, probe = tempfile.mkstemp(prefix=f".vqclip-write-test-{os.getpid()}-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise bad_arg(arg, "must be a folder vqclip can write to", str(path),
                      f"Choose another folder with {arg} or ${ENV_VAR} ({e.strerror}).") from e
    return path


def slug(text: str, max_len: int = 80) -> str:
    """A file-name-safe version of `text` (letters, digits, '.', '_', '-')."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return (s or "x")[:max_len]
