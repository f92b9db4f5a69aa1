"""A small open_clip CLIP trained from scratch, contrastively, on the synthetic world (CPU, minutes)."""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import bad_arg

# CLIP's own normalisation constants: the small model is preprocessed exactly like the real ones.
SMALL_PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}


def small_clip_config(image_size: int = 64, embed_dim: int = 64, width: int = 12, text_width: int = 64,
                      text_layers: int = 2, context_length: int = 16) -> dict:
    """An open_clip config: a small ModifiedResNet image tower (convolutions learn shapes from few samples, where
    a ViT this small barely does) and a short-context text transformer with the standard BPE vocabulary."""
    if image_size % 32:
        raise bad_arg("--image-size", "the ResNet image tower needs a multiple of 32", image_size, "Use 64.")
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": [1, 1, 1, 1], "width": width, "head_width": 32},
        "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": text_width,
                     "heads": max(1, text_width // 32), "layers": text_layers},
    }


@dataclass
class ClipTrainConfig:
    """Contrastive training settings of the small CLIP."""

    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 50
    caption_positives: bool = True  # identical captions in a batch are positives, not false negatives
    seed: int = 0
    # Robustness (issue 33; docs/testbed.md, "A world CLIP whose gradients draw"). All off by default.
    crop_scale: float = 1.0  # < 1: every batch a random square crop of this share of the side or more, rescaled
    adv_eps: float = 0.0  # > 0: PGD-L2 adversarial training, radius in [0, 1] pixel units over the whole image
    adv_steps: int = 2  # PGD steps per batch, each 2.5·eps/adv_steps long, from a random start in the ball
    adv_ramp: float = 0.3  # share of the steps over which eps grows linearly from 0

    def to_dict(self) -> dict:
        return asdict(self)


def lr_at(step: int, config: ClipTrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero (open_clip's default schedule)."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return 0.5 * config.lr * (1 + math.cos(math.pi * progress))


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                     same: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric InfoNCE; with `same` (B, B), every pair sharing a caption is a positive (soft targets).

    A small world repeats captions ("a star") many times per batch; as plain negatives they would push apart
    exactly the images the model should bring together.
    """
    logits = logit_scale * image_features @ text_features.T  # (B, B)
    if same is None:
        same = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    target = same.float() / same.float().sum(dim=1, keepdim=True)  # (B, B), rows sum to 1; `same` is symmetric
    return 0.5 * (torch.sum(-target * logits.log_softmax(dim=1), dim=1).mean()
                  + torch.sum(-target * logits.T.log_softmax(dim=1), dim=1).mean())


def random_crops(x: torch.Tensor, min_scale: float, gen: torch.Generator) -> torch.Tensor:
    """Each image of (B, 3, H, H) a random square crop of side min_scale·H .. H, resized back to H (antialiased):
    the training-time twin of the generator's cutouts."""
    if min_scale >= 1:
        return x
    B, _, H, W = x.shape
    sides = (H * (min_scale + (1 - min_scale) * torch.rand(B, generator=gen))).round().long().clamp(8, H)
    out = []
    for img, k in zip(x, sides.tolist()):
        oy, ox = (int(torch.randint(0, H - k + 1, (1,), generator=gen)) for _ in range(2))
        crop = img[None, :, oy:oy + k, ox:ox + k]
        out.append(crop if k == H else torch.nn.functional.interpolate(crop, size=(H, W), mode="bilinear",
                                                                        align_corners=False, antialias=True))
    return torch.cat(out)


def pgd_l2(loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float, steps: int,
           gen: torch.Generator) -> torch.Tensor:
    """x (B, 3, H, W) in [0, 1] moved within an L2 ball of radius `eps` per image to raise `loss_fn` (PGD with a
    random start, step 2.5·eps/steps, images kept in [0, 1]; Madry et al. 2018). Written out because attack
    libraries (torchattacks, advertorch) attack classifiers' labels, not a contrastive loss."""
    def per_image_norm(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)

    delta = torch.randn(x.shape, generator=gen)
    delta = delta / per_image_norm(delta) * eps * torch.rand(len(x), 1, 1, 1, generator=gen)
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        grad, = torch.autograd.grad(loss_fn(x + delta), delta)
        delta = delta.detach() + (2.5 * eps / steps) * grad / per_image_norm(grad)
        delta = delta * (eps / per_image_norm(delta)).clamp(max=1.0)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def adv_eps_at(step: int, config: ClipTrainConfig) -> float:
    """The attack radius at `step`: 0 without adversarial training, else grown linearly over `adv_ramp`."""
    if config.adv_eps <= 0:
        return 0.0
    ramp = config.adv_ramp * config.steps
    return config.adv_eps * min(1.0, (step + 1) / ramp) if ramp >= 1 else config.adv_eps


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on gains, biases, embeddings and the logit scale (as open_clip's training does)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name \
            or "embedding" in name or "class_embedding" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_small_clip(model_cfg: dict, images: torch.Tensor, captions: list[str], config: ClipTrainConfig,
                     callback: Callable[[dict], None] | None = None,
                     init: dict | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """Train `open_clip.CLIP(**model_cfg)` with the symmetric contrastive loss on (N, 3, H, W) uint8 images.

    `init`: a state dict to start from (a clean CLIP to fine-tune adversarially). With `config.crop_scale` < 1 each
    batch is randomly cropped and rescaled; with `config.adv_eps` > 0 each batch is replaced by its PGD-L2 attack on
    the contrastive loss (the model in eval mode while attacking, so BatchNorm statistics see clean batches only).
    """
    import open_clip

    if len(images) != len(captions) or len(images) < 2:
        raise bad_arg("images", "need as many captions as images, at least 2", (len(images), len(captions)),
                      "Generate a larger training set.")
    if config.steps < 1 or config.batch_size < 2:
        raise bad_arg("--steps", "need at least 1 step of batches of at least 2", (config.steps, config.batch_size),
                      "Use e.g. --steps 1500.")
    torch.manual_seed(config.seed)
    model = open_clip.CLIP(**model_cfg)
    if init is not None:
        model.load_state_dict(init)
    tokenizer = open_clip.tokenize  # the standard SimpleTokenizer vocabulary
    tokens = tokenizer(captions, context_length=model_cfg["text_cfg"]["context_length"])  # (N, L)
    mean = torch.tensor(SMALL_PREPROCESS["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(SMALL_PREPROCESS["std"]).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.98), eps=1e-6)
    gen = torch.Generator().manual_seed(config.seed)
    batch_size = min(config.batch_size, len(images))
    order, pos, history = torch.randperm(len(images), generator=gen), 0, []
    model.train()
    start = time.perf_counter()
    for step in range(config.steps):
        if pos + batch_size > len(order):  # a new epoch: reshuffle
            order, pos = torch.randperm(len(images), generator=gen), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        for g in opt.param_groups:
            g["lr"] = lr_at(step, config)
        x = random_crops(images[idx].float() / 255, config.crop_scale, gen)  # (B, 3, H, W) in [0, 1]
        same = (tokens[idx][:, None, :] == tokens[idx][None, :, :]).all(-1) if config.caption_positives else None
        eps = adv_eps_at(step, config)
        if eps > 0:
            x = _attack(model, x, tokens[idx], same, mean, std, eps, config.adv_steps, gen)
        img_f = model.encode_image((x - mean) / std, normalize=True)  # (B, D)
        txt_f = model.encode_text(tokens[idx], normalize=True)  # (B, D)
        loss = contrastive_loss(img_f, txt_f, model.logit_scale.exp(), same)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        record = {"step": step + 1, "loss": float(loss.detach()), "lr": lr_at(step, config), "eps": eps,
                  "logit_scale": float(model.logit_scale.detach().exp()), "seconds": time.perf_counter() - start}
        history.append(record)
        if callback:
            callback(record)
    return model.eval(), history


def _attack(model, x, tokens, same, mean, std, eps, steps, gen) -> torch.Tensor:
    """The batch's PGD-L2 attack on the contrastive loss against its own captions (text features held fixed)."""
    model.eval()
    with torch.no_grad():
        txt_f = model.encode_text(tokens, normalize=True)
    scale = model.logit_scale.exp().detach()
    x_adv = pgd_l2(lambda v: contrastive_loss(model.encode_image((v - mean) / std, normalize=True), txt_f, scale, same),
                   x, eps, steps, gen)
    model.train()
    return x_adv


def save_small_clip(model: torch.nn.Module, model_cfg: dict, path: str | os.PathLike) -> str:
    """Save in open_clip's local-dir format and return the `local-dir:` identifier that `load_clip` takes."""
    from ..models.clip import save_local_dir

    preprocess = {"size": model_cfg["vision_cfg"]["image_size"], **SMALL_PREPROCESS}
    save_local_dir(model, model_cfg, path, preprocess)
    return f"local-dir:{Path(path)}"
