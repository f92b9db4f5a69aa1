"""A text direction ("textoff"): one unit vector in a CLIP's embedding space pointing from natural images to the
same images with a word written on them, and the files that hold one (docs/method.md §10).

vqclip writes it with `vqclip train --direction textoff` from the same cached five-tuple features as the
projections (`spelling/direction.py`), beside them in the cache: <cache>/projections/<clip>/textoff.safetensors.
pixray's published vectors (`vectors/textoff.json`: {"ViT-B/32": [[...]], ...}, one row per OpenAI CLIP, applied
there as a vector prompt at 0.1×) are read too, for the CLIP they name. Their sign is the other way round: pixray
pulls *toward* its vector (it points away from text), so vqclip negates it to point toward text.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..cache import cache_dir, slug
from ..errors import VqclipError, bad_arg

FORMAT = "vqclip.direction/1"
NAME = "textoff"
# open_clip identity -> the key of OpenAI's CLIP in pixray's vector tables (clip.available_models() names)
PIXRAY_NAMES = {"RN50/openai": "RN50", "RN101/openai": "RN101", "RN50x4/openai": "RN50x4",
                "RN50x16/openai": "RN50x16", "ViT-B-32/openai": "ViT-B/32", "ViT-B-16/openai": "ViT-B/16"}


@dataclass
class TextDirection:
    """A unit vector `vector` (D,) toward written text for the CLIP `clip_model`, and where it came from."""

    vector: torch.Tensor
    clip_model: str
    metadata: dict = field(default_factory=dict)

    def describe(self) -> dict:
        keep = ("path", "source", "sha256", "n_tuples", "features", "pixray_key")
        return {"clip_model": self.clip_model, "embed_dim": int(self.vector.numel()),
                **{k: v for k, v in self.metadata.items() if k in keep}}


def direction_path(clip_identity: str, root: str | os.PathLike | None = None) -> Path:
    """Where `vqclip train --direction textoff` writes, and generation looks up, the text direction of a CLIP."""
    return cache_dir(root) / "projections" / slug(clip_identity) / f"{NAME}.safetensors"


def train_direction_command(clip_identity: str, clip_flags: str | None = None) -> str:
    """The command that writes the direction `direction_path` names. `clip_flags` are the model flags as the user
    gave them (`ClipModel.cli_flags()`), so that a local model's command names its real folder; without them it
    falls back to `train_command`'s form of the identity."""
    from ..spaces import train_command

    return train_command("learn", clip_identity, clip_flags).replace("--space learn", f"--direction {NAME}", 1)


def save_direction(path: str | os.PathLike, vector: torch.Tensor, clip_model: str,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Write a direction and its provenance atomically as .safetensors (tensor `d`, unit norm)."""
    from safetensors.torch import save_file

    from .. import __version__
    from ..io import atomic_path

    vector = _unit(vector.detach().cpu().reshape(-1)).contiguous()
    meta = {"format": FORMAT, "kind": NAME, "clip_model": clip_model, "embed_dim": str(vector.numel()),
            "vqclip_version": __version__}
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v, default=str)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({"d": vector}, str(tmp), metadata=meta)
    return path


TRAIN_SOURCE = f"vqclip train --direction {NAME}"


def load_direction(path: str | os.PathLike, clip_identity: str, embed_dim: int, arg: str = "--textoff",
                   clip_flags: str | None = None) -> TextDirection:
    """A direction for the CLIP in use from a vqclip file or a pixray vector table; another CLIP's is refused."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise bad_arg(arg, "file not found", str(path), f"Write one with "
                      f"`{train_direction_command(clip_identity, clip_flags)}`, or pass pixray's textoff.json.")
    if path.suffix.lower() == ".json":
        vector, meta = _read_pixray(path, clip_identity, arg)
    else:
        vector, meta = _read_own(path, arg)
    trained_for = meta.get("clip_model")
    if trained_for != clip_identity:
        raise bad_arg(arg, f"the text direction was computed for CLIP {trained_for!r}, not for the CLIP in use",
                      clip_identity, f"Pass --clip/--pretrained matching {trained_for!r}, or compute one for this "
                      f"model: {train_direction_command(clip_identity, clip_flags)}")
    return TextDirection(_checked_vector(vector, embed_dim, path, arg), clip_identity, {**meta, "path": str(path)})


def _read_own(path: Path, arg: str) -> tuple[torch.Tensor, dict]:
    """(vector, metadata) of a file `save_direction` wrote."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            vector = f.get_tensor("d") if "d" in f.keys() else None
    except Exception:  # truncated, not safetensors: many error types
        raise bad_arg(arg, "not a readable text-direction file (.safetensors written by `vqclip train --direction "
                      "textoff`, or pixray's .json)", str(path), "Compute it again with `vqclip train --direction "
                      "textoff`.") from None
    if meta.get("format") != FORMAT or vector is None:
        raise bad_arg(arg, f"the file is not a vqclip text direction (format {FORMAT}, tensor d)",
                      f"{path}: format {meta.get('format')!r}", "Pass the file `vqclip train --direction textoff` "
                      "wrote (a learn/forget projection goes to --projection).")
    if all(k in meta for k in ("n_tuples", "held_out", "features")):  # the record `vqclip train` writes
        meta["source"] = TRAIN_SOURCE
    elif not meta.get("source"):  # never claim train made a file that does not carry train's record
        meta["source"] = f"a {FORMAT} file with no record of how it was made (not written by `{TRAIN_SOURCE}`)"
    return vector, meta


def _read_pixray(path: Path, clip_identity: str, arg: str) -> tuple[torch.Tensor, dict]:
    """(vector toward text, metadata) of pixray's vector table for this CLIP: its row for the CLIP, negated."""
    from ..untrusted import read_json

    table = read_json(path, arg, finite=True)
    if not isinstance(table, dict):
        raise bad_arg(arg, "a pixray vector table maps CLIP names to [[numbers]]", str(path),
                      "Pass pixray's vectors/textoff.json as published.")
    key = PIXRAY_NAMES.get(clip_identity)
    if key is None or key not in table:
        raise bad_arg(arg, f"the pixray table holds no vector for CLIP {clip_identity!r}"
                      + (f" (pixray's name: {key})" if key else " (pixray's tables hold OpenAI's CLIPs only)"),
                      f"{path}: {', '.join(sorted(map(str, table)))}",
                      f"Compute one for this CLIP: {train_direction_command(clip_identity)}")
    try:
        row = torch.tensor(table[key], dtype=torch.float64)
        if row.ndim == 2 and row.shape[0] == 1:  # pixray's tables hold one row: [[x1, x2, ...]]
            row = row[0]
        vector = -row
    except (TypeError, ValueError, RuntimeError):
        raise bad_arg(arg, f"pixray's entry {key!r} must be a list of numbers ([[x1, x2, ...]])", str(path),
                      "Pass pixray's vectors/textoff.json as published.") from None
    return vector, {"clip_model": clip_identity, "source": "pixray vector table (negated: pixray's points away "
                    "from text)", "pixray_key": key}


def _unit(vector: torch.Tensor) -> torch.Tensor:
    """`vector / ‖vector‖` computed in float64 (a float32 norm of values near 3e38 overflows to inf, and the vector
    would become zeros), returned as float32."""
    v = vector.double()
    return (v / torch.linalg.vector_norm(v)).float()


def _checked_vector(vector: torch.Tensor, embed_dim: int, path: Path, arg: str) -> torch.Tensor:
    """The vector as a unit (D,) float tensor. Refused: not real floating-point numbers (complex would lose its
    imaginary part, integers are no trained direction), any shape but (D,) (a (2, 16) table is not a vector), NaN
    or infinity, a zero vector; the norm is taken in float64, so huge finite values are still a direction."""
    fix = "Compute it again with `vqclip train --direction textoff`."
    if not vector.is_floating_point():
        raise bad_arg(arg, "the direction must hold real floating-point numbers", f"{path}: "
                      f"{str(vector.dtype).replace('torch.', '')}", fix)
    if vector.ndim != 1:
        raise bad_arg(arg, f"the direction must be one vector of {embed_dim} values (the CLIP embedding size), "
                      "not a table", f"{path}: shape {tuple(vector.shape)}", "Use a direction computed for this "
                      "CLIP model.")
    if vector.numel() != embed_dim:
        raise bad_arg(arg, f"the direction has {vector.numel()} values, the CLIP embedding size is {embed_dim}",
                      str(path), "Use a direction computed for this CLIP model.")
    v = vector.double()
    norm = float(torch.linalg.vector_norm(v)) if bool(torch.isfinite(v).all()) else math.nan
    if not norm > 1e-8:  # NaN, infinity or zero
        raise bad_arg(arg, "the direction must be finite and non-zero", f"{path}: norm {norm:.3g}", fix)
    return (v / norm).float()


def resolve_direction(spec: str | os.PathLike | None, clip_identity: str, embed_dim: int,
                      cache: str | os.PathLike | None = None, arg: str = "--textoff",
                      clip_flags: str | None = None) -> TextDirection:
    """The text direction a run uses: the file `spec`, else the one computed for this CLIP in the cache.

    `clip_flags` (`ClipModel.cli_flags()`) make the "compute one" advice a command that runs as printed."""
    if spec is not None:
        return load_direction(spec, clip_identity, embed_dim, arg, clip_flags)
    path = direction_path(clip_identity, cache)
    command = train_direction_command(clip_identity, clip_flags)
    if cache is not None and "--cache-dir" not in command:
        import shlex

        command += f" --cache-dir {shlex.quote(str(cache))}"
    if not path.is_file():
        error = VqclipError(f"--anti-text textoff: no text direction for CLIP {clip_identity!r} in the cache "
                            f"({path}). Compute one with: {command} (from the same cached features as the "
                            f"projections); or pass a file with {arg} FILE (pixray's textoff.json works for "
                            "OpenAI's CLIPs).")
        error.arg = "--anti-text"
        raise error
    try:
        return load_direction(path, clip_identity, embed_dim, arg, clip_flags)
    except VqclipError as e:
        from ..errors import cached_file_error

        raise cached_file_error(e, path, "the cached text direction", command) from None
