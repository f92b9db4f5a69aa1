"""Ways of keeping written text out of the image, beside the paper's forget space (issue 27, docs/method.md §10).

- `negative`: a negative text prompt in every phase, as users of nerdyrodent's and pixray's scripts write it
  (this README's own example: "an apple:1 | written text:-0.5").
- `textoff`: a text direction (`projections/direction.py`), used as a negative target (pixray's "textoff" vector
  prompt, the other way round) or removed from every embedding (`Space.without_text`, mode "project").

A *method* names the space and the anti-text parts together: `clip` (no defence), `forget` (the paper),
`negative`, `textoff`, and combinations joined by '+' (`forget+negative`). Runs record it in run.json.
"""

from __future__ import annotations

from ..errors import VqclipError, bad_arg, choices_hint
from .prompts import Prompt

# vqclip.spaces' names, without its torch import (the CLI checks a command line with them before torch loads;
# tests/test_hardening_third.py guards that they stay equal)
SPACES = ("clip", "learn", "forget")
TEXT_MODES = ("target", "project")
ANTI_TEXT = ("negative", "textoff")
DEFAULT_NEGATIVE_TEXT = "written text"
DEFAULT_NEGATIVE_WEIGHT = -0.5
DEFAULT_TEXTOFF_WEIGHT = -0.5
DEFAULT_TEXTOFF_MODE = TEXT_MODES[0]
METHODS = ("clip", "forget", "negative", "textoff", "forget+negative", "forget+textoff", "negative+textoff")


def parse_anti_text(spec: str | tuple | list | None, arg: str = "--anti-text") -> tuple[str, ...]:
    """`negative`, `textoff`, `negative+textoff` (or a list), `none` → () ; in the canonical order."""
    if spec is None:
        return ()
    parts = spec if isinstance(spec, (tuple, list)) else str(spec).replace(",", "+").split("+")
    parts = [p.strip().lower() for p in parts if p.strip()]
    if parts == ["none"]:
        return ()
    unknown = [p for p in parts if p not in ANTI_TEXT]
    if unknown:
        raise bad_arg(arg, "unknown way of keeping text out", "+".join(unknown),
                      choices_hint(ANTI_TEXT) + " Join several with '+', e.g. negative+textoff; none for neither.")
    return tuple(a for a in ANTI_TEXT if a in parts)


def parse_method(label: str, arg: str = "--methods") -> tuple[str, tuple[str, ...]]:
    """(space, anti-text parts) of a method label: `forget+negative` → ("forget", ("negative",))."""
    parts = [p.strip().lower() for p in str(label).split("+") if p.strip()]
    spaces = [p for p in parts if p in SPACES]
    if not parts or len(spaces) > 1:
        raise bad_arg(arg, "a method is at most one space (clip, learn, forget) and any of negative, textoff, "
                      "joined by '+'", label, f"For example {', '.join(METHODS)}.")
    rest = [p for p in parts if p not in SPACES]
    try:
        return (spaces[0] if spaces else "clip"), parse_anti_text(rest, arg)
    except VqclipError:
        raise bad_arg(arg, "unknown method part", label, f"Use a space (clip, learn, forget) and/or negative, "
                      f"textoff joined by '+', e.g. {', '.join(METHODS)}.") from None


def method_label(space: str | None, anti_text: tuple[str, ...] = ()) -> str:
    """The label of (space, anti-text): `clip`, `forget`, `negative`, `forget+negative`, ..."""
    space = space or "clip"
    if not anti_text:
        return space
    return "+".join(anti_text) if space == "clip" else "+".join((space, *anti_text))


def negative_prompt(text: str = DEFAULT_NEGATIVE_TEXT, weight: float = DEFAULT_NEGATIVE_WEIGHT,
                    arg: str = "--negative-weight") -> Prompt:
    """The negative prompt added to every text phase; its weight must be below zero (it pushes away)."""
    if not text.strip():
        raise bad_arg("--negative-text", "the negative prompt needs words", repr(text), "Try 'written text'.")
    if not weight < 0:
        raise bad_arg(arg, "a negative prompt's weight must be below zero", weight, "Try -0.5.")
    return Prompt(text.strip(), float(weight))


def textoff_prompt(space, weight: float = DEFAULT_TEXTOFF_WEIGHT):
    """(prompt, (1, d) embedding) of the text direction as a negative target in the space (mode "target"), or None
    when the space holds no direction or removes it (mode "project")."""
    if getattr(space, "text_mode", None) != TEXT_MODES[0]:
        return None
    return Prompt("textoff", float(weight)), space.text_target()
