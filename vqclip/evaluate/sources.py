"""Find the images to score and what is known about them: single runs, batch folders, plain image folders."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..untrusted import parse_json, read_json
from ..errors import bad_arg
from ..io import inside, read_jsonl

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MANIFEST = "manifest.jsonl"
RUN_JSON = "run.json"


@dataclass
class ImageItem:
    """One image to score and its metadata (run.json / manifest line / PNG text chunks, whatever is present)."""

    path: Path
    meta: dict[str, Any] = field(default_factory=dict)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTS and not path.name.startswith(".")


def read_words_file(path: str | os.PathLike) -> dict[str, str | None]:
    """`word[,type]` per line (`#` comments): the prompt words of plain folders and their real/nonsense type."""
    p = Path(path)
    if not p.is_file():
        raise bad_arg("--words", "file not found", str(p), "Give a text file with one `word[,type]` per line.")
    words: dict[str, str | None] = {}
    from ..spelling.words import read_user_text

    for line in read_user_text(p, "--words", "a word list (`word[,type]` a line)").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        word, _, kind = (s.strip() for s in line.partition(","))
        if word:
            words[_norm(word)] = kind.lower() or None
    if not words:
        raise bad_arg("--words", "the word list is empty", str(p), "Give one `word[,type]` per line.")
    return words


def _norm(word: str) -> str:
    return "".join(ch for ch in word.casefold() if ch.isalpha())


def _read_json(path: Path) -> dict | None:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def png_metadata(path: Path) -> dict[str, Any]:
    """Text chunks the generator writes into its PNGs (`prompt`, `space`, `seed`, `settings`), JSON decoded."""
    if path.suffix.lower() != ".png":
        return {}
    try:
        from ..io import png_text

        chunks = png_text(path)
    except Exception:  # noqa: BLE001 - an unreadable image is reported by the OCR step, not here
        return {}
    meta: dict[str, Any] = {}
    for key, value in chunks.items():
        try:
            meta[key] = parse_json(value, path) if key != "prompt" else value
        except ValueError:  # not JSON, or JSON beyond the bounds: kept as the text it is
            meta[key] = value
    return meta


def read_run(folder: Path) -> tuple[list[ImageItem], list[dict]]:
    """A single generator run: `run.json` names the image (default `image.png`)."""
    run = _read_json(folder / RUN_JSON)
    if run is None:
        return [], [{"path": str(folder / RUN_JSON), "reason": "run.json is not a readable JSON object"}]
    image = inside(folder, run.get("image") or "image.png")  # run.json is untrusted: never leave its folder
    if image is None:
        return [], [{"path": str(folder / RUN_JSON), "reason": "image named in run.json is outside the run folder"}]
    if not image.is_file():
        return [], [{"path": str(image), "reason": "image named in run.json is missing"}]
    return [ImageItem(image, {"source": "run", **run})], []


def read_batch(folder: Path) -> tuple[list[ImageItem], list[dict]]:
    """A batch folder: one manifest line per finished job; the last line of a job id wins (re-runs append)."""
    lines = read_jsonl(folder / MANIFEST)
    jobs: dict[Any, dict] = {}
    for n, line in enumerate(lines):
        key = line.get("id", f"line{n}")
        if key in jobs and jobs[key].get("status") == "ok" and line.get("status") not in (None, "ok"):
            continue  # a finished image is not undone by a later failed retry
        jobs[key] = line
    items, skipped = [], []
    for line in jobs.values():
        where = str(folder / str(line.get("image") or f"<job {line.get('id')}>"))
        if line.get("status", "ok") != "ok":
            skipped.append({"path": where, "reason": f"generation {line.get('status')}: {line.get('error', '')}".strip()})
            continue
        if not line.get("image"):
            skipped.append({"path": where, "reason": "manifest line has no image"})
            continue
        image = inside(folder, line["image"])  # manifests are untrusted: never leave the batch folder
        if image is None:
            skipped.append({"path": where, "reason": "image path in manifest.jsonl leads outside the folder"})
            continue
        if not image.is_file():
            skipped.append({"path": where, "reason": "listed in manifest.jsonl but missing"})
            continue
        run = _read_json(image.parent / RUN_JSON) if image.parent != folder else None
        items.append(ImageItem(image, {"source": "batch", **(run or {}), **line}))
    return items, skipped


def collect_images(paths: Sequence[str | os.PathLike], exclude: Iterable[str | os.PathLike] = ()
                   ) -> tuple[list[ImageItem], list[dict]]:
    """Every image under `paths`: batch folders via their manifest, run folders via run.json, others walked."""
    excluded = {Path(p).resolve() for p in exclude}
    items: list[ImageItem] = []
    skipped: list[dict] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise bad_arg("PATH", "does not exist", str(p), "Give generated run/batch folders, image folders or images.")
        if p.is_file():
            if not is_image(p):
                raise bad_arg("PATH", f"not an image file ({', '.join(IMAGE_EXTS)})", str(p),
                              "Give an image, or a folder of images.")
            run = _read_json(p.parent / RUN_JSON)
            if run is not None and str(run.get("image") or "image.png") == p.name:
                items.append(ImageItem(p, {"source": "run", **run}))
            else:
                items.append(ImageItem(p, {"source": "image", **png_metadata(p)}))
            continue
        found, skip = _walk(p, excluded)
        items += found
        skipped += skip
    unique: dict[Path, ImageItem] = {}
    for item in items:
        unique.setdefault(item.path.resolve(), item)
    return list(unique.values()), skipped


def _walk(root: Path, excluded: set[Path]) -> tuple[list[ImageItem], list[dict]]:
    items, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in excluded)
        if here.resolve() in excluded or {"scores.jsonl", "summary.json"} <= set(filenames):
            dirnames[:] = []  # an excluded folder, or an earlier score report (its chart is no generated image)
            continue
        if MANIFEST in filenames:
            found, skip = read_batch(here)
        elif RUN_JSON in filenames:
            found, skip = read_run(here)
        else:
            found = [ImageItem(here / f, {"source": "image", **png_metadata(here / f)})
                     for f in sorted(filenames) if is_image(here / f)]
            skip = []
            items += found
            continue
        dirnames[:] = []  # a run or batch owns its sub-folders (frames, job folders)
        items += found
        skipped += skip
    return items, skipped


def stem_word(stem: str, words: Mapping[str, str | None] | None = None) -> str | None:
    """The prompt word of a plain image: a listed word among the stem's tokens, else its first letter run."""
    tokens = [t.casefold() for t in re.split(r"[^A-Za-z]+", stem) if t]
    if words:
        if _norm(stem) in words:
            return _norm(stem)
        for t in tokens:
            if t in words:
                return t
    return tokens[0] if tokens else None


def describe_item(item: ImageItem, words: Mapping[str, str | None] | None = None,
                  default_space: str | None = None, stem_words: bool = True) -> dict[str, Any]:
    """Prompt, words, space and word type of an image from whatever metadata it carries."""
    from .textscore import prompt_words
    from ..spaces import SPACES

    meta = item.meta
    prompt = meta.get("prompt")
    prompts = meta.get("prompts") if isinstance(meta.get("prompts"), list) else None
    found = prompt_words(prompt if isinstance(prompt, str) else None, prompts)
    source = "prompt" if found else None
    if not found and stem_words:
        w = stem_word(item.path.stem, words)
        if w:
            found, source = [w], ("words-file" if words and w in words else "file-stem")
    space = meta.get("space") or (item.path.parent.name if item.path.parent.name in SPACES else None) or default_space
    word_type = meta.get("word_type")
    if not word_type and words:
        word_type = next((words[w] for w in found if words.get(w)), None)
    return {"prompt": prompt if isinstance(prompt, str) else " ".join(found) or None, "words": found,
            "word_source": source, "space": space, "word_type": (str(word_type).lower() if word_type else None),
            "seed": meta.get("seed"), "id": meta.get("id")}
