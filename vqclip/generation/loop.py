"""The optimisation loop of VQGAN+CLIP, with the CLIP loss computed in a chosen embedding space (paper §7)."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import bad_arg, check_seed, choices_hint
from ..errors import quote_error
from ..untrusted import open_image
from .cutouts import DEFAULT_AUGMENTATIONS, MakeCutouts, parse_augmentations
from .ops import LOSSES, clamp_with_grad, prompt_loss, sample_one_hot, vector_quantize
from .prompts import Prompt, check_weights_nonzero

METHODS = ("zquant", "codebook")
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "radam": torch.optim.RAdam,
              "nadam": torch.optim.NAdam, "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop,
              "sgd": torch.optim.SGD}
# z+quantize: Adam lr 0.1 on continuous z (the common CLI tools). Codebook sampling: AdamW lr 0.05 on per-token
# logits (the paper's notebook, METHOD.md §7).
METHOD_DEFAULTS = {"zquant": ("adam", 0.1), "codebook": ("adamw", 0.05)}


@dataclass
class Settings:
    """Everything that determines an image, besides the models and the space."""

    prompts: list[Prompt]
    image_prompts: list[Prompt] = field(default_factory=list)
    size: tuple[int, int] = (480, 480)  # width, height
    steps: int = 300
    lr: float | None = None  # None: the method's default
    optimizer: str | None = None  # None: the method's default
    method: str = "zquant"
    loss: str = "spherical"
    cutn: int = 32
    cut_pow: float = 1.0
    augment: tuple[str, ...] = DEFAULT_AUGMENTATIONS
    noise: float = 0.1
    seed: int | None = None
    init_image: str | None = None
    init_weight: float = 0.0

    def resolved(self, factor: int) -> tuple["Settings", list[str]]:
        """Validate, fill in method defaults, draw a seed and snap the size; also return notices for the user."""
        notices = []
        check_weights_nonzero(self.prompts + self.image_prompts)
        if self.method not in METHODS:
            raise bad_arg("--method", "unknown optimisation method", self.method, choices_hint(METHODS))
        if self.loss not in LOSSES:
            raise bad_arg("--loss", "unknown loss", self.loss, choices_hint(LOSSES))
        optimizer = self.optimizer or METHOD_DEFAULTS[self.method][0]
        if optimizer not in OPTIMIZERS:
            raise bad_arg("--optimizer", "unknown optimizer", optimizer, choices_hint(OPTIMIZERS))
        lr = METHOD_DEFAULTS[self.method][1] if self.lr is None else float(self.lr)
        if not (math.isfinite(lr) and lr > 0):
            raise bad_arg("--lr", "the learning rate must be a positive number", self.lr, "Try --lr 0.1.")
        if self.steps < 0:
            raise bad_arg("--steps", "must be 0 or more", self.steps, "Try --steps 300.")
        if self.cutn < 1:
            raise bad_arg("--cutn", "at least one cutout is needed", self.cutn, "Try --cutn 32 (fewer if memory is short).")
        if not (self.cut_pow > 0):
            raise bad_arg("--cut-pow", "must be positive", self.cut_pow, "Try --cut-pow 1.0.")
        if self.noise < 0:
            raise bad_arg("--noise", "must be 0 or more", self.noise, "Try --noise 0.1.")
        if self.init_weight < 0:
            raise bad_arg("--init-weight", "must be 0 or more", self.init_weight, "Try --init-weight 0.5.")
        if self.init_image is not None:
            check_image_file(self.init_image, "--init-image")
        for p in self.image_prompts:
            check_image_file(p.text, "--image-prompt")
        if self.seed is not None:
            check_seed(self.seed)
        width, height = (int(v) for v in self.size)
        if width < factor or height < factor:
            raise bad_arg("--size", f"each side must hold at least one latent token ({factor} px for this VQGAN)",
                          f"{width} {height}", f"Use e.g. --size {max(width, 16 * factor)} {max(height, 16 * factor)}.")
        snapped = (width // factor * factor, height // factor * factor)
        if snapped != (width, height):
            notices.append(f"--size {width} {height} snapped down to {snapped[0]} {snapped[1]} "
                           f"(a multiple of the VQGAN factor {factor}).")
        seed = self.seed if self.seed is not None else int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
        augment = parse_augmentations(self.augment)
        return dataclasses.replace(self, size=snapped, lr=lr, optimizer=optimizer, seed=seed,
                                   augment=augment), notices

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["prompts"] = [p.to_dict() for p in self.prompts]
        d["image_prompts"] = [p.to_dict() for p in self.image_prompts]
        d["size"] = list(self.size)
        d["augment"] = list(self.augment)
        return d


@dataclass
class StepInfo:
    """What the callback sees after each step; `image` is the decoded (1, 3, H, W) tensor of that step."""

    step: int
    steps: int
    loss: float
    losses: list[float]
    image: torch.Tensor
    elapsed: float


@dataclass
class Result:
    """A finished (or stopped) generation."""

    image: Image.Image
    latent: torch.Tensor
    loss: float
    losses: dict[str, float]
    history: list[float]
    settings: Settings
    steps_done: int
    status: str  # finished | interrupted | nonfinite
    message: str | None
    seconds: float

    @property
    def seed(self) -> int:
        return int(self.settings.seed)


class Latent(NamedTuple):
    """A parametrisation of the image: what the optimiser moves and how it becomes a quantized latent."""

    params: list[torch.Tensor]
    quantized: Callable[[], torch.Tensor]  # -> (1, C, h, w)
    after_step: Callable[[], None]
    z: Callable[[], torch.Tensor]  # the continuous latent, for the init-weight term and the result


def zquant_latent(z0: torch.Tensor, codebook: torch.Tensor) -> Latent:
    """Crowson's z+quantize: Adam on continuous z, straight-through VQ, z clamped to the codebook's range."""
    z = z0.clone().requires_grad_(True)
    z_min = codebook.min(dim=0).values.view(1, -1, 1, 1)
    z_max = codebook.max(dim=0).values.view(1, -1, 1, 1)

    def quantized():
        return vector_quantize(z.movedim(1, 3), codebook).movedim(3, 1)  # (1, h, w, C) -> (1, C, h, w)

    def after_step():
        with torch.no_grad():
            z.copy_(z.maximum(z_min).minimum(z_max))

    return Latent([z], quantized, after_step, lambda: z)


def codebook_latent(logits0: torch.Tensor, codebook: torch.Tensor, generator: torch.Generator) -> Latent:
    """Codebook sampling (the paper's notebook): per-token logits, straight-through one-hot samples."""
    logits = logits0.clone().requires_grad_(True)  # (1, h, w, n_embed)

    def quantized():
        one_hot = sample_one_hot(logits, generator)  # (1, h, w, n_embed)
        return (one_hot @ codebook).movedim(3, 1)

    def z():
        return codebook[logits.argmax(-1)].movedim(3, 1)

    return Latent([logits], quantized, lambda: None, z)


def random_codes(h: int, w: int, codebook: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(1, C, h, w) latent made of uniformly drawn codebook entries."""
    idx = torch.randint(codebook.shape[0], (h * w,), generator=generator).to(codebook.device)
    return codebook[idx].view(1, h, w, -1).movedim(3, 1)


def check_image_file(path: str, arg: str) -> None:
    """Refuse a missing or unreadable image before any output is written (decoding it fully, as the run will)."""
    if not os.path.isfile(path):
        raise bad_arg(arg, "image file not found", path, "Check the path.")
    try:
        with open_image(path) as im:
            im.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise bad_arg(arg, "could not read the image", path, f"Use a PNG or JPEG file ({quote_error(e)}).") from e


def load_image(path: str, size: tuple[int, int], device: torch.device, arg: str) -> torch.Tensor:
    """Read an image file as a (1, 3, H, W) tensor in [0, 1], resized and centre-cropped to `size` (W, H)."""
    from PIL import ImageOps

    try:
        with open_image(path) as im:
            im = ImageOps.fit(im.convert("RGB"), tuple(size), Image.Resampling.LANCZOS)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise bad_arg(arg, "could not read the image", path, f"Use a PNG or JPEG file ({quote_error(e)}).") from e
    x = torch.from_numpy(__import__("numpy").asarray(im).copy()).float().div(255)
    return x.permute(2, 0, 1).unsqueeze(0).to(device)


def to_pil(image: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [0, 1] -> PIL image."""
    array = image[0].detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


def encode_targets(prompts: Sequence[Prompt], image_prompts: Sequence[Prompt], clip, space) -> torch.Tensor:
    """(n, d) projected targets: text prompts then image prompts, encoded once."""
    with torch.no_grad():
        parts = []
        if prompts:
            parts.append(clip.encode_text([p.text for p in prompts]))
        for p in image_prompts:
            parts.append(clip.encode_image(load_image(p.text, clip.input_size, clip.device, "--image-prompt")))
        return space.project(torch.cat(parts))


def initial_latent(settings: Settings, vqgan, generator: torch.Generator) -> torch.Tensor:
    """(1, C, h, w): the encoded --init-image, else seeded random codebook entries."""
    width, height = settings.size
    if settings.init_image:
        with torch.no_grad():
            return vqgan.encode(load_image(settings.init_image, (width, height), vqgan.codebook.device, "--init-image"))
    return random_codes(height // vqgan.factor, width // vqgan.factor, vqgan.codebook.detach(), generator)


def codebook_logits(z0: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(1, h, w, n_embed) starting logits that favour the codes nearest to z0."""
    with torch.no_grad():
        d = (z0.movedim(1, 3).unsqueeze(-2) - codebook).pow(2).sum(-1)  # (1, h, w, n_embed)
        return -d / d.std().clamp_min(1e-6)


def nonfinite_message(value: float, step: int, lr: float) -> str:
    """What happened when the loss of (0-based) `step` is NaN or inf, and what to do: true for the first step too."""
    if step == 0:  # nothing has been updated yet: the learning rate cannot be the cause
        return (f"the loss was {value} at the first step, before any update; the image is the unoptimised start. "
                "The learning rate is not the cause: check the models' weights, the projection and the prompts.")
    return (f"the loss became {value} at step {step + 1}; stopped and kept the image of step {step}, the last with a "
            f"finite loss. Lower --lr (now {lr}) or check the projection and prompts.")


def run(settings: Settings, clip, vqgan, space, callback: Callable[[StepInfo], None] | None = None) -> Result:
    """Optimise a VQGAN latent so that CLIP cutouts of its image match the prompts in `space`."""
    settings, _ = settings.resolved(vqgan.factor)
    device = clip.device
    # The VQGAN stays in fp32: decoding under bf16 autocast measured slower on an H100 (README, Speed).
    vqgan = vqgan.to(device)
    space = space.to(device)
    torch.manual_seed(settings.seed)  # anything random outside our generator (none expected) is seeded too
    gen = torch.Generator().manual_seed(settings.seed)
    dev_gen = torch.Generator(device).manual_seed(settings.seed) if device.type == "cuda" else None
    codebook = vqgan.codebook.detach()
    z0 = initial_latent(settings, vqgan, gen)
    if settings.method == "zquant":
        latent = zquant_latent(z0, codebook)
    else:
        latent = codebook_latent(codebook_logits(z0, codebook), codebook, dev_gen or gen)
    optimizer = OPTIMIZERS[settings.optimizer](latent.params, lr=settings.lr)
    make_cutouts = MakeCutouts(clip.input_size, settings.cutn, settings.cut_pow, settings.augment, settings.noise)
    targets = encode_targets(settings.prompts, settings.image_prompts, clip, space)
    all_prompts = list(settings.prompts) + list(settings.image_prompts)
    dist = LOSSES[settings.loss]

    history: list[float] = []
    losses: list[float] = []
    status, message = "finished", None
    last_good: list[torch.Tensor] | None = None
    start = time.perf_counter()
    try:
        for step in range(settings.steps):
            optimizer.zero_grad(set_to_none=True)
            image = clamp_with_grad(vqgan.decode(latent.quantized()), 0, 1)  # (1, 3, H, W)
            embeds = space.project(clip.encode_image(make_cutouts(image, gen, dev_gen)))  # (cutn, d)
            terms = [prompt_loss(embeds, t, p.weight, p.stop, dist) for p, t in zip(all_prompts, targets)]
            if settings.init_weight:
                terms.append(F.mse_loss(latent.z(), z0) * settings.init_weight / 2)
            total = torch.stack(terms).sum()
            value = total.item()
            if not math.isfinite(value):
                status = "nonfinite"
                message = nonfinite_message(value, step, settings.lr)
                if last_good is not None:
                    with torch.no_grad():
                        for p, good in zip(latent.params, last_good):
                            p.copy_(good)
                break
            total.backward()
            last_good = [p.detach().clone() for p in latent.params]
            optimizer.step()
            latent.after_step()
            history.append(value)
            losses = torch.stack(terms[:len(all_prompts)]).detach().tolist()
            if callback is not None:
                callback(StepInfo(step + 1, settings.steps, value, losses, image.detach(),
                                  time.perf_counter() - start))
    except KeyboardInterrupt:
        status, message = "interrupted", f"interrupted after {len(history)} of {settings.steps} steps"
    steps_done = len(history)
    with torch.no_grad():
        z_final = latent.z().detach()
        final = vqgan.decode(vector_quantize(z_final.movedim(1, 3), codebook).movedim(3, 1)).clamp(0, 1)
    return Result(image=to_pil(final), latent=z_final.cpu(), loss=history[-1] if history else float("nan"),
                  losses={p.text: l for p, l in zip(all_prompts, losses)}, history=history, settings=settings,
                  steps_done=steps_done, status=status, message=message, seconds=time.perf_counter() - start)
