"""The paper's text-in-generated-images table: real and nonsense words generated in clip / learn / forget through
the batch runner (resumable, shardable), scored by EasyOCR at confidence > 0 and > 0.25, set beside the paper's.

Words (the paper publishes neither its list nor its source): real words are drawn, seeded, from the 30,000 most
frequent English words of `wordfreq` that have 3-8 letters a-z; nonsense words are seeded random strings of 3-8
letters that wordfreq does not know (`vqclip.spelling.words.sample_words`). The paper generated about 2,000 images
per word set; at `--scale 1` that is 2,000 real and 2,000 nonsense words, one image per word and space (seed 0).
The full list is drawn once and saved as `words.json` in the report folder; a smaller `--scale` takes the first
words of each set from it, so a larger scale later extends the same batch instead of starting another.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..batch import BatchSpec, PromptItem, make_plan, run_batch
from ..batch.plan import base_settings_record
from ..errors import bad_arg
from ..evaluate.textscore import ALL, DEFAULT_THRESHOLDS, PAPER_ANY_TEXT, SPACE_ORDER, threshold_key
from ..spelling.words import WORDS_FORMAT, WordList, sample_words
from .paper import PAPER, compare_rate

WORD_SETS = ("real", "nonsense")
PER_SET = PAPER["ocr"]["images_per_word_set"]
WORDS_NAME = "words.json"
GRID_WORDS = 8  # words per word set in the comparison grids


# ------------------------------------------------------------------------------------------------------- words

def words_per_set(scale: float) -> int:
    """Words per set (and images per set and space) at `scale` of the paper's ~2,000; at least one."""
    if not (isinstance(scale, (int, float)) and 0 < scale <= 1):
        raise bad_arg("--scale", "must be a fraction above 0 and at most 1 of the paper's 2,000 images per word "
                      "set and space", scale, "Use e.g. --scale 0.05 (100 words per set) or --scale 1 (the paper's).")
    return max(1, round(PER_SET * scale))


def _saved_recipe(path: Path) -> dict | None:
    """The recipe of a words.json vqclip wrote, or None when the file is not one."""
    try:
        from ..untrusted import read_json

        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data.get("recipe") if isinstance(data, dict) and data.get("format") == WORDS_FORMAT else None


def word_list(folder: str | os.PathLike, seed: int = 0, words_file: str | os.PathLike | None = None,
              save: bool = True) -> WordList:
    """The experiment's words: `words_file` if given, else the list saved in `folder`, else drawn now (and saved
    there unless `save` is False).

    A saved list drawn with another seed is refused rather than silently mixed into the batch.
    """
    path = Path(folder) / WORDS_NAME
    if words_file is not None:
        words = WordList.load(words_file, "--words")
        if save and not (path.is_file() and _saved_recipe(path) == words.recipe):
            _save_words(words, path)
        return words
    if path.is_file():
        recipe = _saved_recipe(path)
        if recipe is None:
            raise bad_arg("--out", f"{WORDS_NAME} in the folder is not a word list vqclip wrote", str(path),
                          "Choose another --out, or remove the file.")
        if recipe.get("source") == "wordfreq" and recipe.get("seed") != seed:
            raise bad_arg("--seed", f"the folder's word list was drawn with seed {recipe.get('seed')}", seed,
                          f"Use --seed {recipe.get('seed')} to resume it, or choose another --out.")
        words = WordList.load(path, "--out")
        words.recipe = recipe
        return words
    words = sample_words(2 * PER_SET, real_fraction=0.5, seed=seed)
    if save:
        _save_words(words, path)
    return words


def _save_words(words: WordList, path: Path) -> None:
    from ..io import write_json

    write_json(path, words.to_dict())


def save_words(words: WordList, folder: str | os.PathLike) -> Path:
    """Keep the list the batch is planned from in `folder` (once; a list vqclip saved with this recipe stays)."""
    path = Path(folder) / WORDS_NAME
    if not (path.is_file() and _saved_recipe(path) == words.recipe):
        _save_words(words, path)
    return path


def select_words(words: WordList, per_set: int, arg: str = "--scale") -> list[tuple[str, str]]:
    """The first `per_set` real and first `per_set` nonsense words in list order, interleaved (an interrupted run
    still has both sets): [(word, word_type), ...]."""
    sets = {kind: [w for w, real in zip(words.words, words.is_real) if real == (kind == "real")]
            for kind in WORD_SETS}
    short = {kind: len(ws) for kind, ws in sets.items() if len(ws) < per_set}
    if short:
        raise bad_arg(arg, f"needs {per_set} words per set, and the word list has fewer "
                      f"({', '.join(f'{n} {k}' for k, n in short.items())})", per_set,
                      "Use a smaller --scale, or a longer --words list.")
    out = []
    for i in range(per_set):
        out += [(sets[kind][i], kind) for kind in WORD_SETS]
    return out


def word_items(selected: Sequence[tuple[str, str]], source: str = WORDS_NAME) -> list[PromptItem]:
    """One batch item per word: the word itself is the prompt (as in the paper's figure), its set the word type."""
    return [PromptItem(prompt=word, id=f"{kind}-{word}", word_type=kind, source=f"{source}:{i + 1}")
            for i, (word, kind) in enumerate(selected)]


# ------------------------------------------------------------------------------------------------- generation

def make_spec(items: Sequence[PromptItem], spaces: Sequence[str], seed: int, base, models_id: Mapping[str, Any],
              projections: Mapping[str, str | None]) -> BatchSpec:
    """The batch of the experiment: every word x space, one seed; the same record `vqclip batch` would write."""
    jobs = make_plan(items, spaces, (seed,))
    return BatchSpec(base_settings_record(base), dict(models_id), list(items), tuple(spaces), (seed,), jobs,
                     dict(projections))




def batch_options(group_size: int | str | None) -> dict:
    """The one place the group size reaches the batch runner: passed when `run_batch` accepts `group_size`."""
    if group_size is None or "group_size" not in inspect.signature(run_batch).parameters:
        return {}
    return {"group_size": group_size}


def images_per_group(group_size: int | str | None, models, settings) -> int:
    """How many images the batch runner will optimise together here (1 without grouped generation)."""
    options = batch_options(group_size)
    if not options:
        return 1
    from ..batch import runner

    resolve = getattr(runner, "resolve_group_size", None)
    if resolve is not None:
        return int(resolve(options["group_size"], models, settings))
    return options["group_size"] if isinstance(options["group_size"], int) else 1


def grouping_note(group_size: int | str | None, per_group: int | None = None) -> str:
    options = batch_options(group_size)
    if group_size is None:
        return "one image at a time"
    if options and per_group == 1:
        return f"one image at a time (--group-size {group_size} gives one on this device)"
    if options:
        size = f"{per_group} images per group" if per_group else f"group size {options['group_size']}"
        return f"grouped generation ({size}; --group-size {group_size})"
    return f"one image at a time (this vqclip's batch runner has no grouped generation; --group-size {group_size} " \
           "is recorded but not used)"


def generate(spec: BatchSpec, jobs, base, models, folder: str | os.PathLike, hooks=None,
             group_size: int | None = None, line_extra: Mapping[str, Any] | None = None):
    """Run `jobs` (this process's share) of `spec` into the batch folder with `vqclip batch`'s runner."""
    return run_batch(jobs, spec, base, models, folder, hooks=hooks, line_extra=line_extra,
                     **batch_options(group_size))


def device_name(models) -> str:
    import torch

    device = models.clip.device
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({torch.get_num_threads()} threads)"


def measure_step_seconds(models, base, space: str = "clip", projection: str | None = None, steps: int = 4,
                         group: int = 1) -> dict:
    """Seconds per image and generation step on this device, measured on `group` probe images optimised together
    (as the batch runner will group them).

    The probe runs 1 step and then 1 + `steps` steps; the difference of the two times divided by `steps` and by
    `group` is the cost of an image's step without the set-up and warm-up every run pays once (a run's first step
    also selects kernels). One space is enough: a projection adds one small matrix product to a step. Returns
    {"seconds_per_step", "space", "group", "steps_measured", "image"} (a probe image, for timing OCR).
    """
    from ..generation.loop import run_many
    from ..generation.prompts import parse_prompts

    steps, group = max(1, int(steps)), max(1, int(group))
    sp = models.space(space, projection)

    def timed(n_steps: int):
        probes = [dataclasses.replace(base, prompts=parse_prompts("apple"), seed=i, steps=n_steps)
                  for i in range(group)]
        start = time.perf_counter()
        results = run_many(probes, models.clip, models.vqgan, [sp] * group)
        return time.perf_counter() - start, results[0]

    short, _ = timed(1)
    long, result = timed(1 + steps)
    per_step = (long - short) / steps / group
    if per_step <= 0:  # timer noise on a tiny model: the plain average is the honest fallback
        per_step = long / (1 + steps) / group
    return {"seconds_per_step": per_step, "space": space, "group": group, "steps_measured": 2 + steps,
            "image": result.image}


def measure_ocr_seconds(reader, image) -> float | None:
    """Seconds EasyOCR takes for one generated image on this device (the second read: the first loads the model)."""
    import numpy as np

    if image is None:
        return None
    arr = np.asarray(image.convert("RGB"))
    reader.read([arr])
    start = time.perf_counter()
    reader.read([arr])
    return time.perf_counter() - start


def estimate(jobs_to_run: int, steps: int, seconds_per_step: float, images_to_score: int,
             ocr_seconds: float | None, device: str, processes: int = 1) -> dict:
    """The time the run will take here: generation (jobs x steps x s/step) plus OCR, per process and in all."""
    generation = jobs_to_run * steps * seconds_per_step
    ocr = images_to_score * ocr_seconds if ocr_seconds is not None else None
    total = generation + (ocr or 0.0)
    return {"device": device, "jobs_to_run": jobs_to_run, "steps": steps,
            "seconds_per_step": round(seconds_per_step, 4), "generation_seconds": round(generation, 1),
            "images_to_score": images_to_score,
            "ocr_seconds_per_image": None if ocr_seconds is None else round(ocr_seconds, 4),
            "ocr_seconds": None if ocr is None else round(ocr, 1), "total_seconds": round(total, 1),
            "processes": processes}


def human_duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3.4 h`, `2.1 days`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def estimate_text(e: Mapping[str, Any]) -> str:
    """One line for the terminal and the report."""
    ocr = (f" + OCR {e['images_to_score']} images x {e['ocr_seconds_per_image']:.2f} s"
           if e.get("ocr_seconds_per_image") is not None and e["images_to_score"] else "")
    grouped = f", {e['group']} images per group" if e.get("group", 1) > 1 else ""
    line = (f"estimate on {e['device']}: {e['jobs_to_run']} images x {e['steps']} steps x "
            f"{e['seconds_per_step']:.3g} s/step (measured{grouped}){ocr} = {human_duration(e['total_seconds'])}")
    if e.get("processes", 1) > 1:
        line += f" for this share ({e['processes']} processes share the batch)"
    return line


# ----------------------------------------------------------------------------------------------------- scoring

def ocr_reader(device: str = "auto"):
    """EasyOCR on its offline English weights (the paper's OCR), as `vqclip score` builds it."""
    from ..evaluate.ocr import EasyOcrReader

    return EasyOcrReader(device=device)


def score(folder: str | os.PathLike, job_ids: Sequence[str], out: str | os.PathLike, reader,
          cache_dir: str | os.PathLike | None = None, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
          batch_size: int = 8, progress: bool = True, extra: Mapping[str, Any] | None = None) -> dict:
    """OCR the images of `job_ids` (this run's sample of the batch) with `vqclip score`'s scorer into `out`."""
    from ..evaluate.ocr import OcrCache
    from ..evaluate.scoring import score_paths
    from ..evaluate.sources import collect_images

    folder = Path(folder)
    wanted = set(job_ids)
    items, skipped = collect_images([folder])
    items = [it for it in items if it.meta.get("id") in wanted]
    prefixes = tuple(str(folder / job_id) + os.sep for job_id in wanted)
    failed = {str(folder / f"<job {job_id}>") for job_id in wanted}  # how a failed job without image is listed
    skipped = [s for s in skipped if str(s.get("path", "")).startswith(prefixes) or str(s.get("path")) in failed]
    return score_paths(items, skipped, out, reader, OcrCache(reader.key, cache_dir), None, thresholds,
                       group_by=("space", "word_type"), stem_words=False, batch_size=batch_size, progress=progress,
                       extra=dict(extra or {}))


def comparison_rows(groups: Sequence[Mapping[str, Any]], thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                    methods: Sequence[str] = ()) -> list[dict]:
    """One row per (threshold, word set, space): the measured share of images with text beside the paper's; the
    extra `methods` (ways of keeping text out, issue 27) follow the paper's spaces, with no paper number."""
    index = {(g["key"].get("space"), g["key"].get("word_type")): g["metrics"] for g in groups}
    rows = []
    for t in thresholds:
        metric = f"any_text>{threshold_key(t)}"
        for word_type in (ALL, "nonsense", "real"):
            paper = PAPER_ANY_TEXT.get((float(t), word_type), {})
            for space in (*SPACE_ORDER, *methods):
                measured = index.get((space, word_type), {}).get(metric)
                rows.append({"threshold": float(t), "word_type": word_type, "space": space,
                             **compare_rate(measured, paper.get(space))})
    return rows


def legibility_rows(groups: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The prompt word itself legible / exact (vqclip's measure; the paper has no number for it)."""
    rows = []
    for metric in ("legible", "exact"):
        for g in groups:
            if g["metrics"].get(metric, {}).get("n"):
                rows.append({"metric": metric, "space": g["key"].get("space"), "word_type": g["key"].get("word_type"),
                             **compare_rate(g["metrics"][metric], None)})
    return rows


# -------------------------------------------------------------------------------------------------------- grid

def comparison_grids(folder: str | os.PathLike, items: Sequence[PromptItem], out_dir: str | os.PathLike,
                     per_set: int = GRID_WORDS, thumb: int = 128) -> list[Path]:
    """One labelled grid per word set: its first `per_set` words (rows) in every space (columns)."""
    from ..grid import GridStyle, arrange, collect, write_grid

    found = collect(folder)
    pages: list[Path] = []
    for kind in WORD_SETS:
        ids = {it.id for it in [i for i in items if i.word_type == kind][:per_set]}
        cells = [c for c in found.cells if c.fields.get("prompt") in ids]
        if not any(c.status == "ok" for c in cells):
            continue
        arr = arrange(cells, "prompt", ["space"])
        pages += write_grid(found, arr, Path(out_dir) / f"grid-{kind}.png",
                            GridStyle(thumb=thumb, max_rows=max(per_set, 1)))
    return pages
