"""Synthetic typographic attacks: a wrong class word written on each image of a labelled `ImageSource` (rendering
shared with the projection data builder), saved as a folder in the paper's annotation format with its recipe and
seed, and reused when built before with the same recipe."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from ..errors import bad_arg
from ..io import record_written, write_json
from ..untrusted import read_json
from .typographic import ATTACK_KEY, SYNTHETIC_FORMAT, TRUE_KEY, TypoDataset, clean_label, open_typographic_dataset

log = logging.getLogger(__name__)

SYNTHETIC_MARK = "synthetic typographic attack"


def _synthetic_image_is_ours(path: Path) -> bool:
    from ..io import png_text

    try:
        return not path.is_symlink() and path.is_file() and png_text(path).get("vqclip") == SYNTHETIC_MARK
    except Exception:  # noqa: BLE001 - unreadable: not an image vqclip wrote
        return False


def check_synthetic_out(out: Path, count: int, overwrite: bool = False) -> None:
    """Before any image is written: every file the synthetic set would replace is vqclip's, or `overwrite`."""
    from ..io import check_replaceable, linked_part

    linked = linked_part(out, "images")
    if linked is not None:
        raise bad_arg("--synthetic-out", "images/ is a symbolic link, and vqclip never writes through a link it did "
                      "not make", str(linked), "Remove the link, or choose another --synthetic-out.")
    check_replaceable([out / "annotation.json", out / "recipe.json"], overwrite, "--synthetic-out")
    images = out / "images"
    if overwrite or not images.is_dir():
        return
    for k in range(count):
        for kind in ("clean", "attack"):
            path = images / f"{k:05d}_{kind}.png"
            if os.path.lexists(path) and not _synthetic_image_is_ours(path):
                raise bad_arg("--synthetic-out", "a file vqclip did not write is in the way, and vqclip never "
                              "replaces a file it did not write", str(path),
                              "Choose another --synthetic-out, or pass --overwrite to replace it.")


def synthetic_recipe(source, seed: int, size: int, max_images: int | None, style, attack_words) -> dict:
    """Everything that decides the synthetic set's images (compared to reuse a folder built before)."""
    return {"format": SYNTHETIC_FORMAT, "source": source.name, "source_description": source.description,
            "seed": int(seed), "size": int(size), "max_images": max_images,
            "attack_words": "other class names" if attack_words is None else list(attack_words),
            "style": style.to_dict(), "box": True}


def _reuse_synthetic_set(out: Path, recipe: dict) -> TypoDataset | None:
    """The set already in `out` if its recipe.json records this recipe, else None (then it is made anew)."""
    old = out / "recipe.json"
    if not (old.is_file() and (out / "annotation.json").is_file()):
        return None
    try:
        previous = read_json(old)
        if isinstance(previous, dict) and {k: v for k, v in previous.items() if k not in ("vqclip_version", "skipped")} == recipe:
            log.info("reusing the synthetic attack set in %s", out)
            ds = open_typographic_dataset(out, "annotation")
            ds.skipped = list(previous.get("skipped", [])) + ds.skipped
            return ds
    except (OSError, ValueError):  # not the recipe vqclip wrote: made anew
        pass
    return None


def _synthetic_subset(n: int, seed: int, max_images: int | None) -> list[int]:
    """The source indices the set is built from: a seeded sample of `max_images` of them, or all in order."""
    import random

    return sorted(random.Random(f"{seed}:subset").sample(range(n), max_images)) if max_images and max_images < n \
        else list(range(n))


def _write_attack_images(source, indices: list[int], classes: list[str], pool: list[str], out: Path, seed: int,
                         size: int, style, progress: bool) -> tuple[dict, list[dict]]:
    """Save a clean and an attacked copy of each source image; returns the annotation and the images skipped."""
    from tqdm import tqdm

    from ..io import save_png
    from ..spelling.render import draw_word, item_rng, resize_center_crop

    annotation, skipped = {}, []
    for k, i in enumerate(tqdm(indices, desc="synthetic attacks", unit="img", disable=not progress, leave=False)):
        image = source.load(i)
        if image is None:
            skipped.append({"path": source.where(i), "reason": "unreadable source image"})
            continue
        label = classes[source.class_ids[i]]
        wrong = [w for w in pool if w != label]
        if not wrong:
            skipped.append({"path": source.where(i), "reason": "no attack word differs from the label"})
            continue
        word = wrong[item_rng(seed, "attack", i).randrange(len(wrong))]
        clean_name, attack_name = f"images/{k:05d}_clean.png", f"images/{k:05d}_attack.png"
        save_png(resize_center_crop(image, size), out / clean_name, {"vqclip": SYNTHETIC_MARK})
        save_png(draw_word(image, word, style, item_rng(seed, "render", i), box=True, size=size), out / attack_name,
                 text={"true object": label, "typographic attack label": word, "vqclip": SYNTHETIC_MARK})
        annotation[clean_name] = {TRUE_KEY: label, ATTACK_KEY: "", "source_index": i}
        annotation[attack_name] = {TRUE_KEY: label, ATTACK_KEY: word, "source_index": i}
    return annotation, skipped


def build_synthetic_attacks(source, out_dir: str | os.PathLike, seed: int = 0, size: int = 384,
                            max_images: int | None = 1000, style=None, attack_words: Sequence[str] | None = None,
                            progress: bool = True, overwrite: bool = False) -> TypoDataset:
    """Write a wrong class word on images of a labelled `ImageSource`; save clean + attacked copies, recipe, seed.

    Each image's sample, attack word and rendering come from generators keyed by (seed, index), so the set does
    not depend on iteration order. A folder already built with the same recipe is reused as is. A file in the way
    that vqclip did not write (its JSON files are in the folder's ledger, its images carry vqclip's mark) is
    refused before anything is written, unless `overwrite`.
    """
    from .. import __version__
    from ..spelling.render import TextStyle

    out = Path(out_dir).expanduser()
    style = (style or TextStyle()).with_fonts()
    words = [clean_label(w) for w in attack_words if clean_label(w)] if attack_words is not None else None
    recipe = synthetic_recipe(source, seed, size, max_images, style, words)
    reused = _reuse_synthetic_set(out, recipe)
    if reused is not None:
        return reused
    classes = [clean_label(c) for c in source.classes]
    pool = words if words is not None else sorted(set(classes))
    if len(set(pool)) < 2 and not (words and set(words) - set(classes)):
        raise bad_arg("--synthetic", "needs at least two classes (or --attack-words) to write a wrong word",
                      source.name, "Use a folder with images of two or more classes.")
    indices = _synthetic_subset(len(source), seed, max_images)
    check_synthetic_out(out, len(indices), overwrite)
    annotation, skipped = _write_attack_images(source, indices, classes, pool, out, seed, size, style, progress)
    write_json(out / "annotation.json", annotation)
    write_json(out / "recipe.json", {**recipe, "vqclip_version": __version__, "skipped": skipped})
    record_written(out / "annotation.json", out / "recipe.json")
    ds = open_typographic_dataset(out, "annotation")
    ds.skipped = skipped + ds.skipped
    return ds
