"""`vqclip reproduce` as library calls, one per part: `reproduce_typographic`, `reproduce_ocr`, `reproduce_all`.

Each takes checked `ReproduceOptions`, writes the report folder, prints the tables through `echo` (stdout by
default; progress and messages go to stderr) and returns the command's exit code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import VqclipError
from .options import SPACES, ReproduceOptions
from .progress import Progress, say

Echo = Callable[[str], None]


def reproduce_typographic(o: ReproduceOptions, echo: Echo = print) -> int:
    """The typographic-attack table: the paper's photos (fetched on first use) zero-shot in clip / learn / forget,
    into OUT/typographic and the report."""
    from ..preflight import preflight
    from .assets import dataset_root, load_clip, needs
    from .report import summary_lines, write_report
    from .typographic import typographic_section

    preflight(needs(o, [(s, o.projections.get(s)) for s in SPACES], paper_dataset=not o.dataset))
    start = time.perf_counter()
    root = dataset_root(o, not o.quiet)
    fetched = time.perf_counter() - start
    clip = load_clip(o)
    section = typographic_section(o, clip, root)
    section["timing"] = {"fetch": round(fetched, 2), "evaluate": section["seconds"]}
    write_report(o.out, {"typographic": section}, o.command_line())
    for line in summary_lines({"typographic": section}, o.out):
        echo(line)
    return 0


def reproduce_ocr(o: ReproduceOptions, load_models: Callable, echo: Echo = print) -> int:
    """The text-in-generated-images table: real and nonsense words generated in the three spaces through the batch
    runner (resumable, this process's share of it), scored by EasyOCR, into OUT/ocr and the report.

    `load_models(shard, [(space, file, flag), ...])` loads CLIP, the spaces and the VQGAN (`vqclip.generation.
    load_models` with the command's flags)."""
    return _reproduce(o, load_models, echo, typographic=False)


def reproduce_all(o: ReproduceOptions, load_models: Callable, echo: Echo = print) -> int:
    """Both tables into one report: the typographic part (by the first share) with the generation models' CLIP,
    then the text-in-generated-images part as `reproduce_ocr`."""
    return _reproduce(o, load_models, echo, typographic=True)


@dataclass
class _Loaded:
    """What the run has before its first image: the photo folder, the OCR reader, the models, the estimate."""

    root: Path | None = None
    reader: Any = None
    models: Any = None
    estimate: dict | None = None
    timing: dict = field(default_factory=dict)


def _reproduce(o: ReproduceOptions, load_models: Callable, echo: Echo, typographic: bool) -> int:
    """Plan, check the files, load and estimate (a dry run stops here), run the parts, write and print."""
    from .ocr_run import plan_ocr

    plan = plan_ocr(o)
    info = echo if o.dry_run else (lambda text: None) if o.quiet else say  # -q hides info lines
    info(f"plan: {plan.describe(o.shard)}")
    if not _preflight(o, typographic, echo):
        return 0  # a dry run offline: the plan and what is missing, printed
    loaded = _load(o, plan, load_models, typographic, info)
    if o.dry_run:
        return 0
    sections, code = _run_parts(o, plan, loaded, typographic)
    if sections:
        from .report import summary_lines, write_report

        write_report(o.out, sections, o.command_line())
        for line in summary_lines(sections, o.out):
            echo(line)
    if code == 130:
        say("interrupted; finished images are kept. Run the same command again to resume.")
    return code


def _preflight(o: ReproduceOptions, typographic: bool, echo: Echo) -> bool:
    """Every file the run needs (CLIP, VQGAN, the projections, the paper's photos), before any download: one
    message for all that are missing when they cannot be fetched. A --dry-run without network prints them and
    returns False (the time estimate needs the models) instead of failing."""
    from ..preflight import MissingAssets, format_table, network_available, preflight
    from .assets import needs
    from .judge import judge_missing_error, judge_needs

    missing = needs(o, [(s, o.projections.get(s)) for s in SPACES], vqgan=True,
                    paper_dataset=typographic and not o.dataset) + judge_needs(o)
    if o.dry_run and any(not n.present for n in missing) and not network_available():
        echo("no network: the time estimate needs the models, and these are missing:")
        echo(format_table([n for n in missing if not n.present]))
        return False
    try:
        preflight(missing)
    except MissingAssets as e:
        raise judge_missing_error(o, e.missing) or e from None
    return True


def _load(o: ReproduceOptions, plan, load_models: Callable, typographic: bool, info: Echo) -> _Loaded:
    """The photos (for the typographic part), the OCR reader and the models, then the time estimate measured
    here when there is something to generate (or a dry run asks for it)."""
    from .assets import dataset_root, load_generation_models
    from .ocr_run import measure, ocr_reader

    loaded = _Loaded()
    start = time.perf_counter()
    loaded.root = dataset_root(o, not o.quiet, vqgan=True) if typographic else None
    loaded.timing["fetch"] = round(time.perf_counter() - start, 2)
    try:
        loaded.reader = ocr_reader(o.device)
    except VqclipError as e:
        if not o.dry_run:
            raise
        info(f"OCR: {e} The estimate below leaves OCR out.")  # a plan needs no OCR engine; the run does
    start = time.perf_counter()
    loaded.models = load_generation_models(o, o.shard, load_models)  # also when nothing is left: the report
    loaded.timing["load"] = round(time.perf_counter() - start, 2)   # hashes its files
    if loaded.models is not None and (plan.todo or o.dry_run):
        start = time.perf_counter()
        loaded.estimate = measure(o, plan, loaded.models, loaded.reader)
        loaded.timing["estimate"] = round(time.perf_counter() - start, 2)
        info(loaded.estimate["text"])
    return loaded


def _run_parts(o: ReproduceOptions, plan, loaded: _Loaded, typographic: bool) -> tuple[dict, int]:
    """The typographic part (by the first share only) and this share's OCR part under one progress bar; returns
    the report sections made and the exit code."""
    from ..evaluate.typographic import open_typographic_dataset
    from .ocr_run import run_ocr_part
    from .typographic import typographic_section

    progress = Progress(o.quiet or (o.shard.source == "torchrun" and o.shard.index != 0))
    typographic = typographic and o.shard.index == 0  # the photos are evaluated once, by the first share
    sections: dict = {}
    try:
        progress.add(len(plan.todo) + len(plan.spec.jobs))
        if typographic:
            progress.add(len(open_typographic_dataset(loaded.root, "annotation").samples))
            start = time.perf_counter()
            sections["typographic"] = typographic_section(o, loaded.models.clip, loaded.root, progress)
            sections["typographic"]["timing"] = {"fetch": loaded.timing["fetch"],
                                                 "evaluate": round(time.perf_counter() - start, 2)}
        section, code = run_ocr_part(o, plan, loaded.models, loaded.reader, progress, loaded.estimate)
    finally:
        progress.close()
    if section is not None:
        section["timing"] = {**{k: v for k, v in loaded.timing.items() if k != "fetch"}, **section["timing"]}
        sections["ocr"] = section
    return sections, code
