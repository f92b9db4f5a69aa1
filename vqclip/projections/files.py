"""Projection files: where they live in the cache, how they are written (self-describing .safetensors) and read
(vqclip's own files and reference-code torch files holding only W), and what a --projection value states."""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..cache import cache_dir, slug
from ..errors import VqclipError, bad_arg
from ..spaces import Space
from .checks import check_orthonormal, check_projection_dtype, check_projection_matrix, orient_for_clip

FORMAT = "vqclip.projection/1"
# How a file that does not say stores W: "dxD" rows are the d directions (F.linear's weight, vqclip's layout),
# "Dxd" columns are (x @ W, the paper authors' README). Users state it as FILE@dxD or FILE@Dxd.
ORIENTATIONS = {"dxD": "dxD", "d×D": "dxD", "Dxd": "Dxd", "D×d": "Dxd"}
UNKNOWN_CLIP = "unknown: the file does not say and it was not stated (FILE@NAME/TAG)"
FORGET_WORDS = ("forget", "nospell", "no_spell", "no-spell", "unspell")


def projection_path(space: str, clip_identity: str, root: str | os.PathLike | None = None) -> Path:
    """Where the trainer writes, and the generator looks up, the projection for (space, CLIP model)."""
    return cache_dir(root) / "projections" / slug(clip_identity) / f"{space}.safetensors"


def save_projection(path: str | os.PathLike, W: torch.Tensor, space: str, clip_model: str,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write W (d, D) and self-describing metadata atomically as .safetensors."""
    from safetensors.torch import save_file

    from .. import __version__
    from ..io import atomic_path

    if space not in ("learn", "forget"):
        raise bad_arg("space", "a projection file is for the learn or forget space", space, "Use learn or forget.")
    W = W.detach().float().cpu().contiguous()
    meta = {"format": FORMAT, "space": space, "clip_model": clip_model, "dim": str(W.shape[0]),
            "embed_dim": str(W.shape[1]), "vqclip_version": __version__}
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v, default=str)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({"W": W}, str(tmp), metadata=meta)
    return path


def read_metadata(path: Path) -> dict:
    """The metadata of a .safetensors projection file; {} for a damaged or foreign file (the caller reports it)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # damaged or foreign file: reported as such by the caller
        return {}


def _space_in(text: str) -> str | None:
    text = text.lower()
    forget = any(w in text for w in FORGET_WORDS)
    learn = "learn" in text or (not forget and re.search(r"spell", text) is not None)
    if forget == learn:
        return None
    return "forget" if forget else "learn"


def space_from_name(name: str) -> str | None:
    """`learn` or `forget` when the file name says so unambiguously (else its folder's name), else None."""
    path = Path(name)
    return _space_in(path.name) or (_space_in(path.parent.name) if path.parent.name else None)


@dataclass(frozen=True)
class ProjectionArg:
    """A --projection value: the file, and what the user stated about a file that does not say it itself."""

    path: Path
    clip_model: str | None = None  # the CLIP identity it was trained for (NAME/TAG)
    orientation: str | None = None  # "dxD" or "Dxd"


def _stated_clip(text: str) -> str:
    """A stated CLIP as the identity projections record: `ViT-B-32-quickgelu/openai` is `ViT-B-32/openai`."""
    if text.startswith(("hf-hub:", "local-dir:")):
        return text
    name, _, tag = text.rpartition("/")
    if "#" in tag:  # a checkpoint file's hash, as vqclip prints it
        return text
    from ..models.clip import canonical_name

    return f"{canonical_name(name, tag)}/{tag}"


def parse_projection_arg(text: str | os.PathLike, arg: str = "--projection") -> ProjectionArg:
    """`FILE[@CLIP][@ORIENTATION]`: a projection file and, for a file that does not say them (a reference-code
    torch file holding only W), the CLIP it was trained for (NAME/TAG as vqclip prints it, e.g. ViT-B-32/openai)
    and how W is stored (dxD: rows, as F.linear; Dxd: columns, x @ W as in the authors' README).

    The longest prefix that is an existing file is the file, so a file name with '@' in it still works."""
    text = str(text)
    cuts = [i for i, c in enumerate(text) if c == "@"]
    if not cuts or os.path.isfile(os.path.expanduser(text)):
        return ProjectionArg(Path(text).expanduser())
    cut = next((i for i in reversed(cuts) if os.path.isfile(os.path.expanduser(text[:i]))), cuts[0])
    clip = orientation = None
    for part in text[cut + 1:].split("@"):
        part = part.strip()
        if part in ORIENTATIONS and orientation is None:
            orientation = ORIENTATIONS[part]
        elif clip is None and ("/" in part.strip("/") or part.startswith(("hf-hub:", "local-dir:"))):
            clip = _stated_clip(part)
        else:
            raise bad_arg(arg, "FILE@... states the CLIP the file was trained for (NAME/TAG, e.g. ViT-B-32/openai) "
                          "and/or how W is stored (dxD or Dxd), each at most once", text,
                          "For example forget.pt@ViT-B-32/openai, forget.pt@Dxd or forget.pt@ViT-B-32/openai@dxD.")
    return ProjectionArg(Path(text[:cut]).expanduser(), clip, orientation)


def projection_arg_identity(text: str | os.PathLike) -> str:
    """A --projection value as a batch records it: the file's absolute path, with what was stated about it
    (`/abs/forget.pt@ViT-B-32/openai@Dxd`), so a change of either is a change of recipe."""
    given = parse_projection_arg(text)
    path = given.path.resolve() if given.path.exists() else given.path
    return str(path) + "".join(f"@{s}" for s in (given.clip_model, given.orientation) if s)


def _unreadable(path: Path, e: BaseException) -> str:
    """Why a --projection file could not be read, in our words: torch's own text suggests an unsafe load."""
    text = str(e)
    if "weights_only" in text or "Weights only" in text:
        return ("it holds Python objects besides tensors, and vqclip reads projection files without running "
                "their code")
    if "zip archive" in text or "central directory" in text or isinstance(e, EOFError):
        return "it is truncated or corrupt"
    if path.suffix == ".safetensors":
        return "it is not a readable .safetensors file"
    return "it is not a torch file (torch.save) or a .safetensors file"


def load_projection(path: str | os.PathLike | ProjectionArg, space: str | None = None,
                    embed_dim: int | None = None, arg: str = "--projection") -> Space:
    """Load a vqclip `.safetensors` projection or a reference-code torch file holding `W`.

    `path` may carry what the user states about a file that does not say it (`FILE@CLIP@ORIENTATION`, see
    `parse_projection_arg`). `arg` is the flag that named the file (e.g. `--projection-learn` in `vqclip batch`),
    for error messages.
    """
    given = path if isinstance(path, ProjectionArg) else parse_projection_arg(path, arg)
    path = given.path
    if not path.is_file():
        raise bad_arg(arg, "file not found", str(path), "Check the path, or train one with `vqclip train`.")
    W, meta = _read_file(path, arg)
    if isinstance(W, torch.Tensor) and W.ndim == 2 and 0 not in W.shape:
        check_projection_dtype(W, str(path), arg)
    if meta.get("format") == FORMAT:  # vqclip wrote it: W is d×D and the file names its CLIP
        if given.orientation == "Dxd":
            raise bad_arg(arg, "a vqclip projection file always stores W as d×D", f"{path}@Dxd",
                          "Leave the orientation out for files written by vqclip.")
        how = None
    else:
        W, how = orient_for_clip(W, embed_dim, str(path), arg, given.orientation)
    W = W.detach().float()  # an nn.Parameter saved as W loads as plain data, without torch's requires_grad warning
    check_projection_matrix(W, str(path), arg)
    if "training" not in meta:  # vqclip train records its own orthogonality penalty; any other file must be one
        check_orthonormal(W, str(path), arg)
    _add_stated_clip(meta, given, arg)
    if how:
        meta["orientation"] = how
    name = _space_of(meta, space, path)
    meta["path"] = str(path)
    return Space(name, W, meta)


def _read_file(path: Path, arg: str) -> tuple[Any, dict[str, Any]]:
    """(W as stored, the file's metadata) of a .safetensors file or a torch file, read without running code."""
    meta: dict[str, Any] = {}
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                if "W" not in f.keys():
                    raise bad_arg(arg, "a projection file must hold a tensor named W",
                                  f"{path}: {sorted(f.keys())}", "Pass a file written by `vqclip train`.")
                return f.get_tensor("W"), meta
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            from ..models.checkpoints import load_weights_only

            obj = load_weights_only(path)
        return _find_matrix(obj, path, arg), meta
    except VqclipError:
        raise
    except Exception as e:  # corrupt or truncated files raise many different errors
        raise bad_arg(arg, f"could not read the file as a projection: {_unreadable(path, e)}", str(path),
                      "Pass a projection written by `vqclip train`, or a torch file holding only the matrix "
                      "(torch.save({'W': W}, path)).") from None


def _add_stated_clip(meta: dict[str, Any], given: ProjectionArg, arg: str) -> None:
    """Record which CLIP the file is for: its own word, else the user's FILE@CLIP, else that it is unknown."""
    if given.clip_model:
        if meta.get("clip_model") and meta["clip_model"] != given.clip_model:
            raise bad_arg(arg, f"the file says it was trained for CLIP {meta['clip_model']!r}, not the stated one",
                          given.clip_model, f"Leave @{given.clip_model} out, or pass the file trained for it.")
        if not meta.get("clip_model"):
            meta["clip_model"], meta["clip_model_from"] = given.clip_model, "stated by the user (FILE@CLIP)"
    elif not meta.get("clip_model"):
        meta["clip_model_from"] = UNKNOWN_CLIP


def _space_of(meta: dict[str, Any], space: str | None, path: Path) -> str:
    """learn or forget: the file's metadata, else --space, else the file name (recorded as a guess)."""
    file_space = meta.get("space")
    if space and file_space and space != file_space:
        raise bad_arg("--space", f"the projection file is a {file_space!r} projection", space,
                      f"Use --space {file_space}, or pass a {space} projection.")
    named = space_from_name(path.name) if not file_space else None  # --space wins over a name (only a guess)
    name = file_space or space or named
    if name not in ("learn", "forget"):
        raise bad_arg("--space", "the file does not say whether it is a learn or a forget projection (no "
                      "metadata, and its name holds neither 'learn' nor 'forget')", space,
                      "Add --space learn or --space forget.")
    if not file_space and not space:
        meta["space_from"] = "file name"
    return name


def _find_matrix(obj: Any, path: Path, arg: str = "--projection") -> torch.Tensor:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, Mapping):
        for key in ("W", "projection", "weight", "proj.weight", "W.weight"):
            if isinstance(obj.get(key), torch.Tensor):
                return obj[key]
        tensors = [v for v in obj.values() if isinstance(v, torch.Tensor) and v.ndim == 2]
        if len(tensors) == 1:
            return tensors[0]
    raise bad_arg(arg, "no matrix W found in the torch file", str(path),
                  "The file should hold a tensor W (d x D or D x d) or {'W': tensor}.")
