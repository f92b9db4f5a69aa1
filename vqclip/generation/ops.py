"""The small differentiable pieces of VQGAN+CLIP (Crowson's z+quantize method), one function each."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _ReplaceGrad(torch.autograd.Function):
    """Forward `x_forward`, backward as if it were `x_backward`."""

    @staticmethod
    def forward(ctx, x_forward, x_backward):
        ctx.shape = x_backward.shape
        return x_forward

    @staticmethod
    def backward(ctx, grad_in):
        return None, grad_in.sum_to_size(ctx.shape)


replace_grad = _ReplaceGrad.apply


class _ClampWithGrad(torch.autograd.Function):
    """Clamp in the forward pass; in the backward pass let through gradients that point back into range."""

    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad_in):
        (x,) = ctx.saved_tensors
        # Descent moves x by -grad: pass the gradient unless it would push x further out of [lo, hi].
        blocked = (grad_in * (x - x.clamp(ctx.lo, ctx.hi))) < 0
        return grad_in * (~blocked), None, None


def clamp_with_grad(x: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return _ClampWithGrad.apply(x, lo, hi)


def vector_quantize(z: torch.Tensor, codebook: torch.Tensor, codebook_sq: torch.Tensor | None = None) -> torch.Tensor:
    """(..., C) -> nearest codebook vectors (..., C), with the straight-through gradient of the identity.

    `codebook_sq`: the codebook's squared norms, (n_embed,), when the caller keeps them between steps."""
    if codebook_sq is None:
        codebook_sq = codebook.pow(2).sum(1)
    d = z.pow(2).sum(-1, keepdim=True) + codebook_sq - 2 * z @ codebook.T  # (..., n_embed)
    z_q = codebook[d.argmin(-1)]
    return replace_grad(z_q, z)


def spherical_dist_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """2·arcsin(‖x̂−ŷ‖/2)²: half the squared great-circle angle between x and y (broadcasting over leading dims)."""
    x = F.normalize(x, dim=-1)
    y = F.normalize(y, dim=-1)
    return (x - y).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


def cosine_dist_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 − cos(x, y), as the paper words the objective."""
    return 1 - F.cosine_similarity(x, y, dim=-1)


LOSSES = {"spherical": spherical_dist_loss, "cosine": cosine_dist_loss}


def prompt_loss(embeds: torch.Tensor, target: torch.Tensor, weight: float, stop: float,
                dist=spherical_dist_loss) -> torch.Tensor:
    """Distance of (n, d) cutout embeddings to a (d,) or (k, d) target, averaged over all n × k pairs, signed and
    scaled by `weight`.

    Below the `stop` value the gradient is cut, so a satisfied prompt stops pulling.
    """
    target = target.view(-1, target.shape[-1])  # (k, d)
    dists = dist(embeds.unsqueeze(1), target.unsqueeze(0)) * (1.0 if weight >= 0 else -1.0)  # (n, k)
    stopped = torch.maximum(dists, torch.full_like(dists, stop))
    return abs(weight) * replace_grad(dists, stopped).mean()


def sample_one_hot(logits: torch.Tensor, generator: torch.Generator, tau: float = 1.0) -> torch.Tensor:
    """Straight-through Gumbel-softmax sample over the last dim, with explicit randomness."""
    u = torch.rand(logits.shape, generator=generator, device=generator.device).to(logits)
    gumbel = -torch.log((-torch.log(u.clamp_min(1e-10))).clamp_min(1e-10))
    soft = F.softmax((logits + gumbel) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def sample_categorical(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Crowson's codebook-sampling step: a one-hot categorical draw from softmax(logits) over the last dim, with
    the gradient of softmax(logits) itself (straight through, no Gumbel noise in the gradient)."""
    probs = logits.softmax(-1)
    flat = probs.reshape(-1, probs.shape[-1])
    index = torch.multinomial(flat, 1, generator=generator)[:, 0]
    one_hot = F.one_hot(index, probs.shape[-1]).to(probs.dtype).view(probs.shape)
    return replace_grad(one_hot, probs)
