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


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on gains, biases, embeddings and the logit scale (as open_clip's training does)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name \
            or "embedding" in name or "class_embedding" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_small_clip(model_cfg: dict, images: torch.Tensor, captions: list[str], config: ClipTrainConfig,
                     callback: Callable[[dict], None] | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """Train `open_clip.CLIP(**model_cfg)` with the symmetric contrastive loss on (N, 3, H, W) uint8 images."""
    import open_clip

    if len(images) != len(captions) or len(images) < 2:
        raise bad_arg("images", "need as many captions as images, at least 2", (len(images), len(captions)),
                      "Generate a larger training set.")
    if config.steps < 1 or config.batch_size < 2:
        raise bad_arg("--steps", "need at least 1 step of batches of at least 2", (config.steps, config.batch_size),
                      "Use e.g. --steps 1500.")
    torch.manual_seed(config.seed)
    model = open_clip.CLIP(**model_cfg)
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
        x = (images[idx].float() / 255 - mean) / std  # (B, 3, H, W)
        img_f = model.encode_image(x, normalize=True)  # (B, D)
        txt_f = model.encode_text(tokens[idx], normalize=True)  # (B, D)
        same = (tokens[idx][:, None, :] == tokens[idx][None, :, :]).all(-1) if config.caption_positives else None
        loss = contrastive_loss(img_f, txt_f, model.logit_scale.exp(), same)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        record = {"step": step + 1, "loss": float(loss.detach()), "lr": lr_at(step, config),
                  "logit_scale": float(model.logit_scale.detach().exp()), "seconds": time.perf_counter() - start}
        history.append(record)
        if callback:
            callback(record)
    return model.eval(), history


def save_small_clip(model: torch.nn.Module, model_cfg: dict, path: str | os.PathLike) -> str:
    """Save in open_clip's local-dir format and return the `local-dir:` identifier that `load_clip` takes."""
    from ..models.clip import save_local_dir

    preprocess = {"size": model_cfg["vision_cfg"]["image_size"], **SMALL_PREPROCESS}
    save_local_dir(model, model_cfg, path, preprocess)
    return f"local-dir:{Path(path)}"
