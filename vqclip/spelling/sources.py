"""Public training images any user can fetch: ImageNetV2 matched-frequency, what `vqclip train` uses by default.

ImageNetV2 matched-frequency (Recht et al., ICML 2019): 10 images for each of the 1000 ImageNet classes, in
folders 0..999 in ImageNet class order, one ~1.26 GB tarball on the Hugging Face hub. It is fetched with
vqclip.downloads (resumable `.part` file, progress bar, size check, atomic rename), its sha256 is recorded,
and it is extracted safely: a member that would land outside the target, a link or a device file refuses the
whole archive. Class names are open_clip's ImageNet names, made unique.

Layout under the datasets root (`--data-root`, else <cache>/datasets):

    imagenetv2/imagenetv2-matched-frequency.tar.gz(.part)  the download (removed after extraction if vqclip
                                                            fetched it; a copy put there by hand is kept)
    imagenetv2/matched-frequency/                           the images, renamed into place once fully extracted
    imagenetv2/matched-frequency/source.json                URL, size and sha256 of the tarball they came from
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Iterator

from ..downloads import EXTRACTED, IMAGENETV2, IMAGENETV2_URL, RECORD, dataset_dir, download_file, locked
from ..errors import VqclipError, bad_arg, one_line, quote_error
from .images import ImageSource, image_folder, imagenet_class_names, torchvision_dataset

DEFAULT_IMAGES = "imagenetv2"
NAMES = ("imagenetv2", "imagenetv2-matched-frequency")


# ------------------------------------------------------------------------------------------------ safe extraction

def member_problem(member: tarfile.TarInfo) -> str | None:
    """Why a tar member may not be extracted (links, devices, absolute paths, '..'), or None."""
    if member.issym() or member.islnk():
        return f"a {'symbolic' if member.issym() else 'hard'} link to {member.linkname!r}"
    if not (member.isfile() or member.isdir()):
        return "a device, FIFO or other special file"
    path = PurePosixPath(member.name)
    if path.is_absolute() or member.name.startswith(("/", "\\")) or (path.parts and ":" in path.parts[0]):
        return "an absolute path"
    if ".." in path.parts or "\\" in member.name:
        return "a path that climbs out of the target folder"
    return None


def _inside(target: Path, name: str) -> Path:
    path = (target / name).resolve()
    if os.path.commonpath([str(target.resolve()), str(path)]) != str(target.resolve()):
        raise ValueError(f"{name!r} resolves outside the target folder")
    return path


def safe_members(tar: tarfile.TarFile, archive: Path, arg: str) -> Iterator[tarfile.TarInfo]:
    for member in tar:
        problem = member_problem(member)
        if problem:
            raise bad_arg(arg, f"the archive holds an unsafe member {member.name!r} ({problem}); nothing was "
                          "extracted", str(archive), f"Delete {archive} and download it again from "
                          f"{IMAGENETV2_URL}.")
        yield member


def check_archive_end(tar: tarfile.TarFile) -> None:
    """Raise EOFError unless the archive ends as written: tarfile stops quietly at a header cut short, so look for
    the end-of-archive zero blocks, then read the rest (a compressed stream checks its own length and CRC)."""
    f = tar.fileobj
    f.seek(tar.offset)
    end = f.read(2 * tarfile.BLOCKSIZE)
    if len(end) < 2 * tarfile.BLOCKSIZE or end.strip(b"\0"):
        raise EOFError(f"the archive stops after {tar.offset} bytes, without its end-of-archive marker")
    while f.read(1 << 20):
        pass


def extract_tarball(archive: Path, dest: Path, progress: bool = True, arg: str = "--images") -> Path:
    """Extract regular files and folders of `archive` into a temporary folder, then rename it to `dest`."""
    from tqdm import tqdm

    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
    try:
        with tarfile.open(archive, "r:*") as tar, tqdm(unit="file", desc="extracting", disable=not progress,
                                                       leave=False) as bar:
            for member in safe_members(tar, archive, arg):
                path = _inside(tmp, member.name)
                if member.isdir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(path, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                bar.update(1)
            check_archive_end(tar)
    except VqclipError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise bad_arg(arg, f"the archive is truncated or corrupt ({quote_error(e)}); nothing was extracted",
                      str(archive), f"Delete {archive} and download it again from {IMAGENETV2_URL}.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, dest)
    return dest


def image_root(extracted: Path) -> Path:
    """The folder holding the class folders 0..999 (the tarball wraps them in one top folder)."""
    children = [p for p in extracted.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(children) == 1 and not children[0].name.isdigit():
        return children[0]
    return extracted


def class_map(root: Path, arg: str = "--images", fix: str | None = None) -> dict[str, str]:
    """{folder: class name} for ImageNetV2's numbered class folders; anything else is not ImageNetV2."""
    names = imagenet_class_names()
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    odd = [f for f in folders if not (f.isdigit() and int(f) < len(names))]
    if odd or not folders:
        raise bad_arg(arg, "ImageNetV2's class folders are numbered 0..999",
                      f"{root}: {', '.join(odd[:5]) or 'no class folders'}",
                      fix or f"Remove {root} and run again to extract it anew.")
    return {f: names[int(f)] for f in folders}


# --------------------------------------------------------------------------------------------------- the dataset

def fetch_imagenetv2(root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None,
                     download: bool = True, progress: bool = True, opener=None, arg: str = "--images") -> Path:
    """The extracted ImageNetV2 matched-frequency folder, downloading and extracting it on first use."""
    from ..io import sha256_file, write_json

    folder = dataset_dir(root, cache)
    extracted = folder / EXTRACTED
    if (extracted / RECORD).is_file():
        return extracted
    with locked(folder):
        if (extracted / RECORD).is_file():
            return extracted
        for stale in folder.glob(".extract-*"):  # an extraction killed midway (vqclip's own temporary folders)
            shutil.rmtree(stale, ignore_errors=True)
        if extracted.exists():
            raise bad_arg(arg, "an ImageNetV2 folder is there without the source.json vqclip writes when an "
                          "extraction completes", str(extracted),
                          f"Remove {extracted} (vqclip never deletes folders it did not finish) and run again.")
        archive = folder / IMAGENETV2.filename
        fetched = False
        if not archive.is_file():
            if not download:
                raise bad_arg(arg, "ImageNetV2 is not in the cache, and downloads are off", str(archive),
                              f"Download {IMAGENETV2_URL} and put it at {archive}.")
            download_file(IMAGENETV2, archive, progress=progress, opener=opener, arg=arg)
            fetched = True
        record = {"url": IMAGENETV2_URL, "file": IMAGENETV2.filename, "size": archive.stat().st_size,
                  "sha256": sha256_file(archive), "downloaded_by_vqclip": fetched}
        extract_tarball(archive, extracted, progress, arg)
        try:  # the layout is checked before it counts as extracted
            class_map(image_root(extracted), arg, f"Delete {archive} and download it again from {IMAGENETV2_URL}.")
        except VqclipError:
            shutil.rmtree(extracted, ignore_errors=True)  # written by this call from an archive that is not ImageNetV2
            raise
        record["root"] = image_root(extracted).relative_to(extracted).as_posix()
        write_json(extracted / RECORD, record)
        if fetched:  # the images are what is used; a tarball put there by hand is the user's to keep
            archive.unlink()
    return extracted


def imagenetv2_source(root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None,
                      download: bool = True, progress: bool = True, arg: str = "--images"):
    """ImageNetV2 matched-frequency as an ImageSource with readable, unique ImageNet class names."""


    extracted = fetch_imagenetv2(root, cache, download, progress, arg=arg)
    images = image_root(extracted)
    source = image_folder(images, class_map(images, arg, f"Remove {extracted} and run again to extract it anew."),
                          arg)
    from ..untrusted import read_json

    try:
        record = read_json(extracted / RECORD, arg)
        url, sha256 = record["url"], record["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise bad_arg(arg, f"the extraction record {RECORD} is not readable", str(extracted / RECORD),
                      f"Remove {extracted} and run again to extract it anew ({one_line(e, 160)}).") from None
    source.description.update(kind="imagenetv2", dataset="ImageNetV2 matched-frequency", url=url,
                              sha256=sha256)
    return source


def open_images(spec: str, class_map: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None,
                download: bool = True, arg: str = "--images") -> ImageSource:
    """`--images` (or the flag `arg`): an existing folder path, `imagenetv2` (fetched on first use, see
    `fetch_imagenetv2`), or a torchvision dataset name (see TORCHVISION_DATASETS)."""
    path = Path(spec).expanduser()
    if path.exists() or os.sep in spec or spec.startswith("."):
        return image_folder(path, class_map, arg)
    if spec.lower() in NAMES:
        if class_map:
            raise bad_arg("--class-map", "ImageNetV2 brings its own class names", str(class_map),
                          "Leave --class-map out (it is for image folders).")
        return imagenetv2_source(data_root, download=download, arg=arg)
    return torchvision_dataset(spec, data_root, download, arg)
