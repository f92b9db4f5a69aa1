"""The rules every projection matrix must pass, however it comes in (--projection, the published folder,
`vqclip models convert`): its orientation, dtype, rank, scale and orthonormality."""

from __future__ import annotations

import math

import torch

from ..errors import bad_arg

def orient_for_clip(W: torch.Tensor, embed_dim: int | None, path: str, arg: str = "--projection",
            stated: str | None = None) -> tuple[torch.Tensor, str]:
    """(W as d×D, how that was known) for a file that does not say: the stated orientation, else the side that
    matches the CLIP embedding size. A square W is refused without a statement (either reading would fit)."""
    if W.ndim != 2:
        raise bad_arg(arg, "W must be a 2-D matrix", f"{path}: shape {tuple(W.shape)}",
                      "Pass a projection trained by `vqclip train` or the paper's code.")
    if stated is not None:
        out = W if stated == "dxD" else W.T
        if embed_dim is not None and out.shape[1] != embed_dim:
            raise bad_arg(arg, f"the stated orientation {stated} makes the input size D = {out.shape[1]}, but the "
                          f"CLIP embedding size is {embed_dim}", f"{path}: shape {tuple(W.shape)}",
                          f"State {'Dxd' if stated == 'dxD' else 'dxD'} instead, or leave the orientation out "
                          "(it is told by the shape).")
        return out, ("d×D (stated)" if stated == "dxD" else "D×d (stated), transposed to d×D")
    if W.shape[0] == W.shape[1]:
        raise bad_arg(arg, "W is square, so its shape cannot tell whether its rows (d×D, F.linear) or its columns "
                      "(D×d, x @ W) are the projection's directions", f"{path}: shape {tuple(W.shape)}",
                      f"State it: {arg} {path}@dxD or {arg} {path}@Dxd.")
    if embed_dim is None:  # checked again once CLIP is known; a projection keeps fewer directions than D
        return (W, "as stored (d×D by its shape)") if W.shape[0] < W.shape[1] else \
            (W.T, "D×d (by its shape), transposed to d×D")
    if W.shape[1] == embed_dim:
        return W, "d×D (told by the shape)"
    if W.shape[0] == embed_dim:
        return W.T, "D×d (told by the shape), transposed to d×D"
    raise bad_arg(arg, f"neither side of W matches the CLIP embedding size {embed_dim}",
                  f"{path}: shape {tuple(W.shape)}", "Use a projection trained for this CLIP model.")


def check_projection_matrix(W: torch.Tensor, path: str, arg: str = "--projection",
                            fix: str = "Re-train the projection with `vqclip train`.") -> None:
    """Refuse a W that cannot project: empty, non-finite, a zero row, or rows that are linearly dependent.

    Such a W maps every embedding to zero or to a lower-dimensional subspace, so the loss goes flat (an all-zero
    W "finishes" generation with loss 0) instead of failing.
    """
    if W.ndim != 2 or 0 in W.shape:
        raise bad_arg(arg, "W must be a non-empty 2-D matrix", f"{path}: shape {tuple(W.shape)}", fix)
    check_projection_dtype(W, path, arg, fix)
    if W.shape[0] > W.shape[1]:
        raise bad_arg(arg, f"W has more rows (d={W.shape[0]}) than dimensions (D={W.shape[1]}): a projection keeps "
                      "at most D directions", f"{path}: shape {tuple(W.shape)}", fix)
    if not torch.isfinite(W).all():
        raise bad_arg(arg, "W holds NaN or infinite values", path, fix)
    norms = W.double().norm(dim=1)  # (d,)
    tiny = norms <= 1e-6 * float(norms.max()) if float(norms.max()) > 0 else torch.ones_like(norms, dtype=torch.bool)
    if tiny.any():
        zero = int(tiny.sum())
        raise bad_arg(arg, f"W has {zero} row(s) of zeros, which project every embedding to the same value", path,
                      fix)
    s = torch.linalg.svdvals(W.double())  # descending
    if float(s[-1]) <= 1e-6 * float(s[0]):
        rank = int((s > 1e-6 * s[0]).sum())
        raise bad_arg(arg, f"W's {W.shape[0]} rows are linearly dependent (rank {rank}): the projection loses "
                      "dimensions it claims to keep", path, fix)
    low, high = SINGULAR_RANGE
    if not (low <= float(s[-1]) and float(s[0]) <= high):
        raise bad_arg(arg, f"W's singular values must lie in [{low:g}, {high:g}] (its rows are near orthonormal: "
                      f"all near 1); they span [{float(s[-1]):.3g}, {float(s[0]):.3g}], so every loss would be "
                      "scaled toward 0 or overflow", path, fix)


# A projection trained by vqclip or the paper's code starts orthonormal and is held near it by the orthogonality
# penalty: its singular values stay near 1. A W scaled by 1e-30 (every loss 0.0000) or 1e30 (overflow) is not one.
SINGULAR_RANGE = (1e-3, 1e3)


# One rule for every projection file, however it comes in (--projection, the published folder, models convert):
# rows orthonormal within ‖WWᵀ − I‖_F / √d ≤ MAX_ORTHO_ERROR, unless `vqclip train` wrote it (it records γ).
MAX_ORTHO_ERROR = 0.25


def check_orthonormal(W: torch.Tensor, path: str, arg: str = "--projection",
                      fix: str = "Use the authors' file as published, or train one with `vqclip train`.") -> None:
    d = W.shape[0]
    error = float(torch.linalg.matrix_norm(W.double() @ W.double().T - torch.eye(d, dtype=torch.float64)))
    if error / math.sqrt(d) > MAX_ORTHO_ERROR:
        raise bad_arg(arg, f"W's rows are far from orthonormal: ‖WWᵀ − I‖_F / √d = {error / math.sqrt(d):.3g}, at "
                      f"most {MAX_ORTHO_ERROR} is accepted (the paper's projections are orthogonal; a scaled or "
                      "unrelated matrix is not one)", path, fix)


def check_projection_dtype(W: torch.Tensor, path: str, arg: str = "--projection",
                           fix: str = "Re-train the projection with `vqclip train`.") -> None:
    """Refuse a W that is not real floating point (bool, integer, complex): converting it would silently make
    another matrix than the file holds."""
    if not W.is_floating_point() or W.is_complex():
        raise bad_arg(arg, "W must hold real floating-point numbers (float16/32/64, bfloat16)",
                      f"{path}: dtype {str(W.dtype).replace('torch.', '')}", fix)
