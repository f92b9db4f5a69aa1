"""User-facing errors: each names the argument, the rule, the value received and the fix."""

from __future__ import annotations

import errno
import os
import re
from typing import Any, Iterable


class VqclipError(ValueError):
    """A problem the user can fix; the CLI prints it on one line without a traceback.

    `arg` is the argument the message blames (e.g. "--steps"), when there is one; `exit_code` is what the CLI
    returns for it.
    """

    arg: str | None = None
    exit_code: int = 2


class OutputError(VqclipError):
    """Writing an output failed (full disk, read-only folder); what was complete is kept. Exit code 74 (EX_IOERR)."""

    exit_code = 74


# CSI sequences (colours, cursor moves), OSC sequences (titles, links) and any other lone escape.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]?")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def one_line(text: Any, limit: int = 400) -> str:
    """A foreign message (torch, safetensors, PIL...) fit to quote in a one-line error: no ANSI escapes or control
    characters, whitespace runs (newlines included) collapsed, at most `limit` characters."""
    s = _ANSI.sub("", str(text))
    s = _CONTROL.sub(" ", s)
    s = " ".join(s.split())
    return s if len(s) <= limit else s[:limit - 1].rstrip() + "…"


def quote_error(error: BaseException, limit: int = 200) -> str:
    """`Type: first line of the message`, for an error quoted inside ours (torch messages span many lines, some are
    empty, and may carry terminal colour codes)."""
    text = _ANSI.sub("", str(error))
    first = next((line.strip() for line in text.splitlines() if line.strip()), "") or "no message"
    return f"{type(error).__name__}: {one_line(first, limit)}"


def describe_exception(e: BaseException, limit: int = 400) -> str:
    """`TypeName: one-line message`, or just the type name when the message is empty."""
    message = one_line(e, limit)
    return f"{type(e).__name__}: {message}" if message else type(e).__name__


DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}


def is_disk_error(e: BaseException) -> bool:
    """True for the OSErrors that mean "outputs cannot be written here" (full, quota, read-only, permission)."""
    return isinstance(e, OSError) and e.errno in DISK_ERRNOS


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the `pip install` that adds it.

    The CLI prints it on one line (exit code 2), like a VqclipError.
    """


# Optional modules -> the vqclip extra that installs them (pyproject.toml), for ImportErrors raised inside them.
OPTIONAL_MODULES = {"imageio_ffmpeg": "video", "easyocr": "ocr", "easyocr_en_models": "ocr", "scipy": "ocr",
                    "wordfreq": "train", "matplotlib": "train", "gradio": "ui", "playwright": "test"}


def pip_extra(extra: str) -> str:
    """How a user adds an optional extra: vqclip is installed from its clone (README); it is not on PyPI, where
    asking for `vqclip[X]` would find nothing."""
    return f'pip install -e ".[{extra}]" in the vqclip clone'


def missing_extra_hint(error: ImportError) -> str | None:
    """The one-line message for an ImportError of a missing optional extra, or None for any other ImportError."""
    if isinstance(error, MissingExtraError):
        return str(error)
    top = (error.name or "").split(".")[0]
    if top in OPTIONAL_MODULES:
        return f"{top} is not installed (optional): {pip_extra(OPTIONAL_MODULES[top])}"
    return None


def bad_arg(arg: str, rule: str, value: Any, fix: str) -> VqclipError:
    """Build the standard message: `arg: rule; got value. fix`."""
    error = VqclipError(f"{arg}: {rule}; got {value!r}. {fix}")
    error.arg = arg
    return error


# The largest seed accepted everywhere a seed is used: torch.Generator.manual_seed takes up to 2**64 - 1 (and
# wraps negative ones around), a signed 64-bit integer (numpy, JSON readers) up to 2**63 - 1.
SEED_MAX = 2**63 - 1


def check_seed(seed: Any, arg: str = "--seed") -> int:
    """Refuse seeds that are not whole numbers in 0..SEED_MAX (instead of an overflow deep inside torch)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise bad_arg(arg, f"a seed must be a whole number from 0 to {SEED_MAX} (2**63 - 1)", seed, "Try 42.")
    return seed


def choices_hint(valid: Iterable[str]) -> str:
    """`Valid choices: a, b, c.` for an error message."""
    return "Valid choices: " + ", ".join(sorted(valid)) + "."


def cached_file_error(error: VqclipError, path: str | os.PathLike, what: str, again: str) -> VqclipError:
    """Re-word an error about a file vqclip found in its cache: name the file and say to delete it, not a flag."""
    text = str(error)
    if error.arg and text.startswith(f"{error.arg}: "):
        text = text[len(error.arg) + 2:]
    rule = text.split("; got ", 1)[0].rstrip(".")
    out = VqclipError(f"{what} {path}: {rule}. Delete that file and run again: {again}.")
    out.arg = str(path)
    return out
