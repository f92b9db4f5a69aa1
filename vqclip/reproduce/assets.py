"""The files a reproduce run needs (CLIP, the VQGAN, the paper's projections and photos): checked before anything
loads, fetched or found, loaded, and hashed for the report; offline, one message names every folder to fill."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from ..errors import VqclipError, bad_arg
from ..models.clip import DEFAULT_CLIP, DEFAULT_PRETRAINED
from .options import SPACES, ReproduceOptions


def needs(o: ReproduceOptions, spaces: Sequence[tuple[str, str | None]] = (), *, vqgan: bool = False,
          paper_dataset: bool = False) -> list:
    """The files the run needs (`vqclip.preflight.plan_assets`): CLIP weights, the VQGAN when `vqgan`, a projection
    for each (space, file given) without a file, the paper's photos when `paper_dataset`."""
    from ..preflight import plan_assets

    return plan_assets(clip=o.clip or DEFAULT_CLIP,
                       pretrained=o.pretrained if o.pretrained is not None else DEFAULT_PRETRAINED,
                       cache=o.cache_dir, vqgan=o.vqgan, vqgan_checkpoint=o.vqgan_checkpoint, with_vqgan=vqgan,
                       spaces=list(spaces), auto_train=o.auto_train, paper_dataset=paper_dataset)


def offline_hint(o: ReproduceOptions, vqgan: bool = False, already: str = "") -> str:
    """What else an offline run needs by hand: the paper's projections (and, for generation, the VQGAN files) that
    are not cached, with where each goes. Folders `already` names are left out."""
    from ..models.clip import clip_identity
    from ..models.registry import cache_status, cached_file, VQGAN_ASSETS
    from ..projections import registered_projection
    from ..projections.published import published_dir
    from ..projections import projection_path

    needed = []
    try:
        identity = clip_identity(o.clip, o.pretrained)
    except Exception:  # noqa: BLE001 - an identifier the loader will reject with its own message
        identity = None
    for space, given in o.projection_files().items():
        asset = registered_projection(identity, space) if identity else None
        if given or asset is None or projection_path(space, identity, o.cache_dir).is_file():
            continue
        needed.append((f"the paper's projections, the folder {asset.folders[0]}", published_dir(asset, o.cache_dir)))
    if vqgan and not o.vqgan_checkpoint and o.vqgan in VQGAN_ASSETS:
        asset = VQGAN_ASSETS[o.vqgan]
        if cache_status(asset, o.cache_dir) == "not cached":
            for remote in (asset.config, asset.checkpoint):
                needed.append((f"{remote.filename} from {remote.urls[0]}", cached_file(asset, remote, o.cache_dir)))
    if vqgan:  # a run that generates also judges the objects afterwards (--judge-clip)
        from .judge import judge_needs

        needed += [(f"the --judge-clip weights {n.name} from {n.source}", n.path)
                   for n in judge_needs(o) if not n.present]
    text = ""
    for what, where in dict.fromkeys(needed):
        if str(where) not in already:
            text += f" Also needed offline: {what} in {where}{'/' if not Path(str(where)).suffix else ''}."
    return text


def dataset_root(o: ReproduceOptions, progress: bool, vqgan: bool = False) -> Path:
    """The paper's photo folder: --dataset, else the copy in the cache (fetched from the authors' Drive on first
    use). Offline, the error names the other files a run with (`vqgan`) or without generation needs."""
    from ..evaluate.typographic import fetch_paper_dataset, find_dataset_root

    if o.dataset:
        root = find_dataset_root(Path(o.dataset).expanduser())
        if root is None:
            raise bad_arg("--dataset", "no annotation.json or annotations.json in the folder or below it",
                          o.dataset, "Point at the folder of the paper's typographic-attack photos.")
        return root
    try:
        return fetch_paper_dataset(o.cache_dir, progress=progress)
    except VqclipError as e:
        raise VqclipError(f"{e}{offline_hint(o, vqgan=vqgan, already=str(e))}") from None


def load_clip(o: ReproduceOptions):
    """CLIP alone (the typographic part), after checking that its weights are there or can be fetched."""
    from ..models.clip import load_clip as load
    from ..preflight import preflight

    preflight(needs(o))
    return load(o.clip, o.pretrained, device=o.device, precision=o.precision, cache_dir=o.cache_dir)


def load_generation_models(o: ReproduceOptions, shard, load_models: Callable):
    """CLIP, the three spaces and the VQGAN through `load_models(shard, [(space, file, flag), ...])`, after the
    memory check; offline, the error names every folder still to fetch by hand, not one per attempt."""
    from ..generation.memory import check_memory, vqgan_ddconfig

    check_memory([(o.settings.size, o.settings.cutn, "")], o.device, vqgan_ddconfig(o.vqgan, o.vqgan_config))
    try:
        return load_models(shard, [(s, o.projections.get(s), f"--projection-{s}") for s in SPACES])
    except VqclipError as e:
        hint = offline_hint(o, vqgan=True, already=str(e))
        if not hint:
            raise
        error = VqclipError(f"{e}{hint}")
        error.arg, error.exit_code = e.arg, e.exit_code
        raise error from None


def typographic_spaces(clip, o: ReproduceOptions) -> dict:
    """clip, learn and forget: a --projection-SPACE file is loaded as that space (the flag says which, so the
    paper's torch files holding only W load without a --space reproduce does not have); the others come from the
    cache or the registry."""
    from ..evaluate.common import resolve_eval_spaces
    from ..projections import resolve_space

    given = {space: resolve_space(space, clip.identity, clip.embed_dim, path, o.cache_dir,
                                  clip_flags=clip.cli_flags(), projection_arg=f"--projection-{space}")
             for space, path in o.projection_files().items() if path}
    spaces = resolve_eval_spaces(clip.identity, clip.embed_dim, [s for s in SPACES if s not in given], [],
                                 o.cache_dir, clip_flags=clip.cli_flags())
    return {**spaces, **given}


def model_files(pretrained: str | None, spaces, vqgan_info=None) -> dict:
    """Names and sha256 of the model files in use (projections, an explicit CLIP checkpoint, the VQGAN file)."""
    from .report import file_hashes

    paths = {f"{name} projection": sp.metadata.get("path") for name, sp in spaces.items() if sp.W is not None}
    checkpoint = Path(str(pretrained or "")).expanduser()
    if pretrained and checkpoint.is_file():
        paths["clip checkpoint"] = checkpoint
    if vqgan_info and vqgan_info.get("checkpoint"):
        paths["vqgan"] = vqgan_info["checkpoint"]
    return file_hashes(paths)
