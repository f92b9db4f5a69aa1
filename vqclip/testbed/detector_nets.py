"""The judges' network (a small translation-tolerant CNN with one head per question), its training loop and its
accuracies."""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .detector_pictures import DetectorData

MEAN, STD = 0.5, 0.25  # inputs are (x / 255 - MEAN) / STD


class SmallConvNet(nn.Module):
    """Space-to-depth (2x2 pixels -> 12 channels, lossless and 4x cheaper than a full-resolution first layer), three
    conv-BN-ReLU-maxpool blocks (width w, 2w, 4w), average and max pooled, then one linear layer per head: tolerant
    to translation, which words that wander around a tiled picture need."""

    def __init__(self, width: int, heads: dict[str, int], pool: int = 1):
        super().__init__()
        self.pool = pool  # the object classifier looks at half resolution: shapes are large, words need pixels
        chans = [12, width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.head_names = list(heads)
        self.heads = nn.ModuleDict({k: nn.Linear(2 * chans[-1], n) for k, n in heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        f = self.features(F.pixel_unshuffle(x, 2))  # (N, 4w, H/(16 pool), W/(16 pool))
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)  # (N, 8w)
        return {k: self.heads[k](pooled) for k in self.head_names}


def normalise(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> float inputs."""
    return (images.float() / 255 - MEAN) / STD


def augment(images: torch.Tensor, gen: torch.Generator, max_shift: int = 6) -> torch.Tensor:
    """Cheap batch augmentation that multiplies the drawn pictures: one shift (edge-padded) and one colour-channel
    order per batch; neither changes what is written or drawn."""
    dx, dy = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=gen))
    perm = torch.randperm(3, generator=gen)
    x = images[:, perm]
    if dx or dy:
        p = max_shift
        x = F.pad(x.float(), (p, p, p, p), mode="replicate")
        h, w = images.shape[2:]
        x = x[:, :, p + dy:p + dy + h, p + dx:p + dx + w].round().to(torch.uint8)
    return x


def text_loss(out: dict, has_text: torch.Tensor, word: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on text presence plus cross-entropy on the word, over pictures with text only."""
    loss = F.binary_cross_entropy_with_logits(out["text"][:, 0], has_text.float())
    mask = has_text.bool()
    if mask.any():
        loss = loss + F.cross_entropy(out["word"][mask], word[mask])
    return loss


def object_loss(out: dict, obj: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out["object"], obj)


LossFn = Callable[[dict, DetectorData, torch.Tensor], torch.Tensor]


def train_model(model: nn.Module, data: DetectorData, loss_fn: LossFn, config, steps: int,
                seed_offset: int, on_step: Callable[[dict], None] | None = None) -> list[dict]:
    """AdamW with a cosine schedule on random batches drawn by a seeded generator (same seed => same weights);
    `config` is a detector.DetectorConfig (seed, lr, weight_decay, batch_size)."""
    gen = torch.Generator().manual_seed(config.seed * 1000 + seed_offset)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps, pct_start=0.1)
    model.train()
    history, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(data.images), (config.batch_size,), generator=gen)
        loss = loss_fn(model(normalise(augment(data.images[idx], gen))), data, idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        rec = {"step": step, "loss": float(loss.detach()), "seconds": time.perf_counter() - start}
        history.append(rec)
        if on_step:
            on_step(rec)
    model.eval()
    return history


@torch.no_grad()
def model_outputs(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Every head's outputs for (N, 3, H, W) uint8 images, `batch_size` at a time, in eval mode."""
    model.eval()
    outs = [model(normalise(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return {k: torch.cat([o[k] for o in outs]) for k in outs[0]} if outs else {}


def accuracies(text_model: nn.Module, object_model: nn.Module, data: DetectorData) -> dict:
    """Text-present accuracy (all pictures), word accuracy (pictures with text), object accuracy (all, "none"
    included) and on pictures with an object."""
    t = model_outputs(text_model, data.images)
    o = model_outputs(object_model, data.images)
    has = data.has_text.bool()
    pred_text = t["text"][:, 0] > 0
    pred_obj = o["object"].argmax(1)
    none = o["object"].shape[1] - 1
    with_obj = data.obj != none
    clutter_mask = torch.tensor([k == "clutter" for k in data.kinds])
    return {"n": len(data.images),
            "text_present": round(float((pred_text == has).float().mean()), 4),
            "text_false_positive_on_clutter": round(float(pred_text[clutter_mask].float().mean()), 4)
            if clutter_mask.any() else None,
            "word": round(float((t["word"].argmax(1)[has] == data.word[has]).float().mean()), 4) if has.any() else None,
            "object": round(float((pred_obj == data.obj).float().mean()), 4),
            "object_drawn": round(float((pred_obj[with_obj] == data.obj[with_obj]).float().mean()), 4)
            if with_obj.any() else None}
