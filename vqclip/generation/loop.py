"""The optimisation loop of VQGAN+CLIP, with the CLIP loss computed in a chosen embedding space (docs/method.md §7).

One loop optimises a group of jobs at once (`run_many`): their latents are stacked, one VQGAN decode and one CLIP
call per step serve them all, and each job keeps its own seeded cutouts, targets, projection and (Adam being
elementwise) optimiser state. `run` is the group of one. Nothing in a step waits for the device: losses stay on it
and are read back every `report_every` steps, and a job whose loss turns non-finite keeps, on the device, the
latent of its last finite step.
"""

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

from ..errors import VqclipError, bad_arg, check_seed, choices_hint, quote_error
from ..untrusted import open_image
from .cutouts import DEFAULT_AUGMENTATIONS, MakeCutouts, parse_augmentations
from .ops import LOSSES, clamp_with_grad, prompt_loss, sample_categorical, sample_one_hot, vector_quantize
from .prompts import Prompt, check_weights_nonzero
from .recipes import RECIPE_FIELDS, Recipe, get_recipe

METHODS = ("zquant", "codebook")
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "radam": torch.optim.RAdam,
              "nadam": torch.optim.NAdam, "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop,
              "sgd": torch.optim.SGD}
# z+quantize: Adam lr 0.1 on continuous z (the common CLI tools). Codebook sampling: AdamW lr 0.05 on per-token
# logits (the paper's notebook, docs/method.md §7).
METHOD_DEFAULTS = {"zquant": ("adam", 0.1), "codebook": ("adamw", 0.05)}
IMAGE_PROMPT_MODES = ("cutouts", "centre")
# Settings that jobs optimised together in one batched latent must share (one optimiser, one set of cutouts).
GROUP_FIELDS = ("recipe", "size", "steps", "lr", "optimizer", "method", "cutn", "cut_pow", "augment", "noise")


def noise_seed(prompt: Prompt) -> int:
    """The seed of a noise prompt (its text)."""
    try:
        return int(prompt.text)
    except ValueError:
        raise bad_arg("--noise-prompt", "a noise prompt is SEED[:WEIGHT] with a whole-number seed", prompt.text,
                      "Write e.g. --noise-prompt 42:0.5.") from None


@dataclass
class Settings:
    """Everything that determines an image, besides the models and the space.

    Fields left None take the recipe's value (recipes.py); `resolved()` fills them and records in `overrides` the
    ones given explicitly with another value than the recipe's."""

    prompts: list[Prompt]
    image_prompts: list[Prompt] = field(default_factory=list)
    size: tuple[int, int] | None = None  # width, height; vqclip recipe 480 480
    steps: int | None = None  # vqclip recipe 300
    lr: float | None = None  # None: the method's default
    optimizer: str | None = None  # None: the method's default
    method: str | None = None  # vqclip recipe zquant
    loss: str = "spherical"
    cutn: int | None = None  # vqclip recipe 32
    cut_pow: float | None = None  # 1.0 in every recipe
    augment: tuple[str, ...] | str | None = None  # vqclip recipe affine, perspective, jitter, erasing
    noise: float | None = None  # vqclip recipe 0.1
    recipe: str = "vqclip"
    overrides: dict | None = None  # set by resolved(): {field: value} given explicitly against the recipe
    seed: int | None = None
    init_image: str | None = None
    init_weight: float = 0.0
    story: list[list[Prompt]] = field(default_factory=list)  # later prompt phases ("a ^ b"), every change_every
    change_every: int = 0  # steps per story phase; the phases repeat from the first after the last (nerdyrodent)
    noise_prompts: list[Prompt] = field(default_factory=list)  # text = the seed of a random target embedding
    image_prompt_mode: str = "cutouts"  # cutouts: encoded through the run's cutouts (Crowson); centre: one crop
    save_best: bool = False  # keep the image of the step with the lowest loss instead of the last one

    def with_recipe(self) -> "Settings":
        """The recipe's values in every field left None, and the explicit values that differ from it recorded in
        `overrides` (once: resolving resolved settings again keeps the first record)."""
        recipe = get_recipe(self.recipe)
        given = {name: getattr(self, name) for name in RECIPE_FIELDS if getattr(self, name) is not None}
        if "augment" in given:
            given["augment"] = parse_augmentations(given["augment"])
        if "size" in given:
            given["size"] = tuple(int(v) for v in given["size"])
        overrides = self.overrides
        if overrides is None:
            overrides = {name: list(v) if isinstance(v, tuple) else v for name, v in given.items()
                         if v != recipe.defaults[name]}
        return dataclasses.replace(self, **{**recipe.defaults, **given}, overrides=overrides)

    def resolved(self, factor: int) -> tuple["Settings", list[str]]:
        """Validate, fill in the recipe's and the method's defaults, draw a seed and snap the size; also return
        notices for the user."""
        self = self.with_recipe()
        notices = []
        check_weights_nonzero(self.prompts + self.image_prompts + self.noise_prompts)
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
        if self.steps < 1:
            raise bad_arg("--steps", "at least one optimisation step is needed", self.steps, "Try --steps 300.")
        if self.cutn < 1:
            raise bad_arg("--cutn", "at least one cutout is needed", self.cutn, "Try --cutn 32 (fewer if memory is short).")
        if not (self.cut_pow > 0):
            raise bad_arg("--cut-pow", "must be positive", self.cut_pow, "Try --cut-pow 1.0.")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise bad_arg("--noise", "must be a finite number, 0 or more", self.noise, "Try --noise 0.1.")
        if not (math.isfinite(self.init_weight) and self.init_weight >= 0):
            raise bad_arg("--init-weight", "must be a finite number, 0 or more", self.init_weight,
                          "Try --init-weight 0.5.")
        if self.change_every < 0:
            raise bad_arg("--change-every", "must be 0 or more", self.change_every, "Try --change-every 50.")
        if self.story and not self.change_every:
            raise bad_arg("--change-every", "a prompt with '^' phases needs the steps per phase", self.change_every,
                          "Add e.g. --change-every 50, or drop the '^'.")
        for phase in self.story:
            check_weights_nonzero(list(phase) + self.image_prompts + self.noise_prompts)
        if self.image_prompt_mode not in IMAGE_PROMPT_MODES:
            raise bad_arg("--image-prompt-mode", "unknown mode", self.image_prompt_mode,
                          choices_hint(IMAGE_PROMPT_MODES))
        for p in self.noise_prompts:
            check_seed(noise_seed(p), "--noise-prompt")
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
        if self.recipe_spec.cutouts == "pooled":  # refused here, before any model loads, not at the first step
            from .anchor_cutouts import NERDYRODENT_AUGMENTATIONS

            other = [name for name in augment if name not in NERDYRODENT_AUGMENTATIONS]
            if other:
                raise bad_arg("--augment", "the nerdyrodent recipe has no such augmentation", ",".join(other),
                              choices_hint(NERDYRODENT_AUGMENTATIONS) + " Or 'none'.")
        return dataclasses.replace(self, size=snapped, lr=lr, optimizer=optimizer, seed=seed,
                                   augment=augment), notices

    def to_dict(self) -> dict:
        """The settings (the recipe by name; `recipe_record` adds its overrides)."""
        d = dataclasses.asdict(self)
        d.pop("overrides")
        d["prompts"] = [p.to_dict() for p in self.prompts]
        d["image_prompts"] = [p.to_dict() for p in self.image_prompts]
        d["story"] = [[p.to_dict() for p in phase] for phase in self.story]
        d["noise_prompts"] = [p.to_dict() for p in self.noise_prompts]
        d["size"] = None if self.size is None else list(self.size)
        d["augment"] = None if self.augment is None else list(parse_augmentations(self.augment))
        return d

    @property
    def recipe_spec(self) -> Recipe:
        return get_recipe(self.recipe)

    def recipe_record(self) -> dict:
        """run.json's `recipe`: its name, its anchor and the settings given explicitly against it."""
        return {"name": self.recipe, "anchor": self.recipe_spec.anchor, "overrides": dict(self.overrides or {})}


@dataclass
class StepInfo:
    """What the callback sees every `report_every` steps; `image` is the decoded (1, 3, H, W) tensor of that step."""

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
    best_step: int | None = None  # with save_best: the (1-based) step whose image was kept
    group_size: int = 1  # jobs optimised together with this one (seconds are the group's)

    @property
    def seed(self) -> int:
        return int(self.settings.seed)


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


def whole_picture_size(picture: tuple[int, int], run: tuple[int, int]) -> tuple[int, int]:
    """(W, H) of an image prompt as Crowson's notebook and nerdyrodent size it: the picture's aspect ratio, its area
    at most the run's (never upscaled)."""
    ratio = picture[0] / picture[1]
    area = min(picture[0] * picture[1], run[0] * run[1])
    return max(1, round((area * ratio) ** 0.5)), max(1, round((area / ratio) ** 0.5))


def load_image(path: str, size: tuple[int, int], device: torch.device, arg: str, fit: str = "fit") -> torch.Tensor:
    """Read an image file as a (1, 3, H, W) tensor in [0, 1], sized for `size` (W, H): `fit` resizes and
    centre-crops to it, `stretch` resizes to it, `whole` keeps the whole picture (`whole_picture_size`)."""
    from PIL import ImageOps

    try:
        with open_image(path) as im:
            im = im.convert("RGB")
            if fit == "fit":
                im = ImageOps.fit(im, tuple(size), Image.Resampling.LANCZOS)
            else:
                target = tuple(size) if fit == "stretch" else whole_picture_size(im.size, tuple(size))
                im = im.resize(target, Image.Resampling.LANCZOS)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise bad_arg(arg, "could not read the image", path, f"Use a PNG or JPEG file ({quote_error(e)}).") from e
    x = torch.from_numpy(__import__("numpy").asarray(im).copy()).float().div(255)
    return x.permute(2, 0, 1).unsqueeze(0).to(device)


def to_pil(image: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [0, 1] -> PIL image."""
    array = image[0].detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


@dataclass
class Target:
    """A prompt and its projected target embeddings: (1, d) for text and noise, (cutn, d) for an image prompt
    encoded through cutouts (each cutout of the run is compared with each of them, as in Crowson's notebook)."""

    prompt: Prompt
    embeds: torch.Tensor
    label: str


def encode_targets(settings: Settings, clip, space, make_cutouts: "MakeCutouts | None" = None,
                   generator: torch.Generator | None = None) -> tuple[list[list[Target]], list[Target]]:
    """([targets of each text phase], [image and noise targets, active in every phase]), projected into `space`.

    Image prompts are encoded through `make_cutouts` of the image at the run's size (mode cutouts) or from one
    centre crop at CLIP's input size (mode centre)."""
    device = clip.device
    with torch.no_grad():
        phases = []
        for phase in [settings.prompts] + list(settings.story):
            embeds = space.project(clip.encode_text([p.text for p in phase])) if phase else None
            phases.append([Target(p, embeds[i:i + 1], p.text) for i, p in enumerate(phase)])
        always = []
        for p in settings.image_prompts:
            if settings.image_prompt_mode == "cutouts" and make_cutouts is not None:
                image = load_image(p.text, settings.size, device, "--image-prompt", fit="whole")
                images = make_cutouts(image, [generator])
            else:
                height, width = clip.input_size
                images = load_image(p.text, (width, height), device, "--image-prompt")
            always.append(Target(p, space.project(clip.encode_image(images)), p.text))
        for p in settings.noise_prompts:
            noise = torch.randn(1, clip.embed_dim, generator=torch.Generator().manual_seed(noise_seed(p)))
            always.append(Target(p, space.project(noise.to(device)), f"noise:{p.text}"))
    return phases, always


def active_targets(phases: list[list[Target]], always: list[Target], change_every: int, step: int,
                   keep_always: bool = True) -> list[Target]:
    """The targets of (0-based) `step`: its story phase (phases repeat after the last) and the image and noise
    targets; with `keep_always` False (nerdyrodent) those are dropped from the first phase change on."""
    phase = (step // change_every) % len(phases) if change_every else 0
    if not keep_always and change_every and step >= change_every:
        return phases[phase]
    return phases[phase] + always


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
        return torch.randn(h * w, n, generator=generator).view(1, h, w, n).to(vqgan.codebook.device)
    return codebook_logits(initial_latent(settings, vqgan, generator, start), vqgan.codebook.detach())


def codebook_logits(z0: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(G, h, w, n_embed) starting logits that favour the codes nearest to z0, scaled per job."""
    with torch.no_grad():
        d = (z0.movedim(1, 3).unsqueeze(-2) - codebook).pow(2).sum(-1)  # (G, h, w, n_embed)
        return -d / d.flatten(1).std(dim=1).clamp_min(1e-6).view(-1, 1, 1, 1)


def nonfinite_message(value: float, step: int, lr: float) -> str:
    """What happened when the loss of (0-based) `step` is NaN or inf, and what to do: true for the first step too."""
    if step == 0:  # nothing has been updated yet: the learning rate cannot be the cause
        return (f"the loss was {value} at the first step, before any update; the image is the unoptimised start. "
                "The learning rate is not the cause: check the models' weights, the projection and the prompts.")
    return (f"the loss became {value} at step {step + 1}; stopped and kept the image of step {step}, the last with a "
            f"finite loss. Lower --lr (now {lr}) or check the projection and prompts.")


def group_key(settings: Settings) -> tuple:
    """Jobs whose resolved settings give the same key can be optimised together (`run_many`)."""
    return tuple(repr(getattr(settings, name)) for name in GROUP_FIELDS)


def decoder_memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on the CPU, where oneDNN's convolutions run the decoder's forward and backward about 20 %
    faster at 256² in that layout (benchmarks/generate_step.py); the default layout elsewhere (not measured)."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def default_report_every(device: torch.device) -> int:
    """How often losses are read back: every step on the CPU (reading costs nothing there), every 10 on a GPU."""
    return 1 if device.type == "cpu" else 10


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(G,) mask shaped to broadcast over a (G, ...) tensor."""
    return mask.view(-1, *([1] * (like.ndim - 1)))


def run(settings: Settings, clip, vqgan, space, callback: Callable[[StepInfo], None] | None = None, *,
        report_every: int | None = None, start: torch.Tensor | None = None, step_offset: int = 0) -> Result:
    """Optimise a VQGAN latent so that CLIP cutouts of its image match the prompts in `space`.

    `callback(StepInfo)` runs every `report_every` steps (default: every step on the CPU, every 10 on a GPU);
    raising KeyboardInterrupt in it stops the run like Ctrl-C (status interrupted, the image kept). `start`: a
    (1, 3, H, W) image in [0, 1] to begin from instead of --init-image or random codes. `step_offset`: the steps
    run before this one in a longer sequence (animation frames), so story phases continue where they were.
    """
    wrapped = None if callback is None else (lambda index, info: callback(info))
    return run_many([settings], clip, vqgan, [space], wrapped, report_every=report_every,
                    starts=None if start is None else [start], step_offset=step_offset)[0]


def make_cutout_maker(settings: Settings, cut_size: tuple[int, int]):
    """The recipe's cutouts: vqclip's batched crops, the notebook's Lanczos crops, or nerdyrodent's pooled ones."""
    kind = settings.recipe_spec.cutouts
    if kind == "crowson":
        from .anchor_cutouts import CrowsonCutouts

        return CrowsonCutouts(cut_size, settings.cutn, settings.cut_pow)
    if kind == "pooled":
        from .anchor_cutouts import PooledCutouts

        return PooledCutouts(cut_size, settings.cutn, settings.augment, settings.noise)
    return MakeCutouts(cut_size, settings.cutn, settings.cut_pow, settings.augment, settings.noise)


def _derived_generators(parents: Sequence[torch.Generator], device) -> list[torch.Generator]:
    """One generator on `device` per job, seeded by a draw from that job's `parents` generator."""
    return [torch.Generator(device).manual_seed(int(torch.randint(2**62, (1,), generator=g))) for g in parents]


class _Group(NamedTuple):
    """What `run_many` sets up once for a group: jobs, latents and their parametrisation, cutouts, targets."""

    jobs: list[Settings]
    spaces: list
    latent: Latent
    z0: torch.Tensor  # (G, C, h, w) the start, for the init-weight term
    optimizer: torch.optim.Optimizer
    make_cutouts: Callable
    cut_gens: list[torch.Generator]
    targets: list
    memory_format: torch.memory_format


def _setup_group(jobs: list[Settings], clip, vqgan, spaces, starts) -> _Group:
    """Seed each job, make its start latent (or logits), generators, cutouts and targets, and the optimiser."""
    first, device = jobs[0], clip.device
    recipe = first.recipe_spec
    torch.manual_seed(first.seed)  # anything random outside our generators (none expected) is seeded too
    init_gens = [torch.Generator().manual_seed(s.seed) for s in jobs]
    codebook = vqgan.codebook.detach()
    starts = list(starts) if starts is not None else [None] * len(jobs)
    if first.method == "zquant":
        z0 = torch.cat([initial_latent(s, vqgan, g, st) for s, g, st in zip(jobs, init_gens, starts)])
    else:
        logits0 = torch.cat([initial_logits(s, vqgan, g, st) for s, g, st in zip(jobs, init_gens, starts)])
    # Each job's step randomness (cutouts, noise, codebook samples) comes from a generator on the device, seeded
    # from its own seed, so no random number crosses between host and device during the run.
    step_gens = _derived_generators(init_gens, device)
    if first.method == "zquant":
        latent = zquant_latent(z0, codebook)
    else:
        latent = codebook_latent(logits0, codebook, step_gens, recipe.codebook_sample)
        z0 = latent.anchor().detach()
    extra = {} if recipe.weight_decay is None else {"weight_decay": recipe.weight_decay}
    optimizer = OPTIMIZERS[first.optimizer](latent.params, lr=first.lr, **extra)
    make_cutouts = make_cutout_maker(first, clip.input_size)
    gen_device = getattr(make_cutouts, "generator_device", None)
    cut_gens = step_gens if gen_device is None else _derived_generators(init_gens, gen_device)
    prompt_gens = [torch.Generator(gen_device or device).manual_seed(int(torch.randint(2**62, (1,), generator=g)))
                   for g in init_gens]
    targets = [encode_targets(s, clip, space, make_cutouts, g) for s, space, g in zip(jobs, spaces, prompt_gens)]
    return _Group(jobs, spaces, latent, z0, optimizer, make_cutouts, cut_gens, targets,
                  decoder_memory_format(device))


def _job_loss(group: _Group, i: int, mine: torch.Tensor, anchor, step: int) -> tuple[torch.Tensor, list, list]:
    """Job i's loss at (0-based, whole-sequence) `step` from its projected cutout embeddings: its active prompts
    and the init-weight term as its recipe has it; also the active targets."""
    s = group.jobs[i]
    recipe = s.recipe_spec
    active = active_targets(*group.targets[i], s.change_every, step, recipe.story_keeps_prompts)
    terms = [prompt_loss(mine, t.embeds, t.prompt.weight, t.prompt.stop, LOSSES[s.loss]) for t in active]
    total = torch.stack(terms).sum()
    if s.init_weight and recipe.init_weight == "decay":  # nerdyrodent: z pulled to 0 with weight w / (2i + 1)
        total = total + anchor[i:i + 1].pow(2).mean() * (s.init_weight / (2 * step + 1)) / 2
    elif s.init_weight:
        total = total + F.mse_loss(anchor[i:i + 1], group.z0[i:i + 1]) * s.init_weight / 2
    return total, terms, active


def run_many(settings_list: Sequence[Settings], clip, vqgan, spaces: Sequence, callback:
             Callable[[int, StepInfo], None] | None = None, *, report_every: int | None = None,
             starts: Sequence[torch.Tensor | None] | None = None, step_offset: int = 0) -> list[Result]:
    """Optimise a group of jobs together: job i has `settings_list[i]` and the loss in `spaces[i]`.

    The jobs must share the settings in GROUP_FIELDS (see `group_key`); prompts, spaces, seeds, losses, init images
    and weights may differ. Job i's random numbers come from its own seed, so its image does not depend on which
    jobs it shares the group with beyond float rounding in batched kernels (README, Speed). `callback(i, info)`
    runs every `report_every` steps for each job still running; raising KeyboardInterrupt in it stops every job.
    """
    if len(settings_list) != len(spaces) or not settings_list:
        raise ValueError(f"run_many needs one space per job; got {len(settings_list)} settings, {len(spaces)} spaces")
    jobs = [s.resolved(vqgan.factor)[0] for s in settings_list]
    if len({group_key(s) for s in jobs}) > 1:
        differ = [name for name in GROUP_FIELDS if len({repr(getattr(s, name)) for s in jobs}) > 1]
        raise VqclipError(f"jobs optimised together must share {', '.join(GROUP_FIELDS)}; these differ: "
                          f"{', '.join(differ)}. Run them in separate groups (vqclip batch groups them for you).")
    count, device = len(jobs), clip.device
    report_every = max(1, int(report_every or default_report_every(device)))
    vqgan = vqgan.to(device)
    vqgan.to(memory_format=decoder_memory_format(device))  # idempotent; the values are the same, only the layout
    group = _setup_group(jobs, clip, vqgan, [space.to(device) for space in spaces], starts)
    latent, optimizer, cutn, steps = group.latent, group.optimizer, jobs[0].cutn, jobs[0].steps

    history = torch.full((count, max(steps, 1)), float("nan"), device=device)
    alive = torch.ones(count, dtype=torch.bool, device=device)  # every loss so far finite
    good = [p.detach().clone() for p in latent.params]  # each job's parameters at its last finite step
    best: torch.Tensor | None = None  # with save_best: each job's quantized latent of its best step
    best_loss = torch.full((count,), float("inf"), device=device)
    best_step = torch.zeros(count, dtype=torch.long, device=device)
    running = list(range(count))  # jobs not yet found non-finite (host view, updated at each read-back)
    stopped_at: dict[int, tuple[int, float]] = {}  # job -> (0-based step of its first non-finite loss, value)
    completed, status = 0, "finished"
    last_terms: list[list[torch.Tensor]] = [[] for _ in jobs]
    last_labels: list[list[str]] = [[] for _ in jobs]
    start_time = time.perf_counter()
    try:
        for step in range(steps):
            optimizer.zero_grad(set_to_none=True)
            z_q = latent.quantized().contiguous(memory_format=group.memory_format)
            image = clamp_with_grad(vqgan.decode(z_q), 0, 1)  # (G, 3, H, W)
            embeds = clip.encode_image(group.make_cutouts(image, group.cut_gens))  # (G * cutn, D)
            anchor = latent.anchor() if any(s.init_weight for s in jobs) else None
            totals = []
            for i, space in enumerate(group.spaces):
                mine = space.project(embeds[i * cutn:(i + 1) * cutn])
                total, last_terms[i], active = _job_loss(group, i, mine, anchor, step + step_offset)
                last_labels[i] = [t.label for t in active]
                totals.append(total)
            losses = torch.stack(totals)  # (G,)
            with torch.no_grad():
                value = losses.detach()
                alive &= torch.isfinite(value)
                history[:, step] = value
                for p, g in zip(latent.params, good):
                    g.copy_(torch.where(_rows(alive, p), p, g))
                if any(s.save_best for s in jobs):
                    # the quantized latent whose decode was scored: with codebook sampling it is this step's sample
                    better = alive & (value < best_loss)
                    best = z_q.detach().clone() if best is None else torch.where(_rows(better, z_q), z_q, best)
                    best_loss.copy_(torch.where(better, value, best_loss))
                    best_step.copy_(torch.where(better, torch.full_like(best_step, step + 1), best_step))
            losses.sum().backward()
            optimizer.step()
            latent.after_step()
            completed = step + 1
            if completed % report_every == 0 or completed == steps:
                running = _read_back(history, alive, running, stopped_at, completed)
                if not running:
                    break
                if callback is not None:
                    elapsed = time.perf_counter() - start_time
                    for i in running:
                        callback(i, StepInfo(completed, steps, float(history[i, step]),
                                             torch.stack(last_terms[i]).detach().tolist(),
                                             image[i:i + 1].detach(), elapsed))
    except KeyboardInterrupt:
        status = "interrupted"
    seconds = time.perf_counter() - start_time
    _read_back(history, alive, running, stopped_at, completed)  # note jobs that turned non-finite since the last
    return _results(jobs, latent, good, best, best_step, vqgan, history, stopped_at, completed, status,
                    last_terms, last_labels, seconds)


def _read_back(history, alive, running, stopped_at, completed) -> list[int]:
    """Read the losses (one host-device synchronisation) and note each job whose loss turned non-finite."""
    ok = alive.tolist()
    for i in [i for i in running if not ok[i]]:
        row = history[i, :completed].tolist()
        first_bad = next(k for k, v in enumerate(row) if not math.isfinite(v))
        stopped_at[i] = (first_bad, row[first_bad])
    return [i for i in running if ok[i]]


def _results(jobs, latent, good, best, best_step, vqgan, history, stopped_at, completed, status,
             last_terms, last_labels, seconds) -> list[Result]:
    """Decode each job's kept latent (last, best, or last finite) and build its Result."""
    codebook = vqgan.codebook.detach()
    best_steps = best_step.tolist()
    with torch.no_grad():
        params = [p.detach().clone() for p in latent.params]
        dead = torch.tensor([i in stopped_at for i in range(len(jobs))], device=params[0].device)
        for p, g in zip(latent.params, good):
            p.copy_(torch.where(_rows(dead, p), g, p))
        z_final = vector_quantize(latent.z().detach().movedim(1, 3), codebook).movedim(3, 1)
        keep_best = torch.tensor([bool(s.save_best) and best_steps[i] > 0 and i not in stopped_at
                                  for i, s in enumerate(jobs)], device=z_final.device)
        if best is not None:
            z_final = torch.where(_rows(keep_best, z_final), best, z_final)
        finals = vqgan.decode(z_final).clamp(0, 1)
        for p, saved in zip(latent.params, params):
            p.copy_(saved)
    rows = history[:, :completed].cpu().tolist()
    results = []
    for i, s in enumerate(jobs):
        done = stopped_at[i][0] if i in stopped_at else completed
        hist = rows[i][:done]
        job_status, message = status, None
        if i in stopped_at:
            job_status = "nonfinite"
            message = nonfinite_message(stopped_at[i][1], stopped_at[i][0], s.lr)
        elif status == "interrupted":
            message = f"interrupted after {done} of {s.steps} steps"
        terms = [] if i in stopped_at or not last_terms[i] else torch.stack(last_terms[i]).detach().tolist()
        kept_best = best_steps[i] if bool(keep_best[i]) else None
        loss = hist[kept_best - 1] if kept_best else (hist[-1] if hist else float("nan"))
        results.append(Result(image=to_pil(finals[i:i + 1]), latent=z_final[i:i + 1].cpu(), loss=loss,
                              losses=dict(zip(last_labels[i], terms)), history=hist, settings=s, steps_done=done,
                              status=job_status, message=message, seconds=seconds, best_step=kept_best,
                              group_size=len(jobs)))
    return results
