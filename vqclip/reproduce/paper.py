"""The paper's published numbers and set sizes (docs/method.md §6), and how a measured rate is set beside one."""

from __future__ import annotations

from typing import Any, Mapping

from ..evaluate.textscore import PAPER_ANY_TEXT
from ..evaluate.typographic import PAPER_ACCURACY, PAPER_DATASET_IMAGES, PAPER_DATASET_URL

PAPER = {
    "title": "Disentangling visual and written concepts in CLIP",
    "authors": "Materzynska, Torralba, Bau",
    "venue": "CVPR 2022",
    "arxiv": "2206.07835",
    "typographic": {
        "dataset": PAPER_DATASET_URL, "images": PAPER_DATASET_IMAGES,
        "accuracy_percent": dict(PAPER_ACCURACY),  # CLIP ViT-B/32 and forget-to-spell; no number for learn
        "where": "object + attack labels, all images (docs/evaluation.md: the paper does not spell out its protocol)",
    },
    "ocr": {
        # "about 2,000 images per word set" (the reference figure is named generation_eval_2k_per_set.png)
        "images_per_word_set": 2000,
        "any_text_percent": {f"{t:g}/{w}": dict(v) for (t, w), v in PAPER_ANY_TEXT.items()},
        "read_from": "the paper's figure, ±0.5",
        "setup": "VQGAN+CLIP (Crowson's codebook-sampling notebook: 480x480, ViT-B/32, VQGAN imagenet f16 1024, "
                 "AdamW lr 0.05, 64 cutouts); EasyOCR; share of images with any detected text",
    },
}

# The generation settings the paper reports (docs/method.md §7). Steps are not published: vqclip's default is used.
PAPER_GENERATION = {"method": "codebook", "vqgan": "vqgan_imagenet_f16_1024", "size": (480, 480), "cutn": 64,
                    "clip": "ViT-B-32", "pretrained": "openai"}


def compare_rate(measured: Mapping[str, Any] | None, paper_percent: float | None) -> dict:
    """A measured rate (`textscore.rate`: k, n, rate, ci95 Wilson) beside a published percentage.

    `inside_ci` says whether the paper's number lies in the measured 95 % interval (None without a paper number
    or without images); `difference` is measured minus paper, in percentage points.
    """
    out: dict[str, Any] = {"paper": paper_percent, "measured": None, "ci95": None, "k": None, "n": None,
                           "difference": None, "inside_ci": None}
    if not measured or not measured.get("n"):
        return out
    rate = 100 * measured["rate"]
    lo, hi = (100 * v for v in measured["ci95"])
    out.update(measured=round(rate, 2), ci95=[round(lo, 2), round(hi, 2)], k=measured["k"], n=measured["n"])
    if paper_percent is not None:
        out["difference"] = round(rate - paper_percent, 2)
        out["inside_ci"] = bool(lo <= paper_percent <= hi)
    return out


def format_comparison(c: Mapping[str, Any]) -> str:
    """`53.1 [50.9, 55.3] (1062/2000)`, or `–` when nothing was measured."""
    if c.get("measured") is None:
        return "–"
    return f"{c['measured']:.1f} [{c['ci95'][0]:.1f}, {c['ci95'][1]:.1f}] ({c['k']}/{c['n']})"


def format_paper(c: Mapping[str, Any]) -> str:
    """The paper's number and whether it lies inside the measured interval: `53.3 (inside)` / `33.0 (outside)`."""
    if c.get("paper") is None:
        return "–"
    if c.get("inside_ci") is None:
        return f"{c['paper']:.1f}"
    return f"{c['paper']:.1f} ({'inside' if c['inside_ci'] else 'outside'})"
