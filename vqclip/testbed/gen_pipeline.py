"""The generation experiment's three steps through the library: the batch, the score and the grid.

Each step writes what its command writes for the arguments the experiment used to pass it (`generate.batch_args`
spells out the batch's): the batch through `vqclip.batch`'s runner, the score through `vqclip.evaluate.scoring`
with the world's text detector, the grid through `vqclip.grid`. The testbed sits below the CLI, so it calls these
functions rather than the commands; each step still says on the terminal what its command said (the
`vqclip batch: ...` summary line, the score table, the grid's pages), so a testbed run reads as it did.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import VqclipError

BATCH, SCORE, GRID = "vqclip batch", "vqclip score", "vqclip grid"
DEVICE, PRECISION = "cpu", "auto"  # the testbed's models are small: the CPU, and fp32 there (precision auto)
EXIT_STOPPED, EXIT_INTERRUPTED = 74, 130


def command_status(prog: str, step: Callable[[], int]) -> int:
    """`step()`'s exit status; a usage error or Ctrl-C in it is reported on stderr as command `prog` reports it
    (`vqclip batch: error: ...`), with the exit status that command gives."""
    try:
        return step()
    except VqclipError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


# ------------------------------------------------------------------------------------------------------ batch
@dataclass
class WorldBatch:
    """A planned generation batch: what its batch.json records, the settings every job shares, the models it
    loads and this process's share of the jobs (the whole batch unless torchrun's environment shards it)."""

    out: Path
    spec: Any  # vqclip.batch.BatchSpec
    base: Any  # vqclip.generation.Settings without prompts and seed
    clip: str  # open_clip name of the testbed's small CLIP (local-dir:...)
    vqgan: str | None  # registry name: the recipe's, None with a checkpoint file
    checkpoint: str  # the world VQGAN's file
    action: str  # check_batch_dir's verdict: new, resume, extend or replace
    shard: Any  # vqclip.batch.Shard
    mine: list  # the jobs of this process
    done: int  # of which finished before


def batch_settings(config, page: Path, testbed_out: Path | None = None):
    """The settings every image shares: the experiment's size, steps, learning rate, cutouts and blank page under
    its recipe, every other field the recipe's (`Settings.resolved` fills them, as `vqclip batch --recipe` does);
    with extra methods, the world's negative prompt and the testbed run's text direction."""
    from ..generation import Settings

    methods = ({"negative_text": config.negative_text, "textoff": str(Path(testbed_out) / "textoff.safetensors"),
                "textoff_mode": config.textoff_mode} if getattr(config, "methods", ()) else {})
    return Settings(prompts=[], size=(int(config.size), int(config.size)), steps=int(config.steps),
                    lr=float(config.lr), cutn=int(config.cutn), init_image=str(page), recipe=config.recipe,
                    init_code_probability=config.start_code_probability, **methods)


def batch_projections(testbed_out: Path, spaces: Sequence[str]) -> dict[str, str | None]:
    """The testbed run's learn / forget projection files by the identity batch.json records (clip has none)."""
    from ..projections import projection_arg_identity

    files = {space: str(testbed_out / f"{space}.safetensors") for space in ("learn", "forget")}
    return {space: projection_arg_identity(files[space]) if space in files else None for space in spaces}


def plan_batch(testbed_out: Path, vqgan: Path, prompts: Path, out: Path, config, page: Path,
               spaces: Sequence[str]) -> WorldBatch:
    """Every check `vqclip batch` makes before it loads a model: the prompt file, the settings, the batch folder
    (a folder of another batch is refused), what is finished already, a writable disk and enough memory."""
    from ..batch import BatchSpec, check_batch_dir, load_prompt_files, make_plan, parse_seeds, parse_spaces
    from ..batch.plan import base_settings_record, base_space, check_item_settings, model_identity
    from ..batch.shard import resolve_shard, shard_jobs
    from ..batch.store import job_state, manifest_ok
    from ..generation.groups import parse_group_size
    from ..generation.recipes import recipe_vqgan
    from ..io import check_writable
    from ..models.clip import DEFAULT_PRETRAINED

    parse_group_size(config.group_size)
    items = load_prompt_files([str(prompts)])
    spaces = parse_spaces(",".join(spaces))
    seeds = parse_seeds(",".join(map(str, config.seeds)))
    shard = resolve_shard(None)
    base = batch_settings(config, page, testbed_out)
    settings_record = base_settings_record(base)
    check_item_settings(items, base)
    clip, checkpoint = f"local-dir:{testbed_out / 'clip'}", str(vqgan)
    vqgan_name = recipe_vqgan(config.recipe, None, checkpoint)
    jobs = make_plan(items, spaces, seeds)
    models_id = model_identity(clip, DEFAULT_PRETRAINED, vqgan_name, None, checkpoint, PRECISION)
    bases = tuple(dict.fromkeys(base_space(s) for s in spaces))
    spec = BatchSpec(settings_record, models_id, items, spaces, seeds, jobs, batch_projections(testbed_out, bases))
    action = check_batch_dir(out, spec.to_record(), False)
    mine = shard_jobs(jobs, shard)
    ok_lines = manifest_ok(out) if out.is_dir() else {}
    done = sum(job_state(out, j, spec.job_fp(j), ok_lines) != "todo" for j in mine) if out.is_dir() else 0
    check_writable(out, "--out")  # a read-only or missing disk is refused before any model is loaded
    _check_memory(base)
    return WorldBatch(out, spec, base, clip, vqgan_name, checkpoint, action, shard, mine, done)


def _check_memory(base) -> None:
    """The run's size and cutouts against the device's free memory, before anything loads."""
    from ..generation.memory import check_memory, vqgan_ddconfig

    check_memory([(base.size, base.cutn, "")], DEVICE, vqgan_ddconfig(None, None))


def load_batch_models(batch: WorldBatch):
    """The small CLIP, the learn / forget projections and the world VQGAN, after the checks `vqclip batch` makes
    before loading (the projection files, then every file needed, in one message); its notes on stderr."""
    from ..batch.plan import check_item_settings
    from ..batch.runner import check_text_methods
    from ..generation import load_models
    from ..models.clip import DEFAULT_PRETRAINED
    from ..preflight import plan_assets, preflight
    from ..projections import load_projection

    spaces = [(s, file, f"--projection-{s}") for s, file in batch.spec.projections.items()]
    for space, file, flag in spaces:
        if file:
            load_projection(file, space, None, flag)  # a local-dir CLIP's width is known once it is loaded
    preflight(plan_assets(clip=batch.clip, pretrained=DEFAULT_PRETRAINED, vqgan=batch.vqgan,
                          vqgan_checkpoint=batch.checkpoint, spaces=[(s, f) for s, f, _ in spaces]))
    models = load_models(batch.clip, DEFAULT_PRETRAINED, batch.vqgan, None, batch.checkpoint, DEVICE, PRECISION,
                         spaces=spaces, progress=False, say=lambda text: print(f"{BATCH}: {text}", file=sys.stderr))
    check_item_settings(batch.spec.items, batch.base, models.vqgan.factor)
    check_text_methods(models, batch.base, batch.spec.spaces, batch.spec.projections)
    for notice in _settings_notices(batch.base, models.vqgan.factor):
        print(f"{BATCH}: note: {notice}", file=sys.stderr)
    return models


def _settings_notices(base, factor: int) -> list[str]:
    """Notices about the batch-wide settings (e.g. the size snapped to the VQGAN factor), said once."""
    import dataclasses

    from ..generation.prompts import Prompt

    return dataclasses.replace(base, prompts=[Prompt("x")], seed=0).resolved(factor)[1]


def _failure_hooks():
    """Batch hooks that say each failed job on stderr (the runner prints nothing; progress bars are off)."""
    from ..batch import BatchHooks

    class SayFailures(BatchHooks):
        def on_job_end(self, job, outcome, line) -> None:
            if outcome == "failed":
                print(f"{BATCH}: job {job.id} failed: {line.get('error') if line else ''}", file=sys.stderr)

    return SayFailures()


def run_planned_batch(batch: WorldBatch, group_size: int | str) -> int:
    """Generate this process's unfinished jobs into the batch folder; the summary said as `vqclip batch` says it,
    and its exit status (0 all done, 1 a job failed, 74 the disk stopped it, 130 interrupted)."""
    from ..batch import open_batch_dir, run_batch
    from ..generation.groups import parse_group_size

    models = load_batch_models(batch) if batch.done < len(batch.mine) else None  # nothing to run: load nothing
    open_batch_dir(batch.out, batch.spec.to_record(), batch.action)
    summary = run_batch(batch.mine, batch.spec, batch.base, models, batch.out, hooks=_failure_hooks(),
                        line_extra={"shard": str(batch.shard)}, group_size=parse_group_size(group_size))
    print(batch.out)
    return _batch_status(batch, summary)


def _batch_status(batch: WorldBatch, summary) -> int:
    """`vqclip batch`'s summary line (and why it stopped early, if it did) on stderr; its exit status."""
    busy = f"{summary.busy} run by other workers, " if summary.busy else ""
    print(f"{BATCH}: {batch.out}: {summary.ok} generated, {summary.done_before} already finished, "
          f"{summary.recovered} recovered, {summary.failed} failed, {summary.skipped_failed} skipped (failed before), "
          f"{busy}{summary.remaining} left ({summary.seconds:.1f} s; share {batch.shard} of {len(batch.spec.jobs)} "
          "jobs)", file=sys.stderr)
    if summary.stopped:
        print(f"{BATCH}: error: stopped early: {summary.stopped}; the {summary.ok + summary.recovered} jobs finished "
              "in this run (and every earlier one) are kept. Free some space and run the same command again to "
              "resume.", file=sys.stderr)
        return EXIT_STOPPED
    if summary.interrupted:
        print(f"{BATCH}: interrupted; finished jobs are recorded. Run the same command again to resume.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    return 1 if summary.failed else 0


def generate_batch(testbed_out: Path, vqgan: Path, prompts: Path, out: Path, config, page: Path,
                   spaces: Sequence[str]) -> int:
    """The generation batch (every prompt x seed x space) into `out`, resumed when it is there; exit status as
    `vqclip batch` with `generate.batch_args` gives it."""
    def step() -> int:
        batch = plan_batch(Path(testbed_out), Path(vqgan), Path(prompts), Path(out), config, Path(page), spaces)
        return run_planned_batch(batch, config.group_size)

    return command_status(BATCH, step)


# ------------------------------------------------------------------------------------------------------ score
SCORE_THRESHOLDS = (0.0,)  # any detection counts as text: the world's detector decides presence itself


def score_batch(batch_dir: Path, detector: Path, out: Path, progress: bool) -> int:
    """Read every image of the batch with the world's text detector into `out` (scores.jsonl, summary.json,
    table.md), as `vqclip score BATCH --detector world:FILE --thresholds 0.0 --no-chart --device cpu` does; the
    table on stdout. Exit status as that command's."""
    return command_status(SCORE, lambda: _score(batch_dir, detector, out, progress))


def _score(batch_dir: Path, detector: Path, out: Path, progress: bool) -> int:
    from ..errors import bad_arg
    from ..evaluate.ocr import OcrCache
    from ..evaluate.scoring import check_group_fields, output_paths, score_paths, score_report
    from ..evaluate.sources import collect_images
    from ..evaluate.textscore import DEFAULT_MAX_DISTANCE
    from ..io import check_replaceable, check_writable, disk_errors
    from .detector_files import WorldTextReader

    paths = [str(batch_dir)]
    check_replaceable(output_paths(out), False, "--out")  # a user's table.md is never replaced silently
    check_writable(out, "--out")  # before the detector reads every image
    items, skipped = collect_images(paths, exclude=[out])
    if not items:
        raise bad_arg("PATH", "no images found (skipped: %d)" % len(skipped), " ".join(paths),
                      "Point at run folders (run.json), batch folders (manifest.jsonl) or folders of images.")
    group_by = ["space", "word_type"]
    check_group_fields(items, [], None, None, True)
    reader = WorldTextReader(str(detector), arg="--detector")
    info = {"name": "world", "key": reader.key, "path": str(reader.path)}
    with disk_errors("--out", "OCR results are cached, so running again resumes at once"):
        summary = score_paths(items, skipped, out, reader, OcrCache(reader.key, None), None, list(SCORE_THRESHOLDS),
                              DEFAULT_MAX_DISTANCE, group_by, None, True, 8, progress,
                              extra={"inputs": paths, "detector": info}, chart=False, overwrite=False)
    print(score_report(summary, out), end="")
    return 0


# ------------------------------------------------------------------------------------------------------- grid
GRID_ROWS, GRID_COLS, GRID_THUMB = "prompt", ("space", "seed"), 96


def draw_grid(batch_dir: Path, out_file: Path) -> int:
    """The batch's comparison grid (rows prompts, columns space and seed, 96 px thumbnails) into `out_file`, as
    `vqclip grid BATCH --rows prompt --cols space,seed --thumb 96 --overwrite` draws it; its pages on stdout, its
    summary on stderr. Exit status as that command's."""
    return command_status(GRID, lambda: _grid(batch_dir, out_file))


def _grid(batch_dir: Path, out_file: Path) -> int:
    from ..grid import GridStyle, make_grid

    written = make_grid(str(batch_dir), str(out_file), GRID_ROWS, list(GRID_COLS), {}, GridStyle(thumb=GRID_THUMB),
                        None, png=True, overwrite=True)
    for page in written["pages"]:
        print(page)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(written["statuses"].items()))
    print(f"{GRID}: {written['rows']} rows x {written['cols']} columns ({', '.join(written['col_fields'])}): "
          f"{counts}", file=sys.stderr)
    return 0
