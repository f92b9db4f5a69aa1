"""A small VQGAN trained on the synthetic world, so that VQGAN+CLIP can generate pictures of that world (CPU, minutes).

The model is `vqclip.models.vqgan.VQGAN`, the very class vqclip loads published checkpoints into (taming's Encoder,
Decoder and VectorQuantizer), trained as a plain VQ-VAE (van den Oord et al. 2017): reconstruction loss plus the
quantizer's codebook and commitment terms. The world has flat colours and sharp glyphs and no textures, so the
adversarial and perceptual losses of Esser et al. (2021) are not needed for letters to stay legible.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import bad_arg, check_seed

VQGAN_FILE = "vqgan.safetensors"
RECORD_FILE = "vqgan.json"
GRID_FILE = "vqgan_reconstructions.png"
TRAIN_SPLIT = "vqgan"  # never the CLIP's "train" split: the two models never share a picture
HELDOUT_SPLIT = "vqgan-heldout"


@dataclass
class VqganTrainConfig:
    """Architecture and training settings of the world's VQGAN; `quick()` is the test suite's."""

    image_size: int = 64
    ch: int = 32  # taming's GroupNorm takes 32 groups: channel counts must be multiples of 32
    # 3 levels: factor 4, a 16x16 latent for 64x64 images (factor 8 blurs 8-16 px letters). The wide level is the
    # coarsest only: the decoder's cost is in its full-resolution convolutions, run at every generation step.
    ch_mult: tuple[int, ...] = (1, 1, 2)
    num_res_blocks: int = 1
    z_channels: int = 64
    embed_dim: int = 32
    n_embed: int = 1024  # the world's backgrounds take any RGB colour: 256 codes gave visibly wrong hues
    n_images: int = 4000
    n_heldout: int = 256
    steps: int = 1500
    batch_size: int = 16
    crop: int = 32  # train on random crops of this side (0: whole images); the model is fully convolutional
    lr: float = 3e-3
    warmup: int = 50
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    revive_after: int = 25  # a code unused for this many steps is moved onto a current encoder output
    seed: int = 0

    # The flag each field is blamed under in error messages.
    FLAGS = {"image_size": "--image-size", "ch": "--vqgan-ch", "ch_mult": "--vqgan-ch-mult",
             "num_res_blocks": "--vqgan-res-blocks", "z_channels": "--vqgan-z-channels",
             "embed_dim": "--vqgan-embed-dim", "n_embed": "--vqgan-codes", "n_images": "--vqgan-images",
             "n_heldout": "--vqgan-heldout", "steps": "--vqgan-steps", "batch_size": "--vqgan-batch",
             "crop": "--vqgan-crop", "lr": "--vqgan-lr", "warmup": "--vqgan-warmup", "l1_weight": "--vqgan-l1",
             "mse_weight": "--vqgan-mse", "revive_after": "--vqgan-revive-after", "seed": "--seed"}

    @classmethod
    def quick(cls, **overrides) -> "VqganTrainConfig":
        """The test suite's configuration: 150 steps of 8 crops (rough reconstructions: shapes, big words as bars)."""
        base = dict(n_embed=256, n_images=1000, n_heldout=64, steps=150, batch_size=8, warmup=20, revive_after=20)
        return cls(**{**base, **overrides})

    def __post_init__(self):
        self.ch_mult = tuple(self.ch_mult) if isinstance(self.ch_mult, (list, tuple)) else self.ch_mult
        flag = self.FLAGS

        def whole(name: str, low: int, high: int, fix: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise bad_arg(flag[name], f"must be a whole number from {low} to {high}", v, fix)

        mult = self.ch_mult
        if not isinstance(mult, tuple) or not 2 <= len(mult) <= 4 or \
                any(isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= 8 for m in mult):
            raise bad_arg(flag["ch_mult"], "must list 2 to 4 channel multipliers from 1 to 8 (the factor is "
                          "2 ** (levels - 1))", self.ch_mult, "Use (1, 2, 2) for factor 4.")
        whole("ch", 32, 512, "Use 32 or 64.")
        if self.ch % 32:
            raise bad_arg(flag["ch"], "must be a multiple of 32 (taming normalises with 32 groups)", self.ch,
                          "Use 32 or 64.")
        factor = 2 ** (len(mult) - 1)
        whole("image_size", 16, 1024, "Use 64, the world's image size.")
        if self.image_size % factor:
            raise bad_arg(flag["image_size"], f"must be a multiple of the factor {factor} (from ch_mult)",
                          self.image_size, "Use 64.")
        whole("num_res_blocks", 1, 4, "Use 1.")
        whole("z_channels", 1, 1024, "Use 64.")
        whole("embed_dim", 1, 1024, "Use 32.")
        whole("n_embed", 2, 65536, "Use 256.")
        whole("n_images", 1, 10_000_000, "Use e.g. 6000.")
        whole("n_heldout", 1, 1_000_000, "Use e.g. 256.")
        whole("steps", 1, 10_000_000, "Use e.g. 2000 (or --quick).")
        whole("batch_size", 1, 65536, "Use e.g. 32.")
        if self.crop and (not isinstance(self.crop, int) or isinstance(self.crop, bool) or
                          not factor * 4 <= self.crop <= self.image_size or self.crop % factor):
            raise bad_arg(flag["crop"], f"must be 0 (whole images) or a multiple of the factor {factor} from "
                          f"{factor * 4} to the image size {self.image_size}", self.crop, "Use 32 or 0.")
        whole("warmup", 0, 10_000_000, "Use e.g. 50.")
        whole("revive_after", 1, 10_000_000, "Use e.g. 50.")
        for name in ("lr", "l1_weight", "mse_weight"):
            v = getattr(self, name)
            low_ok = v > 0 if name == "lr" else v >= 0
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not low_ok:
                rule = "must be a positive number" if name == "lr" else "must be a number >= 0"
                raise bad_arg(flag[name], rule, v, "Use the default.")
        if self.l1_weight + self.mse_weight <= 0:
            raise bad_arg(flag["l1_weight"], "and --vqgan-mse cannot both be 0 (nothing would be reconstructed)",
                          (self.l1_weight, self.mse_weight), "Use 1 and 1.")
        check_seed(self.seed, flag["seed"])

    @property
    def factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def ddconfig(self) -> dict:
        """taming's ddconfig for these settings (no attention beyond the mid block taming always has)."""
        return {"double_z": False, "z_channels": self.z_channels, "resolution": self.image_size, "in_channels": 3,
                "out_ch": 3, "ch": self.ch, "ch_mult": list(self.ch_mult), "num_res_blocks": self.num_res_blocks,
                "attn_resolutions": [], "dropout": 0.0}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        return d


def lr_at(step: int, config: VqganTrainConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def build_vqgan(config: VqganTrainConfig):
    """A freshly initialised VQGAN for `config`, its weights drawn from `config.seed` (global RNG left alone)."""
    from ..models.vqgan import VQGAN

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return VQGAN(config.ddconfig(), config.n_embed, config.embed_dim, kind="vq")


def to_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> float in [0, 1]."""
    return images_uint8.float() / 255


def quantize(vqgan, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, D, h, w) encoder latent -> (straight-through z_q, codebook + commitment loss, (B*h*w,) code indices)."""
    z_q, vq_loss, (_, _, idx) = vqgan.quantize(z)
    return z_q, vq_loss, idx.view(-1)


def random_crops(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, size, size), one random window per image; size 0 or H keeps the images whole."""
    if not size or size >= x.shape[-1]:
        return x
    top = torch.randint(x.shape[-2] - size + 1, (len(x),), generator=gen).tolist()
    left = torch.randint(x.shape[-1] - size + 1, (len(x),), generator=gen).tolist()
    return torch.stack([im[:, t:t + size, l:l + size] for im, t, l in zip(x, top, left)])


def reconstruction_loss(x_rec: torch.Tensor, x: torch.Tensor, config: VqganTrainConfig) -> torch.Tensor:
    """L1 keeps glyph edges sharp, MSE punishes the rare large miss (a letter gone); both on [0, 1] pixels."""
    return config.l1_weight * (x_rec - x).abs().mean() + config.mse_weight * F.mse_loss(x_rec, x)


@torch.no_grad()
def revive_codes(codebook: torch.Tensor, dead: torch.Tensor, z_flat: torch.Tensor, gen: torch.Generator) -> int:
    """Move each dead code onto an encoder output drawn at random from the batch (the restart trick of
    Dhariwal et al. 2020, Jukebox): a code nothing maps to never gets a gradient and would stay dead for good."""
    idx = dead.nonzero().view(-1)
    if len(idx) == 0:
        return 0
    pick = torch.randint(len(z_flat), (len(idx),), generator=gen)
    codebook[idx] = z_flat[pick].to(codebook.dtype)
    return len(idx)


def train_world_vqgan(images_uint8: torch.Tensor, config: VqganTrainConfig,
                      callback: Callable[[dict], None] | None = None):
    """Train a VQGAN on (N, 3, H, W) uint8 images: L1 + MSE reconstruction plus the VQ codebook / commitment loss,
    dead codes restarted from encoder outputs. Returns (model in eval mode without grads, per-step history)."""
    if images_uint8.ndim != 4 or images_uint8.shape[1] != 3 or images_uint8.dtype != torch.uint8:
        raise bad_arg("images", "must be a (N, 3, H, W) uint8 tensor", tuple(images_uint8.shape),
                      "Pass training_set(world, n)[0].")
    if tuple(images_uint8.shape[2:]) != (config.image_size, config.image_size):
        raise bad_arg("--image-size", "must match the images' size", config.image_size,
                      f"Use {images_uint8.shape[-1]} (the world's image size).")
    model = build_vqgan(config)
    model.requires_grad_(True).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.5, 0.9))
    gen = torch.Generator().manual_seed(config.seed)
    batch_size = min(config.batch_size, len(images_uint8))
    order, pos = torch.randperm(len(images_uint8), generator=gen), 0
    last_used = torch.zeros(config.n_embed, dtype=torch.long)  # step at which each code was last chosen
    history: list[dict] = []
    start = time.perf_counter()
    for step in range(config.steps):
        if pos + batch_size > len(order):  # a new epoch: reshuffle
            order, pos = torch.randperm(len(images_uint8), generator=gen), 0
        x = random_crops(to_unit(images_uint8[order[pos:pos + batch_size]]), config.crop, gen)  # (B, 3, c, c)
        pos += batch_size
        for g in opt.param_groups:
            g["lr"] = lr_at(step, config)
        z = model.quant_conv(model.encoder(x * 2 - 1))  # (B, D, h, w), as VQGAN.encode
        z_flat = z.detach().permute(0, 2, 3, 1).reshape(-1, config.embed_dim)  # (B*h*w, D)
        if step == 0:  # start the codebook on the encoder's outputs, not taming's near-zero uniform init
            revive_codes(model.codebook.data, torch.ones(config.n_embed, dtype=torch.bool), z_flat, gen)
        z_q, vq_loss, idx = quantize(model, z)
        x_rec = model.decode(z_q)
        recon = reconstruction_loss(x_rec, x, config)
        loss = recon + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        used = torch.unique(idx)
        last_used[used] = step + 1
        revived = 0
        if (step + 1) % config.revive_after == 0 and step + 1 < config.steps:
            revived = revive_codes(model.codebook.data, step + 1 - last_used >= config.revive_after, z_flat, gen)
        record = {"step": step + 1, "loss": float(loss.detach()), "recon": float(recon.detach()),
                  "vq": float(vq_loss.detach()), "codes_used": int(len(used)), "revived": revived,
                  "lr": lr_at(step, config), "seconds": time.perf_counter() - start}
        history.append(record)
        if callback:
            callback(record)
    return model.requires_grad_(False).eval(), history


@torch.no_grad()
def reconstruct(vqgan, images_uint8: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) uint8 -> (reconstructions in [0, 1] float, (N, h*w) code indices)."""
    outs, codes = [], []
    for i in range(0, len(images_uint8), batch_size):
        x = to_unit(images_uint8[i:i + batch_size])
        z_q, _, idx = quantize(vqgan, vqgan.encode(x))
        outs.append(vqgan.decode(z_q).clamp(0, 1))
        codes.append(idx.view(len(x), -1))
    return torch.cat(outs), torch.cat(codes)


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB for pixels in [0, 1]."""
    return 10 * math.log10(1 / mse) if mse > 0 else float("inf")


def evaluate_reconstruction(vqgan, images_uint8: torch.Tensor, kinds: Sequence[str] | None = None) -> dict:
    """MSE and PSNR of the reconstructions, the share of the codebook they use, and the same per image kind."""
    rec, codes = reconstruct(vqgan, images_uint8)
    per_image = (rec - to_unit(images_uint8)).pow(2).flatten(1).mean(1)  # (N,)

    def summary(mask: torch.Tensor) -> dict:
        mse = float(per_image[mask].mean())
        used = int(torch.unique(codes[mask]).numel())
        return {"n": int(mask.sum()), "mse": mse, "psnr": psnr(mse), "codes_used": used,
                "codebook_usage": used / vqgan.n_embed}

    out = summary(torch.ones(len(per_image), dtype=torch.bool))
    if kinds is not None:
        out["per_kind"] = {k: summary(torch.tensor([kk == k for kk in kinds])) for k in sorted(set(kinds))}
    return out


def save_world_vqgan(vqgan, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write a self-describing .safetensors file: `load_vqgan(None, path)` and `--vqgan-checkpoint` read it alone."""
    from ..models.vqgan import save_converted

    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    return save_converted(vqgan, path, {"name": "testbed-world-vqgan", **meta})


def reconstruction_grid(vqgan, images_uint8: torch.Tensor, path: str | os.PathLike, per_row: int = 8,
                        scale: int = 2) -> Path:
    """A PNG of originals over their reconstructions, `per_row` pairs a row, enlarged `scale` times (nearest)."""
    from PIL import Image

    from ..io import save_png

    rec, _ = reconstruct(vqgan, images_uint8)
    rec = (rec * 255).round().to(torch.uint8)
    n, _, h, w = images_uint8.shape
    rows = math.ceil(n / per_row)
    grid = torch.full((3, rows * 2 * h, per_row * w), 255, dtype=torch.uint8)
    for k in range(n):
        r, c = divmod(k, per_row)
        grid[:, 2 * r * h:(2 * r + 1) * h, c * w:(c + 1) * w] = images_uint8[k]
        grid[:, (2 * r + 1) * h:(2 * r + 2) * h, c * w:(c + 1) * w] = rec[k]
    image = Image.fromarray(grid.permute(1, 2, 0).numpy())
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    save_png(image, path)
    return Path(path)


def _history_summary(history: list[dict], points: int = 10) -> dict:
    """The loss curve at about `points` steps, and the last step's numbers."""
    every = max(1, len(history) // points)
    keep = [h for h in history if h["step"] % every == 0 or h["step"] in (1, len(history))]
    fields = ("step", "loss", "recon", "vq", "codes_used")
    return {"curve": [{k: round(h[k], 5) if isinstance(h[k], float) else h[k] for k in fields} for h in keep],
            "revived_total": sum(h["revived"] for h in history), "last": {k: history[-1][k] for k in fields}}


def vqgan_recipe(world, config: VqganTrainConfig) -> dict:
    """Everything that decides the VQGAN's weights (a saved model is reused only when this matches)."""
    return {"world": world.to_dict(), "vqgan": config.to_dict(), "splits": [TRAIN_SPLIT, HELDOUT_SPLIT]}


def train_vqgan_stage(world, config: VqganTrainConfig, out_dir: str | os.PathLike, progress: bool = True,
                      reuse: bool = False) -> dict:
    """Generate the world's pictures, train the VQGAN, save `vqgan.safetensors`, `vqgan.json` and a grid of
    reconstructions in `out_dir`. With `reuse`, a model already there whose recipe matches is kept as is."""
    from ..io import writable_folder as writable_dir  # a read-only or full disk: exit 74
    from ..io import write_json
    from .progress import bar as _bar
    from .world import training_set

    if config.image_size != world.image_size:
        raise bad_arg("--image-size", "the VQGAN must be trained at the world's image size", config.image_size,
                      f"Use {world.image_size}.")
    out = writable_dir(Path(out_dir).expanduser(), "--out")
    record_path, model_path = out / RECORD_FILE, out / VQGAN_FILE
    recipe = vqgan_recipe(world, config)
    if reuse and record_path.is_file() and model_path.is_file():
        record = _read_record(record_path)
        if isinstance(record, dict) and record.get("recipe") == recipe:
            return {**record, "reused": True}
    start = time.perf_counter()
    with _bar(config.n_images + config.n_heldout, "world: VQGAN pictures", progress) as bar:
        images, _, _ = training_set(world, config.n_images, split=TRAIN_SPLIT, progress=bar.update)
        held, _, held_kinds = training_set(world, config.n_heldout, split=HELDOUT_SPLIT, progress=bar.update)
    data_seconds = time.perf_counter() - start
    t = time.perf_counter()
    with _bar(config.steps, "VQGAN training", progress) as bar:
        def on_step(r: dict) -> None:
            bar.update(1)
            if r["step"] % 20 == 0:
                bar.set_postfix(loss=f"{r['loss']:.4f}", codes=r["codes_used"])

        vqgan, history = train_world_vqgan(images, config, on_step)
    train_seconds = time.perf_counter() - t
    metrics = evaluate_reconstruction(vqgan, held, held_kinds)
    save_world_vqgan(vqgan, model_path, {"testbed_recipe": recipe})
    reconstruction_grid(vqgan, held[:16], out / GRID_FILE)
    record = {"vqgan": str(model_path), "recipe": recipe, "model": vqgan.describe(), "history": _history_summary(history),
              "heldout": metrics, "grid": str(out / GRID_FILE),
              "seconds": {"data": round(data_seconds, 1), "train": round(train_seconds, 1)},
              "threads": torch.get_num_threads()}
    write_json(record_path, record)
    return {**record, "reused": False}


def _read_record(path):
    """A record this testbed wrote earlier, or None when it is unreadable (then the step runs again)."""
    from ..untrusted import read_json

    try:
        return read_json(path)
    except (OSError, ValueError):
        return None
