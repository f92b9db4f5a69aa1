"""Batch runs: prompt files, the job plan (prompts × seeds × spaces), resumable runs and sharding.

The names below load on first use (PEP 562): the prompt files, the plan and the folder checks import no torch, so
`vqclip batch` reports a mistake in its arguments or prompt files before torch is imported; the runner loads it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_getattr

_HOME = {"BatchSpec": "plan", "Job": "plan", "make_plan": "plan", "parse_seeds": "plan", "parse_spaces": "plan",
         "PromptFileError": "promptfile", "PromptItem": "promptfile", "load_prompt_files": "promptfile",
         "BatchHooks": "runner", "BatchSummary": "runner", "run_batch": "runner", "Shard": "shard",
         "parse_shard": "shard", "resolve_shard": "shard", "shard_from_env": "shard", "shard_jobs": "shard",
         "check_batch_dir": "store", "job_state": "store", "open_batch_dir": "store"}

__all__ = ["BatchHooks", "BatchSpec", "BatchSummary", "Job", "PromptFileError", "PromptItem", "Shard",
           "check_batch_dir", "job_state", "load_prompt_files", "make_plan", "open_batch_dir", "parse_seeds",
           "parse_shard", "parse_spaces", "resolve_shard", "run_batch", "shard_from_env", "shard_jobs"]


__getattr__ = lazy_getattr(__name__, _HOME)


if TYPE_CHECKING:
    from .plan import BatchSpec, Job, make_plan, parse_seeds, parse_spaces
    from .promptfile import PromptFileError, PromptItem, load_prompt_files
    from .runner import BatchHooks, BatchSummary, run_batch
    from .shard import Shard, parse_shard, resolve_shard, shard_from_env, shard_jobs
    from .store import check_batch_dir, job_state, open_batch_dir
