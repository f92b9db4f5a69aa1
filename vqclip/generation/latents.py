"""The two parametrisations of a group of latents (z+quantize, codebook sampling) and where they start."""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch

from .images import load_image
from .ops import sample_categorical, sample_one_hot, vector_quantize
from .settings import Settings


class Latent(NamedTuple):
    """A parametrisation of a group of images: what the optimiser moves and how it becomes quantized latents.

    Every parameter has the group as its first dimension, so a job's state can be selected row by row."""

    params: list[torch.Tensor]
    quantized: Callable[[], torch.Tensor]  # -> (G, C, h, w)
    after_step: Callable[[], None]
    z: Callable[[], torch.Tensor]  # (G, C, h, w) codes, for the result
    anchor: Callable[[], torch.Tensor]  # (G, C, h, w) differentiable stand-in for z, for the init-weight term


def zquant_latent(z0: torch.Tensor, codebook: torch.Tensor) -> Latent:
    """Crowson's z+quantize: Adam on continuous z, straight-through VQ, z clamped to the codebook's range."""
    z = z0.clone().requires_grad_(True)
    z_min = codebook.min(dim=0).values.view(1, -1, 1, 1)
    z_max = codebook.max(dim=0).values.view(1, -1, 1, 1)
    codebook_sq = codebook.pow(2).sum(1)  # once, not every step

    def quantized():
        return vector_quantize(z.movedim(1, 3), codebook, codebook_sq).movedim(3, 1)  # (G, C, h, w)

    def after_step():
        with torch.no_grad():
            z.copy_(z.maximum(z_min).minimum(z_max))

    return Latent([z], quantized, after_step, lambda: z, lambda: z)


def codebook_latent(logits0: torch.Tensor, codebook: torch.Tensor, generators: Sequence[torch.Generator],
                    sample: str = "gumbel") -> Latent:
    """Codebook sampling (the paper's notebook): per-token logits, straight-through one-hot samples, each job's
    samples from its own generator. `sample` "probs" is the notebook's: a categorical draw whose gradient is that
    of softmax(logits); "gumbel": a Gumbel-max draw with the gradient of the Gumbel-softmax. The init-weight term
    acts on the expected code softmax(logits) @ codebook: the sampled code's index has no gradient."""
    logits = logits0.clone().requires_grad_(True)  # (G, h, w, n_embed)
    draw = sample_categorical if sample == "probs" else sample_one_hot

    def quantized():
        one_hot = torch.cat([draw(logits[i:i + 1], g) for i, g in enumerate(generators)])
        return (one_hot @ codebook).movedim(3, 1)

    def z():
        return codebook[logits.argmax(-1)].movedim(3, 1)

    def anchor():
        return (logits.softmax(-1) @ codebook).movedim(3, 1)

    return Latent([logits], quantized, lambda: None, z, anchor)


def random_codes(h: int, w: int, codebook: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(1, C, h, w) latent made of uniformly drawn codebook entries."""
    idx = torch.randint(codebook.shape[0], (h * w,), generator=generator, device=generator.device)
    idx = idx.to(codebook.device)
    return codebook[idx].view(1, h, w, -1).movedim(3, 1)


def start_image(settings: Settings, vqgan, start: torch.Tensor | None = None) -> torch.Tensor | None:
    """(1, 3, H, W): `start`, or --init-image sized as the recipe does (fit or stretch), or None."""
    if start is None and settings.init_image:
        start = load_image(settings.init_image, settings.size, vqgan.codebook.device, "--init-image",
                           fit=settings.recipe_spec.init_resize)
    return start


def initial_latent(settings: Settings, vqgan, generator: torch.Generator,
                   start: torch.Tensor | None = None) -> torch.Tensor:
    """(1, C, h, w): the quantized latent of the `start` image or --init-image (as taming's encode gives it to
    Crowson's and nerdyrodent's loops), else seeded random codebook entries."""
    width, height = settings.size
    start = start_image(settings, vqgan, start)
    if start is not None:
        with torch.no_grad():
            z = vqgan.encode(start.to(vqgan.codebook.device))
            return vector_quantize(z.movedim(1, 3), vqgan.codebook.detach()).movedim(3, 1)
    return random_codes(height // vqgan.factor, width // vqgan.factor, vqgan.codebook.detach(), generator)


def initial_logits(settings: Settings, vqgan, generator: torch.Generator, start: torch.Tensor | None) -> torch.Tensor:
    """(1, h, w, n_embed) starting logits of codebook sampling: the notebook's standard normal draw (recipe
    `randn`, with no start image), else logits that favour the codes of `initial_latent`."""
    width, height = settings.size
    h, w, n = height // vqgan.factor, width // vqgan.factor, vqgan.codebook.shape[0]
    start = start_image(settings, vqgan, start)
    if settings.recipe_spec.codebook_init == "randn" and start is None:
        logits = torch.randn(h * w, n, generator=generator, device=generator.device)  # on the generator's device
        return logits.view(1, h, w, n).to(vqgan.codebook.device)
    return codebook_logits(initial_latent(settings, vqgan, generator, start), vqgan.codebook.detach())


def codebook_logits(z0: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(G, h, w, n_embed) starting logits that favour the codes nearest to z0, scaled per job."""
    with torch.no_grad():
        d = (z0.movedim(1, 3).unsqueeze(-2) - codebook).pow(2).sum(-1)  # (G, h, w, n_embed)
        return -d / d.flatten(1).std(dim=1).clamp_min(1e-6).view(-1, 1, 1, 1)
