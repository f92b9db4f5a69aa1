"""Run a batch's jobs with models loaded once: skip finished jobs, record failures and go on, stop cleanly on Ctrl-C."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import DISK_ERRNOS, describe_exception, is_disk_error
from ..outputs import build_record, write_run
from .plan import BatchSpec, Job, job_settings
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
              line_extra: Mapping[str, Any] | None = None) -> BatchSummary:
    """Run `jobs` (this process's share) into the batch folder; `base` is the batch's `Settings` without prompts.

    `generate(settings, clip, vqgan, space, callback) -> Result` defaults to `vqclip.generation.run`. `models` is
    only touched when a job has to run, so it may be None when every job is finished.
    """
    from ..generation import run

    generate = generate or run
    hooks = hooks or BatchHooks()
    folder = Path(folder)
    start = time.perf_counter()
    summary = BatchSummary(total=len(jobs))
    ok_lines = manifest_ok(folder)
    fps = {job.id: spec.job_fp(job) for job in jobs}
    failed_before = last_failed(folder, {(j.id, fps[j.id]) for j in jobs}) if skip_failed else set()
    models_info: dict = {}
    extra = {"host": socket.gethostname(), "pid": os.getpid(), **(line_extra or {})}
    for job in jobs:
        fp = fps[job.id]
        try:
            outcome, line = _one_job(job, fp, spec, base, models, models_info, folder, ok_lines, failed_before,
                                     generate, hooks, extra)
        except KeyboardInterrupt:
            outcome, line = "interrupted", None
        except OSError as e:
            if not is_disk_error(e):
                raise
            # every later write would fail the same way: stop, keeping every finished job (all writes are atomic)
            summary.stopped = (f"could not write {e.filename or 'a file'} for job {job.id}: "
                               f"{DISK_ERRNOS[e.errno]}")
            break
        if outcome == "interrupted":
            summary.interrupted = True
            break
        counter = OUTCOME_COUNTERS[outcome]
        setattr(summary, counter, getattr(summary, counter) + 1)
        if outcome == "failed":
            summary.failures.append((job.id, str(line.get("error") if line else "")))
        hooks.on_job_end(job, outcome, line)
    summary.seconds = time.perf_counter() - start
    return summary


def _one_job(job: Job, fp: str, spec: BatchSpec, base, models, models_info: dict, folder: Path,
             ok_lines: Mapping, failed_before: set, generate: Callable, hooks: BatchHooks,
             extra: Mapping[str, Any]) -> tuple[str, dict | None]:
    """Claim, then run (or skip, or recover) one job and append its manifest line; returns (outcome, line)."""
    state = job_state(folder, job, fp, ok_lines)
    if state == "done":
        return "done", None
    if state != "recover" and (job.id, fp) in failed_before:
        return "skipped", None
    claim = claim_job(folder, job.id)
    if claim is None:
        return "busy", None  # another live worker on this folder runs it
    try:
        if finished_record(folder, job, fp) is not None:  # finished by another worker since this run started
            if (job.id, fp) in manifest_ok(folder):
                return "done", None
            state = "recover"
        if state == "recover":  # the image and run.json are whole; only the manifest line was lost
            line = manifest_line(job, fp, "ok", finished_record(folder, job, fp),
                                 extra=dict(extra, recovered=True))
            append_manifest(folder, line)
            return "recovered", line
        return _run_job(job, fp, spec, base, models, models_info, folder, generate, hooks, extra, claim)
    finally:
        claim.release()


def _run_job(job: Job, fp: str, spec: BatchSpec, base, models, models_info: dict, folder: Path, generate: Callable,
             hooks: BatchHooks, extra: Mapping[str, Any], claim) -> tuple[str, dict | None]:
    settings = job_settings(base, job.item, job.seed)
    if not models_info:
        models_info.update(models.describe())
    hooks.on_job_start(job, settings)

    def on_step(info):
        claim.refresh()  # a long job keeps its claim fresh, so other workers never take it over
        hooks.on_step(info)

    try:
        space = models.space(job.space, spec.projections.get(job.space))
        result = generate(settings, models.clip, models.vqgan, space, on_step)
    except KeyboardInterrupt:
        return "interrupted", None
    except Exception as e:  # one failing job is recorded and the batch goes on
        _free_accelerator_memory(models)
        line = manifest_line(job, fp, "failed", error=_error_text(e), extra=extra)
        append_manifest(folder, line)
        return "failed", line
    if result.status == "interrupted":
        return "interrupted", None  # nothing half-done is written; the job runs again next time
    record = build_record(result, models_info, space.describe(), job.item.prompt, {
        "space_name": job.space, "word_type": job.item.word_type, "load_seconds": round(models.load_seconds, 3),
        "batch": {"job": job.id, "item": job.item.id, "fingerprint": fp, "batch_fingerprint": spec.fingerprint,
                  "source": job.item.source}})
    if finished_record(folder, job, fp) is not None:
        return "done", None  # another process finished it meanwhile: never rewrite a finished image
    write_run(folder / job.folder, result, record)
    status = "ok" if result.status == "finished" else "failed"
    error = None if status == "ok" else f"{result.status}: {result.message}"
    line = manifest_line(job, fp, status, record, error, extra)
    append_manifest(folder, line)
    return status, line
