"""Natural images x_i with class labels: an ImageNet-layout folder, or a torchvision dataset chosen by name.

A folder is `ROOT/class_name/*.jpg`; folder names may be ids (`n01440764`) mapped to readable names by a class map
file, and a full 1000-class ImageNet folder is named with open_clip's cleaned ImageNet class names.
torchvision datasets download themselves into `<cache>/datasets` on a connected machine.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from PIL import Image

from ..errors import VqclipError, bad_arg, choices_hint
from ..errors import quote_error
from ..untrusted import open_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
WNID = re.compile(r"n\d{8}")


def _places_name(name: str) -> str:
    return " ".join(p for p in name.strip("/").split("/")[1:]) or name


# name -> (torchvision class, constructor kwargs per split, attribute holding the class names)
TORCHVISION_DATASETS: Mapping[str, tuple[str, Mapping[str, dict], str]] = {
    "cifar10": ("CIFAR10", {"train": {"train": True}, "test": {"train": False}}, "classes"),
    "cifar100": ("CIFAR100", {"train": {"train": True}, "test": {"train": False}}, "classes"),
    "stl10": ("STL10", {"train": {"split": "train"}, "test": {"split": "test"}}, "classes"),
    "caltech101": ("Caltech101", {"train": {}}, "categories"),
    "food101": ("Food101", {"train": {"split": "train"}, "test": {"split": "test"}}, "classes"),
    "flowers102": ("Flowers102", {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
                   ""),
    "places365": ("Places365", {"train": {"split": "train-standard", "small": True},
                                "val": {"split": "val", "small": True}}, "classes"),
}


def readable_class_name(name: str) -> str:
    """'golden_retriever' -> 'golden retriever'; Places '/a/apartment_building/outdoor' -> 'apartment building outdoor'."""
    if name.startswith("/"):
        name = _places_name(name)
    return re.sub(r"[_\s]+", " ", name).strip().lower()


@dataclass
class ImageSource:
    """N labelled natural images; `load(i)` returns an RGB PIL image, or None when the file cannot be read."""

    name: str  # stable identity for cache keys
    classes: list[str]  # readable class names, index = class id
    class_ids: list[int]
    loader: Callable[[int], Image.Image]
    description: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.class_ids)

    def where(self, i: int) -> str:
        """Where image `i` comes from, for a user to find it: its file path, else `<source name>[i]`."""
        paths = getattr(self.loader, "paths", None)
        return str(paths[i]) if paths is not None else f"{self.name}[{i}]"

    def load(self, i: int) -> Image.Image | None:
        try:
            image = self.loader(i)
            image.load()
            return image.convert("RGB")
        except Exception as e:  # truncated / corrupt / unsupported files raise many error types
            log.debug("skipping unreadable image %s: %s", i, e)
            return None


@dataclass
class _FileLoader:
    """Picklable loader for DataLoader workers."""

    paths: list[str]

    def __call__(self, i: int) -> Image.Image:
        return open_image(self.paths[i])


@dataclass
class _DatasetLoader:
    dataset: Any

    def __call__(self, i: int) -> Image.Image:
        image = self.dataset[i][0]
        return image if isinstance(image, Image.Image) else Image.fromarray(image)


def load_class_map(path: str | os.PathLike) -> dict[str, str]:
    """JSON {folder: name} or text lines `n01440764 tench, Tinca tinca` (first name kept) / `id<TAB>name`."""
    path = Path(path)
    if not path.is_file():
        raise bad_arg("--class-map", "file not found", str(path), "Pass a JSON or text file mapping folders to names.")
    from .words import read_user_text

    text = read_user_text(path, "--class-map", "a class map (JSON, or `folder name` lines)")
    if path.suffix == ".json":
        from ..untrusted import UntrustedFileError, parse_json

        try:
            data = parse_json(text, path, "--class-map")
        except UntrustedFileError as e:
            raise bad_arg("--class-map", "not valid JSON", str(path), f"Fix the file ({e.rule}).") from None
        if isinstance(data, list):  # ImageNet's class_index.json style: {"0": ["n01440764", "tench"]}
            data = {str(i): v for i, v in enumerate(data)}
        if not isinstance(data, dict):
            raise bad_arg("--class-map", "a JSON class map must be an object {folder: name} or a list", str(path),
                          'Write e.g. {"n01440764": "tench"}.')
        out = {}
        for k, v in data.items():
            if isinstance(v, (list, tuple)) and len(v) == 2:
                out[str(v[0])] = str(v[1])
            else:
                out[str(k)] = str(v)
        return out
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, name = line.partition(" ") if "\t" not in line else line.partition("\t")
        out[key.strip()] = name.split(",")[0].strip() or key.strip()
    return out


# open_clip's ImageNet names repeat two words; WordNet's first lemma of the second synset tells them apart
# (n04008634 "projectile, missile"; n04355933 "sunglass", the burning lens, beside n04356056 "sunglasses").
IMAGENET_ALTERNATIVES = {744: "projectile", 836: "sunglass"}



def unique_class_names(names: Sequence[str], alternatives: dict[int, str] | None = None) -> list[str]:
    """`names` with every repeat replaced: by `alternatives[i]` where given, else by 'name (k)'."""
    alternatives = alternatives or {}
    out: list[str] = []
    for i, name in enumerate(names):
        if names.count(name) > 1 and i in alternatives:
            name = alternatives[i]
        k = 2
        unique = name
        while unique in out:
            unique, k = f"{name} ({k})", k + 1
        out.append(unique)
    return out



def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names in class order (open_clip's cleaned names), each used once."""
    from open_clip import IMAGENET_CLASSNAMES

    return unique_class_names(list(IMAGENET_CLASSNAMES), IMAGENET_ALTERNATIVES)


def _imagenet_names(folders: list[str]) -> dict[str, str] | None:
    """A full ImageNet-1k folder of WordNet ids, sorted, gets open_clip's cleaned class names."""
    if len(folders) != 1000 or not all(WNID.fullmatch(f) for f in folders):
        return None
    return dict(zip(sorted(folders), imagenet_class_names()))


def _folder_fingerprint(root: Path, files: list[tuple[str, int]]) -> str:
    h = hashlib.sha256()
    for rel, size in files:
        h.update(f"{rel}\0{size}\n".encode())
    return h.hexdigest()[:16]


def image_folder(root: str | os.PathLike, class_map: str | os.PathLike | Mapping[str, str] | None = None,
                 arg: str = "--images") -> ImageSource:
    """An ImageNet-layout folder: one sub-folder per class holding its images; `arg` is the flag that named it."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise bad_arg(arg, "must be an image folder (ROOT/class_name/*.jpg) or a dataset name", str(root),
                      f"Check the path, or use one of: {', '.join(TORCHVISION_DATASETS)}.")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    mapping = dict(class_map) if isinstance(class_map, Mapping) else (load_class_map(class_map) if class_map else None)
    mapping = mapping or _imagenet_names(folders) or {}
    if not mapping and folders and all(WNID.fullmatch(f) for f in folders):
        log.warning("class folders look like WordNet ids (%s...); pass --class-map for readable class prompts",
                    folders[0])
    paths, class_ids, classes, files = [], [], [], []
    for folder in folders:
        images = sorted(p for p in (root / folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            continue
        cid = len(classes)
        classes.append(readable_class_name(mapping.get(folder, folder)))
        for p in images:
            paths.append(str(p))
            class_ids.append(cid)
            files.append((str(p.relative_to(root)), p.stat().st_size))
    if not paths:
        loose = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        hint = (" The images sit directly in the folder: put them in one sub-folder per class."
                if loose else "")
        raise bad_arg(arg, "the folder holds no images in class sub-folders (ROOT/class_name/*.jpg)",
                      str(root), f"Point it at an ImageNet-layout folder.{hint}")
    name = f"folder:{root.name}#{_folder_fingerprint(root, files)}"
    return ImageSource(name, classes, class_ids, _FileLoader(paths),
                       {"kind": "folder", "root": str(root), "images": len(paths), "classes": len(classes),
                        "class_map": str(class_map) if class_map and not isinstance(class_map, Mapping) else None})


def torchvision_dataset(spec: str, root: str | os.PathLike | None = None, download: bool = True,
                        arg: str = "--images") -> ImageSource:
    """`NAME` or `NAME:SPLIT` (e.g. cifar100, cifar100:test, caltech101); downloads into `root` when allowed."""
    from ..cache import cache_dir

    name, _, split = spec.lower().partition(":")
    if name == "imagenet":
        raise bad_arg(arg, "ImageNet cannot be downloaded automatically", spec,
                      f"Download it from image-net.org and pass the train folder (ROOT/n01440764/*.JPEG) as {arg}.")
    if name not in TORCHVISION_DATASETS:
        raise bad_arg(arg, "neither an existing folder nor a known dataset name", spec,
                      choices_hint([*TORCHVISION_DATASETS, "imagenet", "imagenetv2"]) + " Or pass an image folder path.")
    cls_name, splits, attr = TORCHVISION_DATASETS[name]
    split = split or "train"
    if split not in splits:
        raise bad_arg(arg, f"{name} has no split {split!r}", spec, choices_hint(splits))
    import torchvision.datasets as tvd

    root = Path(root).expanduser() if root else cache_dir() / "datasets"
    target = root / name
    cls = getattr(tvd, cls_name)
    try:
        try:
            ds = cls(str(target), download=False, **splits[split])
        except (RuntimeError, FileNotFoundError, OSError):
            if not download:
                raise
            ds = cls(str(target), download=True, **splits[split])
    except Exception as e:  # offline machines fail inside urllib / gdown with many error types
        raise VqclipError(
            f"{arg} {spec}: could not load or download torchvision {cls_name} into {target} "
            f"({quote_error(e)}). This needs a network connection the first time: run once on a "
            "connected machine (the files are then reused from that folder), or pass an image folder "
            "(ROOT/class_name/*.jpg) instead.") from e
    raw = _class_names(ds, attr)
    classes = [readable_class_name(c) for c in raw]
    class_ids = _targets(ds)
    return ImageSource(f"torchvision:{name}:{split}#{len(class_ids)}", classes, class_ids, _DatasetLoader(ds),
                       {"kind": "torchvision", "dataset": cls_name, "split": split, "root": str(target),
                        "images": len(class_ids), "classes": len(classes)})


def _class_names(ds, attr: str) -> list[str]:
    names = getattr(ds, attr, None) if attr else None
    if names:
        return list(names)
    n = max(_targets(ds)) + 1  # Flowers102 ships no names; number the classes
    return [f"class {i}" for i in range(n)]


def _targets(ds) -> list[int]:
    for attr in ("targets", "labels", "_labels", "y"):
        t = getattr(ds, attr, None)
        if t is not None:
            return [int(v) for v in t]
    return [int(ds[i][1]) for i in range(len(ds))]


