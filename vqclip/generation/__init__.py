"""VQGAN+CLIP generation: prompts, cutouts, losses and the optimisation loop."""

from .api import Models, generate, generate_many, load_models
from .loop import Result, Settings, StepInfo, run, run_many
from .prompts import Prompt, parse_image_prompt, parse_prompts

__all__ = ["Models", "Prompt", "Result", "Settings", "StepInfo", "generate", "generate_many", "load_models",
           "parse_image_prompt", "parse_prompts", "run", "run_many"]
