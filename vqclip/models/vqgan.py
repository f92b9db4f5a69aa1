"""VQGAN adapter built from taming.modules (never taming.models: that pulls in pytorch-lightning and LPIPS)."""

from __future__ import annotations

import contextlib
import io
from typing import Any, Mapping

import torch
from torch import nn

KINDS = ("vq", "gumbel")


class VQGAN(nn.Module):
    """Encoder, decoder, quant convs and codebook of a taming VQModel or GumbelVQ; images are in [0, 1]."""

    def __init__(self, ddconfig: Mapping[str, Any], n_embed: int, embed_dim: int, kind: str = "vq"):
        super().__init__()
        from taming.modules.diffusionmodules.model import Decoder, Encoder
        from taming.modules.vqvae.quantize import GumbelQuantize, VectorQuantizer

        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.ddconfig = dict(ddconfig)
        self.n_embed = int(n_embed)
        self.embed_dim = int(embed_dim)
        z_channels = int(ddconfig["z_channels"])
        self.encoder = Encoder(**ddconfig)
        with contextlib.redirect_stdout(io.StringIO()):  # taming's Decoder prints its latent shape
            self.decoder = Decoder(**ddconfig)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)
        if kind == "vq":
            self.quantize = VectorQuantizer(n_embed, embed_dim, beta=0.25)
        else:
            self.quantize = GumbelQuantize(z_channels, embed_dim, n_embed=n_embed)
        self.requires_grad_(False).eval()

    @property
    def factor(self) -> int:
        """Pixels per latent token along each side (16 for f16 models, 8 for f8)."""
        return 2 ** (len(self.ddconfig["ch_mult"]) - 1)

    @property
    def codebook(self) -> torch.Tensor:
        """(n_embed, embed_dim) codebook vectors."""
        return (self.quantize.embedding if self.kind == "vq" else self.quantize.embed).weight

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, embed_dim, H/f, W/f) latent before quantization."""
        h = self.quant_conv(self.encoder(images * 2 - 1))
        if self.kind == "gumbel":
            # Gumbel models pick codes from logits rather than by distance; take the most likely code.
            idx = self.quantize.proj(h).argmax(dim=1)  # (B, h, w)
            h = self.codebook[idx].permute(0, 3, 1, 2)
        return h

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim, h, w) quantized latent -> (B, 3, h*f, w*f) image, about [0, 1] (not clamped)."""
        return (self.decoder(self.post_quant_conv(z_q)) + 1) / 2

    def describe(self) -> dict:
        return {"kind": self.kind, "factor": self.factor, "n_embed": self.n_embed, "embed_dim": self.embed_dim}
