"""Named generation recipes: the settings and behaviours of a known VQGAN+CLIP loop, as data the one loop reads.

- `paper`: Crowson's codebook-sampling notebook, which the paper's generation numbers came from (docs/method.md §7):
  480², VQGAN imagenet f16 1024, AdamW lr 0.05 (no weight decay) on per-token logits drawn from a standard normal,
  a categorical sample per token with the gradient of softmax(logits), 64 random square cutouts resampled with the
  notebook's Lanczos `resample` and clamped, no augmentations, no noise.
- `nerdyrodent`: nerdyrodent/VQGAN-CLIP's generate.py defaults as it runs: z+quantize with Adam 0.1 on f16 16384,
  every cutout the whole image pooled, kornia's own Af/Pe/Ji/Er augmentations, noise, init images stretched to the
  run size, `--init-weight` as its decaying pull of z toward zero, and image and noise prompts dropped at the first
  story switch.
- `vqclip`: the fast default: Crowson's random crops with area resampling and batched augmentations
  (docs/method.md, "Recipes", lists every difference from the two anchors and its measured effect).

A recipe gives defaults; a setting given explicitly wins and is recorded as an override (run.json `recipe`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import bad_arg, choices_hint


@dataclass(frozen=True)
class Recipe:
    """What a recipe fixes. `defaults` are `Settings` fields; the rest are behaviours of the loop."""

    name: str
    anchor: str
    defaults: Mapping[str, Any]
    vqgan: str  # registry name of its VQGAN
    cutouts: str = "batched"  # batched (cutouts.MakeCutouts) | crowson | pooled (anchor_cutouts)
    weight_decay: float | None = None  # passed to the optimizer when set (the notebook's AdamW has 0)
    codebook_init: str = "codes"  # codes: logits favouring random codebook entries | randn: standard normal logits
    codebook_sample: str = "gumbel"  # gumbel: straight-through Gumbel-softmax | probs: sample, softmax gradient
    init_weight: str = "anchor"  # anchor: MSE to the start latent | decay: nerdyrodent's pull of z to 0, 1/(2i+1)
    init_resize: str = "fit"  # fit: cropped to the run's aspect | stretch: resized to the run size
    story_keeps_prompts: bool = True  # image and noise prompts stay active in every story phase
    streams: str = "derived"  # derived: per-purpose generators from the seed | notebook: the notebook's streams
    notes: tuple[str, ...] = field(default_factory=tuple)


# Settings a recipe sets when they are not given (None in Settings means "not given").
RECIPE_FIELDS = ("size", "steps", "method", "cutn", "cut_pow", "augment", "noise")

RECIPES: dict[str, Recipe] = {
    "vqclip": Recipe(
        name="vqclip", anchor="vqclip's fast default (Crowson's z+quantize with batched cutouts)",
        defaults={"size": (480, 480), "steps": 300, "method": "zquant", "cutn": 32, "cut_pow": 1.0,
                  "augment": ("affine", "perspective", "jitter", "erasing"), "noise": 0.1},
        vqgan="vqgan_imagenet_f16_16384"),
    "paper": Recipe(
        name="paper", anchor="Crowson's codebook-sampling notebook (EleutherAI/vqgan-clip), the paper's setup",
        defaults={"size": (480, 480), "steps": 300, "method": "codebook", "cutn": 64, "cut_pow": 1.0,
                  "augment": (), "noise": 0.0},
        vqgan="vqgan_imagenet_f16_1024", cutouts="crowson", weight_decay=0.0, codebook_init="randn",
        codebook_sample="probs", streams="notebook", init_resize="stretch",
        notes=("The notebook runs until stopped; the paper does not give its steps: 300 here.",)),
    "nerdyrodent": Recipe(
        name="nerdyrodent", anchor="nerdyrodent/VQGAN-CLIP generate.py defaults (cut_method latest)",
        defaults={"size": (512, 512), "steps": 500, "method": "zquant", "cutn": 32, "cut_pow": 1.0,
                  "augment": ("affine", "perspective", "jitter", "erasing"), "noise": 0.1},
        vqgan="vqgan_imagenet_f16_16384", cutouts="pooled", init_weight="decay", init_resize="stretch",
        story_keeps_prompts=False,
        notes=("Its default size is 512² with a GPU of more than 8 GB (256² without a GPU): 512² here.",)),
}
DEFAULT_RECIPE = "vqclip"


def get_recipe(name: str | None, arg: str = "--recipe") -> Recipe:
    """The recipe called `name` (None: the default), or an error that lists the recipes."""
    name = DEFAULT_RECIPE if name is None else name
    if name not in RECIPES:
        raise bad_arg(arg, "unknown recipe", name, choices_hint(RECIPES))
    return RECIPES[name]


def recipe_vqgan(recipe: str | None, vqgan: str | None, checkpoint: str | None = None) -> str | None:
    """The VQGAN to load: the one named, else the recipe's (none when a checkpoint file is given)."""
    if vqgan or checkpoint:
        return vqgan
    return get_recipe(recipe).vqgan
