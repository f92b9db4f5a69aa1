"""Embedding spaces: `clip` (identity) and learned projections `project(e) = normalize(e @ W.T)` (docs/method.md §2)."""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .cache import cache_dir, slug
from .errors import VqclipError, bad_arg, choices_hint

SPACES = ("clip", "learn", "forget")
FORMAT = "vqclip.projection/1"
# How a file that does not say stores W: "dxD" rows are the d directions (F.linear's weight, vqclip's layout),
# "Dxd" columns are (x @ W, the paper authors' README). Users state it as FILE@dxD or FILE@Dxd.
ORIENTATIONS = {"dxD": "dxD", "d×D": "dxD", "Dxd": "Dxd", "D×d": "Dxd"}
UNKNOWN_CLIP = "unknown: the file does not say and it was not stated (FILE@NAME/TAG)"

log = logging.getLogger(__name__)


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

    def check_clip(self, clip_identity: str, embed_dim: int, arg: str = "--projection",
                   clip_flags: str | None = None) -> None:
        """Refuse a projection trained for another CLIP model or another embedding size; warn (once, one line)
        when the file does not say which CLIP it is for, so only the sizes could be checked.

        `clip_flags` are the --clip/--pretrained flags the user gave, so the suggested training command runs as is.
        """
        if self.W is None:
            return
        source = self.metadata.get("path", "the projection")
        if self.embed_dim != embed_dim:
            raise bad_arg(arg, f"the projection's input size D must equal the CLIP embedding size {embed_dim}",
                          f"{source}: W is {tuple(self.W.shape)}", "Use a projection trained for this CLIP model.")
        trained_for = self.metadata.get("clip_model")
        if trained_for and trained_for != clip_identity:
            said = ("you stated (FILE@CLIP) that the projection was trained for"
                    if self.metadata.get("clip_model_from", "").startswith("stated") else
                    "the projection was trained for")
            raise bad_arg(arg, f"{said} CLIP {trained_for!r}, not for the CLIP in use",
                          clip_identity, f"Pass --clip/--pretrained matching {trained_for!r}, or train a projection "
                          f"for this model: {train_command(self.name, clip_identity, clip_flags)}")
        if not trained_for and not self.metadata.get("clip_model_warned"):
            self.metadata["clip_model_warned"] = True
            log.warning("warning: %s %s: the file does not say which CLIP it was trained for; it is used with %s "
                        "because the sizes match (D=%d). State it to have it checked: %s %s@%s", arg, source,
                        clip_identity, embed_dim, arg, source, clip_identity)

    def describe(self) -> dict:
        out = {"space": self.name, "dim": self.dim, "embed_dim": self.embed_dim}
        out.update({k: v for k, v in self.metadata.items()
                    if k in ("clip_model", "path", "sha256", "source_url", "source_file", "source_sha256")})
        if self.W is not None and "clip_model_from" in self.metadata:  # a file that did not say: what is known
            out["clip_model"] = self.metadata.get("clip_model")
            out["clip_model_from"] = self.metadata["clip_model_from"]
        if self.W is not None and "orientation" in self.metadata:
            out["orientation"] = self.metadata["orientation"]
        return out


def identity_space() -> Space:
    return Space("clip")


def train_command(space: str, clip_identity: str, clip_flags: str | None = None,
                  cache: str | os.PathLike | None = None) -> str:
    """The `vqclip train` command that writes the projection `resolve_space` looks for.

    `clip_flags` are the model flags as the user gave them (`ClipModel.cli_flags()`): an identity holds only a
    folder name or a file hash, so without them a local model is shown as a placeholder to fill in.
    """
    import shlex

    if clip_flags is None:
        name, _, tag = clip_identity.partition("/")
        if clip_identity.startswith("hf-hub:"):
            clip_flags = f"--clip {shlex.quote(clip_identity)}"
        elif clip_identity.startswith("local-dir:"):
            clip_flags = "--clip local-dir:PATH_OF_THE_MODEL_FOLDER"
        elif tag.startswith("file#"):
            clip_flags = f"--clip {shlex.quote(name)} --pretrained PATH_OF_THE_CHECKPOINT"
        else:
            clip_flags = f"--clip {shlex.quote(name)} --pretrained {shlex.quote(tag)}"
    where = f" --cache-dir {shlex.quote(str(cache))}" if cache is not None else ""
    return f"vqclip train --space {space} {clip_flags}{where}"  # images: the default public training set


class MissingProjection(VqclipError):
    """No learn/forget projection for a CLIP: none in the cache, and none registered or the registered one failed.

    The message gives the `vqclip train` command that makes one; `explained` adds what it costs here.
    """

    def __init__(self, space: str, clip_identity: str, path: Path, reason: str, clip_flags: str | None = None,
                 cache: str | os.PathLike | None = None, projection_arg: str = "--projection",
                 cost: str | None = None, alternative: str | None = None):
        self.space, self.clip_identity, self.path, self.reason = space, clip_identity, path, reason
        self.clip_flags, self.cache, self.projection_arg = clip_flags, cache, projection_arg
        self.cost, self.alternative = cost, alternative
        super().__init__(self._message())
        self.arg = "--space"

    def train_command(self) -> str:
        return train_command(self.space, self.clip_identity, self.clip_flags, self.cache)

    def _message(self) -> str:
        from .spelling.sources import download_note

        cost = self.cost or download_note(self.cache)
        alternative = f"; or {self.alternative}" if self.alternative else ""
        return (f"--space {self.space}: no {self.space} projection for CLIP {self.clip_identity!r} in the cache "
                f"({self.path}); {self.reason}. Train one with: {self.train_command()}  — {cost}{alternative}; "
                f"or pass a file with {self.projection_arg} PATH.")

    def explained(self, cost: str | None = None, alternative: str | None = None) -> "MissingProjection":
        """The same error with what training costs on this machine and another way out (e.g. --auto-train)."""
        return MissingProjection(self.space, self.clip_identity, self.path, self.reason, self.clip_flags,
                                 self.cache, self.projection_arg, cost or self.cost, alternative or self.alternative)


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
    from .models.clip import canonical_name

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


def _orient(W: torch.Tensor, embed_dim: int | None, path: str, arg: str = "--projection",
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
    meta: dict[str, Any] = {}
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                if "W" not in f.keys():
                    raise bad_arg(arg, "a projection file must hold a tensor named W",
                                  f"{path}: {sorted(f.keys())}", "Pass a file written by `vqclip train`.")
                W = f.get_tensor("W")
        else:
            with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
                warnings.simplefilter("ignore")
                from .models.checkpoints import load_weights_only

                obj = load_weights_only(path)
            W = _find_matrix(obj, path, arg)
    except VqclipError:
        raise
    except Exception as e:  # corrupt or truncated files raise many different errors
        raise bad_arg(arg, f"could not read the file as a projection: {_unreadable(path, e)}", str(path),
                      "Pass a projection written by `vqclip train`, or a torch file holding only the matrix "
                      "(torch.save({'W': W}, path)).") from None
    if isinstance(W, torch.Tensor) and W.ndim == 2 and 0 not in W.shape:
        check_projection_dtype(W, str(path), arg)
    own = meta.get("format") == FORMAT  # vqclip wrote it: W is d×D and the file names its CLIP
    if own:
        if given.orientation == "Dxd":
            raise bad_arg(arg, "a vqclip projection file always stores W as d×D", f"{path}@Dxd",
                          "Leave the orientation out for files written by vqclip.")
        how = None
    else:
        W, how = _orient(W, embed_dim, str(path), arg, given.orientation)
    W = W.detach().float()  # an nn.Parameter saved as W loads as plain data, without torch's requires_grad warning
    check_projection_matrix(W, str(path), arg)
    if "training" not in meta:  # vqclip train records its own orthogonality penalty; any other file must be one
        check_orthonormal(W, str(path), arg)
    if given.clip_model:
        if meta.get("clip_model") and meta["clip_model"] != given.clip_model:
            raise bad_arg(arg, f"the file says it was trained for CLIP {meta['clip_model']!r}, not the stated one",
                          given.clip_model, f"Leave @{given.clip_model} out, or pass the file trained for it.")
        if not meta.get("clip_model"):
            meta["clip_model"], meta["clip_model_from"] = given.clip_model, "stated by the user (FILE@CLIP)"
    elif not meta.get("clip_model"):
        meta["clip_model_from"] = UNKNOWN_CLIP
    if how:
        meta["orientation"] = how
    file_space = meta.get("space")
    if space and file_space and space != file_space:
        raise bad_arg("--space", f"the projection file is a {file_space!r} projection", space,
                      f"Use --space {file_space}, or pass a {space} projection.")
    from .models.projection_import import space_from_name

    named = space_from_name(path.name) if not file_space else None  # --space wins over a name (only a guess)
    name = file_space or space or named
    if name not in ("learn", "forget"):
        raise bad_arg("--space", "the file does not say whether it is a learn or a forget projection (no "
                      "metadata, and its name holds neither 'learn' nor 'forget')", space,
                      "Add --space learn or --space forget.")
    if not file_space and not space:
        meta["space_from"] = "file name"
    meta["path"] = str(path)
    return Space(name, W, meta)


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


def cached_or_registered(space: str, clip_identity: str, cache: str | os.PathLike | None = None, *,
                         download: bool = True, progress: bool = True, clip_flags: str | None = None,
                         projection_arg: str = "--projection") -> Path:
    """The projection file for (space, CLIP): the one in the cache, else the registered one fetched on first use.

    Raises MissingProjection when there is neither, or when the registered one cannot be had.
    """
    from .models.registry import PROJECTION_ASSETS, ensure_projection, registered_projection

    path = projection_path(space, clip_identity, cache)
    if path.is_file():
        return path
    asset = registered_projection(clip_identity, space)
    if asset is None:
        known = sorted({a.clip_model for a in PROJECTION_ASSETS.values()})
        reason = f"none is registered for this CLIP (the paper's released ones are for {', '.join(known)})"
        raise MissingProjection(space, clip_identity, path, reason, clip_flags, cache, projection_arg)
    try:
        return ensure_projection(asset, cache, download=download, progress=progress)
    except VqclipError as e:
        text = str(e)
        text = text[len(e.arg) + 2:] if e.arg and text.startswith(f"{e.arg}: ") else text.rstrip(".")
        reason = getattr(e, "short", None) or f"the paper's released one cannot be used ({text})"
        raise MissingProjection(space, clip_identity, path, reason, clip_flags, cache, projection_arg) from None


def resolve_space(space: str | None, clip_identity: str, embed_dim: int,
                  projection: str | os.PathLike | None = None, cache: str | os.PathLike | None = None, *,
                  clip_flags: str | None = None, projection_arg: str = "--projection", download: bool = True,
                  progress: bool = True) -> Space:
    """The space to optimise in: identity for `clip`, else `projection` or the cached (or registered) one.

    `space` None means "not chosen": the projection file's own space, or `clip` without a file. An explicit
    `clip` with a projection file is refused rather than silently using (or ignoring) the file. `clip_flags`
    and `projection_arg` make the hints name the flags of the command being run. A registered projection (the
    paper's, for ViT-B-32/openai) is downloaded and converted on first use unless `download` is False.
    """
    if space is None:
        if projection is None:
            return identity_space()
        sp = load_projection(projection, None, embed_dim, projection_arg)
        sp.check_clip(clip_identity, embed_dim, projection_arg, clip_flags)
        return sp
    if space not in SPACES:
        raise bad_arg("--space", "unknown embedding space", space, choices_hint(SPACES))
    if space == "clip":
        if projection is not None:
            raise clip_with_file_error(projection, projection_arg)
        return identity_space()
    if projection is not None:
        sp = load_projection(projection, space, embed_dim, projection_arg)
        sp.check_clip(clip_identity, embed_dim, projection_arg, clip_flags)
        return sp
    projection = cached_or_registered(space, clip_identity, cache, download=download, progress=progress,
                                      clip_flags=clip_flags, projection_arg=projection_arg)
    try:
        sp = load_projection(projection, space, embed_dim, projection_arg)
        sp.check_clip(clip_identity, embed_dim, projection_arg, clip_flags)
    except VqclipError as e:  # the user passed no file: blame the cached one, not a flag they never gave
        raise cached_file_error(e, projection, "the cached projection",
                                f"it is fetched again (a registered one) or you re-train it, or pass your own "
                                f"with {projection_arg} FILE") from None
    return sp


def clip_with_file_error(projection, projection_arg: str = "--projection") -> VqclipError:
    """`--space clip --projection FILE`: the advice names what works for this file (its own space, if it says)."""
    from .models.projection_import import space_from_name
    from .models.registry import _read_metadata

    path = parse_projection_arg(projection, projection_arg).path
    own = _read_metadata(path).get("space") if path.suffix == ".safetensors" else None
    own = own or space_from_name(path.name)
    if own in ("learn", "forget"):
        fix = f"Leave --space out (the file is a {own} projection), or drop {projection_arg} for CLIP's own space."
    else:
        fix = (f"Use --space learn or --space forget with the file, or drop {projection_arg} for CLIP's own "
               "space.")
    return bad_arg("--space", "the clip space is CLIP's own embedding and takes no projection file",
                   f"clip with {projection_arg} {projection}", fix)


def cached_file_error(error: VqclipError, path: str | os.PathLike, what: str, again: str) -> VqclipError:
    """Re-word an error about a file vqclip found in its cache: name the file and say to delete it, not a flag."""
    text = str(error)
    if error.arg and text.startswith(f"{error.arg}: "):
        text = text[len(error.arg) + 2:]
    rule = text.split("; got ", 1)[0].rstrip(".")
    out = VqclipError(f"{what} {path}: {rule}. Delete that file and run again: {again}.")
    out.arg = str(path)
    return out


def orthogonality_error(W: torch.Tensor) -> float:
    """‖I − W Wᵀ‖_F / sqrt(d): 0 for orthonormal rows."""
    d = W.shape[0]
    return float(torch.linalg.matrix_norm(torch.eye(d) - W @ W.T) / math.sqrt(d))
