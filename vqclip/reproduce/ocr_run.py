"""The text-in-generated-images part of a reproduce run, phase by phase: the plan (words, batch, this process's
share), the time estimate measured here, generation through the batch runner, OCR and grids, the report section."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MissingExtraError, VqclipError, bad_arg
from ..generation.groups import parse_group_size
from . import ocr
from .options import PROG, SPACES, ReproduceOptions
from .progress import CountingReader, Progress, say

PLACEHOLDER = "placeholder: wordfreq is not installed"  # a dry run's stand-in words (their recipe's source)


def check_ocr_flags(group_size: str | int, ocr_batch_size: int, grid_words: int) -> int | str:
    """--group-size (returned parsed: a number or "auto"), --ocr-batch-size and --grid-words, before any work."""
    group_size = parse_group_size(group_size)
    if ocr_batch_size < 1:
        raise bad_arg("--ocr-batch-size", "must be at least 1", ocr_batch_size, "Try 8.")
    if grid_words < 0:
        raise bad_arg("--grid-words", "must be 0 (no grid) or more", grid_words, "Try 8.")
    return group_size


@dataclass
class OcrPlan:
    """Everything decided before any model is loaded: words, batch record, this process's share of the jobs."""

    folder: Path
    words: Any  # vqclip.spelling.words.WordList
    per_set: int
    items: list
    spec: Any  # vqclip.batch.BatchSpec
    record: dict
    action: str  # how the batch folder is used: new, resume, extend
    mine: list  # this share's jobs
    todo: list  # this share's jobs not generated yet

    @property
    def batch_dir(self) -> Path:
        return self.folder / "batch"

    @property
    def scale(self) -> float:
        return self.per_set / ocr.PER_SET

    def unfinished(self) -> list:
        """The jobs of every share not generated yet (failed ones included)."""
        from ..batch.store import job_state, manifest_ok

        ok = manifest_ok(self.batch_dir) if self.batch_dir.is_dir() else {}
        return [j for j in self.spec.jobs if job_state(self.batch_dir, j, self.spec.job_fp(j), ok) != "done"]

    def describe(self, shard) -> str:
        text = (f"{self.per_set} real + {self.per_set} nonsense words x {len(self.spec.spaces)} spaces = "
                f"{len(self.spec.jobs)} images; share {shard}: {len(self.mine)}, {len(self.todo)} to generate")
        if self.words.recipe.get("source") == PLACEHOLDER:
            text += ("; the words are drawn from wordfreq when the run starts, which needs the `train` extra: "
                     'pip install -e ".[train]" (or: pip install wordfreq)')
        return text


def plan_ocr(o: ReproduceOptions) -> OcrPlan:
    """The words at --scale (or all of --words), one job per word and space, checked against the batch folder
    under OUT/ocr; nothing is written."""
    from ..batch.plan import check_item_settings, model_identity
    from ..batch.shard import shard_jobs
    from ..batch.store import job_state, manifest_ok

    folder = Path(o.out) / "ocr"
    models_id = model_identity(o.clip, o.pretrained, o.vqgan, o.vqgan_config, o.vqgan_checkpoint, o.precision)
    words, per_set = _words(o, folder)
    items = ocr.word_items(ocr.select_words(words, per_set, "--words" if o.words else "--scale"))
    check_item_settings(items, o.settings)
    spec = ocr.make_spec(items, o.columns, o.seed, o.settings, models_id, o.projections)
    record = spec.to_record()
    action = _check_batch_dir(folder / "batch", record)
    mine = shard_jobs(spec.jobs, o.shard)
    ok = manifest_ok(folder / "batch") if (folder / "batch").is_dir() else {}
    todo = [j for j in mine if job_state(folder / "batch", j, spec.job_fp(j), ok) == "todo"]
    return OcrPlan(folder, words, per_set, items, spec, record, action, mine, todo)


def _words(o: ReproduceOptions, folder: Path) -> tuple[Any, int]:
    """The word list (--words, the folder's, or drawn; saved only when generating) and the words per set."""
    per_set = 0
    if o.scale is not None or not o.words:
        per_set = ocr.words_per_set(1.0 if o.scale is None else o.scale)
    try:
        words = ocr.word_list(folder, o.seed, o.words, save=False)
    except MissingExtraError:
        if not o.dry_run:
            raise
        words = _placeholder_words(per_set)  # the plan's counts need no words; the run will draw them
    if o.scale is None and o.words:  # your own list: all of it (as many of each set as both have)
        per_set = max(1, min(sum(words.is_real), len(words) - sum(words.is_real)))
    return words, per_set


def _placeholder_words(per_set: int):
    """A dry run without wordfreq (the `train` extra): stand-in words, so the plan and the time estimate need
    nothing but the counts; describe() says the real words are drawn when the run starts."""
    from ..spelling.words import WordList

    words = [f"{kind}{i + 1}" for i in range(per_set) for kind in ocr.WORD_SETS]
    return WordList(words, [w.startswith("real") for w in words], {"source": PLACEHOLDER})


def _check_batch_dir(batch_dir: Path, record: dict) -> str:
    """`vqclip batch`'s check of the folder, without its offer of --overwrite: reproduce never redoes finished
    images."""
    from ..batch import check_batch_dir

    try:
        return check_batch_dir(batch_dir, record)
    except VqclipError as e:
        text = str(e)
        for offer, instead in ((", choose another --out, or pass --overwrite to redo its jobs with the new "
                                "settings", " or choose another --out"), (", or pass --overwrite", ""),
                               (" or pass --overwrite", "")):
            text = text.replace(offer, instead)
        error = VqclipError(text)
        error.arg = e.arg
        raise error from None


def measure(o: ReproduceOptions, plan: OcrPlan, models, reader) -> dict:
    """The time estimate of this share, from a few steps of probe images (grouped as the runner will group them)
    and, with a reader, one OCR read, both on this device."""
    from ..batch.plan import job_settings

    group = ocr.images_per_group(o.group_size, models, job_settings(o.settings, plan.items[0], o.seed))
    group = max(1, min(group, len(plan.todo) or 1))
    probe = ocr.measure_step_seconds(models, o.settings, SPACES[0], o.projections.get(SPACES[0]), group=group)
    ocr_seconds = ocr.measure_ocr_seconds(reader, probe["image"]) if reader is not None else None
    est = ocr.estimate(len(plan.todo), o.settings.steps, probe["seconds_per_step"], len(plan.spec.jobs),
                       ocr_seconds, ocr.device_name(models), o.shard.count)
    est["group"] = group
    est["measured_in"] = (f"1 + {probe['steps_measured'] - 1} steps of {group} probe image(s) in the "
                          f"{probe['space']} space")
    est["grouping"] = ocr.grouping_note(o.group_size, group)
    est["text"] = ocr.estimate_text(est)
    return est


def ocr_reader(device: str):
    """EasyOCR for the run, or one clear line with the install command, before any image is generated."""
    try:
        return ocr.ocr_reader(device)
    except ImportError as e:
        raise VqclipError(str(e)) from e


def run_ocr_part(o: ReproduceOptions, plan: OcrPlan, models, reader, progress: Progress,
                 est: dict | None) -> tuple[dict | None, int]:
    """Generate this share, then (when every share is done) score, draw the grids and return the report section
    with the exit code (1 when an image failed, 130 when interrupted: then no section)."""
    summary, timing = _generate(o, plan, models, progress)
    if summary.interrupted:
        return None, 130
    code = 1 if summary.failed else 0
    unfinished = plan.unfinished()
    mine = {j.id for j in plan.mine}
    others = [j for j in unfinished if j.id not in mine]
    if o.shard.count > 1 and others:
        say(f"share {o.shard} finished ({summary.ok} generated, {summary.failed} failed); {len(others)} images "
            "of other shares are not done yet. Scoring and the report follow when the last share finishes (or run "
            "the same command without --shard).")
        return None, code
    scored, grids = _score_and_draw(o, plan, reader, progress, timing)
    timing["generation_seconds_per_image"] = _seconds_per_image(plan)
    section = ocr_section(o, plan, models, est, summary, unfinished, scored, grids, timing)
    if o.judge_clip:
        from .judge import object_section

        section["object"] = object_section(o, plan, scored, models, progress)
        section["files"]["judgements"] = section["object"]["file"]
        timing["judge"] = section["object"]["seconds"]
    return section, code


def _generate(o: ReproduceOptions, plan: OcrPlan, models, progress: Progress) -> tuple[Any, dict]:
    """This share's images into the batch folder (the word list kept beside it); a full disk stops the run."""
    from ..batch import open_batch_dir

    start = time.perf_counter()
    if plan.todo:
        check_methods(o, models)
    ocr.save_words(plan.words, plan.folder)
    open_batch_dir(plan.batch_dir, plan.record, plan.action)
    progress.stage("generating")
    summary = ocr.generate(plan.spec, plan.mine, o.settings, models, plan.batch_dir, progress, o.group_size,
                           {"shard": str(o.shard)})
    timing = {"generation": round(time.perf_counter() - start, 2)}
    if summary.stopped:
        from ..errors import OutputError

        raise OutputError(f"--out {o.out}: stopped early: {summary.stopped}; every finished image is kept. Free "
                          "some space and run the same command again to resume.")
    return summary, timing


def check_methods(o: ReproduceOptions, models) -> None:
    """Every extra method finds what it needs (the text direction of textoff) before the first image."""
    from ..batch.runner import check_text_methods

    check_text_methods(models, o.settings, o.columns[len(SPACES):], o.projections)


def _score_and_draw(o: ReproduceOptions, plan: OcrPlan, reader, progress: Progress, timing: dict) -> tuple[dict, list]:
    """OCR every image of the batch into OUT/ocr/score, then the comparison grids; their seconds go to `timing`."""
    progress.stage("OCR")
    start = time.perf_counter()
    counting = CountingReader(reader, progress)
    scored = ocr.score(plan.batch_dir, [j.id for j in plan.spec.jobs], plan.folder / "score", counting,
                       o.cache_dir, batch_size=o.ocr_batch_size, progress=not o.quiet,
                       extra={"experiment": f"{PROG} ocr", "scale": plan.scale})
    progress.advance(max(0, len(plan.spec.jobs) - counting.count))
    timing["ocr"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    grids = [str(p) for p in ocr.comparison_grids(plan.batch_dir, plan.items, plan.folder, o.grid_words)] \
        if o.grid_words else []
    timing["grid"] = round(time.perf_counter() - start, 2)
    return scored, grids


def _seconds_per_image(plan: OcrPlan) -> float:
    """Mean generation seconds of the batch's finished images, as the manifest records them."""
    from ..io import read_jsonl

    ids = {j.id for j in plan.spec.jobs}
    lines = [line for line in read_jsonl(plan.batch_dir / "manifest.jsonl")
             if line.get("status") == "ok" and line.get("id") in ids]
    return round(sum(line.get("seconds") or 0 for line in lines) / max(1, len(lines)), 3)


def ocr_section(o: ReproduceOptions, plan: OcrPlan, models, est: dict | None, summary, unfinished: list,
                scored: dict, grids: list, timing: dict) -> dict:
    """The report's `ocr` section: words, jobs, the table beside the paper's, settings, models, timing, files."""
    words = plan.words.recipe
    return {
        "scale": plan.scale, "seed": o.seed, "spaces": list(o.columns),
        "words": {"per_set": plan.per_set, "file": str(plan.folder / ocr.WORDS_NAME), "recipe": words,
                  "source": _words_source(words)},
        "jobs": {"planned": len(plan.spec.jobs), "generated_now": summary.ok, "failed": summary.failed,
                 "unfinished": len(unfinished), "scored": scored["n_scored"], "skipped": scored["n_skipped"]},
        "complete": not unfinished,
        "settings": plan.record["settings"], "recipe": o.settings.with_recipe().recipe_record(),
        "batch_fingerprint": plan.spec.fingerprint,
        "grouping": ocr.grouping_note(o.group_size, (est or {}).get("group")), "ocr": scored.get("ocr"),
        "thresholds": scored["thresholds"],
        "rows": ocr.comparison_rows(scored["groups"], scored["thresholds"], o.columns[len(SPACES):]),
        "legibility": ocr.legibility_rows(scored["groups"]),
        "grids": grids, "estimate": est, "timing": timing,
        "models": _models(o, models),
        "files": {"batch": str(plan.batch_dir), "words": str(plan.folder / ocr.WORDS_NAME),
                  **{k: v for k, v in scored["files"].items()}},
    }


def _models(o: ReproduceOptions, models) -> dict:
    """The model names as given and the files in use with their sha256."""
    from .assets import model_files

    spaces = {s: models.space(s, o.projections.get(s)) for s in SPACES} if models is not None else {}
    return {"names": {"clip": o.clip, "pretrained": o.pretrained, "vqgan": o.vqgan_checkpoint or o.vqgan,
                      "device": ocr.device_name(models) if models is not None else None},
            "files": model_files(o.pretrained, spaces, models.vqgan_info if models is not None else None)}


def _words_source(recipe: dict) -> str:
    if recipe.get("source") == "wordfreq":
        return (f"drawn with seed {recipe.get('seed')}: real words from the {recipe.get('vocab')} most frequent "
                f"English words of wordfreq {recipe.get('wordfreq')}, {recipe.get('min_len')}-{recipe.get('max_len')}"
                " letters a-z; nonsense: random letter strings wordfreq does not know")
    return f"from the file {recipe.get('path')}"
