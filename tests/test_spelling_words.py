"""Word lists: real words from wordfreq, seeded nonsense, flags, exclusions, saving and splitting."""

from __future__ import annotations

import random
import re

import pytest

from vqclip.errors import VqclipError
from vqclip.spelling.words import (WordList, class_name_tokens, english_words, is_real_word, nonsense_words,
                                   sample_words, split_words)


def test_real_words_respect_constraints():
    words = english_words(vocab=5000, exclude={"water", "house"})
    assert len(words) > 1000
    assert all(re.fullmatch(r"[a-z]{3,8}", w) for w in words)
    assert "water" not in words and "house" not in words
    assert "people" in words  # a common word survives


def test_class_names_are_excluded():
    tokens = class_name_tokens(["golden retriever", "Tench", "great_white shark"])
    assert {"golden", "retriever", "tench", "great", "white", "shark", "goldenretriever", "sharks"} <= tokens
    wl = sample_words(400, real_fraction=1.0, seed=0, vocab=3000, exclude=tokens | {"people", "time"})
    assert not set(wl.words) & (tokens | {"people", "time"})


def test_nonsense_is_seeded_and_not_real():
    a = nonsense_words(50, random.Random(3))
    b = nonsense_words(50, random.Random(3))
    c = nonsense_words(50, random.Random(4))
    assert a == b and a != c
    assert len(set(a)) == 50
    assert all(re.fullmatch(r"[a-z]{3,8}", w) for w in a)
    assert not any(is_real_word(w) for w in a)
    assert is_real_word("apple") and not is_real_word(a[0])


def test_sample_words_ratio_flags_and_determinism():
    wl = sample_words(200, real_fraction=0.25, seed=7, vocab=4000)
    assert len(wl) == 200 and len(set(wl.words)) == 200
    assert sum(wl.is_real) == 50
    for w, real in zip(wl.words, wl.is_real):
        assert re.fullmatch(r"[a-z]{3,8}", w)
        assert is_real_word(w) == real
    assert sample_words(200, real_fraction=0.25, seed=7, vocab=4000).words == wl.words
    assert sample_words(200, real_fraction=0.25, seed=8, vocab=4000).words != wl.words
    assert wl.recipe["real_fraction"] == 0.25 and wl.recipe["seed"] == 7


def test_custom_lengths():
    wl = sample_words(40, seed=1, min_len=5, max_len=6, vocab=4000)
    assert all(5 <= len(w) <= 6 for w in wl.words)
    with pytest.raises(VqclipError, match="--word-length"):
        sample_words(4, min_len=6, max_len=3)


def test_too_many_real_words_is_a_clear_error():
    with pytest.raises(VqclipError, match="--words"):
        sample_words(5000, real_fraction=1.0, vocab=1000)
    with pytest.raises(VqclipError, match="--real-fraction"):
        sample_words(10, real_fraction=1.5)


def test_save_and_reload(tmp_path):
    wl = sample_words(30, seed=2, vocab=3000)
    wl.save(tmp_path / "words.json")
    back = WordList.load(tmp_path / "words.json")
    assert back.words == wl.words and back.is_real == wl.is_real
    (tmp_path / "mine.txt").write_text("# my words\napple\nzxqvy,nonsense\ntable\treal\n")
    mine = WordList.load(tmp_path / "mine.txt")
    assert mine.words == ["apple", "zxqvy", "table"] and mine.is_real == [True, False, True]
    (tmp_path / "bad.txt").write_text("Hello World\n")
    with pytest.raises(VqclipError, match="--word-list"):
        WordList.load(tmp_path / "bad.txt")


def test_split_words_disjoint_and_balanced():
    wl = sample_words(100, seed=0, vocab=3000)
    groups = split_words(wl, [0.8, 0.1, 0.1], seed=0)
    flat = [i for g in groups for i in g]
    assert sorted(flat) == list(range(100))
    assert [len(g) for g in groups] == [80, 10, 10]
    for g in groups:
        assert sum(wl.is_real[i] for i in g) == len(g) // 2  # the ratio holds in every group


def test_word_list_errors_name_the_callers_flag(tmp_path):
    """Issue 28: messages named a --word-list flag even where the file came from reproduce's --words."""
    from vqclip.reproduce.ocr import word_list

    bad = tmp_path / "w.txt"
    bad.write_bytes(bytes(range(256)))
    with pytest.raises(VqclipError, match=r"^--words: ") as e:
        word_list(tmp_path / "out", words_file=bad, save=False)
    assert "--word-list" not in str(e.value)
    deep = tmp_path / "w.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(VqclipError, match=r"^--words: .*words\.json") as e:
        WordList.load(deep, "--words")
    assert "\n" not in str(e.value)
    with pytest.raises(VqclipError, match=r"^--word-list: "):  # train's flag stays the default
        WordList.load(bad)
