"""The Python entry point: load models once, generate many images."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..io import sha256_file
from ..models.clip import DEFAULT_CLIP, DEFAULT_PRETRAINED, ClipModel, load_clip
from ..errors import VqclipError
from ..projections import MissingProjection, resolve_space
from ..projections.direction import resolve_direction
from ..spaces import Space
from .antitext import DEFAULT_TEXTOFF_MODE, parse_anti_text, parse_method
from .loop import Result, Settings, StepInfo, group_key, run, run_many
from .prompts import parse_image_prompt, parse_noise_prompt, parse_story
from .recipes import recipe_vqgan


SpaceRequest = tuple  # (space name or None, projection file or None, the flag that gave the file)


@dataclass
class Models:
    """CLIP, VQGAN and the spaces already loaded for them; loaded once per process.

    `auto_train`: a learn/forget projection that is neither cached nor registered (or whose registered file cannot
    be fetched) is trained with the default recipe on first use instead of being an error. `say` receives progress
    lines of that training (the CLI prints them to stderr).
    """

    clip: ClipModel
    vqgan: Any
    vqgan_info: dict = field(default_factory=dict)
    cache_dir: str | None = None
    load_seconds: float = 0.0
    auto_train: bool = False
    progress: bool = True
    say: Callable[[str], None] | None = None
    _spaces: dict = field(default_factory=dict)
    _estimates: dict = field(default_factory=dict)

    def space(self, name: str | None, projection: str | None = None, projection_arg: str = "--projection",
              anti_text: Sequence[str] | str = (), textoff: str | None = None,
              textoff_mode: str = DEFAULT_TEXTOFF_MODE) -> Space:
        """The space `name` for this CLIP (from --projection, the cache or the registry); loaded once and reused.

        `name` None: the projection file's space (clip without one). `projection_arg` is the flag that gives
        projection files in the command being run, for hints. With "textoff" in `anti_text` the space holds this
        CLIP's text direction: the file `textoff`, else the cached one; used as `textoff_mode` says.
        """
        if "textoff" in parse_anti_text(anti_text):
            return self._with_textoff(self.space(name, projection, projection_arg), textoff, textoff_mode)
        key = (name, str(projection) if projection else None)
        if key not in self._spaces:
            try:
                sp = self._resolve(name, projection, projection_arg)
            except MissingProjection as missing:
                if not self.auto_train:
                    raise self.explain(missing) from None
                self._train(missing)
                sp = self._resolve(name, projection, projection_arg)
            self._spaces[key] = sp.to(self.clip.device)
        return self._spaces[key]

    def _with_textoff(self, space: Space, textoff: str | None, mode: str) -> Space:
        """`space` keeping text out along this CLIP's text direction; built once per (space, file, mode)."""
        key = ("textoff", id(space), str(textoff) if textoff else None, mode)
        if key not in self._spaces:
            found = resolve_direction(textoff, self.clip.identity, self.clip.embed_dim, self.cache_dir,
                                      clip_flags=self.clip.cli_flags())
            # describe() carries "source": both readers of direction.py always set it
            self._spaces[key] = space.without_text(found.vector.to(self.clip.device), mode, found.describe())
        return self._spaces[key]

    def _resolve(self, name, projection, projection_arg) -> Space:
        return resolve_space(name, self.clip.identity, self.clip.embed_dim, projection, self.cache_dir,
                             clip_flags=self.clip.cli_flags(), projection_arg=projection_arg, progress=self.progress)

    def _train(self, missing: MissingProjection) -> None:
        from ..spelling.pipeline import train_default_projection

        say = self.say or (lambda text: None)
        say(f"training the {missing.space} projection for CLIP {self.clip.identity!r} ({missing.reason}); "
            f"this is `{missing.train_command()}`")
        path = train_default_projection(self.clip, missing.space, self.cache_dir, progress=self.progress, say=say)
        say(f"wrote {path}")

    def explain(self, missing: MissingProjection) -> MissingProjection:
        """The error with what training costs here (measured on this device) and the --auto-train way out."""
        from ..spelling.pipeline import estimate_training
        from ..downloads import download_note

        if missing.space not in self._estimates:
            try:
                self._estimates[missing.space] = estimate_training(self.clip, missing.space).text()
            except (RuntimeError, MemoryError) as e:  # e.g. out of GPU memory while measuring: no estimate
                self._estimates[missing.space] = f"no time estimate ({type(e).__name__} while measuring)"
        cost = f"{download_note(self.cache_dir)}, then takes {self._estimates[missing.space]}"
        return missing.explained(cost, "add --auto-train to train it now and then continue")

    def prepare_spaces(self, requests: Sequence[SpaceRequest]) -> None:
        """Resolve every (space, projection file, flag) once, before any image: fetch or train what is missing,
        and report every projection that is still missing in one error."""
        missing: list[MissingProjection] = []
        for name, projection, arg in requests:
            try:
                self.space(name, projection, arg)
            except MissingProjection as e:
                missing.append(e)
        if len(missing) == 1:
            raise missing[0]
        if missing:
            rest = " ".join(f"The {m.space} projection is missing too: train it with `{m.train_command()}`."
                            for m in missing[1:])
            raise VqclipError(f"{missing[0]} {rest}")

    def describe(self) -> dict:
        return {"clip": self.clip.describe(), "vqgan": dict(self.vqgan_info, **self.vqgan.describe()),
                "device": str(self.clip.device)}


def load_models(clip: str = DEFAULT_CLIP, pretrained: str | None = DEFAULT_PRETRAINED, vqgan: str | None = None,
                vqgan_config: str | None = None, vqgan_checkpoint: str | None = None, device: str = "auto",
                precision: str = "auto", cache_dir: str | None = None, *, spaces: Sequence[SpaceRequest] = (),
                auto_train: bool = False, progress: bool = True,
                say: Callable[[str], None] | None = None) -> Models:
    """Load CLIP (open_clip) and a VQGAN (registry name, or an offline config + checkpoint pair).

    `spaces` are resolved right after CLIP and before the VQGAN, so a missing projection is reported before the
    VQGAN download; see `Models` for `auto_train`.
    """
    from ..models.registry import VQGAN_ASSETS, converted_path, resolve_vqgan, unknown_name_error

    # Check what can be checked cheaply before any download starts.
    if vqgan_checkpoint is None and vqgan and vqgan not in VQGAN_ASSETS and not converted_path(vqgan, cache_dir).is_file():
        raise unknown_name_error(vqgan, cache_dir)
    start = time.perf_counter()
    clip_model = load_clip(clip, pretrained, device=device, precision=precision, cache_dir=cache_dir)
    models = Models(clip_model, None, {}, cache_dir, auto_train=auto_train, progress=progress, say=say)
    models.prepare_spaces(spaces)
    vq = resolve_vqgan(name=vqgan, config=vqgan_config, checkpoint=vqgan_checkpoint, cache_dir=cache_dir,
                       device=clip_model.device)
    info = dict(getattr(vq, "origin", None) or {})
    if vqgan_checkpoint:  # an explicit file is identified by its content, not its path
        info["checkpoint_sha256"] = sha256_file(vqgan_checkpoint)
    models.vqgan, models.vqgan_info, models.load_seconds = vq, info, time.perf_counter() - start
    return models


def generate(prompt: str, *, space: str | None = None, projection: str | None = None, models: Models | None = None,
             image_prompts: list[str] | None = None, callback: Callable[[StepInfo], None] | None = None,
             clip: str = DEFAULT_CLIP, pretrained: str | None = DEFAULT_PRETRAINED, vqgan: str | None = None,
             vqgan_config: str | None = None, vqgan_checkpoint: str | None = None, device: str = "auto",
             precision: str = "auto", cache_dir: str | None = None, auto_train: bool = False, **settings) -> Result:
    """Generate one image for `prompt` ("text:weight:stop | ...") with the CLIP loss in `space`.

    `space` None: the space of `projection`, or clip without one. `space` may also name a way of keeping text out
    (`negative`, `textoff`, `forget+negative`, ...: antitext.py), as may `anti_text=`; `textoff=` is a text
    direction file (default: the one computed for this CLIP) and `textoff_mode=` "target" or "project".

    Keyword settings are those of `Settings` (recipe, size, steps, lr, cutn, cut_pow, seed, ...); `recipe`
    ("vqclip", "paper", "nerdyrodent") gives the defaults, its VQGAN included. Pass `models` to reuse loaded
    models; otherwise they are loaded from the names given (`auto_train`: see `Models`).
    """
    space, settings["anti_text"] = _method(space, settings.get("anti_text"))
    if models is None:
        vqgan = recipe_vqgan(settings.get("recipe"), vqgan, vqgan_checkpoint)
        models = load_models(clip, pretrained, vqgan, vqgan_config, vqgan_checkpoint, device, precision, cache_dir,
                             spaces=[(space, projection, "--projection")], auto_train=auto_train)
    settings = _settings(prompt, image_prompts, settings)
    return run(settings, models.clip, models.vqgan, space_of(models, space, projection, settings), callback)


def space_of(models: Models, space: str | None, projection: str | None, settings: Settings) -> Space:
    """The space a job runs in, holding the text direction when its settings ask for textoff."""
    if "textoff" not in parse_anti_text(settings.anti_text):
        return models.space(space, projection)
    return models.space(space, projection, anti_text=settings.anti_text, textoff=settings.textoff,
                        textoff_mode=settings.textoff_mode)


def _method(space: str | None, anti_text) -> tuple[str | None, tuple[str, ...]]:
    """(space, anti-text parts) of an API `space` that may be a method label (`forget+negative`), with the
    parts of `anti_text=` added."""
    parts = parse_anti_text(anti_text, "anti_text")
    if space is None:
        return None, parts
    space, more = parse_method(space, "space")
    return space, parse_anti_text(more + parts, "anti_text")


def _settings(prompt: str, image_prompts: Sequence[str] | None, settings: dict) -> Settings:
    """Settings from the API's strings: '^' story phases, image prompt specs and noise prompt specs."""
    phases = parse_story(prompt) if prompt else [[]]
    settings = dict(settings)
    settings["noise_prompts"] = [parse_noise_prompt(p) for p in settings.get("noise_prompts", [])]
    return Settings(prompts=phases[0], story=phases[1:],
                    image_prompts=[parse_image_prompt(p) for p in image_prompts or []], **settings)


def generate_many(prompts: Sequence[str], *, spaces: Sequence[str | None] = ("clip",), seeds: Sequence[int] = (0,),
                  projections: dict[str, str] | None = None, models: Models | None = None,
                  callback: Callable[[int, StepInfo], None] | None = None, group_size: int | str = "auto",
                  clip: str = DEFAULT_CLIP, pretrained: str | None = DEFAULT_PRETRAINED, vqgan: str | None = None,
                  vqgan_config: str | None = None, vqgan_checkpoint: str | None = None, device: str = "auto",
                  precision: str = "auto", cache_dir: str | None = None, auto_train: bool = False,
                  **settings) -> list[Result]:
    """One image per (prompt, seed, space), optimised `group_size` at a time in one batched latent.

    Results come in the order prompts × seeds × spaces. `projections` maps a space to a projection file (default:
    the cached or registered one). `group_size` "auto" fills the GPU's free memory (one job at a time on the CPU);
    `callback(index, info)` gets the index of the job in the returned list. Keyword settings are those of
    `Settings`, shared by every job. A space may name a way of keeping text out (`negative`, `forget+textoff`,
    ...; see `generate`).
    """
    from .groups import auto_group_size, parse_group_size

    projections = dict(projections or {})
    methods = {label: _method(label, settings.get("anti_text")) for label in spaces}
    if models is None:
        vqgan = recipe_vqgan(settings.get("recipe"), vqgan, vqgan_checkpoint)
        models = load_models(clip, pretrained, vqgan, vqgan_config, vqgan_checkpoint, device, precision, cache_dir,
                             spaces=[(s, projections.get(s), "--projection") for s, _ in methods.values()],
                             auto_train=auto_train)
    jobs = [(_settings(p, None, dict(settings, seed=seed, anti_text=methods[label][1])), methods[label][0])
            for p in prompts for seed in seeds for label in spaces]
    if not jobs:
        return []
    first = jobs[0][0].resolved(models.vqgan.factor)[0]
    size = parse_group_size(group_size, "group_size") or "auto"
    if size == "auto":
        size = auto_group_size(models.clip.device, first.size, first.cutn)
    results: list[Result | None] = [None] * len(jobs)
    by_key: dict[tuple, list[int]] = {}
    for i, (s, _) in enumerate(jobs):
        by_key.setdefault(group_key(s.resolved(models.vqgan.factor)[0]), []).append(i)
    for members in by_key.values():
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            done = run_many([jobs[i][0] for i in chunk], models.clip, models.vqgan,
                            [space_of(models, jobs[i][1], projections.get(jobs[i][1]), jobs[i][0]) for i in chunk],
                            None if callback is None else (lambda k, info, chunk=chunk: callback(chunk[k], info)))
            for i, result in zip(chunk, done):
                results[i] = result
    return results
