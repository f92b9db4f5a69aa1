"""VQGAN+CLIP generation: prompts, cutouts, losses and the optimisation loop.

The names below load on first use (PEP 562): `vqclip.generation.prompts`, `.recipes` and `.antitext` import no
torch, so the CLI checks a command line with them before torch is imported (an argument mistake in under 1 s)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_HOME = {"Models": "api", "generate": "api", "generate_many": "api", "load_models": "api", "Result": "loop",
         "Settings": "loop", "StepInfo": "loop", "run": "loop", "run_many": "loop", "Prompt": "prompts",
         "parse_image_prompt": "prompts", "parse_prompts": "prompts"}

__all__ = ["Models", "Prompt", "Result", "Settings", "StepInfo", "generate", "generate_many", "load_models",
           "parse_image_prompt", "parse_prompts", "run", "run_many"]


def __getattr__(name: str):
    if name in _HOME:
        value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from .api import Models, generate, generate_many, load_models
    from .loop import Result, Settings, StepInfo, run, run_many
    from .prompts import Prompt, parse_image_prompt, parse_prompts
