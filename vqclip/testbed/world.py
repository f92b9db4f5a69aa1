"""A procedural world of drawn objects and written words, where a small CLIP learns to read (testbed for §4–§6).

Everything is generated deterministically from a seed: item `i` of a split draws all of its random choices from
`item_rng(seed, split, kind, i)`, so any image can be regenerated alone and splits never share an item.
"""

from __future__ import annotations

import functools
import math
import random
import string
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..errors import bad_arg
from ..spelling.render import TextStyle, draw_word, item_rng, render_word

# Twelve glyph-free drawings; the names are what the model learns to read (and what attacks write).
CLASSES = ("circle", "square", "triangle", "star", "heart", "cross", "moon", "pointer", "diamond", "hexagon",
           "ring", "bolt")
# Real words that are never drawn: the model sees them only written, as on the web.
EXTRA_WORDS = ("apple", "house", "river", "tiger", "cloud", "chair", "piano", "lemon", "horse", "train", "bread",
               "glove", "candle", "garden", "pencil", "rabbit", "window", "bottle", "forest", "kettle")
COLORS = {"red": (215, 40, 40), "orange": (240, 140, 20), "yellow": (235, 210, 30), "green": (40, 160, 60),
          "blue": (40, 80, 210), "purple": (140, 50, 180), "pink": (235, 110, 170), "brown": (130, 80, 40),
          "black": (25, 25, 25), "white": (245, 245, 245)}
# One phrasing per kind of picture, two for labelled objects (they bridge the other kinds). The world repeats each
# caption many times per batch and training treats identical captions as positives (`small_clip`); with several
# phrasings per concept most same-concept pairs would be negatives told apart only by a template the picture does
# not show. We tried five phrasings per kind: training then stalled for hundreds of steps, and whether the model
# learned objects or words first changed from seed to seed.
OBJECT_TEMPLATES = ("an image of {a} {c}",)
WORD_TEMPLATES = ("{w}",)
LABELLED_TEMPLATES = ("an image of {a} {c}", "{c}")
CAPTIONED_TEMPLATES = ("an image of {a} {c} with the word {w}",)
# Mix of training pairs, like web data: objects alone, words alone, objects with their own name written on them
# (the shortcut that teaches reading as a way to recognise), and objects with some other word on them, the caption
# naming both (so that the model keeps seeing the object when text is present).
DEFAULT_MIX = {"object": 0.45, "word": 0.15, "labelled": 0.15, "captioned": 0.25}
# Share of captioned objects whose written word is another class's name ("an image of a star with the word moon").
# Without them every class name the model ever saw written on an object was that object's own name, and some
# training runs (which ones depended on the seed and even on the CPU's float kernels) learned to let a written
# class name overwrite the object: a linear read-out then found only about half of the attacked objects, and no
# projection could bring them back. With them the object survives in the features of every run we made, while the
# zero-shot prompt "an image of a {class}" still follows the written name about half of the time (docs/testbed.md).
CAPTIONED_CLASS_WORDS = 0.3

SUPERSAMPLE = 4  # shapes are drawn large and downsampled, for anti-aliased edges


@dataclass(frozen=True)
class World:
    """The recipe of a synthetic world: image size, classes, words and the seed everything derives from."""

    seed: int = 0
    image_size: int = 64
    classes: tuple[str, ...] = CLASSES
    extra_words: tuple[str, ...] = EXTRA_WORDS
    n_nonsense: int = 12
    nonsense_length: tuple[int, int] = (3, 8)  # docs/method.md §3: 3–8 letters; small images need shorter ones
    label_box: float = 0.8  # share of words written on objects that get a light box behind them
    object_radius: tuple[float, float] = (0.2, 0.34)  # fractions of the image side
    label_band: float = 0.35  # share of the height along the top or bottom edge that labels are written in
    mix: dict = field(default_factory=lambda: dict(DEFAULT_MIX))
    captioned_class_words: float = CAPTIONED_CLASS_WORDS  # captioned objects that carry another class's name

    def __post_init__(self):
        if len(self.classes) < 2 or any(c not in SHAPES for c in self.classes):
            raise bad_arg("classes", f"must name at least 2 of the drawable shapes {', '.join(SHAPES)}",
                          self.classes, "Use the defaults or a subset of them.")
        lo, hi = self.nonsense_length
        if not 1 <= lo <= hi:
            raise bad_arg("nonsense_length", "must be (MIN, MAX) letters with 1 <= MIN <= MAX", self.nonsense_length,
                          "Use e.g. (3, 8).")
        if self.image_size < 32:
            raise bad_arg("--image-size", "must be at least 32 px so that words stay legible", self.image_size,
                          "Use 48 or 64.")
        if not 0 <= self.captioned_class_words <= 1:
            raise bad_arg("captioned_class_words", "must be a share between 0 and 1", self.captioned_class_words,
                          f"Use e.g. {CAPTIONED_CLASS_WORDS}.")
        if not self.mix or any(k not in DEFAULT_MIX or v < 0 for k, v in self.mix.items()) or \
                not sum(self.mix.values()):
            raise bad_arg("mix", f"must give non-negative weights to {', '.join(DEFAULT_MIX)}", self.mix,
                          f"For example {DEFAULT_MIX}.")

    @functools.cached_property
    def nonsense_words(self) -> tuple[str, ...]:
        """Random letter strings of 3–8 letters, fixed by the seed (docs/method.md §3: nonsense words)."""
        rng = item_rng(self.seed, "nonsense")
        taken = set(self.classes) | set(self.extra_words)
        out: list[str] = []
        while len(out) < self.n_nonsense:
            w = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(*self.nonsense_length)))
            if w not in taken:
                taken.add(w)
                out.append(w)
        return tuple(out)

    @functools.cached_property
    def words(self) -> tuple[str, ...]:
        """Every word the world writes: class names, extra real words, nonsense words."""
        return (*self.classes, *self.extra_words, *self.nonsense_words)

    def is_real(self, word: str) -> bool:
        return word not in self.nonsense_words

    def to_dict(self) -> dict:
        return {"seed": self.seed, "image_size": self.image_size, "classes": list(self.classes),
                "extra_words": list(self.extra_words), "n_nonsense": self.n_nonsense,
                "nonsense_length": list(self.nonsense_length), "nonsense_words": list(self.nonsense_words),
                "label_box": self.label_box, "object_radius": list(self.object_radius),
                "label_band": self.label_band, "mix": dict(self.mix),
                "captioned_class_words": self.captioned_class_words}


# ---------------------------------------------------------------------------------------------- shapes
def _regular(n: int, r: float = 1.0, phase: float = 0.0) -> list[tuple[float, float]]:
    return [(r * math.cos(phase + 2 * math.pi * k / n), r * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


def _star() -> list[tuple[float, float]]:
    return [((1.0 if k % 2 == 0 else 0.42) * math.cos(-math.pi / 2 + math.pi * k / 5),
             (1.0 if k % 2 == 0 else 0.42) * math.sin(-math.pi / 2 + math.pi * k / 5)) for k in range(10)]


def _heart() -> list[tuple[float, float]]:
    pts = []
    for k in range(64):
        t = 2 * math.pi * k / 64
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 17, -y / 17 + 0.1))
    return pts


def _cross(a: float = 0.33) -> list[tuple[float, float]]:
    return [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a),
            (-a, -a)]


ARROW = [(-1, -0.28), (0.2, -0.28), (0.2, -0.7), (1, 0), (0.2, 0.7), (0.2, 0.28), (-1, 0.28)]
BOLT = [(0.15, -1), (-0.55, 0.12), (-0.05, 0.12), (-0.2, 1), (0.55, -0.2), (0.05, -0.2), (0.35, -1)]
# name -> (polygon or None for round shapes, largest rotation in degrees: squares must not turn into diamonds)
SHAPES: dict[str, tuple[list | None, float]] = {
    "circle": (None, 0), "square": (_regular(4, 1.0, math.pi / 4), 15), "triangle": (_regular(3, 1.0, -math.pi / 2), 25),
    "star": (_star(), 30), "heart": (_heart(), 20), "cross": (_cross(), 15), "moon": (None, 180),
    "pointer": (ARROW, 180), "diamond": ([(0, -1), (0.6, 0), (0, 1), (-0.6, 0)], 15),
    "hexagon": (_regular(6), 30), "ring": (None, 0), "bolt": (BOLT, 25),
}


def shape_mask(name: str, size: int, cx: float, cy: float, r: float, angle: float) -> Image.Image:
    """An anti-aliased 'L' mask of shape `name` with centre (cx, cy), radius r (pixels) and rotation (degrees)."""
    s = SUPERSAMPLE
    mask = Image.new("L", (size * s, size * s), 0)
    d = ImageDraw.Draw(mask)
    X, Y, R = cx * s, cy * s, r * s
    poly, _ = SHAPES[name]
    if name == "circle":
        d.ellipse((X - R, Y - R, X + R, Y + R), fill=255)
    elif name == "ring":
        d.ellipse((X - R, Y - R, X + R, Y + R), fill=255)
        d.ellipse((X - 0.55 * R, Y - 0.55 * R, X + 0.55 * R, Y + 0.55 * R), fill=0)
    elif name == "moon":  # a disc minus a shifted disc, the bite turned by `angle`
        d.ellipse((X - R, Y - R, X + R, Y + R), fill=255)
        a = math.radians(angle)
        bx, by = X + 0.5 * R * math.cos(a), Y + 0.5 * R * math.sin(a)
        d.ellipse((bx - 0.85 * R, by - 0.85 * R, bx + 0.85 * R, by + 0.85 * R), fill=0)
    else:
        a = math.radians(angle)
        ca, sa = math.cos(a), math.sin(a)
        d.polygon([(X + R * (x * ca - y * sa), Y + R * (x * sa + y * ca)) for x, y in poly], fill=255)
    return mask.resize((size, size), Image.Resampling.BOX)


# ---------------------------------------------------------------------------------------------- pictures
def _jitter_color(rgb: tuple[int, int, int], rng: random.Random, amount: int = 25) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, v + rng.randint(-amount, amount)))) for v in rgb)


def _luma(rgb: Sequence[int]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def background(size: int, rng: random.Random, avoid: tuple[int, int, int] | None = None) -> Image.Image:
    """A plain, gradient, striped or speckled background whose colours stay clear of `avoid` (the object's)."""
    def pick():
        for _ in range(20):
            c = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
            if avoid is None or abs(_luma(c) - _luma(avoid)) + sum(abs(a - b) for a, b in zip(c, avoid)) / 3 > 90:
                return c
        return (255 - avoid[0], 255 - avoid[1], 255 - avoid[2]) if avoid else c

    kind = rng.choice(("plain", "plain", "gradient", "stripes", "speckle"))
    c1 = pick()
    img = Image.new("RGB", (size, size), c1)
    if kind == "gradient":
        c2 = pick()
        arr = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
        grad = (1 - arr) * np.array(c1, np.float32) + arr * np.array(c2, np.float32)  # (size, 1, 3)
        img = Image.fromarray(np.broadcast_to(grad, (size, size, 3)).astype(np.uint8))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.ROTATE_90)
    elif kind == "stripes":
        c2 = _jitter_color(c1, rng, 30)
        d = ImageDraw.Draw(img)
        step = rng.randint(4, 10)
        for k in range(0, 2 * size, step * 2):
            d.line((k, 0, k - size, size), fill=c2, width=step)
    elif kind == "speckle":
        noise = np.random.default_rng(rng.getrandbits(32)).integers(-30, 31, (size, size, 1))
        img = Image.fromarray(np.clip(np.asarray(img, np.int16) + noise, 0, 255).astype(np.uint8))
    return img


def draw_object(world: World, cls: str, rng: random.Random) -> tuple[Image.Image, dict]:
    """One object of class `cls`: random colour, size, position, rotation and background."""
    size = world.image_size
    color_name = rng.choice(tuple(COLORS))
    color = _jitter_color(COLORS[color_name], rng)
    r = rng.uniform(*world.object_radius) * size
    label_side = rng.choice(("top", "bottom"))  # where a label may go later; the object keeps to the other part
    lo, hi = r * 0.8, size * (1 - world.label_band) - r * 0.8
    cx = rng.uniform(r * 0.8, size - r * 0.8)
    cy = rng.uniform(lo, hi) if lo < hi else (lo + hi) / 2  # large objects reach into the label's band
    if label_side == "top":
        cy = size - cy
    max_rot = SHAPES[cls][1]
    angle = rng.uniform(-max_rot, max_rot)
    img = background(size, rng, avoid=color)
    img.paste(Image.new("RGB", (size, size), color), (0, 0), shape_mask(cls, size, cx, cy, r, angle))
    return img, {"class": cls, "color": color_name, "center": (cx, cy), "radius": r, "label_side": label_side}


def web_text_style(world: World) -> TextStyle:
    """Words as they appear in the world: several fonts, sizes and ink colours, jittered positions."""
    lo, hi = max(0.16, 9 / world.image_size), max(0.3, 13 / world.image_size)  # below ~9 px glyphs blur together
    return TextStyle(size_range=(lo, hi), max_width=0.92, jitter=0.08,
                     text_colors=tuple(COLORS[c] for c in ("black", "red", "blue", "green", "purple", "brown")),
                     background_colors=((255, 255, 255), (240, 240, 230), (250, 235, 200), (215, 230, 245),
                                        (230, 230, 230)),
                     seed=world.seed)


def label_style(world: World) -> TextStyle:
    """Words written on objects (labels, attacks): dark text on a light box; sizes relative to the label's band."""
    return TextStyle(size_range=(0.6, 0.8), max_width=0.9, jitter=0.1, seed=world.seed)


def word_image(world: World, word: str, rng: random.Random, style: TextStyle | None = None) -> Image.Image:
    """A word alone on a plain light background (x_t)."""
    return render_word(word, world.image_size, style or web_text_style(world), rng)


DARK_INKS = ((0, 0, 0), (20, 20, 70), (70, 10, 10))
LIGHT_INKS = ((255, 255, 255), (255, 240, 150))


def write_on(world: World, image: Image.Image, word: str, rng: random.Random, meta: dict | None = None) -> Image.Image:
    """`image` with `word` written in a horizontal band: on a light label box (probability `world.label_box`),
    else straight on the picture in an ink that contrasts with what lies under it.

    The band runs along the top or the bottom edge, on the side `draw_object` kept clear (`meta`), like a label
    stuck to the object's edge: a typographic attack adds a word, it does not paint the object over.
    """
    size = world.image_size
    band_h = max(12, round(size * world.label_band))  # below ~12 px a word is no longer legible
    side = meta["label_side"] if meta else rng.choice(("top", "bottom"))
    top = 0 if side == "top" else size - band_h
    band = image.crop((0, top, size, top + band_h))
    box = rng.random() < world.label_box
    style = label_style(world)
    if not box:
        luma = float(np.asarray(band.convert("L"), dtype=np.float32).mean())
        style = replace(style, text_colors=DARK_INKS if luma > 110 else LIGHT_INKS)
    out = image.copy()
    out.paste(draw_word(band, word, style, rng, box=box), (0, top))
    return out


# ---------------------------------------------------------------------------------------------- datasets
def to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL images -> (N, 3, H, W) uint8."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])  # (N, H, W, 3)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def training_pair(world: World, index: int, split: str = "train") -> tuple[Image.Image, str, str]:
    """Item `index` of the contrastive training set: (image, caption, kind) with kind object / word / labelled."""
    rng = item_rng(world.seed, split, "pair", index)
    kinds = list(world.mix)
    kind = rng.choices(kinds, weights=[world.mix[k] for k in kinds])[0]
    if kind == "word":
        word = rng.choice(world.words)
        caption = rng.choice(WORD_TEMPLATES).format(w=word)
        return word_image(world, word, rng), caption, kind
    cls = rng.choice(world.classes)
    img, meta = draw_object(world, cls, rng)
    if kind == "labelled":
        img = write_on(world, img, cls, rng, meta)
        caption = rng.choice(LABELLED_TEMPLATES).format(c=cls, a=article(cls))
    elif kind == "captioned":
        other_class = rng.random() < world.captioned_class_words
        word = rng.choice([c for c in world.classes if c != cls] if other_class else
                          [w for w in world.words if w not in world.classes])
        img = write_on(world, img, word, rng, meta)
        caption = rng.choice(CAPTIONED_TEMPLATES).format(c=cls, a=article(cls), w=word)
    else:
        caption = rng.choice(OBJECT_TEMPLATES).format(c=cls, a=article(cls))
    return img, caption, kind


def training_set(world: World, n: int, split: str = "train",
                 progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, list[str], list[str]]:
    """n contrastive pairs: (N, 3, H, W) uint8 images, captions and kinds."""
    images, captions, kinds = [], [], []
    for i in range(n):
        img, cap, kind = training_pair(world, i, split)
        images.append(img)
        captions.append(cap)
        kinds.append(kind)
        if progress:
            progress(1)
    return to_tensor(images), captions, kinds


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def class_prompt(cls: str) -> str:
    """y_i as the reference code prompts it: "an image of a/an {class}"."""
    return f"an image of {article(cls)} {cls}"


@dataclass
class FiveTuples:
    """Images and labels of the five-tuples (x_i, y_i, x_t, y_t, x_it) drawn from the world (docs/method.md §3)."""

    x_i: torch.Tensor  # (N, 3, H, W) uint8 objects
    x_t: torch.Tensor  # (N, 3, H, W) uint8 words alone
    x_it: torch.Tensor  # (N, 3, H, W) uint8 the object with the word written on it
    class_ids: torch.Tensor  # (N,) index into world.classes
    words: list[str]  # y_t
    split: torch.Tensor  # (N,) 0 train, 1 val, 2 test


def tuple_words(world: World, include_class_names: bool = False) -> tuple[str, ...]:
    """The words of the five-tuples: by default every written word except the class names (held out for attacks)."""
    return world.words if include_class_names else tuple(w for w in world.words if w not in world.classes)


def five_tuple(world: World, index: int, words: Sequence[str], split: str = "tuples"):
    """Tuple `index`: an object, a word that is not its name, the word alone and the word written on the object."""
    rng = item_rng(world.seed, split, "tuple", index)
    cls_id = index % len(world.classes)  # classes in turn, so every split is balanced
    cls = world.classes[cls_id]
    word = rng.choice([w for w in words if w != cls])
    x_i, meta = draw_object(world, cls, rng)
    return x_i, word_image(world, word, rng), write_on(world, x_i, word, rng, meta), cls_id, word


def five_tuples(world: World, n: int, words: Sequence[str], fractions: tuple[float, float] = (0.15, 0.25),
                progress: Callable[[int], None] | None = None) -> FiveTuples:
    """n five-tuples with a deterministic train / val / test assignment (`fractions` = val, test)."""
    x_i, x_t, x_it, cls, ws = [], [], [], [], []
    for i in range(n):
        a, b, c, k, w = five_tuple(world, i, words)
        x_i.append(a)
        x_t.append(b)
        x_it.append(c)
        cls.append(k)
        ws.append(w)
        if progress:
            progress(1)
    gen = torch.Generator().manual_seed(world.seed)
    u = torch.rand(n, generator=gen)
    split = torch.zeros(n, dtype=torch.long)
    split[u < fractions[0] + fractions[1]] = 2
    split[u < fractions[0]] = 1
    return FiveTuples(to_tensor(x_i), to_tensor(x_t), to_tensor(x_it), torch.tensor(cls), ws, split)


@dataclass
class AttackSet:
    """Objects with and without another class's name written on them (synthetic typographic attacks)."""

    clean: torch.Tensor  # (N, 3, H, W) uint8
    attacked: torch.Tensor  # (N, 3, H, W) uint8
    true_ids: torch.Tensor  # (N,) index into world.classes
    attack_ids: torch.Tensor  # (N,) index into world.classes, never the true class


def attack_pair(world: World, index: int) -> tuple[Image.Image, Image.Image, int, int]:
    """Attack `index`: an object and the same picture with a different class name written on it."""
    rng = item_rng(world.seed, "attack", index)
    n = len(world.classes)
    true_id = index % n
    attack_id = (true_id + 1 + rng.randrange(n - 1)) % n
    clean, meta = draw_object(world, world.classes[true_id], rng)
    return clean, write_on(world, clean, world.classes[attack_id], rng, meta), true_id, attack_id


def attack_set(world: World, n: int, progress: Callable[[int], None] | None = None) -> AttackSet:
    """n attacks, classes in turn."""
    items = []
    for i in range(n):
        items.append(attack_pair(world, i))
        if progress:
            progress(1)
    return AttackSet(to_tensor([a for a, *_ in items]), to_tensor([b for _, b, *_ in items]),
                     torch.tensor([c for *_, c, _ in items]), torch.tensor([d for *_, d in items]))
