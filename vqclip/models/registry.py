"""Named VQGAN checkpoints: where to fetch them, how to verify them, and where they live in the cache.

Cache layout (root = `--cache-dir`, else $VQCLIP_CACHE, else ~/.cache/vqclip):

    vqgan/NAME/NAME.yaml            taming config, as published
    vqgan/NAME/NAME.ckpt            Lightning checkpoint, as published (verified, then kept unless removed)
    vqgan/NAME/NAME.ckpt.part       an interrupted download, resumed next time; never loaded
    vqgan/NAME/NAME.safetensors     converted: weights + config, pickle-free; what generation loads
    vqgan/custom/NAME.safetensors   checkpoints converted with `vqclip models convert --name NAME`
"""

from __future__ import annotations

import contextlib
import difflib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Iterator

from ..cache import cache_dir, slug, writable_dir
from ..errors import VqclipError, bad_arg
from ..errors import quote_error

DEFAULT_VQGAN = "vqgan_imagenet_f16_16384"
CUSTOM = "custom"
NO_HASH = "unverified (no published hash)"
MIN_SIZE_FRACTION = 0.8  # approximate sizes come from community scripts ("980 MB"); anything far smaller is wrong
CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: mirrors holding the same bytes, and what is known to verify it."""

    filename: str
    urls: tuple[str, ...]
    sha256: str | None = None      # published hash; None where none is published
    size: int | None = None        # exact size in bytes, where published
    approx_size: int | None = None  # size reported by the community download scripts (not exact)

    def verification(self) -> str:
        """How a downloaded copy is checked: by sha256, by exact size, or only by a lower size bound."""
        if self.sha256:
            return "sha256"
        if self.size:
            return f"size only ({NO_HASH})"
        return NO_HASH


@dataclass(frozen=True)
class VQGANAsset:
    """A published taming VQGAN: its config and checkpoint files and the shape the config must describe."""

    name: str
    description: str
    kind: str
    factor: int
    n_embed: int
    config: RemoteFile
    checkpoint: RemoteFile
    homepage: str


def _heibox(share: str) -> tuple[str, str]:
    """The config and checkpoint URLs of a taming-transformers release folder on heibox (Heidelberg)."""
    base = f"https://heibox.uni-heidelberg.de/d/{share}/files/?p="
    return base + "%2Fconfigs%2Fmodel.yaml&dl=1", base + "%2Fckpts%2Flast.ckpt&dl=1"


def _assets() -> tuple[VQGANAsset, ...]:
    """The registry table. Sizes are those quoted by the VQGAN+CLIP download scripts; no sha256 is published."""
    taming = "https://github.com/CompVis/taming-transformers"
    community = "http://mirror.io.community/blob/vqgan/"
    i1024, i16384, gumbel = _heibox("8088892a516d4e3baf92"), _heibox("a7530b09fed84f80a887"), \
        _heibox("2e5662443a6b4307b470")
    wikiart = "http://eaidata.bmk.sh/data/Wikiart_16384/wikiart_f16_16384_8145600"
    eleiber = "https://github.com/Eleiber/VQGAN-Mirrors/releases/download/0.0.1/wikiart_16384"
    mb = 1_000_000
    return (
        VQGANAsset("vqgan_imagenet_f16_1024", "taming-transformers VQGAN, ImageNet, f16, 1024 codes", "vq", 16, 1024,
                   RemoteFile("vqgan_imagenet_f16_1024.yaml", (i1024[0], community + "vqgan_imagenet_f16_1024.yaml")),
                   RemoteFile("vqgan_imagenet_f16_1024.ckpt", (i1024[1], community + "vqgan_imagenet_f16_1024.ckpt"),
                              approx_size=958 * mb), taming),
        VQGANAsset("vqgan_imagenet_f16_16384", "taming-transformers VQGAN, ImageNet, f16, 16384 codes (default)",
                   "vq", 16, 16384,
                   RemoteFile("vqgan_imagenet_f16_16384.yaml",
                              (i16384[0], community + "vqgan_imagenet_f16_16384.yaml")),
                   RemoteFile("vqgan_imagenet_f16_16384.ckpt",
                              (i16384[1], community + "vqgan_imagenet_f16_16384.ckpt"), approx_size=980 * mb), taming),
        VQGANAsset("vqgan_gumbel_f8_8192", "taming-transformers Gumbel VQGAN, Open Images, f8, 8192 codes", "gumbel",
                   8, 8192,
                   RemoteFile("vqgan_gumbel_f8_8192.yaml", (gumbel[0],)),
                   RemoteFile("vqgan_gumbel_f8_8192.ckpt", (gumbel[1],), approx_size=376 * mb), taming),
        VQGANAsset("wikiart_16384", "VQGAN fine-tuned on WikiArt (EleutherAI community), f16, 16384 codes", "vq", 16,
                   16384,
                   RemoteFile("wikiart_16384.yaml", (wikiart + ".yaml", eleiber + ".yaml",
                                                     community + "wikiart_16384.yaml")),
                   RemoteFile("wikiart_16384.ckpt", (wikiart + ".ckpt", eleiber + ".ckpt",
                                                     community + "wikiart_16384.ckpt"), approx_size=1000 * mb),
                   "https://github.com/EleutherAI/vqgan-clip"),
    )


VQGAN_ASSETS = MappingProxyType({a.name: a for a in _assets()})


# --------------------------------------------------------------------------------------------------- cache paths

def vqgan_root(cache: str | os.PathLike | None = None) -> Path:
    return cache_dir(cache) / "vqgan"


def asset_dir(name: str, cache: str | os.PathLike | None = None) -> Path:
    return vqgan_root(cache) / name


def cached_file(asset: VQGANAsset, remote: RemoteFile, cache: str | os.PathLike | None = None) -> Path:
    return asset_dir(asset.name, cache) / remote.filename


def converted_path(name: str, cache: str | os.PathLike | None = None) -> Path:
    """Where the converted .safetensors of a registered (or custom-converted) model lives."""
    if name in VQGAN_ASSETS:
        return asset_dir(name, cache) / f"{name}.safetensors"
    return vqgan_root(cache) / CUSTOM / f"{slug(name)}.safetensors"


def custom_names(cache: str | os.PathLike | None = None) -> list[str]:
    """Names of models converted with `vqclip models convert --name NAME`."""
    folder = vqgan_root(cache) / CUSTOM
    return sorted(p.stem for p in folder.glob("*.safetensors")) if folder.is_dir() else []


def unknown_name_error(name: str, cache: str | os.PathLike | None = None, arg: str = "--vqgan") -> VqclipError:
    valid = list(VQGAN_ASSETS) + custom_names(cache)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f"Did you mean {', '.join(close)}? " if close else ""
    return bad_arg(arg, "not a known VQGAN name", name,
                   f"{hint}Valid names: {', '.join(valid)}. `vqclip models list` shows them; for other files pass "
                   "--vqgan-config YAML --vqgan-checkpoint CKPT.")


def get_asset(name: str, arg: str = "--vqgan") -> VQGANAsset:
    """The registry entry for `name`; an unknown name is an error that lists the valid ones."""
    if name not in VQGAN_ASSETS:
        raise unknown_name_error(name, arg=arg)
    return VQGAN_ASSETS[name]


def part_path(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def cache_status(asset: VQGANAsset, cache: str | os.PathLike | None = None) -> str:
    """`converted`, `downloaded (not converted)`, `partial download (N MB)` or `not cached`."""
    ckpt = cached_file(asset, asset.checkpoint, cache)
    if converted_path(asset.name, cache).is_file():
        return "converted"
    if ckpt.is_file():
        return "downloaded (not converted)"
    if part_path(ckpt).is_file():
        return f"partial download ({human_size(part_path(ckpt).stat().st_size)})"
    return "not cached"


def human_size(n: int | None) -> str:
    """980 MB, 1.2 GB (decimal units, as the download scripts quote them)."""
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def list_assets(cache: str | os.PathLike | None = None) -> list[dict]:
    """One row per registered and custom model: name, shape, size, how it is verified, cache status."""
    rows = []
    for a in VQGAN_ASSETS.values():
        size = a.checkpoint.size or a.checkpoint.approx_size
        rows.append({"name": a.name, "default": a.name == DEFAULT_VQGAN, "kind": a.kind, "factor": a.factor,
                     "n_embed": a.n_embed,
                     "size": (human_size(size) if a.checkpoint.size else f"~{human_size(size)}"),
                     "verification": a.checkpoint.verification(), "status": cache_status(a, cache),
                     "path": str(asset_dir(a.name, cache)), "description": a.description})
    for name in custom_names(cache):
        path = converted_path(name, cache)
        rows.append({"name": name, "default": False, "kind": "?", "factor": None, "n_embed": None,
                     "size": human_size(path.stat().st_size), "verification": "local conversion",
                     "status": "converted", "path": str(path), "description": "converted with vqclip models convert"})
    return rows


# ----------------------------------------------------------------------------------------------------- verifying

def verify_file(path: Path, remote: RemoteFile, arg: str = "--vqgan") -> None:
    """Check a file against what the registry knows (sha256, exact size, plausible size); raise if it fails."""
    from ..io import sha256_file

    size = path.stat().st_size
    fix = f"Delete {path} (or replace it with a good copy) and run the command again."
    if remote.size is not None and size != remote.size:
        raise bad_arg(arg, f"{remote.filename} has the wrong size (expected {remote.size} bytes): partial or corrupt",
                      f"{path} ({size} bytes)", fix)
    if remote.approx_size is not None and size < MIN_SIZE_FRACTION * remote.approx_size:
        raise bad_arg(arg, f"{remote.filename} is far smaller than the published ~{human_size(remote.approx_size)}"
                      " (a truncated download or an error page saved as a file)", f"{path} ({size} bytes)", fix)
    if remote.sha256:
        digest = sha256_file(path)
        if digest != remote.sha256:
            raise bad_arg(arg, f"{remote.filename} fails the sha256 check (expected {remote.sha256}, "
                          f"found {digest}): corrupt or a different file", str(path), fix)


def check_asset_config(asset: VQGANAsset, path: Path, arg: str = "--vqgan") -> None:
    """The config must describe the registered model (codebook size, kind, downsampling factor)."""
    from .vqgan import read_taming_config

    try:
        cfg = read_taming_config(path, arg=arg)
    except VqclipError as e:
        raise bad_arg(arg, f"the cached config of {asset.name} is not a taming config ({quote_error(e)})", str(path),
                      f"Delete {path} and run the command again.") from None
    factor = 2 ** (len(cfg.ddconfig["ch_mult"]) - 1)
    if (cfg.n_embed, cfg.kind, factor) != (asset.n_embed, asset.kind, asset.factor):
        raise bad_arg(arg, f"the cached config does not describe {asset.name} (expected {asset.kind}, "
                      f"f{asset.factor}, {asset.n_embed} codes; found {cfg.kind}, f{factor}, {cfg.n_embed} codes)",
                      str(path), f"Delete {path} and run the command again.")


def asset_mismatch(asset: VQGANAsset, n_embed: int, kind: str, ddconfig: dict) -> str | None:
    """How a model's shape differs from the registered asset's (codebook size, kind, factor), or None."""
    factor = 2 ** (len(ddconfig["ch_mult"]) - 1)
    if (n_embed, kind, factor) == (asset.n_embed, asset.kind, asset.factor):
        return None
    return (f"{asset.name} is registered as {asset.kind}, f{asset.factor}, {asset.n_embed} codes; this model is "
            f"{kind}, f{factor}, {n_embed} codes")


# ---------------------------------------------------------------------------------------------------- downloading

class IncompleteDownload(OSError):
    """The connection closed before the announced number of bytes arrived."""


Opener = Callable[..., object]


def _fetch(url: str, part: Path, opener: Opener, timeout: float, progress: bool, label: str) -> None:
    """Append `url` to `part`, resuming with an HTTP Range request when `part` already holds bytes."""
    from tqdm import tqdm

    from .. import __version__

    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": f"vqclip/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = opener(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range not satisfiable: the part file is already complete
            return
        raise
    with response:
        status = getattr(response, "status", None) or getattr(response, "code", None)
        if have and status != 206:  # the server (or a file:// URL) ignored the range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        with open(part, "ab" if have else "wb") as f, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=label, disable=not progress,
                     leave=False) as bar:
            while block := response.read(CHUNK):
                f.write(block)
                bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
    got = part.stat().st_size
    if total is not None and got < total:
        raise IncompleteDownload(f"connection closed after {got} of {total} bytes")


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return f"{e.reason}"
    return quote_error(e)


def download_file(remote: RemoteFile, dest: str | os.PathLike, progress: bool = True, opener: Opener | None = None,
                  timeout: float = 60.0, arg: str = "--vqgan") -> Path:
    """Fetch `remote` from its mirrors into `dest`: to a .part file, resumed, verified, then renamed into place."""
    dest = Path(dest)
    writable_dir(dest.parent)
    part = part_path(dest)
    opener = opener or urllib.request.urlopen
    failures = []
    for url in remote.urls:
        try:
            _fetch(url, part, opener, timeout, progress, remote.filename)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            failures.append(f"{url} ({_reason(e)})")
            continue
        try:
            verify_file(part, remote, arg)
        except VqclipError as e:
            part.unlink(missing_ok=True)  # a corrupt payload is never kept, not even to resume
            failures.append(f"{url} (downloaded but rejected: {e})")
            continue
        os.replace(part, dest)
        return dest
    kept = (f" A partial download ({human_size(part.stat().st_size)}) is kept at {part} and will be resumed."
            if part.is_file() else "")
    raise bad_arg(arg, f"could not download {remote.filename} from any mirror", "; ".join(failures),
                  f"If this machine is offline, download it elsewhere from one of: {', '.join(remote.urls)} and put "
                  f"it at {dest}, then run the command again.{kept}")


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` so parallel ranks download and convert a model once.

    A run that fails (offline, interrupted) leaves no trace: the lock file, and the folders this call created,
    are removed when nothing else was written there."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    writable_dir(folder)
    lock = folder / ".lock"
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; atomic renames still keep files whole
        yield
        return
    failed = True
    try:
        with open(lock, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
                failed = False
            finally:
                if failed and not any(p.name != ".lock" for p in folder.iterdir()):
                    lock.unlink(missing_ok=True)
                fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        if failed:
            for p in created:  # innermost first; stops at the first that is not empty
                try:
                    p.rmdir()
                except OSError:
                    break


def missing_file_error(asset: VQGANAsset, remote: RemoteFile, dest: Path, arg: str = "--vqgan") -> VqclipError:
    return bad_arg(arg, f"{asset.name} needs {remote.filename}, which is not in the cache, and downloads are off",
                   asset.name, f"Download it from one of: {', '.join(remote.urls)} and put it at {dest} "
                   f"(or allow downloads: `vqclip models download {asset.name}`).")


def _also_needed(asset: VQGANAsset, failed: RemoteFile, cache: str | os.PathLike | None) -> str:
    """` Also needed: ...` for the other files of `asset` that are not cached yet (offline instructions)."""
    others = [r for r in (asset.config, asset.checkpoint)
              if r is not failed and not cached_file(asset, r, cache).is_file()]
    return "".join(f" Also needed: {r.filename} from {', '.join(r.urls)} at {cached_file(asset, r, cache)}."
                   for r in others)


def fetch_asset(name: str, cache: str | os.PathLike | None = None, download: bool = True, progress: bool = True,
                opener: Opener | None = None, arg: str = "--vqgan") -> tuple[Path, Path]:
    """(config, checkpoint) paths of a registered model in the cache, downloading and verifying what is missing."""
    asset = get_asset(name, arg)
    paths = []
    for remote in (asset.config, asset.checkpoint):
        dest = cached_file(asset, remote, cache)
        if dest.is_file():
            verify_file(dest, remote, arg)  # also covers files a user copied in by hand
        elif download:
            try:
                download_file(remote, dest, progress=progress, opener=opener, arg=arg)
            except VqclipError as e:
                raise VqclipError(f"{e}{_also_needed(asset, remote, cache)}") from None
        else:
            raise VqclipError(f"{missing_file_error(asset, remote, dest, arg)}{_also_needed(asset, remote, cache)}")
        if remote is asset.config:
            check_asset_config(asset, dest, arg)
        paths.append(dest)
    return paths[0], paths[1]


def ensure_converted(name: str, cache: str | os.PathLike | None = None, download: bool = True,
                     progress: bool = True, remove_original: bool = False, opener: Opener | None = None,
                     arg: str = "--vqgan") -> Path:
    """The converted .safetensors of a registered model, fetching and converting it on first use."""
    from .vqgan import convert_checkpoint

    asset = get_asset(name, arg)
    out = converted_path(name, cache)
    if out.is_file() and not remove_original:
        return out
    with _locked(asset_dir(name, cache)):
        if not out.is_file():  # another process may have finished while this one waited
            config, ckpt = fetch_asset(name, cache, download, progress, opener, arg)
            try:
                convert_checkpoint(config, ckpt, out, name=asset.name)
            except VqclipError as e:  # files vqclip downloaded: name them, not flags the user never passed
                from ..spaces import cached_file_error

                blamed = config if (e.arg or "").endswith("config") else ckpt
                raise cached_file_error(e, blamed, f"the downloaded file of {asset.name}",
                                        "it is downloaded again") from None
        if remove_original:
            cached_file(asset, asset.checkpoint, cache).unlink(missing_ok=True)
    return out


def resolve_vqgan(name: str | None = None, config: str | os.PathLike | None = None,
                  checkpoint: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                  device: str = "cpu", download: bool = True, progress: bool = True):
    """The VQGAN to generate with: explicit files (offline), else a registered or custom-converted name."""
    from .vqgan import load_vqgan

    if checkpoint is not None:  # explicit files win over a name
        return load_vqgan(config, checkpoint, device=device)
    if config is not None:
        raise bad_arg("--vqgan-config", "a config needs its checkpoint", str(config),
                      "Also pass --vqgan-checkpoint CKPT, or use a registered name with --vqgan.")
    name = name or DEFAULT_VQGAN
    if name in VQGAN_ASSETS:
        path = ensure_converted(name, cache_dir, download=download, progress=progress)
    else:
        path = converted_path(name, cache_dir)
        if not path.is_file():
            raise unknown_name_error(name, cache_dir)
    try:
        model = load_vqgan(None, path, device=device, checkpoint_arg="--vqgan")
    except VqclipError as e:  # a file vqclip wrote to its cache: name it, not --vqgan (often never passed)
        from ..spaces import cached_file_error

        again = "it is rebuilt" if name in VQGAN_ASSETS else "then convert the model again with `vqclip models convert`"
        raise cached_file_error(e, path, f"the cached conversion of {name}", again) from None
    asset = VQGAN_ASSETS.get(name)
    wrong = asset and asset_mismatch(asset, model.n_embed, model.kind, model.ddconfig)
    if wrong:  # a file converted under a registered name from another model: never used silently
        raise bad_arg("--vqgan", f"the cached conversion does not hold the registered model ({wrong})", str(path),
                      f"Delete {path} and run again: the registered model is then downloaded and converted "
                      "(a custom model needs a name of its own: `vqclip models convert --name my_vqgan`).")
    model.origin["name"] = name
    return model


# ------------------------------------------------------------------------------------------ registered projections
#
# A second kind of asset: the paper's released learn / forget matrices. They live where `vqclip train` writes and
# `--space learn|forget` looks (<cache>/projections/<clip>/<space>.safetensors); the folder as published is kept
# beside them in <cache>/projections/<clip>/published/ (downloaded there whole, or copied there by hand).

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
    from ..spaces import projection_path

    return projection_path(asset.space, asset.clip_model, cache)


def published_dir(asset: ProjectionAsset, cache: str | os.PathLike | None = None) -> Path:
    return projection_file(asset, cache).parent / PUBLISHED


def _siblings(asset: ProjectionAsset) -> list[ProjectionAsset]:
    """The registered projections published in the same folders for the same CLIP (learn and forget together)."""
    return [a for a in PROJECTION_ASSETS.values() if a.clip_model == asset.clip_model and a.folders == asset.folders]


def _published_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")) \
        if folder.is_dir() else []


def _read_metadata(path: Path) -> dict:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # damaged or foreign file: reported as such by the caller
        return {}


def projection_status(asset: ProjectionAsset, cache: str | os.PathLike | None = None) -> str:
    """`converted`, `trained or copied in (used instead)`, `downloaded (not converted)` or `not cached`."""
    path = projection_file(asset, cache)
    if path.is_file():
        meta = _read_metadata(path)
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
        meta = _read_metadata(path)
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
        dim = _read_metadata(path).get("dim", "") if path.is_file() else ""
        rows.append({"name": a.name, "clip_model": a.clip_model, "space": a.space,
                     "dim": int(dim) if dim.isdigit() else None, "expected_dim": a.dim,
                     "size": f"~{human_size(a.approx_bytes())}", "source": "paper (Google Drive folder)",
                     "status": projection_status(a, cache), "path": str(path), "folders": list(a.folders),
                     "description": a.description})
    return rows + other_projections(cache)


def unknown_registered_name(name: str, arg: str = "NAME") -> VqclipError:
    valid = list(VQGAN_ASSETS) + list(PROJECTION_ASSETS)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f"Did you mean {', '.join(close)}? " if close else ""
    return bad_arg(arg, "not a known VQGAN or projection name", name,
                   f"{hint}Valid names: {', '.join(valid)} (`vqclip models list`).")


def get_projection_asset(name: str, arg: str = "NAME") -> ProjectionAsset:
    if name not in PROJECTION_ASSETS:
        raise unknown_registered_name(name, arg)
    return PROJECTION_ASSETS[name]


def gdown_folder(url: str, output: Path, progress: bool) -> None:
    """Download a public Google Drive folder with gdown (which handles Drive's listing and confirmation pages)."""
    try:
        import gdown
    except ImportError as e:
        from ..errors import MissingExtraError

        raise MissingExtraError("gdown is not installed (a vqclip dependency, used to fetch the paper's "
                                "projections): pip install gdown") from e
    import logging

    verbose = progress and logging.getLogger().isEnabledFor(logging.INFO)  # gdown's listing chatter only with -v
    files = gdown.download_folder(url=url, output=str(output), quiet=not verbose, use_cookies=False)
    if not files:  # older gdown versions return None instead of raising
        raise OSError("gdown downloaded nothing (the folder is empty, private, moved or over its download quota)")


def _first_line(e: BaseException, limit: int = 200) -> str:
    """A short reason for a failed fetch: network failures said plainly, anything else as its first line."""
    text = str(e).strip()
    if any(s in text for s in ("NameResolutionError", "Failed to resolve", "Name or service not known",
                               "Network is unreachable", "Connection refused")):
        return "the host cannot be reached: no network or no DNS on this machine?"
    line = text.splitlines()[0] if text else "no details"
    return f"{type(e).__name__}: {line[:limit]}{'...' if len(line) > limit else ''}"


def _clean_stale_downloads(folder: Path) -> None:
    """Temporary download folders of an earlier, killed run (vqclip's own, by their name) are removed."""
    import shutil

    for stale in folder.glob(".download-*"):
        shutil.rmtree(stale, ignore_errors=True)


def fetch_published(asset: ProjectionAsset, cache: str | os.PathLike | None = None, progress: bool = True,
                    fetcher: Fetcher | None = None, arg: str = "--space") -> Path:
    """Download the publishing folder whole into `published/`: to a temporary folder first, renamed when complete.

    A failed or partial transfer leaves nothing behind. Call under the projection folder's lock.
    """
    import shutil
    import tempfile

    dest = published_dir(asset, cache)
    writable_dir(dest.parent)
    _clean_stale_downloads(dest.parent)
    fetcher = fetcher or gdown_folder
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
            failures.append(f"{url} ({_first_line(e)})")
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
    from .projection_import import space_from_name

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
    from .projection_import import convert_file, identify, scan_folder

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
    with _locked(out.parent):
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
