"""What determines an image besides the models and the space: `Settings`, checked and filled in from a recipe."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

import torch

from ..errors import bad_arg, check_seed, choices_hint
from .antitext import (DEFAULT_NEGATIVE_TEXT, DEFAULT_NEGATIVE_WEIGHT, DEFAULT_TEXTOFF_MODE, DEFAULT_TEXTOFF_WEIGHT,
                       method_label, negative_prompt, parse_anti_text)
from .cutouts import parse_augmentations
from .images import check_image_file
from .ops import LOSSES
from .prompts import Prompt, check_weights_nonzero
from .recipes import RECIPE_FIELDS, Recipe, get_recipe
from ..spaces import TEXT_MODES

METHODS = ("zquant", "codebook")
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "radam": torch.optim.RAdam,
              "nadam": torch.optim.NAdam, "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop,
              "sgd": torch.optim.SGD}
# z+quantize: Adam lr 0.1 on continuous z (the common CLI tools). Codebook sampling: AdamW lr 0.05 on per-token
# logits (the paper's notebook, docs/method.md §7).
METHOD_DEFAULTS = {"zquant": ("adam", 0.1), "codebook": ("adamw", 0.05)}
IMAGE_PROMPT_MODES = ("cutouts", "centre")
# Settings that jobs optimised together in one batched latent must share (one optimiser, one set of cutouts).
GROUP_FIELDS = ("recipe", "size", "steps", "lr", "optimizer", "method", "cutn", "cut_pow", "augment", "noise")


def noise_seed(prompt: Prompt) -> int:
    """The seed of a noise prompt (its text)."""
    try:
        return int(prompt.text)
    except ValueError:
        raise bad_arg("--noise-prompt", "a noise prompt is SEED[:WEIGHT] with a whole-number seed", prompt.text,
                      "Write e.g. --noise-prompt 42:0.5.") from None



@dataclass
class Settings:
    """Everything that determines an image, besides the models and the space.

    Fields left None take the recipe's value (recipes.py); `resolved()` fills them and records in `overrides` the
    ones given explicitly with another value than the recipe's."""

    prompts: list[Prompt]
    image_prompts: list[Prompt] = field(default_factory=list)
    size: tuple[int, int] | None = None  # width, height; vqclip recipe 480 480
    steps: int | None = None  # vqclip recipe 300
    lr: float | None = None  # None: the method's default
    optimizer: str | None = None  # None: the method's default
    method: str | None = None  # vqclip recipe zquant
    loss: str = "spherical"
    cutn: int | None = None  # vqclip recipe 32
    cut_pow: float | None = None  # 1.0 in every recipe
    augment: tuple[str, ...] | str | None = None  # vqclip recipe affine, perspective, jitter, erasing
    noise: float | None = None  # vqclip recipe 0.1
    recipe: str = "vqclip"
    overrides: dict | None = None  # set by resolved(): {field: value} given explicitly against the recipe
    seed: int | None = None
    init_image: str | None = None
    init_weight: float = 0.0
    # Codebook sampling from an init image: each token's own code starts with this probability (None: 0.95,
    # latents.START_CODE_PROBABILITY); lower values start from noisier samples around the image.
    init_code_probability: float | None = None
    story: list[list[Prompt]] = field(default_factory=list)  # later prompt phases ("a ^ b"), every change_every
    change_every: int = 0  # steps per story phase; the phases repeat from the first after the last (nerdyrodent)
    noise_prompts: list[Prompt] = field(default_factory=list)  # text = the seed of a random target embedding
    image_prompt_mode: str = "cutouts"  # cutouts: encoded through the run's cutouts (Crowson); centre: one crop
    save_best: bool = False  # keep the image of the step with the lowest loss instead of the last one
    # Keeping text out besides the space (antitext.py): a negative prompt and/or the text direction.
    anti_text: tuple[str, ...] | str = ()  # negative, textoff
    negative_text: str = DEFAULT_NEGATIVE_TEXT
    negative_weight: float = DEFAULT_NEGATIVE_WEIGHT
    textoff: str | None = None  # text direction file; None: the one computed for this CLIP (projections/direction)
    textoff_mode: str = DEFAULT_TEXTOFF_MODE  # target: a negative target; project: removed from every embedding
    textoff_weight: float = DEFAULT_TEXTOFF_WEIGHT  # mode "target" only

    def with_recipe(self) -> "Settings":
        """The recipe's values in every field left None, and the explicit values that differ from it recorded in
        `overrides` (once: resolving resolved settings again keeps the first record)."""
        recipe = get_recipe(self.recipe)
        given = {name: getattr(self, name) for name in RECIPE_FIELDS if getattr(self, name) is not None}
        if "augment" in given:
            given["augment"] = parse_augmentations(given["augment"])
        if "size" in given:
            given["size"] = tuple(int(v) for v in given["size"])
        overrides = self.overrides
        if overrides is None:
            overrides = {name: list(v) if isinstance(v, tuple) else v for name, v in given.items()
                         if v != recipe.defaults[name]}
        return dataclasses.replace(self, **{**recipe.defaults, **given}, overrides=overrides)

    def resolved(self, factor: int) -> tuple["Settings", list[str]]:
        """Validate, fill in the recipe's and the method's defaults, draw a seed and snap the size; also return
        notices for the user."""
        self = self.with_recipe()
        check_weights_nonzero(self.prompts + self.image_prompts + self.noise_prompts)
        optimizer, lr = self._checked_optimisation()
        self._check_schedule()
        self._check_inputs()
        size, notices = self._snapped_size(factor)
        seed = self.seed if self.seed is not None else int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
        augment = self._checked_augment()
        return dataclasses.replace(self, size=size, lr=lr, optimizer=optimizer, seed=seed, augment=augment,
                                   anti_text=parse_anti_text(self.anti_text)), notices

    def _checked_optimisation(self) -> tuple[str, float]:
        """The method and loss checked; the optimizer and learning rate, the method's defaults where not given."""
        if self.method not in METHODS:
            raise bad_arg("--method", "unknown optimisation method", self.method, choices_hint(METHODS))
        if self.loss not in LOSSES:
            raise bad_arg("--loss", "unknown loss", self.loss, choices_hint(LOSSES))
        optimizer = self.optimizer or METHOD_DEFAULTS[self.method][0]
        if optimizer not in OPTIMIZERS:
            raise bad_arg("--optimizer", "unknown optimizer", optimizer, choices_hint(OPTIMIZERS))
        lr = METHOD_DEFAULTS[self.method][1] if self.lr is None else float(self.lr)
        if not (math.isfinite(lr) and lr > 0):
            raise bad_arg("--lr", "the learning rate must be a positive number", self.lr, "Try --lr 0.1.")
        return optimizer, lr

    def _check_schedule(self) -> None:
        """Steps, cutouts, noise and init weight in range; '^' story phases with their steps per phase."""
        if self.steps < 1:
            raise bad_arg("--steps", "at least one optimisation step is needed", self.steps, "Try --steps 300.")
        if self.cutn < 1:
            raise bad_arg("--cutn", "at least one cutout is needed", self.cutn, "Try --cutn 32 (fewer if memory is short).")
        if not (self.cut_pow > 0):
            raise bad_arg("--cut-pow", "must be positive", self.cut_pow, "Try --cut-pow 1.0.")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise bad_arg("--noise", "must be a finite number, 0 or more", self.noise, "Try --noise 0.1.")
        if not (math.isfinite(self.init_weight) and self.init_weight >= 0):
            raise bad_arg("--init-weight", "must be a finite number, 0 or more", self.init_weight,
                          "Try --init-weight 0.5.")
        p = self.init_code_probability
        if p is not None and not (isinstance(p, (int, float)) and 0 < p < 1):
            raise bad_arg("--init-code-probability", "must be a probability strictly between 0 and 1", p,
                          "Leave it unset (0.95), or e.g. 0.002 for a start that is nearly random codes.")
        if self.change_every < 0:
            raise bad_arg("--change-every", "must be 0 or more", self.change_every, "Try --change-every 50.")
        if self.story and not self.change_every:
            raise bad_arg("--change-every", "a prompt with '^' phases needs the steps per phase", self.change_every,
                          "Add e.g. --change-every 50, or drop the '^'.")
        for phase in self.story:
            check_weights_nonzero(list(phase) + self.image_prompts + self.noise_prompts)

    def _check_inputs(self) -> None:
        """The image-prompt mode, the noise prompts' seeds, the init and prompt image files, and the seed."""
        if self.image_prompt_mode not in IMAGE_PROMPT_MODES:
            raise bad_arg("--image-prompt-mode", "unknown mode", self.image_prompt_mode,
                          choices_hint(IMAGE_PROMPT_MODES))
        for p in self.noise_prompts:
            check_seed(noise_seed(p), "--noise-prompt")
        if self.init_image is not None:
            check_image_file(self.init_image, "--init-image")
        for p in self.image_prompts:
            check_image_file(p.text, "--image-prompt")
        if self.seed is not None:
            check_seed(self.seed)
        anti_text = parse_anti_text(self.anti_text)
        if "negative" in anti_text:
            negative_prompt(self.negative_text, self.negative_weight)
        if self.textoff_mode not in TEXT_MODES:
            raise bad_arg("--textoff-mode", "unknown way to use the text direction", self.textoff_mode,
                          choices_hint(TEXT_MODES))
        if "textoff" in anti_text and not self.textoff_weight < 0:
            raise bad_arg("--textoff-weight", "the text direction is pushed away from: its weight must be below "
                          "zero", self.textoff_weight, "Try -0.5.")

    def _snapped_size(self, factor: int) -> tuple[tuple[int, int], list[str]]:
        """The size snapped down to a multiple of the VQGAN's factor (at least one latent token a side), and a
        notice when it changed."""
        width, height = (int(v) for v in self.size)
        if width < factor or height < factor:
            raise bad_arg("--size", f"each side must hold at least one latent token ({factor} px for this VQGAN)",
                          f"{width} {height}", f"Use e.g. --size {max(width, 16 * factor)} {max(height, 16 * factor)}.")
        snapped = (width // factor * factor, height // factor * factor)
        notices = []
        if snapped != (width, height):
            notices.append(f"--size {width} {height} snapped down to {snapped[0]} {snapped[1]} "
                           f"(a multiple of the VQGAN factor {factor}).")
        return snapped, notices

    def _checked_augment(self) -> tuple[str, ...]:
        """The augmentations parsed; the nerdyrodent recipe's pooled cutouts know only their own."""
        augment = parse_augmentations(self.augment)
        if self.recipe_spec.cutouts == "pooled":  # refused here, before any model loads, not at the first step
            from .anchor_cutouts import NERDYRODENT_AUGMENTATIONS

            other = [name for name in augment if name not in NERDYRODENT_AUGMENTATIONS]
            if other:
                raise bad_arg("--augment", "the nerdyrodent recipe has no such augmentation", ",".join(other),
                              choices_hint(NERDYRODENT_AUGMENTATIONS) + " Or 'none'.")
        return augment

    def to_dict(self) -> dict:
        """The settings (the recipe by name; `recipe_record` adds its overrides)."""
        d = dataclasses.asdict(self)
        d.pop("overrides")
        d["prompts"] = [p.to_dict() for p in self.prompts]
        d["image_prompts"] = [p.to_dict() for p in self.image_prompts]
        d["story"] = [[p.to_dict() for p in phase] for phase in self.story]
        d["noise_prompts"] = [p.to_dict() for p in self.noise_prompts]
        d["size"] = None if self.size is None else list(self.size)
        d["augment"] = None if self.augment is None else list(parse_augmentations(self.augment))
        d["anti_text"] = list(parse_anti_text(self.anti_text))
        return d

    def text_method(self, space: str | None) -> str:
        """How this run in `space` keeps text out (antitext.py): clip, forget, negative, forget+negative, ..."""
        return method_label(space, parse_anti_text(self.anti_text))

    @property
    def recipe_spec(self) -> Recipe:
        return get_recipe(self.recipe)

    def recipe_record(self) -> dict:
        """run.json's `recipe`: its name, its anchor and the settings given explicitly against it."""
        return {"name": self.recipe, "anchor": self.recipe_spec.anchor, "overrides": dict(self.overrides or {})}



def group_key(settings: Settings) -> tuple:
    """Jobs whose resolved settings give the same key can be optimised together (`run_many`)."""
    return tuple(repr(getattr(settings, name)) for name in GROUP_FIELDS)
