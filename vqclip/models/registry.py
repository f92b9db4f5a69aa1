"""Named VQGAN checkpoints: where to fetch them, how to verify them, and where they live in the cache.

Cache layout (root = `--cache-dir`, else $VQCLIP_CACHE, else ~/.cache/vqclip):

    vqgan/NAME/NAME.yaml            taming config, as published
    vqgan/NAME/NAME.ckpt            Lightning checkpoint, as published (verified, then kept unless removed)
    vqgan/NAME/NAME.ckpt.part       an interrupted download, resumed next time; never loaded
    vqgan/NAME/NAME.safetensors     converted: weights + config, pickle-free; what generation loads
    vqgan/custom/NAME.safetensors   checkpoints converted with `vqclip models convert --name NAME`
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..cache import cache_dir, slug
from ..downloads import Opener, RemoteFile, download_file, human_size, locked, part_path, verify_file
from ..errors import VqclipError, bad_arg, cached_file_error, quote_error

DEFAULT_VQGAN = "vqgan_imagenet_f16_16384"
CUSTOM = "custom"


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


def convert_named(config, checkpoint: str | os.PathLike, out: str | os.PathLike, name: str, **kw) -> Path:
    """`vqgan.convert_checkpoint` under a name: a registered name holds only the registered model."""
    from .vqgan import convert_checkpoint

    def check(model) -> None:
        asset = VQGAN_ASSETS.get(name)
        wrong = asset and asset_mismatch(asset, model.n_embed, model.kind, model.ddconfig)
        if wrong:
            raise bad_arg("--name", f"a registered name holds only the registered model ({wrong})", name,
                          "Give the model a name of its own, e.g. --name my_vqgan.")

    return convert_checkpoint(config, checkpoint, out, name=name, check=check, **kw)


def ensure_converted(name: str, cache: str | os.PathLike | None = None, download: bool = True,
                     progress: bool = True, remove_original: bool = False, opener: Opener | None = None,
                     arg: str = "--vqgan") -> Path:
    """The converted .safetensors of a registered model, fetching and converting it on first use."""
    asset = get_asset(name, arg)
    out = converted_path(name, cache)
    if out.is_file() and not remove_original:
        return out
    with locked(asset_dir(name, cache)):
        if not out.is_file():  # another process may have finished while this one waited
            config, ckpt = fetch_asset(name, cache, download, progress, opener, arg)
            try:
                convert_named(config, ckpt, out, asset.name)
            except VqclipError as e:  # files vqclip downloaded: name them, not flags the user never passed
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
