"""Typographic-attack robustness (docs/method.md §6): datasets, synthetic attacks and zero-shot protocols in any space.

Datasets:
- the paper's real photos: a folder with `annotation.json` (or `annotations.json`) mapping each file name to
  `{"true object": ..., "typographic attack label": ...}` (an empty attack label marks a clean photo);
- PAINT / RTA-100: files named `label=OBJECT_text=WORD.ext`;
- synthetic attacks: a wrong class word written on each image of a labelled folder (rendering shared with the
  projection data builder), saved as a folder in the paper's format with its recipe and seed; built by
  `.synthetic_attacks`, read here like the paper's photos.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..errors import VqclipError, bad_arg
from ..errors import quote_error
from ..io import record_written, write_json
from ..untrusted import UntrustedFileError, open_image, read_json
from .common import Encoder, encode_images, encode_texts, inside
from .textscore import rate

DEFAULT_TEMPLATE = "a photo of a {}."
ANNOTATION_FILES = ("annotation.json", "annotations.json")
TRUE_KEY, ATTACK_KEY = "true object", "typographic attack label"
FILENAME_RE = re.compile(r"^label=(?P<label>.+?)_text=(?P<text>.+)$")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FORMATS = ("auto", "annotation", "filename")
SYNTHETIC_FORMAT = "vqclip.synthetic-typographic/1"
PROTOCOLS = {"objects": "object labels only", "union": "object + attack labels"}
# The paper's real-photo set, accuracy of CLIP ViT-B/32 and of forget-to-spell (docs/method.md §6).
PAPER_ACCURACY = {"clip": 49.4, "forget": 77.2}


def clean_label(text: Any) -> str:
    """'Teddy_Bear ' -> 'teddy bear': labels compare case-insensitively, underscores read as spaces."""
    return re.sub(r"[_\s]+", " ", str(text)).strip().lower()


@dataclass(frozen=True)
class TypoSample:
    """One image, its true object, and the word written on it (None for a clean image)."""

    path: Path
    label: str
    attack: str | None = None


@dataclass
class TypoDataset:
    """A typographic-attack set: samples plus what could not be used (listed, never silently dropped)."""

    name: str
    root: Path
    format: str
    samples: list[TypoSample]
    skipped: list[dict] = field(default_factory=list)
    recipe: dict | None = None

    @property
    def classes(self) -> list[str]:
        return sorted({s.label for s in self.samples})

    @property
    def attack_words(self) -> list[str]:
        return sorted({s.attack for s in self.samples if s.attack})

    def describe(self) -> dict:
        return {"name": self.name, "root": str(self.root), "format": self.format, "images": len(self.samples),
                "clean": sum(s.attack is None for s in self.samples),
                "attacked": sum(s.attack is not None for s in self.samples),
                "objects": self.classes, "attack_words": self.attack_words,
                "skipped": self.skipped, "recipe": self.recipe}


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")


def _load_annotation(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path, "--dataset")
    except UntrustedFileError:
        raise
    except (OSError, ValueError) as e:
        raise bad_arg("--dataset", "the annotation file is not readable JSON", str(path), f"Fix the file ({quote_error(e)}).") from e
    fix = 'Use {"IMG_1.JPG": {"true object": "cup", "typographic attack label": "good"}, ...}.'
    kind = type(data).__name__
    if isinstance(data, list):  # the README calls it "a list of files": accept [{file: {...}}, ...] too
        merged: dict[str, Any] = {}
        for n, entry in enumerate(data):
            if isinstance(entry, Mapping) and "file" in entry:
                merged[str(entry["file"])] = entry
            elif isinstance(entry, Mapping):
                merged.update(entry)
            else:
                raise bad_arg("--dataset", "a JSON list in the annotation file must hold objects, "
                              '{"FILE": {...}} or {"file": "FILE", "true object": ..., ...}',
                              f"{path}: item {n} is a {type(entry).__name__}: {str(entry)[:60]}", fix)
        data = merged
    if not isinstance(data, Mapping):
        raise bad_arg("--dataset", "the annotation file must map file names to {\"true object\", "
                      "\"typographic attack label\"}", f"{path}: {kind}", fix)
    if not data:
        raise bad_arg("--dataset", "the annotation file lists no images", f"{path}: an empty {kind}", fix)
    return dict(data)


def read_annotation_dataset(root: str | os.PathLike, annotation: str | os.PathLike | None = None) -> TypoDataset:
    """The paper's real-photo format; entries with missing keys or files, and unlisted images, are listed."""
    root = Path(root).expanduser()
    if annotation is None:
        annotation = next((root / n for n in ANNOTATION_FILES if (root / n).is_file()), None)
        if annotation is None:
            raise bad_arg("--dataset", f"no {' or '.join(ANNOTATION_FILES)} in the folder", str(root),
                          "Point at the folder of the paper's typographic-attack photos.")
    annotation = Path(annotation)
    entries = _load_annotation(annotation)
    samples, skipped, listed = [], [], set()
    for name, info in entries.items():
        path = inside(root, name)
        if path is None:  # untrusted annotations: never follow a name out of the dataset folder
            skipped.append({"path": str(name), "reason": f"the file name leaves the dataset folder {root}"})
            continue
        listed.add(path.resolve())
        if not isinstance(info, Mapping):
            skipped.append({"path": str(path), "reason": "annotation entry is not an object"})
            continue
        missing = [k for k in (TRUE_KEY, ATTACK_KEY) if k not in info]
        if missing or not str(info.get(TRUE_KEY) or "").strip():
            skipped.append({"path": str(path), "reason": "annotation lacks " + ", ".join(
                f'"{k}"' for k in (missing or [TRUE_KEY]))})
            continue
        if not path.is_file():
            skipped.append({"path": str(path), "reason": "listed in the annotation but the file is missing"})
            continue
        attack = clean_label(info[ATTACK_KEY] or "") or None
        samples.append(TypoSample(path, clean_label(info[TRUE_KEY]), attack))
    for p in sorted(root.rglob("*")):
        if _is_image(p) and p.is_file() and p.resolve() not in listed:
            skipped.append({"path": str(p), "reason": "image not in the annotation file"})
    return TypoDataset(root.name, root, "annotation", samples, skipped)


def parse_attack_filename(name: str) -> tuple[str, str] | None:
    """`label=apple_text=ipod.jpg` -> ('apple', 'ipod'); None if the name does not follow the convention."""
    m = FILENAME_RE.match(Path(name).stem)
    if not m:
        return None
    return clean_label(m.group("label")), clean_label(m.group("text"))


def read_filename_dataset(root: str | os.PathLike) -> TypoDataset:
    """PAINT / RTA-100 convention: the object and the written word are in each file name."""
    root = Path(root).expanduser()
    samples, skipped = [], []
    for p in sorted(root.rglob("*")):
        if not (p.is_file() and _is_image(p)):
            continue
        parsed = parse_attack_filename(p.name)
        if parsed is None or not parsed[0]:
            skipped.append({"path": str(p), "reason": "file name does not follow label=OBJECT_text=WORD.ext"})
            continue
        label, text = parsed
        samples.append(TypoSample(p, label, text or None))
    return TypoDataset(root.name, root, "filename", samples, skipped)


def detect_format(root: Path) -> str:
    if any((root / n).is_file() for n in ANNOTATION_FILES):
        return "annotation"
    if any(FILENAME_RE.match(p.stem) for p in root.rglob("*") if _is_image(p)):
        return "filename"
    raise bad_arg("--dataset", "not a typographic-attack folder: no annotation.json / annotations.json and no "
                  "label=OBJECT_text=WORD image names", str(root),
                  "Give the paper's photo folder, a PAINT / RTA-100 folder, or build one with --synthetic FOLDER.")


def open_typographic_dataset(root: str | os.PathLike, format: str = "auto") -> TypoDataset:
    """Read a dataset folder in either format; an empty dataset is an error naming what was skipped."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise bad_arg("--dataset", "must be a folder", str(root), "Give the folder holding the images.")
    if format not in FORMATS:
        raise bad_arg("--format", "unknown dataset format", format, "Use auto, annotation or filename.")
    fmt = detect_format(root) if format == "auto" else format
    ds = read_annotation_dataset(root) if fmt == "annotation" else read_filename_dataset(root)
    recipe = root / "recipe.json"
    if recipe.is_file():
        try:
            ds.recipe = read_json(recipe, "--dataset")
            if isinstance(ds.recipe, dict) and ds.recipe.get("format") == SYNTHETIC_FORMAT:
                ds.format = "synthetic"
        except (OSError, ValueError):  # not vqclip's recipe: the dataset is read without it
            ds.recipe = None
    check_dataset(ds)
    return ds


def check_dataset(ds: TypoDataset) -> None:
    if not ds.samples:
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in ds.skipped[:5])
        raise bad_arg("--dataset", "no usable images", str(ds.root),
                      f"Skipped {len(ds.skipped)}" + (f" (e.g. {reasons})" if reasons else "") + ".")
    if len(ds.classes) < 2 and not ds.attack_words:
        raise bad_arg("--dataset", "zero-shot classification needs at least two labels", ds.classes,
                      "Add images of other objects.")


# ---------------------------------------------------------------- the paper's photos, fetched

# The authors' typographic-attack photos (README of github.com/joaanna/disentangling_spelling_in_clip): 180 images
# of 20 objects with 8 attack words and annotation.json, in a public Google Drive folder.
PAPER_DATASET_URL = "https://drive.google.com/drive/folders/17v74pmQs2zHrs9sJ_8D0bfrz5ykB5ZW2"
PAPER_DATASET_IMAGES, PAPER_DATASET_OBJECTS, PAPER_DATASET_ATTACKS = 180, 20, 8
MAX_ARCHIVE_BYTES = 4 << 30  # a zipped copy of 180 phone photos is far below this; refuse zip bombs


def paper_dataset_dir(cache: str | os.PathLike | None = None) -> Path:
    """Where the fetched photo folder lives: <cache>/datasets/typographic-attack/."""
    from ..cache import cache_dir

    return cache_dir(cache) / "datasets" / "typographic-attack"


def find_dataset_root(folder: str | os.PathLike) -> Path | None:
    """The folder at or below `folder` that holds annotation.json or annotations.json (the shallowest), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [p for name in ANNOTATION_FILES for p in folder.rglob(name)
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return min(found, key=lambda p: (len(p.parts), str(p))).parent if found else None


def unpack_archives(folder: Path) -> list[Path]:
    """Unzip every .zip under `folder` beside itself (Drive folders often hold a dataset zipped); returns them."""
    import zipfile

    done = []
    for archive in sorted(folder.rglob("*.zip")):
        with zipfile.ZipFile(archive) as zf:  # extractall drops absolute paths and '..' from member names
            size = sum(info.file_size for info in zf.infolist())
            if size > MAX_ARCHIVE_BYTES:
                raise OSError(f"{archive.name} would unpack to {size / 1e9:.1f} GB (refused)")
            zf.extractall(archive.parent / archive.stem)
        done.append(archive)
    return done


def fetch_paper_dataset(cache: str | os.PathLike | None = None, download: bool = True, progress: bool = True,
                        fetcher=None) -> Path:
    """The paper's photo folder (the one holding the annotation file), fetched into the cache on first use.

    The Drive folder is downloaded whole with the projections' folder fetcher (gdown) into a temporary folder,
    zips in it are unpacked, and it is renamed into place only when an annotation file is found in it, so a failed
    or partial transfer leaves nothing behind. Files someone put in the cache folder by hand are used as they are.
    """
    import shutil
    import tempfile

    from ..io import writable_folder
    from .. import downloads

    dest = paper_dataset_dir(cache)
    root = find_dataset_root(dest)
    if root is not None:
        return root
    fix = (f"Download the folder {PAPER_DATASET_URL} (the paper's {PAPER_DATASET_IMAGES} photos and "
           f"annotation.json) elsewhere and put its files in {dest}/, or pass --dataset DIR.")
    if dest.is_dir() and any(not p.name.startswith(".") for p in dest.iterdir()):
        raise bad_arg("--dataset", "the cache folder of the paper's photos holds files but no "
                      f"{' or '.join(ANNOTATION_FILES)}", str(dest), fix)
    if not download:
        raise bad_arg("--dataset", "the paper's typographic-attack photos are not in the cache, and downloads are "
                      "off", str(dest), fix)
    writable_folder(dest.parent, "--cache-dir")  # an O_EXCL probe: a link planted in the cache is never followed
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dest.parent))
    try:
        (fetcher or downloads.gdown_folder)(PAPER_DATASET_URL, tmp, progress)  # looked up now: tests replace it
        unpack_archives(tmp)
        if find_dataset_root(tmp) is None:
            raise OSError(f"the download holds no {' or '.join(ANNOTATION_FILES)}")
        (tmp / ".source").write_text(PAPER_DATASET_URL + "\n")
        if dest.is_dir():
            dest.rmdir()  # empty (checked above); a non-empty one was refused
        os.replace(tmp, dest)
    except ImportError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:  # offline, quota, moved folder, a damaged zip: gdown and requests raise many types
        shutil.rmtree(tmp, ignore_errors=True)
        if find_dataset_root(dest) is not None:  # another process fetched it meanwhile
            return find_dataset_root(dest)
        raise bad_arg("--dataset", "could not download the paper's typographic-attack photos",
                      f"{PAPER_DATASET_URL} ({downloads.first_line(e)})", fix) from None
    return find_dataset_root(dest)


# ---------------------------------------------------------------- zero-shot protocols

def zero_shot_predictions(image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
    """(N, d) images x (C, d) class prompts, both unit vectors -> (N,) index of the nearest prompt."""
    return (image_feats @ text_feats.T).argmax(dim=1)  # (N, C) -> (N,)


def protocol_scores(predicted: Sequence[str], samples: Sequence[TypoSample], classes: Sequence[str]) -> dict:
    """Object accuracy on clean, attacked and all images, and how often the written word wins."""
    clean = [(p, s) for p, s in zip(predicted, samples) if s.attack is None]
    attacked = [(p, s) for p, s in zip(predicted, samples) if s.attack is not None]
    can_win = [(p, s) for p, s in attacked if s.attack in set(classes)]
    return {
        "clean": rate(sum(p == s.label for p, s in clean), len(clean)),
        "attacked": rate(sum(p == s.label for p, s in attacked), len(attacked)),
        "all": rate(sum(p == s.label for p, s in zip(predicted, samples)), len(samples)),
        "attack_wins": rate(sum(p == s.attack for p, s in can_win), len(can_win)),
    }


def protocol_classes(samples: Sequence[TypoSample]) -> dict[str, list[str]]:
    objects = sorted({s.label for s in samples})
    return {"objects": objects, "union": sorted(set(objects) | {s.attack for s in samples if s.attack})}


def evaluate_features(image_feats: torch.Tensor, samples: Sequence[TypoSample], text_feats: torch.Tensor,
                      class_names: Sequence[str], spaces: Mapping[str, Any]) -> dict:
    """Both protocols in every space from precomputed CLIP features; `text_feats` rows follow `class_names`."""
    row = {c: i for i, c in enumerate(class_names)}
    results: dict[str, dict] = {}
    predictions: dict[str, dict[str, list[str]]] = {}
    for space_name, space in spaces.items():
        img = space.project(image_feats.to(_device(space)))  # (N, d)
        txt = space.project(text_feats.to(_device(space)))  # (C, d)
        results[space_name], predictions[space_name] = {}, {}
        for proto, classes in protocol_classes(samples).items():
            idx = torch.tensor([row[c] for c in classes], device=txt.device)
            pred = [classes[j] for j in zero_shot_predictions(img, txt[idx]).tolist()]
            results[space_name][proto] = protocol_scores(pred, samples, classes)
            predictions[space_name][proto] = pred
    return {"results": results, "predictions": predictions}


def _device(space) -> torch.device:
    W = getattr(space, "W", None)
    return W.device if isinstance(W, torch.Tensor) else torch.device("cpu")


def evaluate_typographic(dataset: TypoDataset, encoder: Encoder, spaces: Mapping[str, Any],
                         template: str = DEFAULT_TEMPLATE, batch_size: int = 32, progress: bool = True) -> dict:
    """Encode the images once with CLIP, then classify them zero-shot in every space under both protocols."""
    check_template(template)
    feats, kept, failed = encode_images([_opener(s.path) for s in dataset.samples], encoder, batch_size, progress,
                                        desc="typographic")
    skipped = list(dataset.skipped) + [{"path": str(dataset.samples[i].path), "reason": r} for i, r in failed.items()]
    samples = [dataset.samples[i] for i in kept]
    if not samples:
        raise VqclipError(f"--dataset {dataset.root}: none of the {len(dataset.samples)} images could be read "
                          f"(e.g. {next(iter(failed.values()), '')}).")
    names = protocol_classes(samples)["union"]
    text = encode_texts([template.format(c) for c in names], encoder)  # (C, D)
    out = evaluate_features(feats, samples, text, names, spaces)
    per_image = [{"path": str(s.path), "true object": s.label, "attack": s.attack,
                  **{f"{sp}/{proto}": out["predictions"][sp][proto][k] for sp in spaces for proto in PROTOCOLS}}
                 for k, s in enumerate(samples)]
    return {"dataset": {**dataset.describe(), "skipped": skipped, "evaluated": len(samples)},
            "template": template, "classes": protocol_classes(samples),
            "spaces": {k: (v.describe() if hasattr(v, "describe") else {"space": k}) for k, v in spaces.items()},
            "results": out["results"], "per_image": per_image}


def check_template(template: str) -> str:
    try:
        template.format("apple")
    except (IndexError, KeyError, ValueError) as e:
        raise bad_arg("--template", "must contain one {} for the class name and no other fields", template,
                      f'For example "{DEFAULT_TEMPLATE}".') from e
    if "{}" not in template:
        raise bad_arg("--template", "must contain {} for the class name", template, f'For example "{DEFAULT_TEMPLATE}".')
    return template


def _opener(path: Path):
    return lambda: open_image(path)


REPORT_FILES = ("predictions.jsonl", "table.md", "report.json")


def report_paths(out: str | os.PathLike) -> list[Path]:
    """The files `write_typographic_report` writes into `out`."""
    return [Path(out) / name for name in REPORT_FILES]


def check_report_out(out: str | os.PathLike, overwrite: bool = False, arg: str = "--out") -> None:
    """Before any work: the report files may be written into `out` (each absent, or one vqclip wrote)."""
    from ..io import check_replaceable

    check_replaceable(report_paths(out), overwrite, arg)


def write_typographic_report(report: dict, out: str | os.PathLike, overwrite: bool = False) -> str:
    """Write an evaluation's predictions.jsonl (its per-image rows, taken out of `report`), table.md and
    report.json into `out`; returns the table. A file of those names that vqclip did not write is refused (before
    anything is written) unless `overwrite`."""
    from ..io import write_text

    out = Path(out)
    check_report_out(out, overwrite)
    per_image = report.pop("per_image")
    table = typographic_table(report)
    write_text(out / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in per_image))
    write_text(out / "table.md", table)
    write_json(out / "report.json", {**report, "table": table})
    record_written(*report_paths(out))
    return table


def typographic_table(report: Mapping[str, Any], reference: bool = True) -> str:
    """Spaces side by side: object accuracy (clean / attacked / all) and attack-word wins, per protocol."""
    from .textscore import format_cell

    spaces = list(report["results"])
    labels = {"clean": "object accuracy, clean images", "attacked": "object accuracy, attacked images",
              "all": "object accuracy, all images", "attack_wins": "attack word wins (attacked images)"}
    show_ref = reference and report.get("dataset", {}).get("format") == "annotation"
    header = ["protocol", "measure", *spaces] + (["paper (CLIP / forget)"] if show_ref else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for proto, proto_label in PROTOCOLS.items():
        for key, label in labels.items():
            cells = [format_cell(report["results"][sp][proto][key]) for sp in spaces]
            if all(c == "–" for c in cells):
                continue
            line = [proto_label, label, *cells]
            if show_ref:
                line.append(f"{PAPER_ACCURACY['clip']} / {PAPER_ACCURACY['forget']}"
                            if (proto, key) == ("union", "all") else "")
            lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines) + "\n"
