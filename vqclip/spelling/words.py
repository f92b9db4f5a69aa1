"""Word lists for the five-tuples (docs/method.md §3): real English words and seeded nonsense strings, 3–8 letters.

Real words come from `wordfreq` (its most frequent English words, lowercase a–z only), minus the class names of
the natural-image dataset; nonsense strings are random letters that wordfreq does not know. Every word carries a
real/nonsense flag, and a list can be saved and reloaded so a dataset is reproducible.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import MissingExtraError, bad_arg, pip_extra

LETTERS = "abcdefghijklmnopqrstuvwxyz"
DEFAULT_VOCAB = 30000  # the most frequent English words considered; ~20,000 of them are 3–8 letters a–z
WORDS_FORMAT = "vqclip.words/1"


def _wordfreq():
    try:
        import wordfreq
    except ImportError as e:
        raise MissingExtraError(f"Real-word lists need wordfreq: {pip_extra('train')}") from e
    return wordfreq


def wordfreq_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wordfreq")
    except PackageNotFoundError:
        return "missing"


def _check_lengths(min_len: int, max_len: int) -> None:
    if not (1 <= min_len <= max_len):
        raise bad_arg("--word-length", "must be MIN,MAX letters with 1 <= MIN <= MAX", (min_len, max_len),
                      "The paper used 3,8.")


def class_name_tokens(class_names: Iterable[str]) -> set[str]:
    """Lowercase words of the class names ('great white shark' -> great, white, shark, greatwhiteshark)."""
    tokens: set[str] = set()
    for name in class_names:
        parts = re.findall(r"[a-z]+", name.lower())
        tokens.update(parts)
        tokens.add("".join(parts))
        tokens.update(p + "s" for p in parts)  # the plural is the same written concept
    return tokens


def english_words(vocab: int = DEFAULT_VOCAB, min_len: int = 3, max_len: int = 8,
                  exclude: Iterable[str] = ()) -> list[str]:
    """Real English words, most frequent first: lowercase a–z, min_len..max_len letters, not in `exclude`."""
    _check_lengths(min_len, max_len)
    pattern = re.compile(f"[a-z]{{{min_len},{max_len}}}")
    excluded = set(exclude)
    return [w for w in _wordfreq().top_n_list("en", vocab) if pattern.fullmatch(w) and w not in excluded]


def is_real_word(word: str) -> bool:
    """True if wordfreq has seen `word` in English at all."""
    return _wordfreq().zipf_frequency(word, "en") > 0


def nonsense_words(n: int, rng: random.Random, min_len: int = 3, max_len: int = 8,
                   avoid: Iterable[str] = ()) -> list[str]:
    """`n` distinct strings of random letters, each checked not to be a word wordfreq knows."""
    _check_lengths(min_len, max_len)
    capacity = sum(26 ** k for k in range(min_len, max_len + 1))
    if n > capacity // 2:
        raise bad_arg("--words", f"too many nonsense strings for lengths {min_len}-{max_len}", n,
                      "Ask for fewer words or allow longer strings.")
    seen, out = set(avoid), []
    while len(out) < n:
        word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(min_len, max_len)))
        if word not in seen and not is_real_word(word):
            seen.add(word)
            out.append(word)
    return out


def read_user_text(path: str | os.PathLike, arg: str, what: str) -> str:
    """The UTF-8 text of a file the user named; a binary or non-UTF-8 file is a one-line error naming `arg`."""
    from ..untrusted import MAX_TEXT_BYTES, read_bytes

    path = Path(path)
    try:  # a regular file of at most MAX_TEXT_BYTES: never a FIFO, a device or a link to /dev/zero
        data = read_bytes(path, MAX_TEXT_BYTES, arg, "text file")
    except OSError as e:
        raise bad_arg(arg, f"cannot be read ({e.strerror or type(e).__name__})", str(path),
                      "Check the path and its permissions.") from None
    if b"\x00" in data[:65536]:
        raise bad_arg(arg, f"is a binary file, not {what}", str(path), "Pass a UTF-8 text file.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise bad_arg(arg, f"is not UTF-8 text ({e.reason} at byte {e.start}), so not {what}", str(path),
                      "Save it as UTF-8.") from None


@dataclass
class WordList:
    """Words with their real (True) / nonsense (False) flag, in a fixed order."""

    words: list[str]
    is_real: list[bool]
    recipe: dict

    def __post_init__(self):
        if len(self.words) != len(self.is_real):
            raise ValueError("WordList: words and is_real differ in length")
        if len(set(self.words)) != len(self.words):
            raise bad_arg("--word-list", "words must be distinct", len(self.words) - len(set(self.words)),
                          "Remove the duplicates.")

    def __len__(self) -> int:
        return len(self.words)

    def to_dict(self) -> dict[str, Any]:
        return {"format": WORDS_FORMAT, "recipe": self.recipe,
                "words": [{"word": w, "real": r} for w, r in zip(self.words, self.is_real)]}

    def save(self, path: str | os.PathLike) -> None:
        from ..io import write_json

        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, arg: str = "--word-list") -> "WordList":
        """A saved words.json, or a text file with one word per line (optionally `word,real` / `word,nonsense`).

        `arg` is the flag (or folder option) that named the file, for the error messages: train's --word-list,
        reproduce's --words, --features or --out for the words.json vqclip keeps in a folder."""
        from ..untrusted import parse_json

        path = Path(path)
        if not path.is_file():
            raise bad_arg(arg, "file not found", str(path), "Pass a words.json or a text file.")
        text = read_user_text(path, arg, "a word list (one word a line, or a words.json)")
        if path.suffix == ".json":
            try:
                data = parse_json(text, path, arg)
                items = [(d["word"], bool(d["real"])) for d in data["words"]]
                if any(not isinstance(w, str) for w, _ in items):
                    raise TypeError("a word is not text")
            except (ValueError, KeyError, TypeError) as e:
                raise bad_arg(arg, "a JSON word list needs {'words': [{'word', 'real'}, ...]}", str(path),
                              "Use a words.json saved by vqclip, or a text file.") from e
        else:
            items = []
            for line in text.splitlines():
                parts = [p.strip() for p in re.split(r"[,\t]", line.strip()) if p.strip()]
                if not parts or parts[0].startswith("#"):
                    continue
                flag = parts[1].lower() if len(parts) > 1 else None
                real = flag in ("real", "1", "true", "yes") if flag else is_real_word(parts[0].lower())
                items.append((parts[0].lower(), real))
        bad = [w for w, _ in items if not re.fullmatch(r"[a-z]+", w)]
        if bad or not items:
            raise bad_arg(arg, "needs at least one word, each of lowercase letters a-z", bad[:5] or str(path),
                          "Fix or remove those lines.")
        from ..io import sha256_file

        recipe = {"source": "file", "path": str(path), "sha256": sha256_file(path)}
        return cls([w for w, _ in items], [r for _, r in items], recipe)


def sample_words(n: int, real_fraction: float = 0.5, seed: int = 0, min_len: int = 3, max_len: int = 8,
                 vocab: int = DEFAULT_VOCAB, exclude: Iterable[str] = ()) -> WordList:
    """`n` distinct words, about `real_fraction` of them real, shuffled together with a seeded generator."""
    if n < 1:
        raise bad_arg("--words", "must be at least 1", n, "Use e.g. 10000.")
    if not (0.0 <= real_fraction <= 1.0):
        raise bad_arg("--real-fraction", "must be between 0 and 1", real_fraction, "Use 0.5 for half and half.")
    rng = random.Random(f"words:{seed}")
    n_real = round(n * real_fraction)
    pool = english_words(vocab, min_len, max_len, exclude)
    if n_real > len(pool):
        raise bad_arg("--words", f"only {len(pool)} real words of {min_len}-{max_len} letters are among the "
                      f"{vocab} most frequent", n_real, "Ask for fewer words, or raise --vocab.")
    real = rng.sample(pool, n_real)
    fake = nonsense_words(n - n_real, rng, min_len, max_len, avoid=pool)
    items = [(w, True) for w in real] + [(w, False) for w in fake]
    rng.shuffle(items)
    recipe = {"source": "wordfreq", "wordfreq": wordfreq_version(), "count": n, "real_fraction": real_fraction,
              "seed": seed, "min_len": min_len, "max_len": max_len, "vocab": vocab,
              "excluded": len(set(exclude))}
    return WordList([w for w, _ in items], [r for _, r in items], recipe)


def split_words(words: WordList, fractions: Sequence[float], seed: int = 0) -> list[list[int]]:
    """Partition word indices into disjoint groups of about `fractions` each, real and nonsense apart, so every
    group keeps the real/nonsense ratio; a group with a positive fraction gets at least one word of each kind
    where possible."""
    rng = random.Random(f"split-words:{seed}")
    groups: list[list[int]] = [[] for _ in fractions]
    total = sum(fractions)
    for flag in (True, False):
        idx = [i for i, r in enumerate(words.is_real) if r == flag]
        rng.shuffle(idx)
        sizes = [round(len(idx) * f / total) for f in fractions]
        for g, f in enumerate(fractions):  # a held-out split with no word of a kind would give empty metrics
            if f > 0 and sizes[g] == 0 and len(idx) > sum(sizes):
                sizes[g] = 1
        sizes[0] = len(idx) - sum(sizes[1:])
        while sizes[0] < 1 and len(idx) and any(s > 1 for s in sizes[1:]):
            g = max(range(1, len(sizes)), key=lambda k: sizes[k])
            sizes[g] -= 1
            sizes[0] += 1
        start = 0
        for g, s in enumerate(sizes):
            groups[g] += idx[start:start + max(0, s)]
            start += max(0, s)
    return [sorted(g) for g in groups]
