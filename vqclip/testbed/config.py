"""What one testbed run is: the world, the small CLIP, the projections, the evaluation, and the margins its
directions are held to; `TestbedConfig.quick()` is the test suite's."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping

from ..errors import bad_arg
from .world import CAPTIONED_CLASS_WORDS, CLASSES, DEFAULT_MIX, EXTRA_WORDS, World

SPACE_ORDER = ("clip", "learn", "forget")
TYPO_TEMPLATE = "an image of a {}"  # the class prompt of the five-tuples; every class name starts with a consonant


@dataclass
class Margins:
    """How far apart numbers must be for a direction to count as reproduced (fractions, not points).

    Chosen after running the quick configuration on several seeds. The test suite holds the median over seeds
    0-2 to them; docs/testbed.md lists every run, including the single runs that miss one.
    """

    reads: float = 0.25  # clip: clean − attacked accuracy at least this
    forget_recovers: float = 0.5  # forget wins back at least this share ("most") of CLIP's attack loss
    forget_keeps_clean: float = 0.08  # forget's clean accuracy at most this below CLIP's
    learn_keeps_words: float = 0.1  # learn's word retrieval (x_t -> y_t) at most this below CLIP's
    learn_drops_objects: float = 0.15  # learn's clean object accuracy at least this below CLIP's


# The reduced world of the test suite: six shapes and fourteen short words, so that 1000 CLIP steps learn them all.
QUICK_CLASSES = ("star", "moon", "ring", "cross", "heart", "bolt")
QUICK_WORDS = ("apple", "house", "tiger", "cloud", "lemon", "horse", "bread", "train")
# Six shapes are learned sooner than twelve: the quick world can show more labelled objects without the model
# learning to read before it learns to see (then it trusts labels almost entirely; docs/testbed.md).
QUICK_MIX = {"object": 0.35, "word": 0.2, "labelled": 0.2, "captioned": 0.25}


@dataclass
class TestbedConfig:
    """The world, the small CLIP, the projections and the evaluation of one run; `quick()` is the test suite's."""

    seed: int = 0
    # world
    image_size: int = 64
    classes: tuple[str, ...] = CLASSES
    extra_words: tuple[str, ...] = EXTRA_WORDS
    n_nonsense: int = 12
    nonsense_length: tuple[int, int] = (3, 8)
    label_box: float = 0.5
    object_radius: tuple[float, float] = (0.2, 0.34)
    label_band: float = 0.35
    mix: dict = field(default_factory=lambda: dict(DEFAULT_MIX))  # shares of the kinds of training pairs
    captioned_class_words: float = CAPTIONED_CLASS_WORDS  # captioned objects that carry another class's name
    # small CLIP
    n_pairs: int = 24000
    clip_steps: int = 3000
    clip_batch: int = 128
    clip_lr: float = 8e-3
    clip_warmup: int = 300
    clip_width: int = 8
    clip_text_width: int = 32
    embed_dim: int = 128
    # A CLIP whose gradients draw (issue 33; docs/testbed.md): random crops while training, then an adversarial
    # (PGD-L2) fine-tune of `robust_steps` from the clean CLIP. Off by default: the directions above were measured
    # on clean CLIPs, and the fine-tune costs about 0.4 s a step on one thread.
    clip_crop: float = 1.0
    robust_steps: int = 0
    robust_eps: float = 3.0
    robust_lr: float = 2e-3
    # projections (the standard trainer; None takes the preset, with d scaled to this CLIP's D)
    n_tuples: int = 6000
    include_class_words: bool = False  # let the five-tuples write class names (the attack words) too
    proj_epochs: int = 300
    proj_lr: float = 1e-3
    learn_dim: int | None = None
    forget_dim: int | None = None
    learn_weights: str | None = None
    forget_weights: str | None = None
    gamma: float | None = None
    # evaluation
    n_attacks: int = 600
    margins: Margins = field(default_factory=Margins)

    @classmethod
    def quick(cls, seed: int = 0, **overrides) -> "TestbedConfig":
        """The reduced configuration for the test suite: 6 classes, 20 words, 1000 CLIP steps (2.5 min on 2 cores)."""
        base = dict(seed=seed, classes=QUICK_CLASSES, extra_words=QUICK_WORDS, n_nonsense=6, nonsense_length=(3, 5),
                    label_box=0.0, mix=QUICK_MIX, n_pairs=8000, clip_steps=1000, n_tuples=3000, n_attacks=240)
        return cls(**{**base, **overrides})

    def __post_init__(self):
        self.classes, self.extra_words = tuple(self.classes), tuple(self.extra_words)
        self.nonsense_length, self.object_radius = tuple(self.nonsense_length), tuple(self.object_radius)
        if isinstance(self.margins, Mapping):
            self.margins = Margins(**self.margins)
        flags = {"n_pairs": "--pairs", "clip_steps": "--steps", "clip_batch": "clip_batch", "n_attacks": "--attacks"}
        for name, flag in flags.items():
            if int(getattr(self, name)) < 1:
                raise bad_arg(flag, "must be a positive integer", getattr(self, name), "Use the defaults or --quick.")
        if not 0.1 <= self.clip_crop <= 1:
            raise bad_arg("--clip-crop", "must be the smallest crop side, a share between 0.1 and 1", self.clip_crop,
                          "Use e.g. 0.6, or 1 for no crops.")
        if self.robust_steps < 0 or not (self.robust_eps > 0 and self.robust_lr > 0):
            raise bad_arg("--robust-steps/--robust-eps", "need steps >= 0 and a positive radius and lr",
                          (self.robust_steps, self.robust_eps, self.robust_lr), "Use e.g. --robust-steps 1500 "
                          "--robust-eps 3.")
        if self.n_tuples < 60:
            raise bad_arg("--tuples", "needs at least 60 five-tuples for train / val / test splits", self.n_tuples,
                          "Use e.g. 3000.")
        self.check_projection_settings()

    def check_projection_settings(self) -> None:
        """The trainer's own checks (epochs, lr, seed, d, weights, gamma) up front, not after minutes of CLIP
        training, under the testbed's flag names."""
        from ..spelling.losses import resolve_preset
        from ..spelling.train import TrainConfig

        TrainConfig(epochs=self.proj_epochs, lr=self.proj_lr, seed=self.seed).check({"lr": "--proj-lr"})
        for space, dim, weights in (("learn", self.learn_dim, self.learn_weights),
                                    ("forget", self.forget_dim, self.forget_weights)):
            resolve_preset(space, dim, weights, self.gamma, self.embed_dim,
                           flags={"dim": f"--{space}-dim", "weights": f"--{space}-weights"})

    def world(self) -> World:
        return World(seed=self.seed, image_size=self.image_size, classes=self.classes, extra_words=self.extra_words,
                     n_nonsense=self.n_nonsense, nonsense_length=self.nonsense_length, label_box=self.label_box,
                     object_radius=self.object_radius, label_band=self.label_band, mix=dict(self.mix),
                     captioned_class_words=self.captioned_class_words)

    def clip_recipe(self) -> dict:
        """Everything that decides the small CLIP's weights (a saved CLIP is reused only when this matches)."""
        keys = ("seed", "image_size", "classes", "extra_words", "n_nonsense", "nonsense_length", "label_box",
                "object_radius", "label_band", "mix", "captioned_class_words", "n_pairs",
                "clip_steps", "clip_batch", "clip_lr", "clip_warmup", "clip_width",
                "clip_text_width", "embed_dim")
        d = self.to_dict()
        recipe = {k: d[k] for k in keys}
        if self.clip_crop < 1 or self.robust_steps:  # only then: CLIPs trained before these settings are reused
            recipe.update(clip_crop=self.clip_crop, robust_steps=self.robust_steps)
            if self.robust_steps:
                recipe.update(robust_eps=self.robust_eps, robust_lr=self.robust_lr)
        return recipe

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("classes", "extra_words", "nonsense_length", "object_radius"):
            d[k] = list(d[k])
        return d


# Rates: a quick seed, 1,000 CLIP steps with everything around them, took about 128 s on a quiet 2-core machine and
# a full seed, 3,000 steps, about 7 minutes (docs/testbed.md); the world VQGAN and judges about 5 minutes when not
# given. A PGD fine-tune step (0.3-0.5 s) and a generation step of one 64² image (0.04 s) were timed on one thread
# with other work beside it (issue 33's runs), so those two parts of an estimate lean long.
SECONDS_PER_CLIP_STEP = 0.14
SECONDS_PER_ROBUST_STEP = 0.4
SECONDS_PER_IMAGE_STEP = 0.04
SECONDS_WORLD_MODELS = 300.0


def estimate_seconds(config: TestbedConfig, n_seeds: int = 1, images: int = 0, gen_steps: int = 0,
                     world_models: bool = False) -> float:
    """A rough time for a testbed run on a quiet 2-core machine: the CLIP (and its fine-tune) per seed, then
    `images` generated for `gen_steps` each, and the world models when they are trained (`world_models`)."""
    per_seed = config.clip_steps * SECONDS_PER_CLIP_STEP + config.robust_steps * SECONDS_PER_ROBUST_STEP
    return n_seeds * per_seed + images * gen_steps * SECONDS_PER_IMAGE_STEP + world_models * SECONDS_WORLD_MODELS
