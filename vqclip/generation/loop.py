"""The optimisation loop of VQGAN+CLIP, with the CLIP loss computed in a chosen embedding space (docs/method.md §7).

One loop optimises a group of jobs at once (`run_many`): their latents are stacked, one VQGAN decode and one CLIP
call per step serve them all, and each job keeps its own seeded cutouts, targets, projection and (Adam being
elementwise) optimiser state. `run` is the group of one. Nothing in a step waits for the device: losses stay on it
and are read back every `report_every` steps, and a job whose loss turns non-finite keeps, on the device, the
latent of its last finite step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import VqclipError
from .cutouts import MakeCutouts
from .images import to_pil
from .latents import Latent, codebook_latent, initial_latent, initial_logits, zquant_latent
from .ops import LOSSES, clamp_with_grad, prompt_loss, vector_quantize
from .settings import GROUP_FIELDS, METHODS, OPTIMIZERS, Settings, group_key
from .targets import active_targets, encode_targets

__all__ = ["METHODS", "OPTIMIZERS", "Result", "Settings", "StepInfo", "group_key", "run", "run_many"]


@dataclass
class StepInfo:
    """What the callback sees every `report_every` steps; `image` is the decoded (1, 3, H, W) tensor of that step."""

    step: int
    steps: int
    loss: float
    losses: list[float]
    image: torch.Tensor
    elapsed: float


@dataclass
class Result:
    """A finished (or stopped) generation."""

    image: Image.Image
    latent: torch.Tensor
    loss: float
    losses: dict[str, float]
    history: list[float]
    settings: Settings
    steps_done: int
    status: str  # finished | interrupted | nonfinite
    message: str | None
    seconds: float
    best_step: int | None = None  # with save_best: the (1-based) step whose image was kept
    group_size: int = 1  # jobs optimised together with this one (seconds are the group's)

    @property
    def seed(self) -> int:
        return int(self.settings.seed)








def nonfinite_message(value: float, step: int, lr: float) -> str:
    """What happened when the loss of (0-based) `step` is NaN or inf, and what to do: true for the first step too."""
    if step == 0:  # nothing has been updated yet: the learning rate cannot be the cause
        return (f"the loss was {value} at the first step, before any update; the image is the unoptimised start. "
                "The learning rate is not the cause: check the models' weights, the projection and the prompts.")
    return (f"the loss became {value} at step {step + 1}; stopped and kept the image of step {step}, the last with a "
            f"finite loss. Lower --lr (now {lr}) or check the projection and prompts.")




def decoder_memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on the CPU, where oneDNN's convolutions run the decoder's forward and backward about 20 %
    faster at 256² in that layout (benchmarks/generate_step.py); the default layout elsewhere (not measured)."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def default_report_every(device: torch.device) -> int:
    """How often losses are read back: every step on the CPU (reading costs nothing there), every 10 on a GPU."""
    return 1 if device.type == "cpu" else 10


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(G,) mask shaped to broadcast over a (G, ...) tensor."""
    return mask.view(-1, *([1] * (like.ndim - 1)))


def run(settings: Settings, clip, vqgan, space, callback: Callable[[StepInfo], None] | None = None, *,
        report_every: int | None = None, start: torch.Tensor | None = None, step_offset: int = 0) -> Result:
    """Optimise a VQGAN latent so that CLIP cutouts of its image match the prompts in `space`.

    `callback(StepInfo)` runs every `report_every` steps (default: every step on the CPU, every 10 on a GPU);
    raising KeyboardInterrupt in it stops the run like Ctrl-C (status interrupted, the image kept). `start`: a
    (1, 3, H, W) image in [0, 1] to begin from instead of --init-image or random codes. `step_offset`: the steps
    run before this one in a longer sequence (animation frames), so story phases continue where they were.
    """
    wrapped = None if callback is None else (lambda index, info: callback(info))
    return run_many([settings], clip, vqgan, [space], wrapped, report_every=report_every,
                    starts=None if start is None else [start], step_offset=step_offset)[0]


def make_cutout_maker(settings: Settings, cut_size: tuple[int, int]):
    """The recipe's cutouts: vqclip's batched crops, the notebook's Lanczos crops, or nerdyrodent's pooled ones."""
    kind = settings.recipe_spec.cutouts
    if kind == "crowson":
        from .anchor_cutouts import CrowsonCutouts

        return CrowsonCutouts(cut_size, settings.cutn, settings.cut_pow)
    if kind == "pooled":
        from .anchor_cutouts import PooledCutouts

        return PooledCutouts(cut_size, settings.cutn, settings.augment, settings.noise)
    return MakeCutouts(cut_size, settings.cutn, settings.cut_pow, settings.augment, settings.noise)


def _derived_generators(parents: Sequence[torch.Generator], device) -> list[torch.Generator]:
    """One generator on `device` per job, seeded by a draw from that job's `parents` generator."""
    return [torch.Generator(device).manual_seed(int(torch.randint(2**62, (1,), generator=g))) for g in parents]


class _Group(NamedTuple):
    """What `run_many` sets up once for a group: jobs, latents and their parametrisation, cutouts, targets."""

    jobs: list[Settings]
    spaces: list
    latent: Latent
    z0: torch.Tensor  # (G, C, h, w) the start, for the init-weight term
    optimizer: torch.optim.Optimizer
    make_cutouts: Callable
    cut_gens: list[torch.Generator]
    targets: list
    memory_format: torch.memory_format


def _notebook_generators(jobs: list[Settings], device) -> tuple[list[torch.Generator], list[torch.Generator]]:
    """Per job, the notebook's two streams after `torch.manual_seed(seed)`: the host's (its cutouts and image-prompt
    cutouts) and the device's (its start logits and token samples); on the CPU they are one and the same stream."""
    host = [torch.Generator().manual_seed(s.seed) for s in jobs]
    if torch.device(device).type == "cpu":
        return host, host
    return host, [torch.Generator(device).manual_seed(s.seed) for s in jobs]


def _setup_group(jobs: list[Settings], clip, vqgan, spaces, starts) -> _Group:
    """Seed each job, make its start latent (or logits), generators, cutouts and targets, and the optimiser.

    Streams: recipe `derived` gives each job an init generator seeded with its seed (start codes or logits) and
    derives from it, in this order, the step generator on the device (token samples, vqclip's cutouts), the
    cutout generator of an anchor recipe (CPU) and the image-prompt generator. Recipe `notebook` (paper) draws as
    Crowson's notebook does after `torch.manual_seed(seed)`: logits and samples from the device's stream, cutouts
    and image-prompt cutouts from the host's, continuing from one to the next (`_notebook_generators`)."""
    first, device = jobs[0], clip.device
    recipe = first.recipe_spec
    torch.manual_seed(first.seed)  # anything random outside our generators (none expected) is seeded too
    notebook = recipe.streams == "notebook"
    if notebook:
        init_gens, step_gens = _notebook_generators(jobs, device)
    else:
        init_gens = [torch.Generator().manual_seed(s.seed) for s in jobs]
    codebook = vqgan.codebook.detach()
    starts = list(starts) if starts is not None else [None] * len(jobs)
    if first.method == "zquant":
        z0 = torch.cat([initial_latent(s, vqgan, g, st) for s, g, st in zip(jobs, init_gens, starts)])
    else:
        start_gens = step_gens if notebook else init_gens
        logits0 = torch.cat([initial_logits(s, vqgan, g, st) for s, g, st in zip(jobs, start_gens, starts)])
    if not notebook:
        # Each job's step randomness (cutouts, noise, codebook samples) comes from a generator on the device, seeded
        # from its own seed, so no random number crosses between host and device during the run.
        step_gens = _derived_generators(init_gens, device)
    if first.method == "zquant":
        latent = zquant_latent(z0, codebook)
    else:
        latent = codebook_latent(logits0, codebook, step_gens, recipe.codebook_sample)
        z0 = latent.anchor().detach()
    extra = {} if recipe.weight_decay is None else {"weight_decay": recipe.weight_decay}
    optimizer = OPTIMIZERS[first.optimizer](latent.params, lr=first.lr, **extra)
    make_cutouts = make_cutout_maker(first, clip.input_size)
    gen_device = getattr(make_cutouts, "generator_device", None)
    if notebook:
        cut_gens = prompt_gens = init_gens if gen_device == "cpu" else step_gens
    else:
        cut_gens = step_gens if gen_device is None else _derived_generators(init_gens, gen_device)
        prompt_gens = [torch.Generator(gen_device or device).manual_seed(
            int(torch.randint(2**62, (1,), generator=g))) for g in init_gens]
    targets = [encode_targets(s, clip, space, make_cutouts, g) for s, space, g in zip(jobs, spaces, prompt_gens)]
    return _Group(jobs, spaces, latent, z0, optimizer, make_cutouts, cut_gens, targets,
                  decoder_memory_format(device))


def _job_loss(group: _Group, i: int, mine: torch.Tensor, anchor, step: int) -> tuple[torch.Tensor, list, list]:
    """Job i's loss at (0-based, whole-sequence) `step` from its projected cutout embeddings: its active prompts
    and the init-weight term as its recipe has it; also the active targets."""
    s = group.jobs[i]
    recipe = s.recipe_spec
    active = active_targets(*group.targets[i], s.change_every, step, recipe.story_keeps_prompts)
    terms = [prompt_loss(mine, t.embeds, t.prompt.weight, t.prompt.stop, LOSSES[s.loss]) for t in active]
    total = torch.stack(terms).sum()
    if s.init_weight and recipe.init_weight == "decay":  # nerdyrodent: z pulled to 0 with weight w / (2i + 1)
        total = total + anchor[i:i + 1].pow(2).mean() * (s.init_weight / (2 * step + 1)) / 2
    elif s.init_weight:
        total = total + F.mse_loss(anchor[i:i + 1], group.z0[i:i + 1]) * s.init_weight / 2
    return total, terms, active


def run_many(settings_list: Sequence[Settings], clip, vqgan, spaces: Sequence, callback:
             Callable[[int, StepInfo], None] | None = None, *, report_every: int | None = None,
             starts: Sequence[torch.Tensor | None] | None = None, step_offset: int = 0) -> list[Result]:
    """Optimise a group of jobs together: job i has `settings_list[i]` and the loss in `spaces[i]`.

    The jobs must share the settings in GROUP_FIELDS (see `group_key`); prompts, spaces, seeds, losses, init images
    and weights may differ. Job i's random numbers come from its own seed, so its image does not depend on which
    jobs it shares the group with beyond float rounding in batched kernels (README, Speed). `callback(i, info)`
    runs every `report_every` steps for each job still running; raising KeyboardInterrupt in it stops every job.
    """
    jobs = _check_group(settings_list, spaces, vqgan.factor)
    device = clip.device
    report_every = max(1, int(report_every or default_report_every(device)))
    vqgan = vqgan.to(device)
    vqgan.to(memory_format=decoder_memory_format(device))  # idempotent; the values are the same, only the layout
    group = _setup_group(jobs, clip, vqgan, [space.to(device) for space in spaces], starts)
    track = _Tracker(jobs, group.latent, device)
    steps, status = jobs[0].steps, "finished"
    try:
        for step in range(steps):
            image, losses = _step(group, clip, vqgan, track, step, step_offset)
            track.record(losses, step)
            losses.sum().backward()
            group.optimizer.step()
            group.latent.after_step()
            track.completed = step + 1
            if track.completed % report_every == 0 or track.completed == steps:
                if not track.read_back():
                    break
                if callback is not None:
                    track.report(callback, image, step)
    except KeyboardInterrupt:
        status = "interrupted"
    track.seconds = time.perf_counter() - track.start_time
    track.read_back()  # note jobs that turned non-finite since the last read-back
    return _results(jobs, group.latent, vqgan, track, status)


def _check_group(settings_list, spaces, factor: int) -> list[Settings]:
    """The resolved settings of a group's jobs, which must share GROUP_FIELDS, one space each."""
    if len(settings_list) != len(spaces) or not settings_list:
        raise ValueError(f"run_many needs one space per job; got {len(settings_list)} settings, {len(spaces)} spaces")
    jobs = [s.resolved(factor)[0] for s in settings_list]
    if len({group_key(s) for s in jobs}) > 1:
        differ = [name for name in GROUP_FIELDS if len({repr(getattr(s, name)) for s in jobs}) > 1]
        raise VqclipError(f"jobs optimised together must share {', '.join(GROUP_FIELDS)}; these differ: "
                          f"{', '.join(differ)}. Run them in separate groups (vqclip batch groups them for you).")
    return jobs


def _step(group: _Group, clip, vqgan, track: "_Tracker", step: int, step_offset: int):
    """One forward pass for the whole group: decode, cutouts, one CLIP call, each job's loss in its space.
    Returns the decoded (G, 3, H, W) images and the (G,) losses."""
    group.optimizer.zero_grad(set_to_none=True)
    z_q = group.latent.quantized().contiguous(memory_format=group.memory_format)
    track.z_q = z_q
    image = clamp_with_grad(vqgan.decode(z_q), 0, 1)  # (G, 3, H, W)
    embeds = clip.encode_image(group.make_cutouts(image, group.cut_gens))  # (G * cutn, D)
    anchor = group.latent.anchor() if any(s.init_weight for s in group.jobs) else None
    cutn, totals = group.jobs[0].cutn, []
    for i, space in enumerate(group.spaces):
        mine = space.project(embeds[i * cutn:(i + 1) * cutn])
        total, track.last_terms[i], active = _job_loss(group, i, mine, anchor, step + step_offset)
        track.last_labels[i] = [t.label for t in active]
        totals.append(total)
    return image, torch.stack(totals)


class _Tracker:
    """What a group's run keeps on the device between read-backs: every loss, which jobs are still finite and
    their last finite parameters, the best step's quantized latent; and, on the host, what was read back."""

    def __init__(self, jobs: list[Settings], latent: Latent, device: torch.device):
        count, self.jobs, self.latent = len(jobs), jobs, latent
        self.history = torch.full((count, max(jobs[0].steps, 1)), float("nan"), device=device)
        self.alive = torch.ones(count, dtype=torch.bool, device=device)  # every loss so far finite
        self.good = [p.detach().clone() for p in latent.params]  # each job's parameters at its last finite step
        self.keep_best = any(s.save_best for s in jobs)
        self.best: torch.Tensor | None = None  # with save_best: each job's quantized latent of its best step
        self.best_loss = torch.full((count,), float("inf"), device=device)
        self.best_step = torch.zeros(count, dtype=torch.long, device=device)
        self.running = list(range(count))  # jobs not yet found non-finite (host view, updated at each read-back)
        self.stopped_at: dict[int, tuple[int, float]] = {}  # job -> (0-based first non-finite step, value)
        self.last_terms: list[list[torch.Tensor]] = [[] for _ in jobs]
        self.last_labels: list[list[str]] = [[] for _ in jobs]
        self.z_q: torch.Tensor | None = None
        self.completed, self.seconds, self.start_time = 0, 0.0, time.perf_counter()

    @torch.no_grad()
    def record(self, losses: torch.Tensor, step: int) -> None:
        """Keep a step's losses, each finite job's parameters and, with save_best, the best quantized latent: the
        latent whose decode was scored (under codebook sampling, that step's sample)."""
        value = losses.detach()
        self.alive &= torch.isfinite(value)
        self.history[:, step] = value
        for p, g in zip(self.latent.params, self.good):
            g.copy_(torch.where(_rows(self.alive, p), p, g))
        if self.keep_best:
            z_q, better = self.z_q.detach(), self.alive & (value < self.best_loss)
            self.best = z_q.clone() if self.best is None else torch.where(_rows(better, z_q), z_q, self.best)
            self.best_loss.copy_(torch.where(better, value, self.best_loss))
            self.best_step.copy_(torch.where(better, torch.full_like(self.best_step, step + 1), self.best_step))

    def read_back(self) -> list[int]:
        """Read the losses (one host-device synchronisation), note each job whose loss turned non-finite, and
        return the jobs still running."""
        ok = self.alive.tolist()
        for i in [i for i in self.running if not ok[i]]:
            row = self.history[i, :self.completed].tolist()
            first_bad = next(k for k, v in enumerate(row) if not math.isfinite(v))
            self.stopped_at[i] = (first_bad, row[first_bad])
        self.running = [i for i in self.running if ok[i]]
        return self.running

    def report(self, callback: Callable[[int, StepInfo], None], image: torch.Tensor, step: int) -> None:
        elapsed = time.perf_counter() - self.start_time
        for i in self.running:
            callback(i, StepInfo(self.completed, self.jobs[i].steps, float(self.history[i, step]),
                                 torch.stack(self.last_terms[i]).detach().tolist(), image[i:i + 1].detach(), elapsed))


def _final_latents(jobs, latent: Latent, vqgan, track: _Tracker) -> tuple[torch.Tensor, list[int | None]]:
    """(G, C, h, w) quantized latents to keep (the last, the best with save_best, the last finite for a job that
    turned non-finite) and each job's kept best step; the optimiser's parameters are left as they were."""
    codebook, best_steps = vqgan.codebook.detach(), track.best_step.tolist()
    kept = [best_steps[i] if s.save_best and best_steps[i] > 0 and i not in track.stopped_at else None
            for i, s in enumerate(jobs)]
    with torch.no_grad():
        params = [p.detach().clone() for p in latent.params]
        dead = torch.tensor([i in track.stopped_at for i in range(len(jobs))], device=params[0].device)
        for p, g in zip(latent.params, track.good):
            p.copy_(torch.where(_rows(dead, p), g, p))
        z_final = vector_quantize(latent.z().detach().movedim(1, 3), codebook).movedim(3, 1)
        if track.best is not None:
            use_best = torch.tensor([k is not None for k in kept], device=z_final.device)
            z_final = torch.where(_rows(use_best, z_final), track.best, z_final)
        for p, saved in zip(latent.params, params):
            p.copy_(saved)
    return z_final, kept


def _results(jobs, latent: Latent, vqgan, track: _Tracker, status: str) -> list[Result]:
    """Decode each job's kept latent and build its Result."""
    z_final, kept = _final_latents(jobs, latent, vqgan, track)
    with torch.no_grad():
        finals = vqgan.decode(z_final).clamp(0, 1)
    rows = track.history[:, :track.completed].cpu().tolist()
    results = []
    for i, s in enumerate(jobs):
        done = track.stopped_at[i][0] if i in track.stopped_at else track.completed
        hist = rows[i][:done]
        job_status, message = status, None
        if i in track.stopped_at:
            job_status = "nonfinite"
            message = nonfinite_message(track.stopped_at[i][1], track.stopped_at[i][0], s.lr)
        elif status == "interrupted":
            message = f"interrupted after {done} of {s.steps} steps"
        terms = track.last_terms[i]
        terms = [] if i in track.stopped_at or not terms else torch.stack(terms).detach().tolist()
        loss = hist[kept[i] - 1] if kept[i] else (hist[-1] if hist else float("nan"))
        results.append(Result(image=to_pil(finals[i:i + 1]), latent=z_final[i:i + 1].cpu(), loss=loss,
                              losses=dict(zip(track.last_labels[i], terms)), history=hist, settings=s,
                              steps_done=done, status=job_status, message=message, seconds=track.seconds,
                              best_step=kept[i], group_size=len(jobs)))
    return results
