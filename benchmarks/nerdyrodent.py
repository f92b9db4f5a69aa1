"""The speed baseline: nerdyrodent/VQGAN-CLIP's `generate.py` default loop, re-stated here (not copied).

What it follows, from generate.py at the default flags (`-cutm latest`, `-aug Af Pe Ji Er`, `-opt Adam`, `-lr 0.1`):

- CLIP comes from OpenAI's `clip.load(jit=False)`: on CUDA its linear, convolution and attention weights are fp16
  (layer norms compute in fp32), on the CPU everything is fp32. Here: open_clip's ViT-B-32 built with
  `precision="fp16"` on CUDA (the same conversion) and fp32 on the CPU. The image is cast to CLIP's dtype, the
  features back to fp32.
- Cutouts ("latest" cut method): `cutn` times, in a Python loop, the whole image pooled to CLIP's input size as
  (adaptive average pool + adaptive max pool) / 2; then kornia RandomAffine(15°, translate 0.1, shear 5, zeros),
  RandomPerspective(0.7), ColorJitter(0.1, 0.1, 0.1, 0.1), RandomErasing((0.1, 0.4), (0.3, 1/0.3),
  same_on_batch=True), each with p = 0.7; then noise: per cutout U(0, 0.1) × N(0, 1). The jitter is built as
  kornia's ColorJiggle: nerdyrodent pins kornia 0.5.4, whose ColorJitter kornia >= 0.6 keeps under that name (its
  own ColorJitter now applies brightness and contrast differently).
- One batched CLIP call for all cutouts: `encode_image(normalize(cutouts)).float()`.
- Loss: the spherical distance to the text embedding, averaged over cutouts (`Prompt`).
- `synth`: straight-through vector quantization, VQGAN decode (fp32), (x + 1) / 2, clamp with gradient.
- Adam (lr 0.1) on z; after each step z is clamped to the codebook's per-channel box under inference mode.
- No host read-back per step: the loss is printed and the image saved every 50 steps (`checkin`), which the
  timing here leaves out (in the baseline's favour).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PooledCutouts(nn.Module):
    """nerdyrodent's "latest" MakeCutouts with the default augments Af, Pe, Ji, Er."""

    def __init__(self, cut_size: int, cutn: int):
        import kornia.augmentation as K

        super().__init__()
        self.cutn = cutn
        self.augs = nn.Sequential(
            K.RandomAffine(degrees=15, translate=0.1, shear=5, p=0.7, padding_mode="zeros", keepdim=True),
            K.RandomPerspective(distortion_scale=0.7, p=0.7),
            K.ColorJiggle(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1, p=0.7),
            K.RandomErasing(scale=(0.1, 0.4), ratio=(0.3, 1 / 0.3), same_on_batch=True, p=0.7),
        )
        self.noise_fac = 0.1
        self.av_pool = nn.AdaptiveAvgPool2d((cut_size, cut_size))
        self.max_pool = nn.AdaptiveMaxPool2d((cut_size, cut_size))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        cutouts = [(self.av_pool(image) + self.max_pool(image)) / 2 for _ in range(self.cutn)]
        batch = self.augs(torch.cat(cutouts, dim=0))
        facs = batch.new_empty([self.cutn, 1, 1, 1]).uniform_(0, self.noise_fac)
        return batch + facs * torch.randn_like(batch)


def build_clip(device: torch.device):
    """ViT-B-32 (random weights: the cost per step is the same) in the dtype clip.load gives on `device`."""
    import open_clip

    precision = "fp16" if device.type == "cuda" else "fp32"
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None, device=device, precision=precision)
    return model.eval().requires_grad_(False), open_clip.get_tokenizer("ViT-B-32")


class Baseline:
    """One image optimised the way nerdyrodent's generate.py does it; `step()` is one iteration of `train(i)`."""

    MEAN = (0.48145466, 0.4578275, 0.40821073)
    STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, clip_model, tokenizer, vqgan, size: tuple[int, int], cutn: int, prompt: str, seed: int = 0):
        from vqclip.generation.ops import clamp_with_grad, vector_quantize

        self._vq, self._clamp = vector_quantize, clamp_with_grad
        device = next(vqgan.parameters()).device
        self.clip, self.vqgan, self.device = clip_model, vqgan, device
        self.dtype = next(clip_model.parameters()).dtype
        torch.manual_seed(seed)
        self.codebook = vqgan.codebook.detach()
        self.z_min = self.codebook.min(dim=0).values[None, :, None, None]
        self.z_max = self.codebook.max(dim=0).values[None, :, None, None]
        toks_x, toks_y = size[0] // vqgan.factor, size[1] // vqgan.factor
        n_toks = self.codebook.shape[0]
        one_hot = F.one_hot(torch.randint(n_toks, [toks_y * toks_x], device=device), n_toks).float()
        self.z = (one_hot @ self.codebook).view([-1, toks_y, toks_x, self.codebook.shape[1]]).permute(0, 3, 1, 2)
        self.z.requires_grad_(True)
        self.opt = torch.optim.Adam([self.z], lr=0.1)
        cut_size = clip_model.visual.image_size
        cut_size = cut_size[0] if isinstance(cut_size, (tuple, list)) else cut_size
        self.make_cutouts = PooledCutouts(cut_size, cutn)
        self.mean = torch.tensor(self.MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.STD, device=device).view(1, 3, 1, 1)
        with torch.no_grad():
            self.embed = clip_model.encode_text(tokenizer([prompt]).to(device)).float()

    def synth(self) -> torch.Tensor:
        z_q = self._vq(self.z.movedim(1, 3), self.codebook).movedim(3, 1)
        return self._clamp(self.vqgan.decode(z_q), 0, 1)  # vqclip's decode already returns (x + 1) / 2

    def loss(self, cut_embeds: torch.Tensor) -> torch.Tensor:
        a = F.normalize(cut_embeds.unsqueeze(1), dim=2)
        b = F.normalize(self.embed.unsqueeze(0), dim=2)
        return a.sub(b).norm(dim=2).div(2).arcsin().pow(2).mul(2).mean()

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        out = self.synth()
        cutouts = (self.make_cutouts(out) - self.mean) / self.std
        embeds = self.clip.encode_image(cutouts.to(self.dtype)).float()
        self.loss(embeds).backward()
        self.opt.step()
        with torch.inference_mode():
            self.z.copy_(self.z.maximum(self.z_min).minimum(self.z_max))
