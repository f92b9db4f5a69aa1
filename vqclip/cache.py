"""Where vqclip keeps weights, projections and features: `--cache-dir`, else $VQCLIP_CACHE, else ~/.cache/vqclip."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path


ENV_VAR = "VQCLIP_CACHE"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache root (not created until something is written)."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path("~/.cache/vqclip").expanduser()


def writable_dir(path: str | os.PathLike, arg: str = "--cache-dir") -> Path:
    """Create `path` if needed and check that files can be written there (io.writable_folder: an O_EXCL probe, so
    a link planted under the probe's name is never followed)."""
    from .io import writable_folder

    return writable_folder(path, arg)


def slug(text: str, max_len: int = 80) -> str:
    """A file-name-safe version of `text` (letters, digits, '.', '_', '-')."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return (s or "x")[:max_len]


MATPLOTLIB_ENV = "MPLCONFIGDIR"


def matplotlib_dir() -> None:
    """Before vqclip imports matplotlib: unless the user set MPLCONFIGDIR, point it at <cache>/matplotlib, so its
    config folder and font cache go there instead of ~/.config/matplotlib and ~/.cache/matplotlib (created on
    import). Too late once matplotlib is imported; then it is the importer's choice."""
    if not os.environ.get(MATPLOTLIB_ENV) and "matplotlib" not in sys.modules:
        os.environ[MATPLOTLIB_ENV] = str(cache_dir() / "matplotlib")
