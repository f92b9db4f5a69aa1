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


# Codebook sampling from a start image: the probability each token's own code (the start's quantized latent) keeps
# in the starting logits, on average over the job's tokens. The first sample then keeps about that share of the
# start's codes (docs/method.md §9: -d/std(d) kept 27 % on the tiny VQGAN, so an init image was mostly lost at the
# first step); the rest of the mass goes to the codes nearest to each token's, as before.
START_CODE_PROBABILITY = 0.95


def initial_logits(settings: Settings, vqgan, generator: torch.Generator, start: torch.Tensor | None) -> torch.Tensor:
    """(1, h, w, n_embed) starting logits of codebook sampling: the notebook's standard normal draw (recipe
    `randn`, with no start image), logits that keep the codes of a start image or --init-image
    (`START_CODE_PROBABILITY`), else logits that favour seeded random codes."""
    width, height = settings.size
    h, w, n = height // vqgan.factor, width // vqgan.factor, vqgan.codebook.shape[0]
    start = start_image(settings, vqgan, start)
    if settings.recipe_spec.codebook_init == "randn" and start is None:
        logits = torch.randn(h * w, n, generator=generator, device=generator.device)  # on the generator's device
        return logits.view(1, h, w, n).to(vqgan.codebook.device)
    keep = None if start is None else settings.init_code_probability or START_CODE_PROBABILITY
    return codebook_logits(initial_latent(settings, vqgan, generator, start), vqgan.codebook.detach(), keep)


def codebook_logits(z0: torch.Tensor, codebook: torch.Tensor, keep: float | None = None) -> torch.Tensor:
    """(G, h, w, n_embed) starting logits -d/t that favour the codes nearest to z0 (d: squared distances), with a
    temperature t per job: with `keep`, the one at which each token's nearest code has probability `keep` on
    average over the job's tokens (found by bisection: that probability falls as t grows); else the job's
    standard deviation of d."""
    with torch.no_grad():
        z = z0.movedim(1, 3)  # (G, h, w, C); expanded, not (G, h, w, n_embed, C), which is 15 GB at 480² f16 16384
        d = (z.pow(2).sum(-1, keepdim=True) + codebook.pow(2).sum(1) - 2 * z @ codebook.T).clamp_min(0)
        scale = d.flatten(1).std(dim=1).clamp_min(1e-6).view(-1, 1, 1, 1)
        if keep is None:
            return -d / scale
        nearest = d.argmin(-1, keepdim=True)
        lo, hi = torch.full_like(scale, -12.0), torch.full_like(scale, 4.0)  # log10(t / scale)
        for _ in range(24):  # 16 decades / 2^24: t to 2e-6 of a decade
            mid = (lo + hi) / 2
            p = (-d / (scale * 10 ** mid)).softmax(-1).gather(-1, nearest).flatten(1).mean(1).view(-1, 1, 1, 1)
            lo, hi = torch.where(p >= keep, mid, lo), torch.where(p >= keep, hi, mid)
        return -d / (scale * 10 ** lo)
