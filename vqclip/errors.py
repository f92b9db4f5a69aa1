"""User-facing errors: each names the argument, the rule, the value received and the fix."""

from __future__ import annotations

from typing import Any, Iterable


class VqclipError(ValueError):
    """A problem the user can fix; the CLI prints it on one line without a traceback."""


def bad_arg(arg: str, rule: str, value: Any, fix: str) -> VqclipError:
    """Build the standard message: `arg: rule; got value. fix`."""
    return VqclipError(f"{arg}: {rule}; got {value!r}. {fix}")


def choices_hint(valid: Iterable[str]) -> str:
    """`Valid choices: a, b, c.` for an error message."""
    return "Valid choices: " + ", ".join(sorted(valid)) + "."
