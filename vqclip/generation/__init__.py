"""VQGAN+CLIP generation: prompts, cutouts, losses and the optimisation loop.

The names below load on first use (PEP 562): `vqclip.generation.prompts`, `.recipes` and `.antitext` import no
torch, so the CLI checks a command line with them before torch is imported (an argument mistake in under 1 s)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_getattr

_HOME = {"Models": "api", "generate": "api", "generate_many": "api", "load_models": "api", "Result": "loop",
         "Settings": "loop", "StepInfo": "loop", "run": "loop", "run_many": "loop", "Prompt": "prompts",
         "parse_image_prompt": "prompts", "parse_prompts": "prompts"}

__all__ = ["Models", "Prompt", "Result", "Settings", "StepInfo", "generate", "generate_many", "load_models",
           "parse_image_prompt", "parse_prompts", "run", "run_many"]


__getattr__ = lazy_getattr(__name__, _HOME)


if TYPE_CHECKING:
    from .api import Models, generate, generate_many, load_models
    from .loop import Result, Settings, StepInfo, run, run_many
    from .prompts import Prompt, parse_image_prompt, parse_prompts
