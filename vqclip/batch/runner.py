"""Run a batch's jobs with models loaded once: skip finished jobs, record failures and go on, stop cleanly on Ctrl-C."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import DISK_ERRNOS, bad_arg, describe_exception, is_disk_error
from ..generation.api import space_of
from ..generation.groups import auto_group_size
from ..io import linked_part
from ..outputs import build_record, write_run
from .plan import BatchSpec, Job, base_space, job_settings
from .store import (MANIFEST_NAME, append_manifest, claim_job, finished_record, job_state, manifest_line,
                    manifest_ok)


# Which BatchSummary counter each job outcome adds to.
OUTCOME_COUNTERS = {"done": "done_before", "recovered": "recovered", "ok": "ok", "failed": "failed",
                    "skipped": "skipped_failed", "busy": "busy"}


@dataclass
class BatchSummary:
    """What one process did with its share of a batch."""

    total: int = 0  # jobs in this share
    done_before: int = 0  # already finished (by an earlier run or another process)
    recovered: int = 0  # finished on disk, manifest line written now
    ok: int = 0
    failed: int = 0
    skipped_failed: int = 0
    busy: int = 0  # claimed by another live worker on the same folder
    interrupted: bool = False
    stopped: str | None = None  # why the batch stopped early (a full disk, a read-only folder), finished jobs kept
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (job id, error)

    @property
    def remaining(self) -> int:
        return (self.total - self.done_before - self.recovered - self.ok - self.failed - self.skipped_failed
                - self.busy)


class BatchHooks:
    """Progress callbacks; the CLI draws its bars with these (the library prints nothing)."""

    def on_job_start(self, job: Job, settings) -> None:
        pass

    def on_step(self, info) -> None:
        pass

    def on_job_end(self, job: Job, outcome: str, line: Mapping[str, Any] | None) -> None:
        """`outcome`: done (finished before), recovered, ok, failed, skipped, busy (another worker has it)."""


def _error_text(e: BaseException) -> str:
    """One line for the manifest and the terminal: torch messages span lines and may carry ANSI colours."""
    return describe_exception(e)


def _free_accelerator_memory(models) -> None:
    """After an out-of-memory error the next job should start from a clean cache."""
    try:
        import torch

        if getattr(models.clip.device, "type", "") == "cuda":
            torch.cuda.empty_cache()
    except Exception:  # never let cleanup hide the job's own error
        pass


def last_failed(folder: Path, ids_fps: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """(job id, fingerprint) pairs whose latest manifest line is a failure."""
    from ..io import read_jsonl

    latest: dict[tuple[str, str], str] = {}
    for line in read_jsonl(folder / MANIFEST_NAME):
        key = (str(line.get("id")), str(line.get("fingerprint")))
        if key in ids_fps:
            latest[key] = str(line.get("status"))
    return {k for k, v in latest.items() if v == "failed"}


def run_batch(jobs: Sequence[Job], spec: BatchSpec, base, models, folder: str | os.PathLike, *,
              hooks: BatchHooks | None = None, generate: Callable | None = None, skip_failed: bool = False,
              line_extra: Mapping[str, Any] | None = None, group_size: int | str = 1) -> BatchSummary:
    """Run `jobs` (this process's share) into the batch folder; `base` is the batch's `Settings` without prompts.

    Up to `group_size` compatible jobs (same size, steps, method, ...: `generation.loop.group_key`) are optimised
    together in one batched latent ("auto": as many as the device's free memory holds, see `auto_group_size`).
    Each job is still claimed, written and recorded on its own, so a killed process loses only its current group.
    `generate(settings, clip, vqgan, space, callback) -> Result` replaces the loop (then jobs run one at a time).
    `models` is only touched when a job has to run, so it may be None when every job is finished.
    """
    hooks = hooks or BatchHooks()
    folder = Path(folder)
    start = time.perf_counter()
    summary = BatchSummary(total=len(jobs))
    ok_lines = manifest_ok(folder)
    fps = {job.id: spec.job_fp(job) for job in jobs}
    failed_before = last_failed(folder, {(j.id, fps[j.id]) for j in jobs}) if skip_failed else set()
    ctx = _Context(spec, base, models, folder, hooks, generate, dict(
        {"host": socket.gethostname(), "pid": os.getpid()}, **(line_extra or {})), fps, ok_lines, failed_before)
    remaining = list(jobs)
    limit: int | None = None
    try:
        while remaining:
            job = remaining.pop(0)
            outcome, line, claim = _prepare(job, ctx)
            if claim is None:
                _count(summary, hooks, job, outcome, line)
                continue
            if limit is None:
                limit = 1 if generate is not None else resolve_group_size(group_size, models, job_settings(
                    base, job.item, job.seed))
            group = [(job, claim)]
            try:
                if limit > 1:
                    group += _companions(job, remaining, limit - 1, ctx, summary)
                outcomes = _run_group(group, ctx)
            finally:
                for _, c in group:
                    c.release()
            for (member, _), (outcome, line) in zip(group, outcomes):
                if outcome == "interrupted":
                    summary.interrupted = True
                    continue
                _count(summary, hooks, member, outcome, line)
            if summary.interrupted:
                break
    except KeyboardInterrupt:
        summary.interrupted = True
    except OSError as e:
        if not is_disk_error(e):
            raise
        # every later write would fail the same way: stop, keeping every finished job (all writes are atomic)
        summary.stopped = f"could not write {e.filename or 'a file'}: {DISK_ERRNOS[e.errno]}"
    summary.seconds = time.perf_counter() - start
    return summary


@dataclass
class _Context:
    spec: BatchSpec
    base: Any
    models: Any
    folder: Path
    hooks: BatchHooks
    generate: Callable | None
    extra: dict
    fps: dict
    ok_lines: Mapping
    failed_before: set
    models_info: dict = field(default_factory=dict)
    keys: dict = field(default_factory=dict)  # job id -> group key (resolving settings reads init images: once)

    def key(self, job: Job):
        from ..generation.loop import group_key

        if job.id not in self.keys:
            try:
                resolved = job_settings(self.base, job.item, job.seed, job.space).resolved(self.models.vqgan.factor)[0]
                self.keys[job.id] = group_key(resolved)
            except Exception:  # noqa: BLE001 - a job whose settings fail runs (and fails) on its own
                self.keys[job.id] = ("alone", job.id)
        return self.keys[job.id]


def _count(summary: BatchSummary, hooks: BatchHooks, job: Job, outcome: str, line) -> None:
    counter = OUTCOME_COUNTERS[outcome]
    setattr(summary, counter, getattr(summary, counter) + 1)
    if outcome == "failed":
        summary.failures.append((job.id, str(line.get("error") if line else "")))
    hooks.on_job_end(job, outcome, line)


def resolve_group_size(group_size: int | str, models, settings) -> int:
    """`group_size` as a number: "auto" asks `auto_group_size` for this device and these settings."""
    if group_size != "auto":
        return max(1, int(group_size))
    return auto_group_size(models.clip.device, settings.size, settings.cutn)


def _prepare(job: Job, ctx: _Context):
    """(outcome, line, None) for a job that needs no run (done, recovered, skipped, busy); (None, None, claim) for
    a job this process has claimed and must run."""
    fp = ctx.fps[job.id]
    state = job_state(ctx.folder, job, fp, ctx.ok_lines)
    if state == "done":
        return "done", None, None
    if state != "recover" and (job.id, fp) in ctx.failed_before:
        return "skipped", None, None
    claim = claim_job(ctx.folder, job.id)
    if claim is None:
        return "busy", None, None  # another live worker on this folder runs it
    record = finished_record(ctx.folder, job, fp)
    if state != "recover" and record is None:
        return None, None, claim  # to run
    try:  # finished before (state recover), or by another worker since this run started
        if record is not None and (job.id, fp) in manifest_ok(ctx.folder):
            return "done", None, None
        # the image and run.json are whole; only the manifest line was lost
        line = manifest_line(job, fp, "ok", record, extra=dict(ctx.extra, recovered=True))
        append_manifest(ctx.folder, line)
        return "recovered", line, None
    finally:
        claim.release()


def _companions(first: Job, remaining: list[Job], want: int, ctx: _Context, summary: BatchSummary):
    """Claim up to `want` later jobs that can share `first`'s group; jobs found finished or busy on the way are
    counted and dropped from `remaining`."""
    key = ctx.key(first)
    found = []
    for job in list(remaining):
        if len(found) == want:
            break
        if ctx.key(job) != key:
            continue
        outcome, line, claim = _prepare(job, ctx)
        remaining.remove(job)
        if claim is None:
            _count(summary, ctx.hooks, job, outcome, line)
        else:
            found.append((job, claim))
    return found


def _run_group(group: list, ctx: _Context, announce: bool = True) -> list[tuple[str, dict | None]]:
    """Run the claimed jobs of one group and write each finished one; (outcome, manifest line) per job.
    `announce`: tell the hooks the jobs start (not again when a failed group's jobs are retried one by one)."""
    from ..generation.loop import run_many

    jobs = [job for job, _ in group]
    settings = [job_settings(ctx.base, job.item, job.seed, job.space) for job in jobs]
    if not ctx.models_info:
        ctx.models_info.update(ctx.models.describe())
    for job, s in zip(jobs, settings):
        if announce:
            ctx.hooks.on_job_start(job, s)
    last_step = [0]

    def on_step(index, info):
        group[index][1].refresh()  # a long job keeps its claim fresh, so other workers never take it over
        if info.step != last_step[0]:  # one progress update per step, from the first job still running
            last_step[0] = info.step
            ctx.hooks.on_step(info)

    try:
        spaces = [space_of(ctx.models, base_space(job.space), ctx.spec.projections.get(base_space(job.space)), s)
                  for job, s in zip(jobs, settings)]
        if ctx.generate is not None:
            results = [ctx.generate(settings[0], ctx.models.clip, ctx.models.vqgan, spaces[0],
                                    lambda info: on_step(0, info))]
        else:
            results = run_many(settings, ctx.models.clip, ctx.models.vqgan, spaces, on_step)
    except KeyboardInterrupt:
        return [("interrupted", None)] * len(jobs)
    except Exception as e:  # a failing group: one at a time if it was more than one job, else record the failure
        _free_accelerator_memory(ctx.models)
        if len(group) > 1:
            return [outcome for member in group for outcome in _run_group([member], ctx, announce=False)]
        job = jobs[0]
        line = manifest_line(job, ctx.fps[job.id], "failed", error=_error_text(e), extra=ctx.extra)
        append_manifest(ctx.folder, line)
        return [("failed", line)]
    return [_write_job(job, result, space, ctx) for job, result, space in zip(jobs, results, spaces)]


def _write_job(job: Job, result, space, ctx: _Context) -> tuple[str, dict | None]:
    if result.status == "interrupted":
        return "interrupted", None  # nothing half-done is written; the job runs again next time
    fp = ctx.fps[job.id]
    record = build_record(result, ctx.models_info, space.describe(), job.item.prompt, {
        "space_name": job.space, "word_type": job.item.word_type,
        "load_seconds": round(ctx.models.load_seconds, 3),
        "batch": {"job": job.id, "item": job.item.id, "fingerprint": fp, "batch_fingerprint": ctx.spec.fingerprint,
                  "source": job.item.source, "group_size": result.group_size}})
    if finished_record(ctx.folder, job, fp) is not None:
        return "done", None  # another process finished it meanwhile: never rewrite a finished image
    linked = linked_part(ctx.folder, job.folder)
    if linked is not None:  # planted while the batch ran (check_batch_dir refuses one found before)
        raise bad_arg("--out", "a job folder of the batch is (or lies under) a symbolic link, and vqclip never writes "
                      "through a link it did not make", str(linked),
                      "Remove the link and run the same command again; what it points to is left alone.")
    write_run(ctx.folder / job.folder, result, record)
    status = "ok" if result.status == "finished" else "failed"
    error = None if status == "ok" else f"{result.status}: {result.message}"
    line = manifest_line(job, fp, status, record, error, ctx.extra)
    append_manifest(ctx.folder, line)
    return status, line

def check_text_methods(models, base, spaces, projections) -> None:
    """Every space entry that keeps text out with the text direction finds it now, before the first image."""
    import dataclasses

    from ..generation.antitext import parse_anti_text, parse_method

    for label in spaces:
        anti_text = parse_anti_text(parse_method(label)[1] + parse_anti_text(base.anti_text))
        if "textoff" in anti_text:
            check_text_direction(models, base.textoff)
        space_of(models, base_space(label), projections.get(base_space(label)),
                 dataclasses.replace(base, anti_text=anti_text))


def check_text_direction(models, textoff: str | None) -> None:
    """Find the text direction with the CLIP flags as the user gave them, so that a missing one is reported with a
    `vqclip train --direction textoff ...` command that runs as printed (a local model's real folder, not a
    placeholder)."""
    from ..projections.direction import resolve_direction

    clip = models.clip
    flags = clip.cli_flags() if hasattr(clip, "cli_flags") else None
    resolve_direction(textoff, clip.identity, clip.embed_dim, getattr(models, "cache_dir", None), clip_flags=flags)
