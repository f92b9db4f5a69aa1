"""User-facing errors: each names the argument, the rule, the value received and the fix."""

from __future__ import annotations

from typing import Any, Iterable


class VqclipError(ValueError):
    """A problem the user can fix; the CLI prints it on one line without a traceback.

    `arg` is the argument the message blames (e.g. "--steps"), when there is one.
    """

    arg: str | None = None


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the `pip install` that adds it.

    The CLI prints it on one line (exit code 2), like a VqclipError.
    """


# Optional modules -> the vqclip extra that installs them (pyproject.toml), for ImportErrors raised inside them.
OPTIONAL_MODULES = {"imageio_ffmpeg": "video", "easyocr": "ocr", "easyocr_en_models": "ocr", "scipy": "ocr",
                    "wordfreq": "train", "matplotlib": "train"}


def missing_extra_hint(error: ImportError) -> str | None:
    """The one-line message for an ImportError of a missing optional extra, or None for any other ImportError."""
    if isinstance(error, MissingExtraError):
        return str(error)
    top = (error.name or "").split(".")[0]
    if top in OPTIONAL_MODULES:
        return f'{top} is not installed (optional): pip install "vqclip[{OPTIONAL_MODULES[top]}]"'
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
