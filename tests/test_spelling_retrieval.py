"""Retrieval metrics on hand-built features: deduplication by word, real/nonsense split, class accuracy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqclip.spelling.retrieval import (format_table, pair_retrieval, retrieval_metrics, split_accuracy,
                                       visual_comprehension)
from vqclip.spelling.train import SpellingFeatures


def _e(i, D=6):
    return F.one_hot(torch.tensor(i), D).float()


def test_repeated_word_is_not_a_miss():
    # tuples 0 and 1 carry the same word; their x_t are identical, so x_t of 1 retrieves x_t of 0 first
    word_ids = torch.tensor([0, 0, 1])
    views = {"x_t": torch.stack([_e(0), _e(0), _e(1)]), "y_t": torch.stack([_e(0), _e(0), _e(1)]),
             "x_it": torch.stack([_e(0), _e(0), _e(2)])}
    is_real = torch.tensor([True, True, False])
    x_t_y_t = pair_retrieval(views, word_ids, is_real, "x_t", "y_t", "word")
    assert x_t_y_t["all"] == 1.0 and x_t_y_t["n"] == 3
    y_t_x_t = pair_retrieval(views, word_ids, is_real, "y_t", "x_t", "word")
    assert y_t_x_t["n"] == 2 and y_t_x_t["all"] == 1.0  # one query per distinct word
    it_t = pair_retrieval(views, word_ids, is_real, "x_it", "x_t", "word")
    # x_it of tuple 2 points at e2, nearest x_t is then a tie at 0 -> tuple 0 (word 0): a miss on a nonsense word
    assert it_t["real"] == 1.0 and it_t["nonsense"] == 0.0 and it_t["all"] == pytest.approx(2 / 3)


def test_item_matching_and_split_counts():
    views = {"x_i": torch.stack([_e(0), _e(1), _e(2), _e(3)]), "x_it": torch.stack([_e(0), _e(2), _e(1), _e(3)])}
    word_ids = torch.tensor([0, 0, 1, 2])  # the same word on two images does not make the images equal
    is_real = torch.tensor([True, False, True, False])
    m = pair_retrieval(views, word_ids, is_real, "x_it", "x_i", "item")
    assert m == {"all": 0.5, "n": 4, "real": 0.5, "n_real": 2, "nonsense": 0.5, "n_nonsense": 2}


def test_split_accuracy_empty_group():
    out = split_accuracy(torch.tensor([True, False]), torch.tensor([True, True]))
    assert out["real"] == 0.5 and out["nonsense"] is None and out["n_nonsense"] == 0


def _features():
    g = torch.Generator().manual_seed(0)
    D, n = 8, 12
    class_features = F.normalize(torch.randn(3, D, generator=g), dim=-1)
    class_ids = torch.arange(n) % 3
    x_i = F.normalize(class_features[class_ids] + 0.1 * torch.randn(n, D, generator=g), dim=-1)
    word = F.normalize(torch.randn(6, D, generator=g), dim=-1)
    word_ids = torch.arange(n) % 6
    return SpellingFeatures(x_i=x_i, x_t=word[word_ids], x_it=F.normalize(x_i + word[word_ids], dim=-1),
                            y_t=word[word_ids], class_ids=class_ids, class_features=class_features,
                            word_ids=word_ids, is_real=word_ids < 3,
                            class_image_features=class_features.roll(1, dims=0))


def test_retrieval_metrics_cover_every_pair_and_respect_the_space():
    f = _features()
    clip = retrieval_metrics(f)
    assert set(clip) >= {"x_t->y_t", "y_t->x_t", "x_it->x_t", "x_t->x_it", "x_it->x_i", "x_i->x_it", "x_it->y_t",
                         "y_t->x_it", "class(x_i)", "class(x_it)", "visual_comprehension"}
    assert clip["x_t->y_t"]["all"] == 1.0 and clip["y_t->x_t"]["n"] == 6
    assert clip["class(x_i)"]["all"] == 1.0 and "real" not in clip["class(x_i)"]
    vc = clip["visual_comprehension"]
    assert vc["text_zero_shot"] == 1.0 and vc["image_only"] == 0.0 and vc["chance"] == pytest.approx(1 / 3)
    # a projection onto a single direction cannot tell 6 words apart
    W = F.normalize(torch.ones(1, 8), dim=-1)
    flat = retrieval_metrics(f, W)
    assert flat["x_t->y_t"]["all"] < 0.5
    assert "x_it->y_t" in format_table({"clip": clip, "flat": flat})


def test_visual_comprehension_in_identity_space():
    protos = torch.eye(4)
    x_i = protos[[0, 1, 2, 3, 0]]
    out = visual_comprehension(x_i, torch.tensor([0, 1, 2, 3, 1]), protos, protos.roll(1, dims=0))
    assert out["image_only"] == pytest.approx(4 / 5) and out["chance"] == 0.25
    # the rolled prompts are all wrong except for the last image (e0 labelled 1 matches prompt 1 = e0)
    assert out["text_zero_shot"] == pytest.approx(1 / 5)
