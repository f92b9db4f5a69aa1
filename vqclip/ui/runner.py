"""What the page runs: the form checked like the CLI checks its flags, models loaded once, the spaces generated
together in one batched latent, live state for the page, and ordinary run folders written as `vqclip generate`
writes them. Nothing here imports Gradio, so it is tested without a browser.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import VqclipError, bad_arg, choices_hint
from ..spaces import SPACES


@dataclass(frozen=True)
class ModelChoice:
    """The models a job uses, named as the CLI names them (`vqclip generate --clip ... --vqgan ...`)."""

    clip: str
    pretrained: str | None = None
    vqgan: str | None = None
    vqgan_config: str | None = None
    vqgan_checkpoint: str | None = None
    device: str = "auto"
    precision: str = "auto"
    cache_dir: str | None = None
    auto_train: bool = False


@dataclass
class Form:
    """The values of the page's form, as the browser sent them (untrusted: checked by `check_form`)."""

    prompt: str
    spaces: Sequence[str]
    seed: Any = None
    width: Any = 256
    height: Any = 256
    steps: Any = 100
    method: str | None = None  # None or RECIPE_METHOD: the recipe's
    cutn: Any = 32
    learn_projection: str = ""
    forget_projection: str = ""
    recipe: str = "vqclip"
    anti_text: str = "none"  # also keep text out in every space: negative, textoff, negative+textoff (antitext.py)


RECIPE_METHOD = "(recipe)"  # the method dropdown's "as the recipe has it"
ANTI_TEXT_CHOICES = ("none", "negative", "textoff", "negative+textoff")  # the page's "also keep text out"


def _whole(value: Any, arg: str, low: int, example: str) -> int:
    """A form number as an int: the page sends floats (or None); anything but a whole number >= `low` is refused."""
    if isinstance(value, bool) or value is None or value == "":
        raise bad_arg(arg, f"must be a whole number of at least {low}", value, f"Try {example}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise bad_arg(arg, f"must be a whole number of at least {low}", value, f"Try {example}.") from None
    if not math.isfinite(number) or number != int(number) or number < low:
        raise bad_arg(arg, f"must be a whole number of at least {low}", value, f"Try {example}.")
    return int(number)


@dataclass
class Checked:
    """A form that passed every check: the settings (before the VQGAN snaps the size) and the space requests."""

    settings: Any  # generation.Settings
    prompt: str
    spaces: list[str]
    requests: list[tuple]  # (space, projection file or None, the form field that gave it)


def check_form(form: Form) -> Checked:
    """The CLI's own checks on the page's values: `parse_prompts` (the same prompt syntax) and `Settings.resolved`.

    Raises VqclipError with the one-line message the page shows.
    """
    from ..generation import Settings, parse_prompts

    prompt = (form.prompt or "").strip()
    if not prompt:
        raise bad_arg("prompt", "a text prompt is required", form.prompt, 'Try "a photo of an apple".')
    spaces = [s for s in SPACES if s in (form.spaces or [])]
    unknown = [s for s in form.spaces or [] if s not in SPACES]
    if unknown:
        raise bad_arg("spaces", "unknown embedding space", ", ".join(map(str, unknown)), choices_hint(SPACES))
    if not spaces:
        raise bad_arg("spaces", "pick at least one space to compare", "none", "Tick clip, learn or forget.")
    seed = None if form.seed in (None, "") else _whole(form.seed, "seed", 0, "seed 0")
    size = (_whole(form.width, "width", 1, "width 256"), _whole(form.height, "height", 1, "height 256"))
    method = None if form.method in (None, "", RECIPE_METHOD) else str(form.method)
    settings = Settings(prompts=parse_prompts(prompt), size=size, steps=_whole(form.steps, "steps", 1, "steps 100"),
                        method=method, cutn=_whole(form.cutn, "cutn", 1, "cutn 32"), seed=seed,
                        recipe=str(form.recipe or "vqclip"), anti_text=_anti_text(form.anti_text))
    settings, _ = settings.resolved(1)  # every check that needs no VQGAN; draws the seed once for all spaces
    files = {"learn": (form.learn_projection or "").strip() or None,
             "forget": (form.forget_projection or "").strip() or None}
    requests = [(s, files.get(s), f"{s} projection") for s in spaces]
    return Checked(settings, prompt, spaces, requests)


def _anti_text(value: Any) -> tuple[str, ...]:
    """The page's "also keep text out" choice; anything but its own choices is refused."""
    from ..generation.antitext import parse_anti_text

    if value in (None, ""):
        return ()
    if str(value) not in ANTI_TEXT_CHOICES:
        raise bad_arg("also keep text out", "unknown choice", value, choices_hint(ANTI_TEXT_CHOICES))
    return parse_anti_text(str(value), "also keep text out")


def page_models(defaults: ModelChoice, locked: bool, clip: str | None, pretrained: str | None, vqgan: str | None,
                vqgan_config: str | None, vqgan_checkpoint: str | None) -> ModelChoice:
    """The models the page's fields name (an empty field: the command line's value); `locked`: the command line's,
    whatever the browser sent. Device, precision, cache and --auto-train always come from the command line."""
    if locked:
        return defaults

    def text(value: str | None) -> str | None:
        return (value or "").strip() or None

    return dataclasses.replace(defaults, clip=text(clip) or defaults.clip, pretrained=text(pretrained),
                               vqgan=text(vqgan), vqgan_config=text(vqgan_config),
                               vqgan_checkpoint=text(vqgan_checkpoint))


class ModelCache:
    """One set of loaded models, reloaded only when the page asks for others (loading takes seconds to minutes)."""

    def __init__(self, load: Callable[[ModelChoice, list], Any] | None = None):
        self._load = load or load_models_for
        self._key: ModelChoice | None = None
        self._models = None
        self.lock = threading.Lock()

    def get(self, choice: ModelChoice, requests: list) -> Any:
        if self._key != choice or self._models is None:
            self._models = None  # drop the old models before loading the new ones
            self._models = self._load(choice, requests)
            self._key = choice
        else:
            self._models.prepare_spaces(requests)
        return self._models


def load_models_for(choice: ModelChoice, requests: list):
    """`generation.load_models` with the CLI's arguments, as `vqclip generate` calls it."""
    from ..generation import load_models

    return load_models(choice.clip, choice.pretrained, choice.vqgan, choice.vqgan_config, choice.vqgan_checkpoint,
                       choice.device, choice.precision, choice.cache_dir, spaces=requests,
                       auto_train=choice.auto_train, progress=False)


def run_spaces(settings: Sequence, models, spaces: Sequence, callback: Callable[[int, Any], None]) -> list:
    """Generate one image per space, all together in one batched latent (`loop.run_many`): the same prompt, seed
    and settings, the loss in each job's own space. `callback(i, info)` every report step; raising
    KeyboardInterrupt in it stops every job, each keeping its current image."""
    from ..generation.loop import run_many

    return list(run_many(list(settings), models.clip, models.vqgan, list(spaces), callback))


@dataclass
class Lane:
    """The live state of one space of a job."""

    space: str
    state: str = "waiting"  # waiting | running | finished | interrupted | nonfinite | not started | failed
    step: int = 0
    steps: int = 0
    image: Any = None  # PIL image of the latest reported step
    losses: list[float] = field(default_factory=list)  # at the reported steps (every step on the CPU)
    loss_steps: list[int] = field(default_factory=list)
    folder: Path | None = None
    message: str | None = None
    version: int = 0  # bumped on each new image


class Job:
    """One run of the page's Start button: spaces generated in a background thread; the page polls `snapshot`."""

    def __init__(self, checked: Checked, choice: ModelChoice, outputs_root: str | Path, cache: ModelCache,
                 report_seconds: float = 0.2):
        self.checked = checked
        self.choice = choice
        self.outputs_root = Path(outputs_root)
        self.cache = cache
        self.report_seconds = report_seconds
        self.lanes = [Lane(s, steps=checked.settings.steps) for s in checked.spaces]
        self.stop = threading.Event()
        self.error: str | None = None
        self.notices: list[str] = []
        self.phase = "loading models"
        self._lock = threading.Lock()
        self._last_image: dict[int, float] = {}
        self.thread = threading.Thread(target=self._main, name="vqclip-ui-job", daemon=True)

    def start(self) -> "Job":
        self.thread.start()
        return self

    @property
    def done(self) -> bool:
        return not self.thread.is_alive() and self.thread.ident is not None

    def request_stop(self) -> None:
        self.stop.set()

    def snapshot(self) -> tuple[str, list[Lane]]:
        """(phase, copies of the lanes) for the page to draw."""
        with self._lock:
            return self.phase, [dataclasses.replace(lane, losses=list(lane.losses), loss_steps=list(lane.loss_steps))
                                for lane in self.lanes]

    def _on_step(self, index: int, info) -> None:
        from ..generation.loop import to_pil

        if self.stop.is_set():
            raise KeyboardInterrupt  # the loop's own clean stop: it keeps the current image
        lane = self.lanes[index]
        now = time.monotonic()
        fresh = now - self._last_image.get(index, -math.inf) >= self.report_seconds or info.step == info.steps
        image = to_pil(info.image) if fresh else None  # converting every step would slow small runs down
        with self._lock:
            lane.state, lane.step, lane.steps = "running", info.step, info.steps
            lane.losses.append(float(info.loss))
            lane.loss_steps.append(int(info.step))
            if image is not None:
                lane.image, lane.version = image, lane.version + 1
                self._last_image[index] = now

    def _main(self) -> None:
        try:
            self._run()
        except VqclipError as e:
            self.error = str(e)
        except Exception as e:  # noqa: BLE001 - the page shows one line, like the CLI, never a traceback
            from ..errors import describe_exception

            self.error = f"unexpected error: {describe_exception(e)}"
        finally:
            with self._lock:
                self.phase = "stopped" if self.stop.is_set() else "failed" if self.error else "finished"
                for lane in self.lanes:
                    if lane.state in ("waiting", "running"):
                        lane.state = "not started" if lane.step == 0 else "failed"

    def _run(self) -> None:
        from ..generation.api import space_of
        from ..generation.memory import check_memory
        from ..outputs import build_record, check_run_dir, default_run_dir, prepare_run_dir, write_run

        size, cutn = self.checked.settings.size, self.checked.settings.cutn
        check_memory([(size, cutn * len(self.lanes), "")], self.choice.device)  # the spaces run side by side
        with self.cache.lock:
            models = self.cache.get(self.choice, self.checked.requests)
        spaces = [space_of(models, s, f, self.checked.settings) for s, f, _ in self.checked.requests]
        settings, self.notices = self.checked.settings.resolved(models.vqgan.factor)
        job_dir = unique_dir(default_run_dir(self.checked.prompt, self.outputs_root))
        folders = [job_dir / space.name for space in spaces]
        for folder in folders:
            check_run_dir(folder)  # writable, and nothing of anyone else's is in the way
        if self.stop.is_set():  # stopped while the models loaded: nothing to keep
            return
        with self._lock:
            self.phase = "running"
        results = run_spaces([settings] * len(spaces), models, spaces, self._on_step)
        for lane, space, folder, result in zip(self.lanes, spaces, folders, results):
            record = build_record(result, models.describe(), space.describe(), self.checked.prompt,
                                  {"space_name": space.name, "load_seconds": round(models.load_seconds, 3),
                                   "frontend": "vqclip ui"})
            prepare_run_dir(folder)
            write_run(folder, result, record)
            with self._lock:
                lane.state, lane.message, lane.folder = result.status, result.message, folder
                lane.image, lane.version = result.image, lane.version + 1
                lane.step = result.steps_done


def unique_dir(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`, ... when a folder of that name exists (two starts in the same second)."""
    candidate, n = Path(path), 1
    while candidate.exists():
        n += 1
        candidate = Path(f"{path}-{n}")
    return candidate
