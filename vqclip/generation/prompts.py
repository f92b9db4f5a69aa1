"""Prompt syntax: `text:weight:stop` items separated by `|`, numeric fields parsed from the right only."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from ..errors import VqclipError, bad_arg

# A trailing field that starts like a number but is not one ("1.5x", "-0,5") is a typo, not prompt text.
_NUMBER_LIKE = re.compile(r"^[-+]?(\d|\.\d)[\w.,+-]*$")
# A single word glued to the last ':' ("an apple:abc", "a:1:x") is a mistyped weight, not prompt text.
_WORD_AS_WEIGHT = re.compile(r"^[A-Za-z][\w.,+-]*$")
_FIX = 'Write e.g. "an apple:1.5" or "an apple:1.5:0.8".'


@dataclass(frozen=True)
class Prompt:
    """One text (or image) target: a positive weight pulls toward it, a negative one pushes away."""

    text: str
    weight: float = 1.0
    stop: float = -math.inf

    def to_dict(self) -> dict:
        return {"text": self.text, "weight": self.weight, "stop": None if math.isinf(self.stop) else self.stop}


def _number(s: str) -> float | None:
    try:
        value = float(s)
    except ValueError:
        return None
    return value


FLOAT32_TINY = 1.1754944e-38  # the smallest normal float32
MAX_DIST = math.pi ** 2 / 2  # the largest spherical distance loss, 2·arcsin(1)²


def parse_prompt(item: str, arg: str = "PROMPT") -> Prompt:
    """`"an apple:1.5:-inf"` -> Prompt. Up to two numbers (weight, stop) are read from the right.

    The text may itself contain ':' (URLs, "a photo: an apple"). What follows the last ':' is

    - a number: the weight (or, with a second number, weight then stop);
    - prompt text when it starts with a space ("a photo: an apple"), holds a space ("note:two words"), or
      starts with something other than a letter ("https://x.y/z", "x.com:8080/a");
    - an error when it is one word glued to the ':' ("an apple:abc", "a:1:x") or a broken number ("1.5x"):
      that is a mistyped weight. To keep such text, write a space after the ':' or give the weight
      explicitly ("Re:Zero:1").
    """
    raw = item
    item = item.strip()
    fields = item.rsplit(":", 2)
    numbers: list[float] = []
    # Peel numeric fields off the right, at most two (weight, stop); stop at the first non-number.
    while len(fields) > 1 and len(numbers) < 2:
        field = fields[-1].strip()
        value = _number(field)
        if value is None:
            if _NUMBER_LIKE.match(field):
                raise bad_arg(arg, "weight and stop after ':' must be numbers", raw, _FIX)
            if not numbers and _WORD_AS_WEIGHT.match(fields[-1]):
                raise bad_arg(arg, f"a word right after the last ':' reads as a mistyped weight ({field!r})", raw,
                              f'{_FIX} If ":{field}" belongs to the text, write a space after the \':\' or give '
                              f'the weight: "{item}:1".')
            break
        numbers.insert(0, value)
        fields.pop()
    text = ":".join(fields).strip()
    tail = item[len(text):].lstrip(":")
    if not text:
        raise bad_arg(arg, "each `|`-separated prompt needs some text before its weight", raw,
                      'Write prompts like "an apple" or "an apple:1.5" or "written text:-0.5".')
    if text.endswith(":") or (tail == "" and item.endswith(":")):
        raise bad_arg(arg, "a weight after ':' must be a number", raw, 'Write e.g. "an apple:1.5".')
    weight = numbers[0] if numbers else 1.0
    stop = numbers[1] if len(numbers) > 1 else -math.inf
    if not math.isfinite(weight):
        raise bad_arg(arg, "the weight must be a finite number", raw, 'Write e.g. "an apple:1.5".')
    if abs(weight) < FLOAT32_TINY:  # 0, or so small that it is 0 in the float32 loss
        raise bad_arg(arg, "a weight of 0 (or one that is 0 in float32, below 1.2e-38) makes the prompt do nothing",
                      raw, "Use a non-zero weight such as 0.5, or drop the prompt.")
    check_stop(stop, weight, raw, arg)
    return Prompt(text, weight, stop)


def check_stop(stop: float, weight: float, raw: str, arg: str) -> None:
    """A stop value cuts the pull once the signed distance (in [0, π²/2] for a positive weight, [-π²/2, 0] for a
    negative one) is beyond it; one outside that range, or NaN, would never or always act."""
    if math.isnan(stop) or stop == math.inf:
        raise bad_arg(arg, "the stop value must be a number (or -inf, the default)", raw,
                      'Write e.g. "an apple:1:0.6", or leave the stop out.')
    if math.isinf(stop):
        return
    if weight > 0 and not 0 <= stop <= MAX_DIST:
        raise bad_arg(arg, f"a positive prompt's stop is a distance in [0, {MAX_DIST:.3g}]; below 0 it never stops",
                      raw, 'Write e.g. "an apple:1:0.6", or leave the stop out.')
    if weight < 0 and not -MAX_DIST <= stop <= 0:
        raise bad_arg(arg, f"a negative prompt's stop is a negated distance in [-{MAX_DIST:.3g}, 0]", raw,
                      'Write e.g. "written text:-0.5:-1.2", or leave the stop out.')


def parse_prompts(spec: str | list[str], arg: str = "PROMPT") -> list[Prompt]:
    """`"an apple:1 | written text:-0.5"` -> [Prompt, Prompt]."""
    items = spec if isinstance(spec, list) else spec.split("|")
    items = [s for s in (i.strip() for i in items) if s]
    if not items:
        raise bad_arg(arg, "the prompt is empty", spec, 'Give some text, e.g. vqclip generate "a photo of an apple".')
    return [parse_prompt(i, arg) for i in items]


def parse_image_prompt(spec: str) -> Prompt:
    """`PATH[:weight[:stop]]` -> Prompt whose text is the path; the path must exist."""
    try:
        prompt = parse_prompt(spec, "--image-prompt")
    except VqclipError:
        if os.path.isfile(spec):  # a path whose ':' look like a broken weight ("shot:final.png")
            return Prompt(spec)
        raise
    if not os.path.isfile(prompt.text):
        if os.path.isfile(spec):  # a path whose name ends in ':<number>'
            return Prompt(spec)
        raise bad_arg("--image-prompt", "image file not found", prompt.text, "Check the path (PATH[:weight]).")
    return prompt


def check_weights_nonzero(prompts: list[Prompt]) -> None:
    if not any(p.weight > 0 for p in prompts):
        raise VqclipError("prompts: at least one prompt needs a positive weight, or nothing pulls the image anywhere; "
                          f"got weights {[p.weight for p in prompts]}. Give one prompt a weight above 0.")


def parse_story(spec: str, arg: str = "PROMPT") -> list[list[Prompt]]:
    """`"a forest | moss:0.5 ^ a city ^ a desert"` -> one prompt list per phase (nerdyrodent's story syntax: phases
    separated by '^', each switched in after --change-every steps)."""
    phases = [p for p in (s.strip() for s in spec.split("^"))]
    if len(phases) > 1 and not all(phases):
        raise bad_arg(arg, "a story phase between '^' separators is empty", spec,
                      'Write phases like "a forest ^ a city" (no "^" at either end, none doubled).')
    return [parse_prompts(p, arg) for p in phases]


def parse_noise_prompt(spec: str | int, arg: str = "--noise-prompt") -> Prompt:
    """`"42"` / `"42:0.5"` -> a noise prompt: a random target embedding drawn from seed 42, with its weight."""
    prompt = parse_prompt(str(spec), arg)
    try:
        seed = int(prompt.text)
    except ValueError:
        raise bad_arg(arg, "a noise prompt is SEED[:WEIGHT] with a whole-number seed", spec,
                      "Write e.g. --noise-prompt 42:0.5.") from None
    if seed < 0:
        raise bad_arg(arg, "the seed must be 0 or more", spec, "Write e.g. --noise-prompt 42:0.5.")
    return Prompt(str(seed), prompt.weight, prompt.stop)
