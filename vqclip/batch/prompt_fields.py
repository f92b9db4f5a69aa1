"""The fields of a prompt-file item and their converters: each takes a raw value (CSV/TXT strings or YAML/JSON
values) and returns the clean one, or raises a FieldError naming the rule and the fix."""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Sequence

from ..errors import SEED_MAX, VqclipError

# Settings an item may override (names of `generation.Settings` fields).
SETTING_FIELDS = ("steps", "size", "lr", "optimizer", "method", "loss", "cutn", "cut_pow", "augment", "noise",
                  "init_image", "init_weight", "change_every", "noise_prompts", "image_prompt_mode", "save_best")
ITEM_FIELDS = ("prompt", "id", "word_type", "seed", "seeds") + SETTING_FIELDS
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
WORD_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# Names a job folder may not take: they are the batch folder's own files.
RESERVED_IDS = frozenset({"batch.json", "manifest.jsonl", "grid.png", "index.html", "score"})
# Bound on what a file may make us build: seeds per list.
MAX_SEEDS = 10_000


class FieldError(ValueError):
    """A value that breaks a field's rule; `fix` says what to write instead."""

    def __init__(self, rule: str, fix: str):
        super().__init__(rule)
        self.rule, self.fix = rule, fix


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FieldError("must be text", 'Quote it, e.g. "an apple".')
    return str(value).strip()


def _int_value(value: Any, minimum: int, example: str) -> int:
    if isinstance(value, bool):
        raise FieldError("must be a whole number", f"Write e.g. {example}.")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d{1,30}\s*", value):  # longer is never a count
        value = int(value)
    if not isinstance(value, int):
        raise FieldError("must be a whole number", f"Write e.g. {example}.")
    if value < minimum:
        raise FieldError(f"must be {minimum} or more", f"Write e.g. {example}.")
    if value > 2**64:  # no count or seed vqclip takes comes near; beyond it, numbers only overflow later
        raise FieldError("must be at most 2**64", f"Write e.g. {example}.")
    return value


def _float_value(value: Any, example: str) -> float:
    if isinstance(value, bool):
        raise FieldError("must be a number", f"Write e.g. {example}.")
    try:
        out = float(value)
    except OverflowError:  # an integer beyond 1e308
        raise FieldError("must be a finite number", f"Write e.g. {example}.") from None
    except (TypeError, ValueError):
        raise FieldError("must be a number", f"Write e.g. {example}.") from None
    if not math.isfinite(out):
        raise FieldError("must be a finite number", f"Write e.g. {example}.")
    return out


def parse_seed_list(value: Any) -> tuple[int, ...]:
    """`3`, `"0,1,2"`, `"0-9"`, `"0..9"` (inclusive ranges) or a list of ints -> tuple of seeds in 0..SEED_MAX."""
    fix = 'Write e.g. 0, "0,1,2" or "0-9".'
    too_big = f"seeds must be at most {SEED_MAX} (2**63 - 1)"
    many = f"a seed list may hold at most {MAX_SEEDS} seeds, one image per seed and space"
    fix_many = "Split the work into several batches, e.g. --seeds 0-9999 then 10000-19999."
    if isinstance(value, (list, tuple)):
        parts: list[Any] = list(value)
    elif isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
    else:
        parts = [value]
    if len(parts) > MAX_SEEDS:
        raise FieldError(f"{many} ({len(parts)} listed)", fix_many)
    seeds: list[int] = []
    for part in parts:
        if isinstance(part, str) and (m := re.fullmatch(r"(\d+)\s*(?:-|\.\.)\s*(\d+)", part)):
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise FieldError(f"the range {part!r} runs backwards", fix)
            if hi > SEED_MAX:
                raise FieldError(f"{too_big}, {part!r} goes beyond", fix)
            if len(seeds) + hi - lo + 1 > MAX_SEEDS:  # counted before a single seed is listed
                raise FieldError(f"{many} (the range {part!r} alone holds {hi - lo + 1})", fix_many)
            seeds.extend(range(lo, hi + 1))
        elif part == "":
            raise FieldError("has an empty entry", fix)
        else:
            try:
                seeds.append(_int_value(part, 0, "0"))
            except FieldError:
                raise FieldError(f"seeds must be whole numbers >= 0, {part!r} is not", fix) from None
            if seeds[-1] > SEED_MAX:
                raise FieldError(f"{too_big}, {part!r} is not", fix)
    if not seeds:
        raise FieldError("needs at least one seed", fix)
    if len(set(seeds)) != len(seeds):
        raise FieldError("lists a seed twice", fix)
    return tuple(seeds)


def _seed(value: Any) -> tuple[int]:
    seed = _int_value(value, 0, "42")
    if seed > SEED_MAX:
        raise FieldError(f"must be at most {SEED_MAX} (2**63 - 1)", "Write e.g. 42.")
    return (seed,)


def _size(value: Any) -> tuple[int, int]:
    fix = 'Write e.g. 480, "480 320", "480x320" or [480, 320].'
    if isinstance(value, str):
        parts: list[Any] = [p for p in re.split(r"[\sx×,]+", value.strip().lower()) if p]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise FieldError("must be a width and a height", fix)
    try:
        return tuple(_int_value(p, 1, "480") for p in parts)  # type: ignore[return-value]
    except FieldError:
        raise FieldError("must be whole numbers of pixels", fix) from None


def _choice(choices: Callable[[], Sequence[str]]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        valid = sorted(choices())
        text = _text(value).lower()
        if text not in valid:
            raise FieldError("is not one of the known choices", "Valid choices: " + ", ".join(valid) + ".")
        return text
    return convert


def _methods():
    from ..generation.loop import METHODS
    return METHODS


def _optimizers():
    from ..generation.loop import OPTIMIZERS
    return OPTIMIZERS


def _losses():
    from ..generation.ops import LOSSES
    return LOSSES


def _augment(value: Any) -> str:
    from ..generation.cutouts import parse_augmentations

    text = ",".join(_text(v) for v in value) if isinstance(value, (list, tuple)) else _text(value)
    try:
        parse_augmentations(text)
    except VqclipError as e:
        raise FieldError("names an unknown augmentation", str(e).split(". ", 1)[-1]) from None
    return text


def _item_id(value: Any) -> str:
    text = _text(value)
    if not ID_PATTERN.match(text) or text.lower() in RESERVED_IDS:
        raise FieldError("must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
                         "(it names the item's folder)", 'Write e.g. "apple-1".')
    return text


def _word_type(value: Any) -> str:
    text = _text(value).lower()
    if not WORD_TYPE_PATTERN.match(text):
        raise FieldError("must be a short lowercase label", "Write real or nonsense.")
    return text


def _prompt(value: Any) -> str:
    from ..generation.prompts import check_weights_nonzero, parse_story

    text = _text(value)
    if not text:
        raise FieldError("is empty", 'Write a prompt such as "an apple" or "apple | text:-0.5".')
    try:
        for phase in parse_story(text):
            check_weights_nonzero(phase)
    except VqclipError as e:
        raise FieldError("is not a valid prompt", str(e)) from None
    return text


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "prompt": _prompt,
    "id": _item_id,
    "word_type": _word_type,
    "seed": _seed,
    "seeds": parse_seed_list,
    "steps": lambda v: _int_value(v, 0, "300"),
    "size": _size,
    "lr": lambda v: _float_value(v, "0.1"),
    "optimizer": _choice(_optimizers),
    "method": _choice(_methods),
    "loss": _choice(_losses),
    "cutn": lambda v: _int_value(v, 1, "32"),
    "cut_pow": lambda v: _float_value(v, "1.0"),
    "augment": _augment,
    "noise": lambda v: _float_value(v, "0.1"),
    "init_image": _text,
    "init_weight": lambda v: _float_value(v, "0.5"),
    "change_every": lambda v: _int_value(v, 0, "50"),
    "noise_prompts": lambda v: _noise_prompts(v),
    "image_prompt_mode": _choice(lambda: ("cutouts", "centre")),
    "save_best": lambda v: _bool_value(v),
}


def _noise_prompts(value: Any) -> list[str]:
    """`"42:0.5 | 7"` or a list of such items -> ["42:0.5", "7:1.0"] (turned into prompts by `job_settings`)."""
    from ..generation.prompts import parse_noise_prompt

    items = value if isinstance(value, list) else str(value).split("|")
    try:
        prompts = [parse_noise_prompt(str(v).strip(), "noise_prompts") for v in items if str(v).strip()]
        return [f"{p.text}:{p.weight}" for p in prompts]
    except VqclipError as e:
        raise FieldError("is not a list of SEED[:WEIGHT] noise prompts", str(e)) from None


def _bool_value(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise FieldError("must be true or false", "Write `true` or `false`.")


def normalise_key(key: Any) -> str:
    return str(key).strip().lower().replace("-", "_")
