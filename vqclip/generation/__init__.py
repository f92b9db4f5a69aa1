"""VQGAN+CLIP generation: prompts, cutouts, losses and the optimisation loop."""

from .api import Models, generate, load_models
from .loop import Result, Settings, StepInfo, run
from .prompts import Prompt, parse_image_prompt, parse_prompts

__all__ = ["Models", "Prompt", "Result", "Settings", "StepInfo", "generate", "load_models", "parse_image_prompt",
           "parse_prompts", "run"]
