"""Before a command loads anything: every file it needs, which are present, and one message for all that are missing.

A first run on a machine without network used to spend most of a minute in silent hub retries and then report
one missing file at a time. `plan_assets` lists what a command needs (CLIP weights, the VQGAN's files, the
learn / forget projections, datasets); `preflight` checks them, probes the network once with a short timeout
when something must be downloaded, switches the model hubs offline for the rest of the run when it is not
reachable, and raises one error that lists every missing file with where to get it and the exact path to put it
at. `vqclip models check` prints the same list as a table.

Importing this module imports no torch; the checks import what they need when they run.
"""

from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .errors import VqclipError, pip_extra

# What the downloads need: the model hub (CLIP weights) and Google Drive (the paper's projections and photos).
PROBE_HOSTS = (("huggingface.co", 443), ("drive.google.com", 443))
PROBE_TIMEOUT_S = 2.0
OFFLINE_ENV = ("HF_HUB_OFFLINE", "VQCLIP_OFFLINE")


@dataclass(frozen=True)
class Need:
    """One file or folder a command needs."""

    kind: str  # "CLIP weights", "VQGAN", "projection", "dataset"
    name: str  # what it is, e.g. "ViT-B-32/openai" or "vqgan_imagenet_f16_16384 last.ckpt"
    present: bool
    path: str  # the exact file or folder to put it at
    source: str  # where to get it: a URL, or the command that makes it
    fetchable: bool = True  # vqclip downloads it itself when the network is there
    how: str = ""  # the whole instruction, when "get SOURCE and put it at PATH" does not say it

    def line(self) -> str:
        if self.kind == "extra":
            return f"{self.kind} {self.name}: {self.source}"
        return f"{self.kind} {self.name}: {self.how or f'get {self.source} and put it at {self.path}'}"


def _reachable(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def probe_network(hosts: Sequence[tuple[str, int]] = PROBE_HOSTS, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether any download host answers a TCP connect within `timeout` seconds (all tried at once)."""
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        return any(pool.map(lambda hp: _reachable(hp[0], hp[1], timeout), hosts))


_network: bool | None = None


def network_available(probe: Callable[[], bool] | None = None) -> bool:
    """Probe once per process (tests replace `probe_network`); HF_HUB_OFFLINE=1 or VQCLIP_OFFLINE=1 mean no."""
    global _network
    if any(os.environ.get(v, "") not in ("", "0") for v in OFFLINE_ENV):
        return False
    if _network is None:
        _network = bool((probe or probe_network)())
    return _network


def go_offline() -> None:
    """No hub download for the rest of the run: HF_HUB_OFFLINE=1 (and huggingface_hub's constant, if imported)."""
    import sys

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


# ------------------------------------------------------------------------------------------------------ the needs

def _hub_cache(cache: str | os.PathLike | None) -> Path:
    """Where open_clip keeps hub downloads: <cache>/clip with --cache-dir, else huggingface_hub's cache."""
    if cache:
        return Path(cache).expanduser() / "clip"
    env = os.environ.get("HF_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME")
    return (Path(home).expanduser() if home else Path("~/.cache/huggingface").expanduser()) / "hub"


def hub_folder(repo: str, hub: Path) -> Path:
    """huggingface_hub's cache folder of a model repo: HUB/models--ORG--NAME (blobs/, refs/, snapshots/REV/)."""
    return hub / f"models--{repo.replace('/', '--')}"


def hub_advice(repo: str, files: Sequence[str], hub: Path) -> str:
    """The command that fetches `repo` (or its `files`) into the cache layout open_clip reads, for a machine with
    network: huggingface_hub's own CLI, `hf` (it no longer ships `huggingface-cli`), writing into `hub` itself so
    the folder to copy has the same path on both machines. open_clip reads the file through `hf_hub_download`,
    which offline resolves refs/main to snapshots/REV/FILE: the whole folder is needed, not the file alone."""
    names = "".join(f" {f}" for f in files)
    return (f"on a machine with network run `hf download {repo}{names} --cache-dir {hub}` (from "
            f"https://huggingface.co/{repo}), then copy the whole folder {hub_folder(repo, hub)}/ (its blobs/, refs/ "
            "and snapshots/) to the same path here")


def _hub_present(repo: str, filenames: Iterable[str], hub: Path) -> bool:
    """Whether the hub cache holds one of `filenames` of `repo` (looked up on disk, no network)."""
    folder = hub_folder(repo, hub) / "snapshots"
    return folder.is_dir() and any(p.is_file() for name in filenames for p in folder.glob(f"*/{name}"))


def clip_need(name: str, pretrained: str | None, cache: str | os.PathLike | None = None) -> Need | None:
    """The CLIP weights of `name`/`pretrained`, or None when they come from a file or folder the user gave
    (checked by the loader with its own messages) or need no download."""
    from .models.clip import HF_HUB, LOCAL_DIR

    if name.startswith(LOCAL_DIR) or (pretrained and os.path.isfile(os.path.expanduser(pretrained))):
        return None
    hub = _hub_cache(cache)
    if name.startswith(HF_HUB):
        repo = name[len(HF_HUB):].strip("/")
        return Need("CLIP weights", name, _hub_present(repo, ("open_clip_config.json",), hub),
                    str(hub_folder(repo, hub)), f"https://huggingface.co/{repo}",
                    how=hub_advice(repo, (), hub) + f"; or `hf download {repo} --local-dir DIR` there and pass "
                    "--clip local-dir:DIR")
    if not pretrained:
        return None
    try:
        import open_clip

        cfg = open_clip.get_pretrained_cfg(name.replace("/", "-"), pretrained) or {}
    except Exception:  # noqa: BLE001 - an unknown name is refused by the loader with close matches
        return None
    label = f"{name}/{pretrained}"
    if cfg.get("hf_hub"):
        repo, filename = os.path.split(str(cfg["hf_hub"]).rstrip("/")) if not str(cfg["hf_hub"]).endswith("/") \
            else (str(cfg["hf_hub"]).strip("/"), "")
        files = (filename,) if filename else ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
        return Need("CLIP weights", label, _hub_present(repo, files, hub), str(hub_folder(repo, hub)),
                    f"https://huggingface.co/{repo}",
                    how=hub_advice(repo, files[:1], hub) + f"; or `hf download {repo} {files[0]} --local-dir DIR` "
                    f"there and pass --pretrained DIR/{files[0]}")
    if cfg.get("url"):
        target = Path(cache).expanduser() / "clip" if cache else Path("~/.cache/clip").expanduser()
        path = target / os.path.basename(str(cfg["url"]))
        return Need("CLIP weights", label, path.is_file(), str(path), str(cfg["url"]))
    return None


def vqgan_needs(name: str | None, checkpoint: str | None, cache: str | os.PathLike | None = None) -> list[Need]:
    """The registered VQGAN's config and checkpoint (none when converted already, or files were given)."""
    from .models.registry import DEFAULT_VQGAN, VQGAN_ASSETS, cached_file, converted_path

    name = name or DEFAULT_VQGAN
    if checkpoint or name not in VQGAN_ASSETS:
        return []  # explicit files and custom conversions are checked by the loader
    asset = VQGAN_ASSETS[name]
    converted = converted_path(name, cache).is_file()
    return [Need("VQGAN", f"{name} {r.filename}", converted or cached_file(asset, r, cache).is_file(),
                 str(cached_file(asset, r, cache)), " or ".join(r.urls[:2]))
            for r in (asset.config, asset.checkpoint)]


def projection_need(space: str, clip_identity: str | None, cache: str | os.PathLike | None = None,
                    auto_train: bool = False, clip_flags: str = "") -> Need | None:
    """The learn / forget projection for this CLIP: the cached one, or the paper's published folder."""
    from .projections import registered_projection
    from .projections.published import _published_files, published_dir
    from .projections import projection_path

    if space not in ("learn", "forget") or clip_identity is None:
        return None
    path = projection_path(space, clip_identity, cache)
    asset = registered_projection(clip_identity, space)
    if path.is_file():
        return Need("projection", f"{space} ({clip_identity})", True, str(path), "")
    train = f"`vqclip train --space {space}{' ' + clip_flags if clip_flags else ''}`"
    if asset is None:
        return Need("projection", f"{space} ({clip_identity})", False, str(path), train, fetchable=auto_train,
                    how=f"run {train}, which writes {path}" + (" (--auto-train does this first)" if auto_train else ""))
    folder = published_dir(asset, cache)
    return Need("projection", f"{space} ({clip_identity})", bool(_published_files(folder)), f"{folder}/",
                f"the files of {asset.folders[0]}",
                how=f"get the files of {asset.folders[0]} (the paper's learn and forget matrices; vqclip tells them "
                    f"apart and converts them) and put them in {folder}/, or run {train}, which writes {path}")


def paper_dataset_need(cache: str | os.PathLike | None = None) -> Need:
    from .evaluate.typographic import PAPER_DATASET_URL, find_dataset_root, paper_dataset_dir

    dest = paper_dataset_dir(cache)
    return Need("dataset", "the paper's typographic-attack photos", find_dataset_root(dest) is not None,
                f"{dest}/", f"the files of {PAPER_DATASET_URL}",
                how=f"get the files of {PAPER_DATASET_URL} and put them in {dest}/, or pass --dataset DIR")


def imagenetv2_need(cache: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> Need:
    """`vqclip train` without --images: ImageNetV2 matched-frequency (the tarball, which vqclip extracts)."""
    from .downloads import IMAGENETV2, IMAGENETV2_URL, dataset_dir, is_ready

    archive = dataset_dir(root, cache) / IMAGENETV2.filename
    return Need("dataset", "ImageNetV2 matched-frequency (train's default images)",
                is_ready(root, cache) or archive.is_file(), str(archive), IMAGENETV2_URL,
                how=f"get {IMAGENETV2_URL} and put it at {archive} (vqclip checks and extracts it), or pass "
                    "--images DIR")


# Optional modules a command needs -> the extra that installs them (pyproject.toml).
EXTRAS = {"easyocr": "ocr", "wordfreq": "train", "gradio": "ui"}


def extra_need(module: str) -> Need:
    """An optional dependency: present when importable (found, not imported: that can take seconds)."""
    import importlib.util

    extra = EXTRAS.get(module, module)
    try:
        present = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        present = False
    return Need("extra", module, present, pip_extra(extra),
                f"install it with {pip_extra(extra)} (or: pip install {module})", fetchable=False)


def plan_assets(*, clip: str, pretrained: str | None, cache: str | os.PathLike | None = None,
                vqgan: str | None = None, vqgan_checkpoint: str | None = None, with_vqgan: bool = True,
                spaces: Iterable[tuple[str, str | None]] = (), auto_train: bool = False,
                paper_dataset: bool = False, imagenetv2: bool = False, data_root: str | os.PathLike | None = None,
                extras: Iterable[str] = ()) -> list[Need]:
    """Everything a command needs: CLIP weights, the VQGAN (`with_vqgan`), a projection for each (space, file
    given) without a file, the paper's photos, ImageNetV2 (train without --images), optional modules."""
    from .models.clip import clip_flags, clip_identity

    needs = [n for n in [clip_need(clip, pretrained, cache)] if n]
    try:
        identity = clip_identity(clip, pretrained)
        flags = clip_flags(clip, pretrained)
    except Exception:  # noqa: BLE001 - an identifier the loader refuses with its own message
        identity, flags = None, ""
    seen = set()
    for space, given in spaces:
        if given or space in seen:
            continue
        seen.add(space)
        default = flags == "--clip ViT-B-32 --pretrained openai"
        need = projection_need(space, identity, cache, auto_train, "" if default else flags)
        if need:
            needs.append(need)
    if with_vqgan:
        needs += vqgan_needs(vqgan, vqgan_checkpoint, cache)
    if paper_dataset:
        needs.append(paper_dataset_need(cache))
    if imagenetv2:
        needs.append(imagenetv2_need(cache, data_root))
    needs += [extra_need(m) for m in dict.fromkeys(extras)]
    return needs


class MissingAssets(VqclipError):
    """Some files a command needs are missing and cannot be had now; the message lists them all."""

    def __init__(self, missing: Sequence[Need], offline: bool):
        self.missing = list(missing)
        why = ("this machine cannot reach huggingface.co or drive.google.com (no network?), so nothing can be "
               "downloaded" if offline else "vqclip cannot download every one of them")
        lines = [f"{len(missing)} file(s) this command needs {'are' if len(missing) > 1 else 'is'} missing, and {why}:"]
        lines += [f"  - {n.line()}" for n in missing]
        lines.append("Put each there (or run once on a machine with network and copy its cache folders), then run "
                     "again; `vqclip models check` shows what is present.")
        super().__init__("\n".join(lines))


def preflight(needs: Sequence[Need], *, download: bool = True, say: Callable[[str], None] | None = None) -> None:
    """Check `needs` before anything loads. All present: the hubs go offline (nothing to fetch, no update checks
    against a hub that may not answer). Something missing: probe the network once; offline (or `download` off),
    raise one MissingAssets listing every missing file; online, raise when vqclip cannot fetch one of several."""
    missing = [n for n in needs if not n.present]
    if not missing:
        if any(n.kind == "CLIP weights" for n in needs):
            go_offline()
        return
    if all(n.kind == "extra" for n in missing):  # nothing to download, no network probe; one line, as before
        error = MissingAssets(missing, offline=False)
        error.args = ("optional modules this command needs are not installed: " +
                      "; ".join(f"{n.name}: {n.source}" for n in missing) + ".",)
        raise error
    online = download and network_available()
    if not online:
        go_offline()
        raise MissingAssets(missing, offline=download)
    stuck = [n for n in missing if not n.fetchable]
    if any(n.kind == "extra" for n in stuck):  # an extra is never fetched: say it with the rest, before downloads
        raise MissingAssets(missing, offline=False)
    if stuck and len(stuck) < len(missing):  # do not download the others only to fail on these: one message
        raise MissingAssets(missing, offline=False)  # (none to download: the loaders' own, more precise messages)
    if say is not None:
        say("downloading on first use: " + "; ".join(f"{n.kind} {n.name}" for n in missing))


def format_table(needs: Sequence[Need]) -> str:
    """`vqclip models check`: one row per need, then where to get each missing one."""
    if not needs:
        return "nothing to download: every model comes from a file given on the command line"
    rows = [("what", "name", "status", "path")] + [(n.kind, n.name, "present" if n.present else "MISSING", n.path)
                                                   for n in needs]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    text = "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows)
    missing = [n for n in needs if not n.present]
    if missing:
        text += "\n\nmissing:\n" + "\n".join(f"  - {n.line()}" for n in missing)
    return text
