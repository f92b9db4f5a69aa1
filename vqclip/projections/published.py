"""The paper's released projections as registered assets: where they are published, how they are fetched
(a Google Drive folder, whole, with gdown), recognised, checked and converted into the cache.

A second kind of asset beside the VQGANs of vqclip.models.registry: the paper's released learn / forget
matrices. They live where `vqclip train` writes and `--space learn|forget` looks
(<cache>/projections/<clip>/<space>.safetensors); the folder as published is kept beside them in
<cache>/projections/<clip>/published/ (downloaded there whole, or copied there by hand).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable

from .. import downloads
from ..cache import cache_dir, writable_dir
from ..downloads import clean_stale_downloads, first_line, human_size, locked
from ..errors import VqclipError, bad_arg
from ..models import registry
from .authors import convert_file, identify, scan_folder
from .files import projection_path, read_metadata, space_from_name

PAPER = "Materzynska, Torralba, Bau: Disentangling visual and written concepts in CLIP (CVPR 2022)"
PAPER_REPO = "https://github.com/joaanna/disentangling_spelling_in_clip"
PAPER_DRIVE_FOLDER = "https://drive.google.com/drive/folders/1fEtrPKKVl_7dZAgwAXNWFEuR0l6K2VY3"
PUBLISHED = "published"


@dataclass(frozen=True)
class ProjectionAsset:
    """A released projection for one CLIP model: the folders (mirrors) that publish it and what to expect there."""

    clip_model: str  # CLIP identity, as `clip_identity` spells it
    space: str  # learn / forget
    folders: tuple[str, ...]  # Google Drive folder URLs, fetched whole with gdown
    embed_dim: int  # D, one side of the matrix
    dim: int  # the d the paper found best; only used to tell unnamed files apart
    description: str
    homepage: str

    @property
    def name(self) -> str:
        return f"{self.clip_model}:{self.space}"

    def approx_bytes(self) -> int:
        return self.dim * self.embed_dim * 4


def _projection_assets() -> tuple[ProjectionAsset, ...]:
    """The paper's matrices for OpenAI ViT-B/32 (README "Pre-trained models", linked 2022-07-21); no hash published."""
    return tuple(ProjectionAsset("ViT-B-32/openai", space, (PAPER_DRIVE_FOLDER,), 512, dim,
                                 f"{what} projection released with the paper (its text-to-image figures)", PAPER_REPO)
                 for space, dim, what in (("learn", 64, "learn-to-spell"), ("forget", 256, "forget-to-spell")))


PROJECTION_ASSETS = MappingProxyType({a.name: a for a in _projection_assets()})

Fetcher = Callable[[str, Path, bool], None]  # (folder URL, empty output folder, progress) -> files in the folder


def registered_projection(clip_model: str, space: str) -> ProjectionAsset | None:
    return PROJECTION_ASSETS.get(f"{clip_model}:{space}")


def projection_file(asset: ProjectionAsset, cache: str | os.PathLike | None = None) -> Path:
    return projection_path(asset.space, asset.clip_model, cache)


def published_dir(asset: ProjectionAsset, cache: str | os.PathLike | None = None) -> Path:
    return projection_file(asset, cache).parent / PUBLISHED


def _siblings(asset: ProjectionAsset) -> list[ProjectionAsset]:
    """The registered projections published in the same folders for the same CLIP (learn and forget together)."""
    return [a for a in PROJECTION_ASSETS.values() if a.clip_model == asset.clip_model and a.folders == asset.folders]


def _published_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")) \
        if folder.is_dir() else []


def projection_status(asset: ProjectionAsset, cache: str | os.PathLike | None = None) -> str:
    """`converted`, `trained or copied in (used instead)`, `downloaded (not converted)` or `not cached`."""
    path = projection_file(asset, cache)
    if path.is_file():
        meta = read_metadata(path)
        if meta.get("source_url") in asset.folders:
            return "converted"
        if meta.get("expected_source_url") in asset.folders:
            return "converted (copied by hand)"
        return "another file is there (trained or copied in; used instead)"
    if _published_files(published_dir(asset, cache)):
        return "downloaded (not converted)"
    return "not cached"


def other_projections(cache: str | os.PathLike | None = None) -> list[dict]:
    """Projection files in the cache that no registry entry accounts for (written by `vqclip train`, or copied)."""
    root = cache_dir(cache) / "projections"
    registered = {projection_file(a, cache) for a in PROJECTION_ASSETS.values()}
    rows = []
    for path in sorted(root.glob("*/*.safetensors")) if root.is_dir() else []:
        if path in registered or path.name.startswith("."):
            continue
        meta = read_metadata(path)
        rows.append({"name": f"{meta.get('clip_model', path.parent.name)}:{meta.get('space', path.stem)}",
                     "clip_model": meta.get("clip_model", "?"), "space": meta.get("space", path.stem),
                     "dim": int(meta["dim"]) if meta.get("dim", "").isdigit() else None,
                     "source": "trained with vqclip train" if "training" in meta else "copied in",
                     "status": "present" if meta else "unreadable", "path": str(path)})
    return rows


def list_projection_assets(cache: str | os.PathLike | None = None) -> list[dict]:
    """One row per registered projection (and per other projection file in the cache) with its cache status."""
    rows = []
    for a in PROJECTION_ASSETS.values():
        path = projection_file(a, cache)
        dim = read_metadata(path).get("dim", "") if path.is_file() else ""
        rows.append({"name": a.name, "clip_model": a.clip_model, "space": a.space,
                     "dim": int(dim) if dim.isdigit() else None, "expected_dim": a.dim,
                     "size": f"~{human_size(a.approx_bytes())}", "source": "paper (Google Drive folder)",
                     "status": projection_status(a, cache), "path": str(path), "folders": list(a.folders),
                     "description": a.description})
    return rows + other_projections(cache)


def unknown_registered_name(name: str, arg: str = "NAME") -> VqclipError:
    valid = list(registry.VQGAN_ASSETS) + list(PROJECTION_ASSETS)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f"Did you mean {', '.join(close)}? " if close else ""
    return bad_arg(arg, "not a known VQGAN or projection name", name,
                   f"{hint}Valid names: {', '.join(valid)} (`vqclip models list`).")


def get_projection_asset(name: str, arg: str = "NAME") -> ProjectionAsset:
    if name not in PROJECTION_ASSETS:
        raise unknown_registered_name(name, arg)
    return PROJECTION_ASSETS[name]


def fetch_published(asset: ProjectionAsset, cache: str | os.PathLike | None = None, progress: bool = True,
                    fetcher: Fetcher | None = None, arg: str = "--space") -> Path:
    """Download the publishing folder whole into `published/`: to a temporary folder first, renamed when complete.

    A failed or partial transfer leaves nothing behind. Call under the projection folder's lock.
    """
    import shutil
    import tempfile

    dest = published_dir(asset, cache)
    writable_dir(dest.parent)
    clean_stale_downloads(dest.parent)
    fetcher = fetcher or downloads.gdown_folder  # looked up now: tests replace it
    failures = []
    for url in asset.folders:
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dest.parent))
        try:
            fetcher(url, tmp, progress)
            if not _published_files(tmp):
                raise OSError("the download holds no files")
        except ImportError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except Exception as e:  # offline, quota, moved folder: gdown and requests raise many types
            shutil.rmtree(tmp, ignore_errors=True)
            failures.append(f"{url} ({first_line(e)})")
            continue
        (tmp / ".source").write_text(url + "\n")
        try:
            if dest.exists():  # only an empty folder can be here (a full one is used, not fetched)
                dest.rmdir()
            os.replace(tmp, dest)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise bad_arg(arg, "the folder for the published files exists and is not empty, but holds no usable "
                          "file", str(dest), f"Empty or remove {dest} and run again.") from None
        return dest
    error = bad_arg(arg, f"could not download the published {asset.space} projection for CLIP "
                    f"{asset.clip_model!r}", "; ".join(failures),
                    f"If this machine is offline, download the files of {', '.join(asset.folders)} elsewhere and put "
                    f"them in {dest}/ (vqclip tells learn from forget and converts them on the next run), or pass "
                    "one with --projection FILE.")
    error.short = (f"the paper's released one could not be downloaded ({'; '.join(failures)}); on an offline "
                   f"machine put the files of that folder in {dest}/ and run again")
    raise error


def _unidentified_error(asset: ProjectionAsset, folder: Path, found: list, arg: str) -> VqclipError:
    listing = "; ".join(f.describe() for f in found) or "no files"
    dims = ", ".join(f"d = {a.dim} {a.space}" for a in _siblings(asset))
    return bad_arg(arg, f"no file in the published folder is recognisably the {asset.space} projection of "
                   f"{asset.clip_model} (by file name 'learn'/'forget', or by shape: one side {asset.embed_dim}, "
                   f"{dims})", f"{folder}: {listing}",
                   f"Pass the right file with --projection {folder}/FILE (and --space {asset.space}), or delete "
                   f"{folder} to download {asset.folders[0]} again.")


def _named_file_error(asset: ProjectionAsset, folder: Path, found: list, arg: str) -> VqclipError | None:
    """A file whose name says it is `asset`'s space but that cannot be it: its shape or content is the problem."""
    named = [f for f in found if space_from_name(f.name) == asset.space]
    if len(named) != 1:
        return None
    f = named[0]
    if f.problem:
        rule = f"it cannot be read as a matrix ({f.problem})"
    elif f.shape is not None and asset.embed_dim not in f.shape:
        rule = (f"its shape {'×'.join(map(str, f.shape))} is wrong: one side must be CLIP {asset.clip_model}'s "
                f"embedding size {asset.embed_dim} (the paper's {asset.space} projection is "
                f"{asset.dim}×{asset.embed_dim})")
    else:
        return None
    return bad_arg(arg, f"the published {asset.space} projection {f.name}: {rule}", str(f.path),
                   f"Replace it with the file from {asset.folders[0]} (or delete {folder} to download it again), "
                   f"or train one: `vqclip train --space {asset.space}`.")


def convert_published(asset: ProjectionAsset, cache: str | os.PathLike | None = None,
                      arg: str = "--space") -> Path:
    """Identify the files in `published/`, check them and convert every registered space they hold that is not in
    the cache yet. Raises for `asset` when its file is missing or fails a check; never replaces an existing file."""
    folder = published_dir(asset, cache)
    found = scan_folder(folder)
    siblings = _siblings(asset)
    chosen = identify(found, asset.embed_dim, {a.space: a.dim for a in siblings})
    for other in siblings:
        out = projection_file(other, cache)
        pick = chosen.get(other.space)
        if out.is_file() or pick is None:
            continue
        downloaded = (folder / ".source").is_file()  # written by fetch_published; files put there by hand have none
        provenance = {"source": PAPER, "registered_name": other.name, "identified_by": pick.how,
                      **({"source_url": folder_url(other, cache)} if downloaded else
                         {"obtained": "copied by hand into the published folder",
                          "expected_source_url": other.folders[0]})}
        try:
            convert_file(pick.file, other.space, other.clip_model, other.embed_dim, out, provenance)
        except ValueError as e:
            if other is not asset:
                continue  # reported when that space is asked for
            raise bad_arg(arg, f"the published {asset.space} projection fails a check: {e}", str(pick.file.path),
                          f"Replace it with a good copy of the file from {asset.folders[0]} (or delete {folder} to "
                          f"download it again), or train one: `vqclip train --space {asset.space}`.") from None
    out = projection_file(asset, cache)
    if not out.is_file():
        raise _named_file_error(asset, folder, found, arg) or _unidentified_error(asset, folder, found, arg)
    return out


def folder_url(asset: ProjectionAsset, cache: str | os.PathLike | None = None) -> str:
    """The folder `published/` came from (recorded at download time), else the first registered one."""
    marker = published_dir(asset, cache) / ".source"
    try:
        url = marker.read_text().strip()
    except OSError:
        return asset.folders[0]
    return url if url in asset.folders else asset.folders[0]


def ensure_projection(name: str | ProjectionAsset, cache: str | os.PathLike | None = None, download: bool = True,
                      progress: bool = True, fetcher: Fetcher | None = None, arg: str = "--space") -> Path:
    """The converted .safetensors of a registered projection, fetching and converting it on first use.

    A file already at the projection's place (converted earlier, trained with `vqclip train`, or copied in) is
    used as it is. Parallel processes wait for each other, so the folder is fetched once.
    """
    asset = name if isinstance(name, ProjectionAsset) else get_projection_asset(name, arg)
    out = projection_file(asset, cache)
    if out.is_file():
        return out
    with locked(out.parent):
        if out.is_file():  # another process finished while this one waited
            return out
        folder = published_dir(asset, cache)
        if not _published_files(folder):
            if not download:
                error = bad_arg(arg, f"the published {asset.space} projection for CLIP {asset.clip_model!r} is not "
                                "in the cache, and downloads are off", asset.name,
                                f"Download the files of {', '.join(asset.folders)} and put them in {folder}/, or "
                                f"allow downloads: `vqclip models download {asset.name}`.")
                error.short = (f"the paper's released one is not downloaded yet and downloads are off; put the files "
                               f"of {asset.folders[0]} in {folder}/")
                raise error
            fetch_published(asset, cache, progress, fetcher, arg)
        return convert_published(asset, cache, arg)
