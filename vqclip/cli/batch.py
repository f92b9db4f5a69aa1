"""`vqclip batch FILE...`: many prompts × seeds × spaces, resumable, sharded under torchrun or --shard i/n."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import bad_arg
from .common import add_quiet_arg, check_memory, command_parser, sigterm_as_interrupt
from .generate import (add_model_args, add_settings_args, anti_text_uses, check_args_early, few_steps_notice,
                       load_models_from_args, settings_from_args)

PROG = "vqclip batch"


def register(sub) -> None:
    p = command_parser(
        sub, "batch", help="generate every prompt of prompt files in several spaces and seeds (resumable, sharded)",
        examples=["vqclip batch prompts.txt --spaces clip,learn,forget --seeds 0-2 --steps 300",
                  "torchrun --nproc-per-node 4 -m vqclip batch words.yaml --spaces clip,forget --group-size auto"],
        description="Generate one image per (prompt, seed, space) into one batch folder: <out>/<item-id>/"
                    "<space>-s<seed>/image.png + run.json, and manifest.jsonl with a line per finished job. Re-running "
                    "the same command skips finished jobs. Under torchrun (or with --shard i/n) each process takes "
                    "a disjoint share. Prompt files: .txt (one prompt a line, # comments, '#: field: value' "
                    "directives), or .yaml/.json/.csv items with per-item id, word_type, seed(s) and settings.")
    p.add_argument("files", nargs="+", metavar="FILE", help="prompt files (.txt, .yaml, .json, .csv)")
    g = p.add_argument_group("batch")
    g.add_argument("--spaces", default="clip", metavar="LIST",
                   help="comma list of embedding spaces from clip,learn,forget (default clip); an entry may also "
                        "keep text out in a space: negative, textoff, forget+negative, ... (a column like the "
                        "spaces; see --anti-text)")
    g.add_argument("--seeds", default=None, metavar="LIST",
                   help="seeds per prompt: '0,1,2', '0-9' or '0..9' (default: --seed, else 0)")
    g.add_argument("--word-type", default=None, metavar="TYPE",
                   help="word type (real, nonsense) of items whose file does not give one")
    g.add_argument("--projection-learn", default=None, metavar="FILE", help="projection file for the learn space")
    g.add_argument("--projection-forget", default=None, metavar="FILE", help="projection file for the forget space")
    g.add_argument("--shard", default=None, metavar="I/N",
                   help="run share I of N (0-based) of the jobs, e.g. on several machines sharing the folder; "
                        "under torchrun the share comes from RANK/WORLD_SIZE")
    g.add_argument("--group-size", default="auto", metavar="auto|N",
                   help="jobs with the same size, steps and method optimised together in one batched latent: one "
                        "VQGAN decode and one CLIP call per step for the group (default auto: as many as 70%% of "
                        "the GPU's free memory holds, at most 16; 1 on the CPU, where grouping is not faster)")
    g.add_argument("--skip-failed", action="store_true", help="do not retry jobs whose last attempt failed")
    g.add_argument("--dry-run", action="store_true", help="print the plan and what is left to do; run nothing")
    add_settings_args(p)
    add_model_args(p)
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="batch folder (default outputs/batch-<prompt file names>); re-use it to resume")
    g.add_argument("--outputs-root", default="outputs", metavar="DIR", help="where default batch folders go")
    g.add_argument("--overwrite", action="store_true",
                   help="use a folder that holds another batch (or other files): jobs whose settings differ are redone")
    g.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="YAML file of option values (e.g. `steps: 200`); command-line flags override it")
    add_quiet_arg(g, "no progress bars")
    p.set_defaults(func=run_batch_command, _parser=p)


def default_out(files: list[str], root: str) -> Path:
    from ..cache import slug

    stems = "+".join(Path(f).stem for f in files[:3]) + ("+more" if len(files) > 3 else "")
    return Path(root) / f"batch-{slug(stems.lower(), 60)}"


def seeds_from_args(args) -> tuple[int, ...]:
    from ..batch import parse_seeds

    if args.seeds is not None and args.seed is not None:
        raise bad_arg("--seed", "give --seeds or --seed, not both", f"--seed {args.seed} --seeds {args.seeds}",
                      "Use --seeds 0,1,2 (or one seed: --seeds 5).")
    if args.seeds is not None:
        return parse_seeds(args.seeds)
    if args.seed is not None:
        return parse_seeds(str(args.seed), "--seed")
    return (0,)  # a batch is re-run to resume: its seeds must not be drawn at random


def projections_from_args(args, spaces: tuple[str, ...]) -> dict[str, str | None]:
    """Projection file (recorded by absolute path) per space; None means the cached one for the CLIP in use."""
    from ..projections import load_projection, projection_arg_identity

    out: dict[str, str | None] = {s: None for s in spaces}
    for space in ("learn", "forget"):
        path = getattr(args, f"projection_{space}")
        if path and space not in spaces:
            raise bad_arg(f"--projection-{space}", f"is given but {space} is not in --spaces", ",".join(spaces),
                          f"Add {space} to --spaces, or drop the flag.")
        if path:
            out[space] = projection_arg_identity(path)
    if args.projection:
        space = load_projection(args.projection).name  # the file says which space it is for
        if space not in spaces:
            raise bad_arg("--projection", f"is a {space} projection but {space} is not in --spaces", args.projection,
                          f"Add {space} to --spaces, or use --projection-learn / --projection-forget.")
        if out[space] and out[space] != projection_arg_identity(args.projection):
            raise bad_arg("--projection", f"and --projection-{space} name different files", args.projection,
                          "Give one of them.")
        out[space] = projection_arg_identity(args.projection)
    return out


def shard_device(args, shard) -> None:
    """Under torchrun each process uses GPU LOCAL_RANK (mod the GPUs visible), unless a device was named.

    More processes than GPUs share them round-robin: with small models that keeps a GPU busier.
    """
    if shard.local_rank is None or args.device not in ("auto", "cuda"):
        return
    import torch

    if torch.cuda.is_available():
        gpu = shard.local_rank % torch.cuda.device_count()
        torch.cuda.set_device(gpu)
        args.device = f"cuda:{gpu}"


class ProgressBars:
    """An overall bar (jobs done / total, ETA) above a bar for the current group of jobs (steps, loss)."""

    def __init__(self, total: int, already: int, label: str, quiet: bool):
        from tqdm import tqdm

        self.tqdm, self.quiet = tqdm, quiet
        self.overall = tqdm(total=total, initial=already, desc=label, unit="job", position=0, disable=quiet,
                            dynamic_ncols=True)
        self.job = None
        self.open_jobs = 0  # jobs of the current group not yet ended

    def on_job_start(self, job, settings) -> None:
        if self.job is None:
            self.first_id = job.id
            self.job = self.tqdm(total=settings.steps, desc=f"{job.id}", unit="step", position=1, leave=False,
                                 disable=self.quiet, dynamic_ncols=True)
        else:  # another job of the same group
            self.job.set_description(f"{self.first_id} +{self.open_jobs}")
        self.open_jobs += 1

    def on_step(self, info) -> None:
        if self.job is not None:
            self.job.update(info.step - self.job.n)
            self.job.set_postfix(loss=f"{info.loss:.4f}", refresh=False)

    def on_job_end(self, job, outcome, line) -> None:
        self.open_jobs = max(0, self.open_jobs - 1)
        if self.job is not None and self.open_jobs == 0:
            self.job.close()
            self.job = None
        if outcome != "done":  # finished before this run: already counted in `initial`
            self.overall.update(1)
        if outcome == "failed":
            self.tqdm.write(f"{PROG}: job {job.id} failed: {line.get('error') if line else ''}", file=sys.stderr)

    def close(self) -> None:
        if self.job is not None:
            self.job.close()
        self.overall.close()


def run_batch_command(args: argparse.Namespace) -> int:
    from ..batch import BatchSpec, check_batch_dir, load_prompt_files, make_plan
    from ..batch.plan import base_settings_record, check_item_settings, model_identity
    from ..batch.shard import resolve_shard, shard_jobs
    from ..batch.store import job_state, manifest_ok
    from ..io import check_writable

    from ..batch.plan import base_space
    from ..generation.groups import parse_group_size

    # every check that needs no torch first: a mistake in the flags or the prompt files is reported in well under a
    # second (the settings below import torch)
    group_size = parse_group_size(args.group_size)
    items = load_prompt_files(args.files, args.word_type)
    spaces = parse_spaces_arg(args.spaces)
    seeds = seeds_from_args(args)
    shard = resolve_shard(args.shard)
    check_args_early(args, "")
    anti_text_uses(args, _text_ways(spaces, items))
    base = settings_from_args(args, "")
    settings_record = base_settings_record(base)  # flag errors name the flag, before any item is blamed
    check_item_settings(items, base)
    projections = projections_from_args(args, tuple(dict.fromkeys(base_space(s) for s in spaces)))
    jobs = make_plan(items, spaces, seeds)
    models_id = model_identity(args.clip, args.pretrained, args.vqgan, args.vqgan_config, args.vqgan_checkpoint,
                               args.precision)
    spec = BatchSpec(settings_record, models_id, items, spaces, seeds, jobs, projections)
    record = spec.to_record()
    out = Path(args.out) if args.out else default_out(args.files, args.outputs_root)
    action = check_batch_dir(out, record, args.overwrite)
    mine = shard_jobs(jobs, shard)
    ok_lines = manifest_ok(out) if out.is_dir() else {}
    done = sum(job_state(out, j, spec.job_fp(j), ok_lines) != "todo" for j in mine) if out.is_dir() else 0
    plan_text = (f"{len(items)} prompts, seeds {','.join(map(str, seeds))}, spaces {','.join(spaces)}: {len(jobs)} "
                 f"jobs; share {shard}: {len(mine)} jobs, {done} finished, {len(mine) - done} to run")
    for notice in few_steps_notices(base, items, spaces):  # as `generate` says it; with --dry-run too
        print(f"{PROG}: note: {notice}", file=sys.stderr)
    if args.dry_run:
        print(f"{PROG}: {out} ({action}): {plan_text}")
        return 0

    check_writable(out, "--out")  # a read-only or missing disk is refused before any model is loaded
    sizes = [(base.size, base.cutn, "")] + [
        (item.overrides.get("size", base.size), item.overrides.get("cutn", base.cutn), f" (item {item.id!r})")
        for item in items if "size" in item.overrides or "cutn" in item.overrides]
    check_memory(sizes, args.device, args)
    with sigterm_as_interrupt():
        return _run(args, out, record, action, spec, base, items, spaces, projections, shard, jobs, mine, done,
                    group_size)


def _run(args, out, record, action, spec, base, items, spaces, projections, shard, jobs, mine, done,
         group_size) -> int:
    from ..batch import open_batch_dir, run_batch
    from ..batch.plan import check_item_settings
    from ..batch.runner import check_text_methods

    models = None
    if done < len(mine):  # nothing to generate: no need to load models
        shard_device(args, shard)
        # every projection is fetched (or, with --auto-train, trained) once now; all missing ones are reported
        # together now, not after hours of other jobs
        models = load_models_from_args(args, [(s, p, f"--projection-{s}") for s, p in projections.items()], PROG)
        check_item_settings(items, base, models.vqgan.factor)
        check_text_methods(models, base, spaces, projections)
        for notice in base_settings_notices(base, models.vqgan.factor):
            print(f"{PROG}: note: {notice}", file=sys.stderr)
    open_batch_dir(out, record, action)
    quiet = args.quiet or (shard.source == "torchrun" and shard.index != 0)  # one set of bars per terminal
    bars = ProgressBars(len(mine), done, f"batch {shard}" if shard.count > 1 else "batch", quiet)
    try:
        summary = run_batch(mine, spec, base, models, out, hooks=bars, skip_failed=args.skip_failed,
                            line_extra={"shard": str(shard)}, group_size=group_size)
    finally:
        bars.close()
    print(out)
    busy = f"{summary.busy} run by other workers, " if summary.busy else ""
    print(f"{PROG}: {out}: {summary.ok} generated, {summary.done_before} already finished, {summary.recovered} "
          f"recovered, {summary.failed} failed, {summary.skipped_failed} skipped (failed before), {busy}"
          f"{summary.remaining} left ({summary.seconds:.1f} s; share {shard} of {len(jobs)} jobs)", file=sys.stderr)
    if summary.stopped:
        print(f"{PROG}: error: stopped early: {summary.stopped}; the {summary.ok + summary.recovered} jobs finished "
              "in this run (and every earlier one) are kept. Free some space and run the same command again to "
              "resume.", file=sys.stderr)
        return 74
    if summary.interrupted:
        print(f"{PROG}: interrupted; finished jobs are recorded. Run the same command again to resume.",
              file=sys.stderr)
        return 130
    return 1 if summary.failed else 0


def _text_ways(spaces, items) -> tuple[str, ...]:
    """The ways of keeping text out that the plan's space entries (`forget+textoff`) and items turn on."""
    from ..batch.plan import parse_method_ways
    from ..generation.antitext import parse_anti_text

    ways = [w for s in spaces for w in parse_method_ways(s)]
    for item in items:
        ways += parse_anti_text(item.overrides.get("anti_text"), "anti_text")
    return tuple(ways)


def few_steps_notices(base, items, spaces) -> list[str]:
    """The note `generate` prints for a learn/forget run of under 10 steps, once for the batch: when a job of the
    plan runs in learn or forget with that few steps (the batch's --steps or an item's own)."""
    from ..batch.plan import base_space

    if all(base_space(s) == "clip" for s in spaces):
        return []
    steps = min([base.steps] + [int(i.overrides["steps"]) for i in items if "steps" in i.overrides])
    notice = few_steps_notice(steps)
    return [notice] if notice else []


def parse_spaces_arg(text: str) -> tuple[str, ...]:
    from ..batch import parse_spaces

    return parse_spaces(text)


def base_settings_notices(base, factor: int) -> list[str]:
    """Notices about the batch-wide settings (e.g. the size snapped to the VQGAN factor), printed once."""
    import dataclasses

    from ..generation.prompts import Prompt

    _, notices = dataclasses.replace(base, prompts=[Prompt("x")], seed=0).resolved(factor)
    return notices
