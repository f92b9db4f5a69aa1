"""The Python entry point: load models once, generate many images."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..io import sha256_file
from ..models.clip import DEFAULT_CLIP, DEFAULT_PRETRAINED, ClipModel, load_clip
from ..spaces import Space, resolve_space
from .loop import Result, Settings, StepInfo, run
from .prompts import parse_image_prompt, parse_prompts


@dataclass
class Models:
    """CLIP, VQGAN and the spaces already loaded for them; loaded once per process."""

    clip: ClipModel
    vqgan: Any
    vqgan_info: dict = field(default_factory=dict)
    cache_dir: str | None = None
    load_seconds: float = 0.0
    _spaces: dict = field(default_factory=dict)

    def space(self, name: str | None, projection: str | None = None, projection_arg: str = "--projection") -> Space:
        """The space `name` for this CLIP (from --projection or the cache); loaded once and reused.

        `name` None: the projection file's space (clip without one). `projection_arg` is the flag that gives
        projection files in the command being run, for hints.
        """
        key = (name, str(projection) if projection else None)
        if key not in self._spaces:
            sp = resolve_space(name, self.clip.identity, self.clip.embed_dim, projection, self.cache_dir,
                               clip_flags=self.clip.cli_flags(), projection_arg=projection_arg)
            self._spaces[key] = sp.to(self.clip.device)
        return self._spaces[key]

    def describe(self) -> dict:
        return {"clip": self.clip.describe(), "vqgan": dict(self.vqgan_info, **self.vqgan.describe()),
                "device": str(self.clip.device)}


def load_models(clip: str = DEFAULT_CLIP, pretrained: str | None = DEFAULT_PRETRAINED, vqgan: str | None = None,
                vqgan_config: str | None = None, vqgan_checkpoint: str | None = None, device: str = "auto",
                precision: str = "auto", cache_dir: str | None = None) -> Models:
    """Load CLIP (open_clip) and a VQGAN (registry name, or an offline config + checkpoint pair)."""
    from ..models.registry import VQGAN_ASSETS, converted_path, resolve_vqgan, unknown_name_error

    # Check what can be checked cheaply before any download starts.
    if vqgan_checkpoint is None and vqgan and vqgan not in VQGAN_ASSETS and not converted_path(vqgan, cache_dir).is_file():
        raise unknown_name_error(vqgan, cache_dir)
    start = time.perf_counter()
    clip_model = load_clip(clip, pretrained, device=device, precision=precision, cache_dir=cache_dir)
    vq = resolve_vqgan(name=vqgan, config=vqgan_config, checkpoint=vqgan_checkpoint, cache_dir=cache_dir,
                       device=clip_model.device)
    info = dict(getattr(vq, "origin", None) or {})
    if vqgan_checkpoint:  # an explicit file is identified by its content, not its path
        info["checkpoint_sha256"] = sha256_file(vqgan_checkpoint)
    return Models(clip_model, vq, info, cache_dir, time.perf_counter() - start)


def generate(prompt: str, *, space: str | None = None, projection: str | None = None, models: Models | None = None,
             image_prompts: list[str] | None = None, callback: Callable[[StepInfo], None] | None = None,
             clip: str = DEFAULT_CLIP, pretrained: str | None = DEFAULT_PRETRAINED, vqgan: str | None = None,
             vqgan_config: str | None = None, vqgan_checkpoint: str | None = None, device: str = "auto",
             precision: str = "auto", cache_dir: str | None = None, **settings) -> Result:
    """Generate one image for `prompt` ("text:weight:stop | ...") with the CLIP loss in `space`.

    `space` None: the space of `projection`, or clip without one.

    Keyword settings are those of `Settings` (size, steps, lr, cutn, cut_pow, seed, ...). Pass `models` to reuse
    loaded models; otherwise they are loaded from the names given.
    """
    if models is None:
        models = load_models(clip, pretrained, vqgan, vqgan_config, vqgan_checkpoint, device, precision, cache_dir)
    cfg = Settings(prompts=parse_prompts(prompt),
                   image_prompts=[parse_image_prompt(p) for p in image_prompts or []], **settings)
    return run(cfg, models.clip, models.vqgan, models.space(space, projection), callback)
