"""Released projection files: read them safely, tell learn from forget, check them, convert them to vqclip's format.

The paper's authors (Materzynska, Torralba, Bau, CVPR 2022) published their learn- and forget-to-spell matrices
for OpenAI ViT-B/32 as torch files in a Google Drive folder. Their README loads `torch.load(p)['W']` and projects
with `x @ W`, so W is stored D×d there; their training module applies `F.linear`, which stores d×D. Both
orientations are accepted and the one found is recorded in the converted file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..io import sha256_file
from .checks import MAX_ORTHO_ERROR  # one tolerance for every route a projection comes in by
from .files import save_projection, space_from_name

MAX_FILE_BYTES = 64 << 20  # a d×D float matrix for any open_clip model is far below this
MATRIX_KEYS = ("W", "projection", "weight", "proj.weight", "W.weight")


@dataclass(frozen=True)
class FoundFile:
    """One file of a downloaded folder and what reading it as a projection gave."""

    name: str  # path relative to the folder, with '/'
    path: Path
    size: int
    shape: tuple[int, ...] | None = None  # of the matrix found in it
    key: str | None = None  # where in the file the matrix was
    problem: str | None = None  # why it holds no usable matrix

    def describe(self) -> str:
        if self.problem:
            return f"{self.name} ({self.problem})"
        where = f" tensor {self.key!r}" if self.key else " tensor"
        return f"{self.name} ({'×'.join(map(str, self.shape or ()))}{where})"


@dataclass(frozen=True)
class Identified:
    """The file chosen for one space, and how it was recognised."""

    file: FoundFile
    how: str  # "file name", "shape (d = 64)", "relative shape (...)"


def _matrix_in(obj: Any) -> tuple[torch.Tensor | None, str | None]:
    """The projection matrix in a loaded torch object: a tensor, `{'W': tensor}` or a one-matrix state dict."""
    if isinstance(obj, torch.Tensor):
        return obj, None
    if isinstance(obj, Mapping):
        for key in MATRIX_KEYS:
            if isinstance(obj.get(key), torch.Tensor):
                return obj[key], key
        tensors = [(k, v) for k, v in obj.items() if isinstance(v, torch.Tensor)]
        if len(tensors) == 1 and tensors[0][1].ndim == 2:  # a model's state dict holds more than one tensor
            return tensors[0][1], str(tensors[0][0])
    return None, None


def read_matrix_file(path: Path) -> tuple[torch.Tensor | None, str | None, str | None]:
    """(matrix, key, problem) of one file, read without running code (`weights_only=True` / safetensors)."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        return None, None, f"{size / 1e6:.0f} MB, too large for a projection"
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            from ..models.checkpoints import load_weights_only

            obj = load_weights_only(path)
    except Exception as e:  # not a torch file, a pickle with code in it, truncated: many error types
        kind = "refused: holds more than tensors" if "weights_only" in str(e) else "not a readable torch file"
        return None, None, kind
    W, key = _matrix_in(obj)
    W = W.detach() if W is not None else None  # an nn.Parameter: plain data, no requires_grad warning
    if W is None:
        return None, None, "no single matrix in it"
    if W.ndim != 2:
        return None, key, f"a {W.ndim}-D tensor {tuple(W.shape)}, not a matrix"
    return W, key, None


def scan_folder(folder: Path) -> list[FoundFile]:
    """Every file under `folder` (hidden ones aside), each read as a possible projection; sorted by name."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        W, key, problem = read_matrix_file(path)
        found.append(FoundFile(path.relative_to(folder).as_posix(), path, path.stat().st_size,
                               tuple(W.shape) if W is not None else None, key, problem))
    return found


def _reduced_dim(shape: tuple[int, ...], embed_dim: int) -> int | None:
    """d of a d×D or D×d matrix (D = the CLIP embedding size), or None when neither side is D."""
    if embed_dim not in shape:
        return None
    return shape[1] if shape[0] == embed_dim else shape[0]


def identify(found: list[FoundFile], embed_dim: int, dims: Mapping[str, int]) -> dict[str, Identified]:
    """Which file is which space: by file name first, then by d (`dims`, the paper's 64 / 256), then, for two
    matrices with different d and uninformative names, the smaller d is `learn` (as in every setting of the paper).

    A space with two equally good candidates gets none: the caller then lists what was found.
    """
    matrices = [f for f in found if f.shape is not None and _reduced_dim(f.shape, embed_dim) is not None]
    out: dict[str, Identified] = {}
    taken: set[str] = set()
    claimed: set[str] = set()  # spaces some file name claims: never filled by shape instead
    for space in dims:
        named = [f for f in matrices if space_from_name(f.name) == space]
        if named:
            claimed.add(space)
        if len(named) == 1:
            out[space] = Identified(named[0], "file name")
            taken.add(named[0].name)
    unnamed = [f for f in matrices if space_from_name(f.name) is None and f.name not in taken]
    for space, d in dims.items():
        if space in claimed:
            continue
        by_shape = [f for f in unnamed if _reduced_dim(f.shape, embed_dim) == d]
        if len(by_shape) == 1:
            out[space] = Identified(by_shape[0], f"shape (d = {d})")
            taken.add(by_shape[0].name)
    rest = [f for f in unnamed if f.name not in taken]
    missing = [s for s in ("learn", "forget") if s in dims and s not in out and s not in claimed]
    if len(missing) == 2 and len(rest) == 2:
        small, large = sorted(rest, key=lambda f: _reduced_dim(f.shape, embed_dim))
        if _reduced_dim(small.shape, embed_dim) < _reduced_dim(large.shape, embed_dim):
            out["learn"] = Identified(small, "relative shape (the smaller d is learn, as in the paper)")
            out["forget"] = Identified(large, "relative shape (the larger d is forget, as in the paper)")
    return out


def orient(W: torch.Tensor, embed_dim: int) -> tuple[torch.Tensor, str]:
    """W as d×D (vqclip's layout) and how it was stored. A square W is read as the authors' README uses it."""
    if W.shape[0] == embed_dim:
        how = "D×d (x @ W, the authors' README)" if W.shape[1] != embed_dim \
            else "square, read as D×d (x @ W, the authors' README)"
        return W.T.contiguous(), how + "; transposed to d×D"
    return W, "d×D (F.linear weight, the authors' training code); used as is"


def orthogonality(W: torch.Tensor) -> tuple[float, float]:
    """(‖WWᵀ − I‖_F, the same divided by √d) for a d×D matrix: 0 for orthonormal rows."""
    W = W.double()
    d = W.shape[0]
    error = float(torch.linalg.matrix_norm(W @ W.T - torch.eye(d, dtype=W.dtype)))
    return error, error / math.sqrt(d)


def check_matrix(W: torch.Tensor, embed_dim: int) -> str | None:
    """Why a d×D matrix is not a usable projection for a D = `embed_dim` CLIP, or None when it passes."""
    if W.ndim != 2 or W.shape[1] != embed_dim or not 0 < W.shape[0] <= embed_dim:
        return f"shape {tuple(W.shape)} is not d×{embed_dim} with 0 < d ≤ {embed_dim}"
    if not torch.isfinite(W).all():
        return "it holds NaN or infinite values"
    error, per_dim = orthogonality(W)
    if per_dim > MAX_ORTHO_ERROR:
        return (f"its rows are far from orthonormal (‖WWᵀ − I‖_F = {error:.3g}, {per_dim:.3g} per √d; "
                f"at most {MAX_ORTHO_ERROR} expected of the paper's orthogonal projections)")
    return None


def sha256_of(path: Path) -> str:
    return sha256_file(path)


def convert_file(found: FoundFile, space: str, clip_model: str, embed_dim: int, out: str | os.PathLike,
                 provenance: Mapping[str, Any]) -> Path:
    """Write `found`'s matrix as a vqclip projection (d×D, .safetensors) with where it came from.

    Raises ValueError naming the rule it breaks; the caller adds the file and the fix.
    """
    W, _, problem = read_matrix_file(found.path)
    if W is None:
        raise ValueError(problem)
    W, orientation = orient(W.detach().float().cpu(), embed_dim)
    problem = check_matrix(W, embed_dim)
    if problem:
        raise ValueError(problem)
    error, per_dim = orthogonality(W)
    extra = {**provenance, "source_file": found.name, "source_sha256": sha256_of(found.path),
             "source_key": found.key or "(whole file)", "orientation": orientation,
             "orthogonality_error": f"{error:.6g}", "orthogonality_error_per_sqrt_d": f"{per_dim:.6g}"}
    return save_projection(out, W, space, clip_model, extra)
