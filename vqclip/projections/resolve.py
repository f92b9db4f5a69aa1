"""Which space to optimise in, and where its projection comes from: a --projection file, the cache, or the
paper's registered release fetched on first use; and the error that says how to train one when there is none."""

from __future__ import annotations

import os
from pathlib import Path

from ..downloads import download_note
from ..errors import VqclipError, bad_arg, cached_file_error, choices_hint
from ..spaces import SPACES, Space, identity_space, train_command
from .files import load_projection, parse_projection_arg, projection_path, read_metadata, space_from_name
from . import published

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
        cost = self.cost or download_note(self.cache)
        alternative = f"; or {self.alternative}" if self.alternative else ""
        return (f"--space {self.space}: no {self.space} projection for CLIP {self.clip_identity!r} in the cache "
                f"({self.path}); {self.reason}. Train one with: {self.train_command()}  — {cost}{alternative}; "
                f"or pass a file with {self.projection_arg} PATH.")

    def explained(self, cost: str | None = None, alternative: str | None = None) -> "MissingProjection":
        """The same error with what training costs on this machine and another way out (e.g. --auto-train)."""
        return MissingProjection(self.space, self.clip_identity, self.path, self.reason, self.clip_flags,
                                 self.cache, self.projection_arg, cost or self.cost, alternative or self.alternative)


def cached_or_registered(space: str, clip_identity: str, cache: str | os.PathLike | None = None, *,
                         download: bool = True, progress: bool = True, clip_flags: str | None = None,
                         projection_arg: str = "--projection") -> Path:
    """The projection file for (space, CLIP): the one in the cache, else the registered one fetched on first use.

    Raises MissingProjection when there is neither, or when the registered one cannot be had.
    """
    path = projection_path(space, clip_identity, cache)
    if path.is_file():
        return path
    asset = published.registered_projection(clip_identity, space)
    if asset is None:
        known = sorted({a.clip_model for a in published.PROJECTION_ASSETS.values()})
        reason = f"none is registered for this CLIP (the paper's released ones are for {', '.join(known)})"
        raise MissingProjection(space, clip_identity, path, reason, clip_flags, cache, projection_arg)
    try:
        return published.ensure_projection(asset, cache, download=download, progress=progress)
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
    path = parse_projection_arg(projection, projection_arg).path
    own = read_metadata(path).get("space") if path.suffix == ".safetensors" else None
    own = own or space_from_name(path.name)
    if own in ("learn", "forget"):
        fix = f"Leave --space out (the file is a {own} projection), or drop {projection_arg} for CLIP's own space."
    else:
        fix = (f"Use --space learn or --space forget with the file, or drop {projection_arg} for CLIP's own "
               "space.")
    return bad_arg("--space", "the clip space is CLIP's own embedding and takes no projection file",
                   f"clip with {projection_arg} {projection}", fix)
