"""The frozen CLIP features of N five-tuples (paper's x_i, y_i, x_t, y_t, x_it), as training and the metrics read them.

Its own module so that the metrics (retrieval.py) and the trainer (train.py) both use it without importing each
other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import bad_arg

SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass
class SpellingFeatures:
    """Unit-norm CLIP features of N five-tuples; y_i is `class_features[class_ids]` (one prompt per class)."""

    x_i: torch.Tensor  # (N, D) natural images
    x_t: torch.Tensor  # (N, D) rendered words
    x_it: torch.Tensor  # (N, D) images with the word drawn on
    y_t: torch.Tensor  # (N, D) the word strings
    class_ids: torch.Tensor  # (N,) long, index into class_features
    class_features: torch.Tensor  # (C, D) class prompts "an image of a {class}"
    word_ids: torch.Tensor  # (N,) long, same id = same word
    is_real: torch.Tensor  # (N,) bool, real English word vs nonsense
    split: torch.Tensor | None = None  # (N,) 0 train, 1 val, 2 test
    class_image_features: torch.Tensor | None = None  # (C, D) rendered class names, for visual comprehension
    words: list[str] | None = None  # word_ids -> string
    classes: list[str] | None = None  # class_ids -> name
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.x_i)
        for name in ("x_t", "x_it", "y_t", "class_ids", "word_ids", "is_real"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"SpellingFeatures.{name} has {len(getattr(self, name))} rows, x_i has {n}")
        dims = {t.shape[-1] for t in (self.x_i, self.x_t, self.x_it, self.y_t, self.class_features)}
        if len(dims) != 1:
            raise ValueError(f"SpellingFeatures: all features need the same size D; got {sorted(dims)}")
        if n and int(self.class_ids.max()) >= len(self.class_features):
            raise ValueError("SpellingFeatures.class_ids point past class_features")

    @property
    def y_i(self) -> torch.Tensor:
        return self.class_features[self.class_ids]  # (N, D)

    @property
    def embed_dim(self) -> int:
        return int(self.x_i.shape[-1])

    def __len__(self) -> int:
        return len(self.x_i)

    def subset(self, index: torch.Tensor) -> "SpellingFeatures":
        """The tuples at `index` (a bool mask or indices); class and word tables are shared."""
        per_item = {k: getattr(self, k)[index] for k in ("x_i", "x_t", "x_it", "y_t", "class_ids", "word_ids",
                                                        "is_real")}
        split = self.split[index] if self.split is not None else None
        return SpellingFeatures(**per_item, class_features=self.class_features, split=split,
                                class_image_features=self.class_image_features, words=self.words,
                                classes=self.classes, metadata=self.metadata)

    def to(self, device: str | torch.device) -> "SpellingFeatures":
        """The same tuples with every tensor on `device` (training reads batches from there)."""
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return SpellingFeatures(**moved)

    def part(self, name: str) -> "SpellingFeatures":
        """The train, val or test split ('all' is everything)."""
        if name == "all":
            return self
        if name not in SPLITS:
            raise bad_arg("--split", "unknown split", name, "Use train, val, test or all.")
        if self.split is None:
            raise bad_arg("--split", "these features carry no split assignment", name, "Use --split all.")
        return self.subset(self.split == SPLITS[name])

    def split_sizes(self) -> dict[str, int]:
        if self.split is None:
            return {"all": len(self)}
        return {name: int((self.split == i).sum()) for name, i in SPLITS.items()}
