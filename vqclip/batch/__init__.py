"""Batch runs: prompt files, the job plan (prompts × seeds × spaces), resumable runs and sharding."""

from .plan import BatchSpec, Job, make_plan, parse_seeds, parse_spaces
from .promptfile import PromptFileError, PromptItem, load_prompt_files
from .runner import BatchHooks, BatchSummary, run_batch
from .shard import Shard, parse_shard, resolve_shard, shard_from_env, shard_jobs
from .store import check_batch_dir, job_state, open_batch_dir

__all__ = ["BatchHooks", "BatchSpec", "BatchSummary", "Job", "PromptFileError", "PromptItem", "Shard",
           "check_batch_dir", "job_state", "load_prompt_files", "make_plan", "open_batch_dir", "parse_seeds",
           "parse_shard", "parse_spaces", "resolve_shard", "run_batch", "shard_from_env", "shard_jobs"]
