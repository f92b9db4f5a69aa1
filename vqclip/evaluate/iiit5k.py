"""OCR by retrieval on IIIT5K (docs/method.md §6): each cropped word image picks the nearest lexicon word's text
embedding.

The released test annotations are MATLAB `testdata.mat`: a 1 x N struct array with fields ImgName
(`test/1002_1.png`), GroundTruth (`PRIVATE`), smallLexi (50 words) and mediumLexi (1000 words). The full lexicon
is every test ground-truth word.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..errors import MissingExtraError, VqclipError, bad_arg, pip_extra
from ..errors import quote_error
from ..untrusted import open_image
from .common import Encoder, encode_images, encode_texts, inside
from .textscore import format_cell, rate

LEXICONS = ("small", "medium", "full")
MAT_FIELDS = {"ImgName", "GroundTruth"}
DEFAULT_TEMPLATE = "{}"  # words are encoded raw, like y_t in training
# docs/method.md §6: learn (d = 128) vs CLIP, word accuracy difference in points.
PAPER_NOTE = {"medium": "learn within 1.76 points of CLIP", "full": "learn +0.2 points over CLIP"}


@dataclass
class WordCrop:
    path: Path
    word: str  # ground truth, lower case
    small: list[str] = field(default_factory=list)
    medium: list[str] = field(default_factory=list)


@dataclass
class Iiit5k:
    root: Path
    annotation: Path
    crops: list[WordCrop]
    skipped: list[dict] = field(default_factory=list)

    @property
    def full(self) -> list[str]:
        return sorted({c.word for c in self.crops})


def require_scipy():
    try:
        import scipy.io
    except ImportError as e:
        raise MissingExtraError(f"Reading IIIT5K .mat annotations needs scipy: {pip_extra('ocr')} "
                                "(or: pip install scipy)") from e
    return scipy.io


def _strings(x: Any) -> list[str]:
    """Flatten MATLAB char arrays and cell arrays (nested numpy object arrays) into a list of strings."""
    import numpy as np

    if isinstance(x, (str, bytes)):
        return [x.decode() if isinstance(x, bytes) else x]
    if isinstance(x, np.ndarray):
        if x.dtype.kind in "US":
            return [str(v) for v in x.ravel()]
        return [s for v in x.ravel() for s in _strings(v)]
    return [str(x)]


def _one(x: Any) -> str:
    s = _strings(x)
    return s[0].strip() if s else ""


def _struct_array(mat: Mapping[str, Any], path: Path):
    import numpy as np

    for key, value in mat.items():
        if key.startswith("__") or not isinstance(value, np.ndarray) or value.dtype.names is None:
            continue
        if MAT_FIELDS <= set(value.dtype.names):
            return value
    raise bad_arg("--annotations", "no struct array with ImgName and GroundTruth fields in the .mat file",
                  f"{path}: variables {sorted(k for k in mat if not k.startswith('__'))}",
                  "Use IIIT5K's testdata.mat (or traindata.mat).")


def read_iiit5k(path: str | os.PathLike, images_root: str | os.PathLike | None = None) -> Iiit5k:
    """Read `testdata.mat` (or a folder holding it); image paths are relative to the .mat file's folder."""
    sio = require_scipy()
    path = Path(path).expanduser()
    if path.is_dir():
        found = [path / n for n in ("testdata.mat", "traindata.mat") if (path / n).is_file()]
        if not found:
            raise bad_arg("--annotations", "the folder holds no testdata.mat", str(path),
                          "Give IIIT5K's testdata.mat or the folder that holds it (with its test/ images).")
        path = found[0]
    if not path.is_file():
        raise bad_arg("--annotations", "file not found", str(path), "Give IIIT5K's testdata.mat.")
    try:
        mat = sio.loadmat(str(path))
    except Exception as e:  # noqa: BLE001 - scipy raises several types for non-.mat or damaged files
        detail = quote_error(e)
        if "v7.3" in str(e) or "HDF" in str(e):
            fix = ("MATLAB v7.3 (HDF5) files are not supported: re-save it as v7 (`save('testdata.mat', "
                   "'testdata', '-v7')` in MATLAB or Octave)")
        else:
            fix = ("The file is damaged or not a .mat file: download IIIT5K again and pass its testdata.mat "
                   "(or the folder holding it)")
        raise bad_arg("--annotations", "not a readable MATLAB .mat file", str(path), f"{fix} ({detail}).") from e
    table = _struct_array(mat, path)
    root = Path(images_root).expanduser() if images_root else path.parent
    names = set(table.dtype.names)
    crops, skipped = [], []
    for rec in table.ravel():
        name, word = _one(rec["ImgName"]), _one(rec["GroundTruth"]).lower()
        image = root / name
        if not name or not word:
            skipped.append({"path": str(image), "reason": "entry lacks ImgName or GroundTruth"})
            continue
        image = inside(root, name)
        if image is None:  # untrusted annotations: never follow a name out of the images folder
            skipped.append({"path": name, "reason": f"ImgName leaves the images folder {root}"})
            continue
        if not image.is_file():
            skipped.append({"path": str(image), "reason": "image file missing"})
            continue
        crops.append(WordCrop(image, word,
                              [w.lower() for w in _strings(rec["smallLexi"])] if "smallLexi" in names else [],
                              [w.lower() for w in _strings(rec["mediumLexi"])] if "mediumLexi" in names else []))
    if not crops:
        raise bad_arg("--annotations", "no usable word images", str(path),
                      f"{len(skipped)} entries skipped (e.g. {skipped[0]['reason'] if skipped else 'none listed'}); "
                      "pass --images-root if the images live elsewhere.")
    return Iiit5k(root, path, crops, skipped)


def retrieve_words(image_feats: torch.Tensor, word_feats: torch.Tensor, words: Sequence[str],
                   lexicons: Sequence[Sequence[str]] | None) -> list[str]:
    """Nearest word per image, searching each image's own lexicon (or all `words` when `lexicons` is None)."""
    sims = image_feats @ word_feats.T  # (N, W) cosine similarities
    if lexicons is None:
        return [words[j] for j in sims.argmax(dim=1).tolist()]
    index = {w: j for j, w in enumerate(words)}
    out = []
    for i, lex in enumerate(lexicons):
        cols = torch.tensor([index[w] for w in lex], device=sims.device)
        out.append(lex[int(sims[i, cols].argmax())])
    return out


def evaluate_features(image_feats: torch.Tensor, crops: Sequence[WordCrop], word_feats: torch.Tensor,
                      words: Sequence[str], spaces: Mapping[str, Any], lexicons: Sequence[str] = LEXICONS,
                      full: Sequence[str] | None = None) -> dict:
    """Word accuracy per space and lexicon from precomputed CLIP features (rows of `word_feats` follow `words`).

    `full` is the full lexicon (default: every ground-truth word of `crops`).
    """
    full = sorted(full if full is not None else {c.word for c in crops})
    row = {w: j for j, w in enumerate(words)}
    results: dict[str, dict] = {}
    for name, space in spaces.items():
        img, txt = space.project(image_feats), space.project(word_feats)  # (N, d), (W, d)
        results[name] = {}
        for lex in lexicons:
            per_image = None if lex == "full" else [c.small if lex == "small" else c.medium for c in crops]
            if per_image is not None and not all(per_image):
                continue  # the annotation file has no such lexicon
            if per_image is None:
                keep = [row[w] for w in full]
                pred = retrieve_words(img, txt[keep], full, None)
            else:
                pred = retrieve_words(img, txt, words, per_image)
            results[name][lex] = rate(sum(p == c.word for p, c in zip(pred, crops)), len(crops))
    return results


def evaluate_iiit5k(data: Iiit5k, encoder: Encoder, spaces: Mapping[str, Any], lexicons: Sequence[str] = LEXICONS,
                    template: str = DEFAULT_TEMPLATE, batch_size: int = 64, max_images: int | None = None,
                    progress: bool = True) -> dict:
    """Encode word crops and lexicon words once with CLIP, then retrieve in every space."""
    for lex in lexicons:
        if lex not in LEXICONS:
            raise bad_arg("--lexicon", "unknown lexicon", lex, "Use small, medium and/or full.")
    crops = data.crops[:max_images] if max_images else data.crops
    feats, kept, failed = encode_images([(lambda p=c.path: open_image(p)) for c in crops], encoder, batch_size,
                                        progress, desc="IIIT5K")
    skipped = list(data.skipped) + [{"path": str(crops[i].path), "reason": r} for i, r in failed.items()]
    crops = [crops[i] for i in kept]
    if not crops:
        raise VqclipError(f"--annotations {data.annotation}: none of the word images could be read.")
    full = data.full  # every test word, also those of images left out by max_images or unreadable
    words = sorted({w for c in crops for w in (c.word, *c.small, *c.medium)} | set(full))
    word_feats = encode_texts([template.format(w) for w in words], encoder)  # (W, D)
    results = evaluate_features(feats, crops, word_feats, words, spaces, lexicons, full)
    sizes = {"small": _mean_len(c.small for c in crops), "medium": _mean_len(c.medium for c in crops),
             "full": len(full)}
    return {"annotation": str(data.annotation), "images": len(crops), "skipped": skipped, "template": template,
            "lexicon_sizes": {k: v for k, v in sizes.items() if k in lexicons},
            "spaces": {k: (v.describe() if hasattr(v, "describe") else {"space": k}) for k, v in spaces.items()},
            "results": results}


def _mean_len(lists) -> float:
    lens = [len(x) for x in lists]
    return sum(lens) / len(lens) if lens else 0.0


def iiit5k_table(report: Mapping[str, Any]) -> str:
    """Word accuracy, one row per lexicon, one column per space."""
    spaces = list(report["results"])
    header = ["lexicon", "size", *spaces, "paper"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for lex, size in report["lexicon_sizes"].items():
        cells = [format_cell(report["results"][sp].get(lex, {})) for sp in spaces]
        if all(c == "–" for c in cells):
            continue
        lines.append("| " + " | ".join([lex, f"{size:g}", *cells, PAPER_NOTE.get(lex, "")]) + " |")
    return "\n".join(lines) + "\n"
