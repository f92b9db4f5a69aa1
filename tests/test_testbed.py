"""The spelling testbed: a deterministic synthetic world, a small CLIP trained on it, and the paper's directions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqclip.errors import VqclipError
from vqclip.testbed.world import (CLASSES, SHAPES, World, attack_set, class_prompt, draw_object, five_tuples,
                                  shape_mask, training_set, tuple_words)
from vqclip.spelling.render import item_rng


def test_world_is_deterministic_and_items_do_not_depend_on_the_set_size():
    w = World(seed=3)
    a, caps_a, kinds_a = training_set(w, 12)
    b, caps_b, kinds_b = training_set(w, 20)
    assert torch.equal(a, b[:12]) and caps_a == caps_b[:12] and kinds_a == kinds_b[:12]
    c, caps_c, _ = training_set(World(seed=4), 12)
    assert not torch.equal(a, c)


def test_world_has_ten_or_more_distinct_shapes():
    assert len(CLASSES) >= 10 and set(CLASSES) <= set(SHAPES)
    masks = [torch.from_numpy(np.array(shape_mask(c, 64, 32, 32, 24, 0))).float() / 255
             for c in CLASSES]
    for i in range(len(masks)):
        assert 0.1 < masks[i].mean() < 0.8  # something is drawn, not the whole picture
        for j in range(i):
            assert (masks[i] - masks[j]).abs().mean() > 0.02, (CLASSES[i], CLASSES[j])


def test_objects_vary_in_colour_position_and_background():
    w = World()
    images = [draw_object(w, "star", item_rng(0, "t", i))[0] for i in range(8)]
    arrays = torch.stack([torch.from_numpy(np.array(im)).float() for im in images])
    assert arrays.std(dim=0).mean() > 20  # eight stars, eight different pictures


def test_captions_mix_objects_words_and_labelled_objects():
    w = World()
    _, captions, kinds = training_set(w, 300)
    assert {"object", "word", "labelled"} == set(kinds)
    for cap, kind in zip(captions, kinds):
        if kind != "word":
            assert any(c in cap.split() for c in w.classes), cap


def test_world_words_nonsense_and_validation():
    w = World(seed=1)
    assert len(set(w.words)) == len(w.words)
    assert all(3 <= len(x) <= 8 and x.isalpha() for x in w.nonsense_words)
    assert not w.is_real(w.nonsense_words[0]) and w.is_real(w.classes[0])
    assert set(tuple_words(w)) & set(w.classes) == set()
    assert set(w.classes) <= set(tuple_words(w, include_class_names=True))
    with pytest.raises(VqclipError, match="classes"):
        World(classes=("circle", "unicorn"))
    with pytest.raises(VqclipError, match="image-size"):
        World(image_size=16)


def test_five_tuples_write_another_word_and_split_three_ways():
    w = World()
    t = five_tuples(w, 60, tuple_words(w))
    assert t.x_i.shape == t.x_t.shape == t.x_it.shape == (60, 3, 64, 64) and t.x_i.dtype == torch.uint8
    assert all(word != w.classes[int(k)] for word, k in zip(t.words, t.class_ids))
    assert set(t.split.tolist()) == {0, 1, 2}
    assert not torch.equal(t.x_i, t.x_it)  # the word is written on the object
    assert class_prompt("star") == "an image of a star"


def test_attacks_write_a_different_class_name():
    w = World()
    a = attack_set(w, 36)
    assert (a.true_ids != a.attack_ids).all()
    assert sorted(set(a.true_ids.tolist())) == list(range(len(w.classes)))
    assert not torch.equal(a.clean, a.attacked)
    changed = (a.clean.float() - a.attacked.float()).abs().sum(1) > 0  # (N, H, W) pixels the label touched
    assert changed.float().mean() < 0.5  # the object stays mostly visible
