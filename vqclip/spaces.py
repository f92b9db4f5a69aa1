"""Embedding spaces: `clip` (identity) and learned projections `project(e) = normalize(e @ W.T)` (docs/method.md §2).

The maths only. Projection files (paths, reading, writing, checks, the paper's released ones) are
vqclip.projections, which builds a `Space` from a file."""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .errors import bad_arg, choices_hint

SPACES = ("clip", "learn", "forget")
TEXT_MODES = ("target", "project")  # how a text direction keeps text out: a negative target, or removed

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
        self.register_buffer("text_direction", None)  # (D,) unit vector toward written text, see without_text
        self.text_mode: str | None = None
        self.text_info: dict = {}

    @property
    def dim(self) -> int | None:
        return None if self.W is None else int(self.W.shape[0])

    @property
    def embed_dim(self) -> int | None:
        return None if self.W is None else int(self.W.shape[1])

    def project(self, e: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., d) unit vectors; the identity space only normalises. With a text direction in mode
        "project", e − (e·t)t first: the direction is removed from every embedding (docs/method.md §10)."""
        if self.text_mode == TEXT_MODES[1]:
            t = self.text_direction
            e = e.float() - (e.float() @ t)[..., None] * t  # (..., D)
        if self.W is not None:
            e = e.float() @ self.W.T  # (..., D) @ (D, d)
        return F.normalize(e.float(), dim=-1)

    forward = project

    def without_text(self, direction: torch.Tensor, mode: str, info: Mapping[str, Any] | None = None) -> "Space":
        """This space keeping text out along `direction` (D,): mode "target" keeps it for a negative target
        (`text_target`), mode "project" removes it from every embedding in `project`."""
        if mode not in TEXT_MODES:
            raise bad_arg("--textoff-mode", "unknown way to use the text direction", mode, choices_hint(TEXT_MODES))
        if self.W is not None and direction.numel() != self.embed_dim:
            raise bad_arg("--textoff", f"the direction has {direction.numel()} values, the space takes D = "
                          f"{self.embed_dim}", direction.numel(), "Use a direction computed for this CLIP model.")
        out = Space(self.name, self.W, self.metadata)
        out.text_direction = F.normalize(direction.detach().float().reshape(-1), dim=0).to(
            self.W.device if self.W is not None else direction.device)
        out.text_mode, out.text_info = mode, {"mode": mode, **dict(info or {})}
        return out

    def text_target(self) -> torch.Tensor:
        """(1, d): the text direction as seen in this space, the embedding a "target" mode run pushes away from."""
        return F.normalize((self.text_direction.float() @ self.W.T if self.W is not None else
                            self.text_direction.float())[None], dim=-1)

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
        if self.text_mode:
            out["textoff"] = dict(self.text_info)
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


def orthogonality_error(W: torch.Tensor) -> float:
    """‖I − W Wᵀ‖_F / sqrt(d): 0 for orthonormal rows."""
    d = W.shape[0]
    return float(torch.linalg.matrix_norm(torch.eye(d) - W @ W.T) / math.sqrt(d))
