"""Prompts as projected target embeddings, and which of them are active at a step (story phases)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import VqclipError
from .antitext import negative_prompt, parse_anti_text, textoff_prompt
from .images import load_image
from .prompts import Prompt
from .settings import Settings, noise_seed


@dataclass
class Target:
    """A prompt and its projected target embeddings: (1, d) for text and noise, (cutn, d) for an image prompt
    encoded through cutouts (each cutout of the run is compared with each of them, as in Crowson's notebook)."""

    prompt: Prompt
    embeds: torch.Tensor
    label: str


def encode_targets(settings: Settings, clip, space, make_cutouts: Callable | None = None,
                   generator: torch.Generator | None = None) -> tuple[list[list[Target]], list[Target]]:
    """([targets of each text phase], [image and noise targets, active in every phase]), projected into `space`.

    Image prompts are encoded through `make_cutouts` of the image at the run's size (mode cutouts) or from one
    centre crop at CLIP's input size (mode centre)."""
    device = clip.device
    with torch.no_grad():
        phases = []
        keep_out = anti_text_targets(settings, clip, space)  # in every phase: a story switch never drops them
        for phase in [settings.prompts] + list(settings.story):
            embeds = space.project(clip.encode_text([p.text for p in phase])) if phase else None
            phases.append([Target(p, embeds[i:i + 1], p.text) for i, p in enumerate(phase)] + keep_out)
        always = []
        for p in settings.image_prompts:
            if settings.image_prompt_mode == "cutouts" and make_cutouts is not None:
                image = load_image(p.text, settings.size, device, "--image-prompt", fit="whole")
                images = make_cutouts(image, [generator])
            else:
                height, width = clip.input_size
                images = load_image(p.text, (width, height), device, "--image-prompt")
            always.append(Target(p, space.project(clip.encode_image(images)), p.text))
        for p in settings.noise_prompts:
            noise = torch.randn(1, clip.embed_dim, generator=torch.Generator().manual_seed(noise_seed(p)))
            always.append(Target(p, space.project(noise.to(device)), f"noise:{p.text}"))
    return phases, always


def anti_text_targets(settings: Settings, clip, space) -> list[Target]:
    """The negative prompt and the text direction's negative target of a run (antitext.py), projected into
    `space`; none without --anti-text. A textoff run needs a space that holds the direction (`Models.space`)."""
    anti_text = parse_anti_text(settings.anti_text)
    out = []
    if "negative" in anti_text:
        p = negative_prompt(settings.negative_text, settings.negative_weight)
        out.append(Target(p, space.project(clip.encode_text([p.text])), f"negative:{p.text}"))
    if "textoff" in anti_text:
        if getattr(space, "text_direction", None) is None:
            raise VqclipError("anti-text textoff: the space holds no text direction; load it with "
                              "Models.space(..., anti_text=('textoff',)) or pass --anti-text textoff to the CLI")
        found = textoff_prompt(space, settings.textoff_weight)
        if found is not None:  # mode "project" removes the direction in space.project instead
            out.append(Target(found[0], found[1].to(clip.device), "textoff"))
    return out


def active_targets(phases: list[list[Target]], always: list[Target], change_every: int, step: int,
                   keep_always: bool = True) -> list[Target]:
    """The targets of (0-based) `step`: its story phase (phases repeat after the last) and the image and noise
    targets; with `keep_always` False (nerdyrodent) those are dropped from the first phase change on."""
    phase = (step // change_every) % len(phases) if change_every else 0
    if not keep_always and change_every and step >= change_every:
        return phases[phase]
    return phases[phase] + always
