"""The five-tuples (x_i, y_i, x_t, y_t, x_it) of docs/method.md §3, planned deterministically from a recipe.

The plan (which image, which word, which split) depends only on the recipe and its seed; the pixels of tuple i
depend only on (seed, i), so any tuple can be rebuilt alone, in any order, in any DataLoader worker. Train, val
and test tuples use disjoint images and disjoint words, so held-out retrieval measures reading, not memory.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..errors import bad_arg
from .images import ImageSource
from .render import TextStyle, draw_word, item_rng, render_word, resize_center_crop
from .words import DEFAULT_VOCAB, WordList, class_name_tokens, sample_words, split_words

DEFAULT_TEMPLATE = "an image of {article} {name}"  # the reference code's prompt
MAX_DEFAULT_WORDS = 20000
SPLIT_NAMES = ("train", "val", "test")


def article(name: str) -> str:
    """'a' or 'an' by the first letter (the reference code's rule)."""
    return "an" if name[:1].lower() in "aeiou" else "a"


def class_prompt(name: str, template: str = DEFAULT_TEMPLATE) -> str:
    """'an image of an apple': y_i for a class; the template may use {name} and {article}."""
    return template.format(name=name, article=article(name))


def check_template(template: str) -> str:
    try:
        class_prompt("apple", template)
    except (KeyError, IndexError, ValueError) as e:
        raise bad_arg("--prompt-template", "may only use the fields {name} and {article}", template,
                      f"For example '{DEFAULT_TEMPLATE}'.") from e
    if "{name}" not in template:
        raise bad_arg("--prompt-template", "must contain {name}", template, f"For example '{DEFAULT_TEMPLATE}'.")
    return template


@dataclass(frozen=True)
class DataConfig:
    """How tuples are made from a natural-image source; everything here is part of the cache key."""

    words: int | None = None  # size of the word pool; None = one per image, at most MAX_DEFAULT_WORDS
    real_fraction: float = 0.5
    min_len: int = 3
    max_len: int = 8
    vocab: int = DEFAULT_VOCAB
    word_list: str | None = None  # a saved words.json / text file instead of sampling
    max_images: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    prompt_template: str = DEFAULT_TEMPLATE
    class_renders: int = 4  # rendered images per class name, averaged, for the visual-comprehension test
    seed: int = 0

    def __post_init__(self):
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise bad_arg(f"--{name.replace('_', '-')}", "must be in [0, 1)", v, "Use e.g. 0.1.")
        if self.val_fraction + self.test_fraction >= 1:
            raise bad_arg("--val-fraction", "val + test fractions must leave tuples to train on",
                          (self.val_fraction, self.test_fraction), "Use e.g. 0.1 and 0.1.")
        if self.max_images is not None and self.max_images < 1:
            raise bad_arg("--max-images", "must be at least 1", self.max_images, "Leave it out to use all images.")
        if self.class_renders < 1:
            raise bad_arg("--class-renders", "must be at least 1", self.class_renders, "Use e.g. 4.")
        check_template(self.prompt_template)


def to_uint8_tensor(image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) uint8 (a quarter of float32 across worker pipes)."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


class SpellingDataset(torch.utils.data.Dataset):
    """Tuple i = (image image_index[i] of class class_ids[i], word word_ids[i]) in split split[i]."""

    def __init__(self, source: ImageSource, words: WordList, style: TextStyle, size: tuple[int, int],
                 image_index: list[int], word_ids: list[int], split: list[int], config: DataConfig):
        self.source, self.words, self.style, self.size = source, words, style, size
        self.image_index, self.word_ids, self.split, self.config = image_index, word_ids, split, config
        self.class_ids = [source.class_ids[j] for j in image_index]
        self.prompts = [class_prompt(c, config.prompt_template) for c in source.classes]

    def __len__(self) -> int:
        return len(self.image_index)

    @property
    def classes(self) -> list[str]:
        return self.source.classes

    def render(self, i: int):
        """(x_i, x_t, x_it) PIL images of tuple i, or (None, x_t, None) when its image cannot be read."""
        word = self.words.words[self.word_ids[i]]
        seed = self.style.seed
        x_t = render_word(word, self.size, self.style, item_rng(seed, "x_t", i))
        image = self.source.load(self.image_index[i])
        if image is None:
            return None, x_t, None
        x_i = resize_center_crop(image, self.size)
        x_it = draw_word(x_i, word, self.style, item_rng(seed, "x_it", i))
        return x_i, x_t, x_it

    def __getitem__(self, i: int) -> dict[str, Any]:
        x_i, x_t, x_it = self.render(i)
        valid = x_i is not None
        blank = torch.zeros(3, self.size[1], self.size[0], dtype=torch.uint8)
        return {"index": i, "valid": valid, "x_t": to_uint8_tensor(x_t),
                "x_i": to_uint8_tensor(x_i) if valid else blank, "x_it": to_uint8_tensor(x_it) if valid else blank}

    def class_name_images(self) -> tuple[list[int], list]:
        """`class_renders` rendered images of every class name: (class ids, PIL images)."""
        ids, images = [], []
        for c, name in enumerate(self.classes):
            for k in range(self.config.class_renders):
                ids.append(c)
                images.append(render_word(name, self.size, self.style, item_rng(self.style.seed, "class", c, k)))
        return ids, images

    def tuple_table(self) -> dict[str, torch.Tensor]:
        """The plan as int tensors (saved beside the features)."""
        return {"image_index": torch.tensor(self.image_index, dtype=torch.long),
                "class_ids": torch.tensor(self.class_ids, dtype=torch.long),
                "word_ids": torch.tensor(self.word_ids, dtype=torch.long),
                "is_real": torch.tensor([self.words.is_real[w] for w in self.word_ids], dtype=torch.bool),
                "split": torch.tensor(self.split, dtype=torch.long)}

    def recipe(self) -> dict[str, Any]:
        """Everything that determines the tuples' pixels and labels (fonts by content hash, not path)."""
        style = self.style.to_dict()
        style.pop("fonts")
        words_sha = hashlib.sha256(json.dumps([self.words.words, self.words.is_real]).encode()).hexdigest()[:16]
        return {"images": self.source.name, "tuples": len(self), "classes": len(self.classes),
                "size": list(self.size), "words": {**self.words.recipe, "sha256": words_sha, "count": len(self.words)},
                "style": style, "data": asdict(self.config)}

    def key(self) -> str:
        """Short hash of the recipe: the feature cache's folder name."""
        return hashlib.sha256(json.dumps(self.recipe(), sort_keys=True).encode()).hexdigest()[:16]

    def split_sizes(self) -> dict[str, int]:
        return {name: self.split.count(i) for i, name in enumerate(SPLIT_NAMES)}


def _split_tuples(n: int, config: DataConfig, rng: random.Random) -> list[int]:
    n_val, n_test = round(n * config.val_fraction), round(n * config.test_fraction)
    if config.val_fraction > 0 and n_val == 0 and n >= 3:
        n_val = 1
    if config.test_fraction > 0 and n_test == 0 and n >= 4:
        n_test = 1
    order = list(range(n))
    rng.shuffle(order)
    split = [0] * n
    for k in order[:n_val]:
        split[k] = 1
    for k in order[n_val:n_val + n_test]:
        split[k] = 2
    return split


def build_dataset(source: ImageSource, size: int | tuple[int, int], style: TextStyle | None = None,
                  config: DataConfig | None = None) -> SpellingDataset:
    """Plan the tuples: choose images, draw the word pool, split images and words, assign a word to each image."""
    config = config or DataConfig()
    style = style or TextStyle(seed=config.seed)
    if not style.fonts:
        style = style.with_fonts()
    size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if len(source) == 0:
        raise bad_arg("--images", "no images found", source.name, "Point --images at a folder with images.")
    if len(source.classes) < 2:
        raise bad_arg("--images", "needs at least 2 classes (class prompts y_i are contrasted within a batch)",
                      f"{len(source.classes)} class in {source.name}", "Add class sub-folders.")
    rng = random.Random(f"tuples:{config.seed}")
    n = len(source) if config.max_images is None else min(config.max_images, len(source))
    image_index = sorted(rng.sample(range(len(source)), n)) if n < len(source) else list(range(n))
    if config.word_list:
        words = WordList.load(config.word_list)
    else:
        count = config.words if config.words is not None else min(n, MAX_DEFAULT_WORDS)
        words = sample_words(count, config.real_fraction, config.seed, config.min_len, config.max_len,
                             config.vocab, exclude=class_name_tokens(source.classes))
    split = _split_tuples(n, config, rng)
    fractions = [1 - config.val_fraction - config.test_fraction, config.val_fraction, config.test_fraction]
    groups = split_words(words, fractions, config.seed)
    word_ids = [0] * n
    for s in range(3):
        members = [k for k in range(n) if split[k] == s]
        pool = groups[s] or list(range(len(words)))  # a tiny word list may leave a split without its own words
        pool = pool[:]
        rng.shuffle(pool)
        for j, k in enumerate(members):
            word_ids[k] = pool[j % len(pool)]
    return SpellingDataset(source, words, style, size, image_index, word_ids, split, config)
