"""Embedding spaces: `clip` (identity) and learned projections `project(e) = normalize(e @ W.T)` (paper §2)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .cache import cache_dir, slug
from .errors import VqclipError, bad_arg, choices_hint

SPACES = ("clip", "learn", "forget")
FORMAT = "vqclip.projection/1"


class Space(nn.Module):
    """An embedding space; `W` is None for the original CLIP space, else a (d, D) projection."""

    def __init__(self, name: str, W: torch.Tensor | None = None, metadata: Mapping[str, Any] | None = None):
        super().__init__()
        if name not in SPACES:
            raise bad_arg("--space", "unknown embedding space", name, choices_hint(SPACES))
        self.name = name
        self.metadata = dict(metadata or {})
        if W is None:
            self.W = None
        else:
            self.register_buffer("W", W.detach().float().contiguous())

    @property
    def dim(self) -> int | None:
        return None if self.W is None else int(self.W.shape[0])

    @property
    def embed_dim(self) -> int | None:
        return None if self.W is None else int(self.W.shape[1])

    def project(self, e: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., d) unit vectors; the identity space only normalises."""
        if self.W is not None:
            e = e.float() @ self.W.T  # (..., D) @ (D, d)
        return F.normalize(e.float(), dim=-1)

    forward = project

    def check_clip(self, clip_identity: str, embed_dim: int, arg: str = "--projection") -> None:
        """Refuse a projection trained for another CLIP model or another embedding size."""
        if self.W is None:
            return
        source = self.metadata.get("path", "the projection")
        if self.embed_dim != embed_dim:
            raise bad_arg(arg, f"the projection's input size D must equal the CLIP embedding size {embed_dim}",
                          f"{source}: W is {tuple(self.W.shape)}", "Use a projection trained for this CLIP model.")
        trained_for = self.metadata.get("clip_model")
        if trained_for and trained_for != clip_identity:
            raise bad_arg(arg, f"the projection was trained for CLIP {trained_for!r}, not for the CLIP in use",
                          clip_identity, f"Pass --clip/--pretrained matching {trained_for!r}, or train a projection "
                          f"for this model: {train_command(self.name, clip_identity)}")

    def describe(self) -> dict:
        out = {"space": self.name, "dim": self.dim, "embed_dim": self.embed_dim}
        out.update({k: v for k, v in self.metadata.items() if k in ("clip_model", "path", "sha256")})
        return out


def identity_space() -> Space:
    return Space("clip")


def train_command(space: str, clip_identity: str) -> str:
    name, _, tag = clip_identity.partition("/")
    if clip_identity.startswith(("local-dir:", "hf-hub:")):
        model = f"--clip {clip_identity.split('#')[0]}"
    else:
        model = f"--clip {name} --pretrained {tag}"
    return f"vqclip train --space {space} {model} --images IMAGE_FOLDER_OR_DATASET"


def projection_path(space: str, clip_identity: str, root: str | os.PathLike | None = None) -> Path:
    """Where the trainer writes, and the generator looks up, the projection for (space, CLIP model)."""
    return cache_dir(root) / "projections" / slug(clip_identity) / f"{space}.safetensors"


def save_projection(path: str | os.PathLike, W: torch.Tensor, space: str, clip_model: str,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write W (d, D) and self-describing metadata atomically as .safetensors."""
    from safetensors.torch import save_file

    from . import __version__
    from .io import atomic_path

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


def _orient(W: torch.Tensor, embed_dim: int | None, path: str) -> torch.Tensor:
    """Reference-code files store W as (d, D) or (D, d): tell which by the CLIP embedding size."""
    if W.ndim != 2:
        raise bad_arg("--projection", "W must be a 2-D matrix", f"{path}: shape {tuple(W.shape)}",
                      "Pass a projection trained by `vqclip train` or the paper's code.")
    if embed_dim is None or W.shape[1] == embed_dim:
        return W
    if W.shape[0] == embed_dim:
        return W.T
    raise bad_arg("--projection", f"neither side of W matches the CLIP embedding size {embed_dim}",
                  f"{path}: shape {tuple(W.shape)}", "Use a projection trained for this CLIP model.")


def load_projection(path: str | os.PathLike, space: str | None = None, embed_dim: int | None = None) -> Space:
    """Load a vqclip `.safetensors` projection or a reference-code torch file holding `W`."""
    path = Path(path)
    if not path.is_file():
        raise bad_arg("--projection", "file not found", str(path), "Check the path, or train one with `vqclip train`.")
    meta: dict[str, Any] = {}
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                if "W" not in f.keys():
                    raise bad_arg("--projection", "a projection file must hold a tensor named W",
                                  f"{path}: {sorted(f.keys())}", "Pass a file written by `vqclip train`.")
                W = f.get_tensor("W")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            W = _find_matrix(obj, path)
    except VqclipError:
        raise
    except Exception as e:  # corrupt or truncated files raise many different errors
        raise bad_arg("--projection", "could not read the file as a projection", str(path),
                      f"Re-download or re-train it ({type(e).__name__}: {e}).") from e
    W = _orient(W.float(), embed_dim, str(path))
    if not torch.isfinite(W).all():
        raise bad_arg("--projection", "W holds NaN or infinite values", str(path), "Re-train the projection.")
    file_space = meta.get("space")
    if space and file_space and space != file_space and space != "clip":
        raise bad_arg("--space", f"the projection file is a {file_space!r} projection", space,
                      f"Use --space {file_space}, or pass a {space} projection.")
    name = file_space or space
    if name not in ("learn", "forget"):
        raise bad_arg("--space", "a projection file without metadata needs --space learn or --space forget",
                      space, "Add --space learn or --space forget.")
    meta["path"] = str(path)
    return Space(name, W, meta)


def _find_matrix(obj: Any, path: Path) -> torch.Tensor:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, Mapping):
        for key in ("W", "projection", "weight", "proj.weight", "W.weight"):
            if isinstance(obj.get(key), torch.Tensor):
                return obj[key]
        tensors = [v for v in obj.values() if isinstance(v, torch.Tensor) and v.ndim == 2]
        if len(tensors) == 1:
            return tensors[0]
    raise bad_arg("--projection", "no matrix W found in the torch file", str(path),
                  "The file should hold a tensor W (d x D or D x d) or {'W': tensor}.")


def resolve_space(space: str, clip_identity: str, embed_dim: int, projection: str | os.PathLike | None = None,
                  cache: str | os.PathLike | None = None) -> Space:
    """The space to optimise in: identity for `clip`, else `--projection` or the cached one for this CLIP."""
    if space not in SPACES:
        raise bad_arg("--space", "unknown embedding space", space, choices_hint(SPACES))
    if space == "clip" and projection is None:
        return identity_space()
    if projection is None:
        path = projection_path(space, clip_identity, cache)
        if not path.is_file():
            raise VqclipError(
                f"--space {space}: no {space} projection for CLIP {clip_identity!r} in the cache ({path}). "
                f"Train one with: {train_command(space, clip_identity)}  — or pass a file with --projection PATH.")
        projection = path
    sp = load_projection(projection, None if space == "clip" else space, embed_dim)
    sp.check_clip(clip_identity, embed_dim)
    return sp


def orthogonality_error(W: torch.Tensor) -> float:
    """‖I − W Wᵀ‖_F / sqrt(d): 0 for orthonormal rows."""
    d = W.shape[0]
    return float(torch.linalg.matrix_norm(torch.eye(d) - W @ W.T) / math.sqrt(d))
