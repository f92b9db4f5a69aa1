"""The paper's typographic-attack table: its 180 photos, zero-shot in clip / learn / forget, beside 49.4 / 77.2 %."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

from ..evaluate.typographic import (DEFAULT_TEMPLATE, PAPER_ACCURACY, PAPER_DATASET_ATTACKS, PAPER_DATASET_IMAGES,
                                    PAPER_DATASET_OBJECTS, PROTOCOLS, evaluate_typographic,
                                    open_typographic_dataset, write_typographic_report)
from .options import SPACES, ReproduceOptions
from .paper import compare_rate

REFERENCE = ("union", "all")  # protocol and measure the paper's numbers are compared with (docs/evaluation.md)


def dataset_notes(described: Mapping[str, Any]) -> list[str]:
    """Where the photo folder differs from the paper's (180 images, 20 objects, 8 attack words)."""
    notes = []
    for key, expected, what in (("evaluated", PAPER_DATASET_IMAGES, "images"),
                                ("objects", PAPER_DATASET_OBJECTS, "objects"),
                                ("attack_words", PAPER_DATASET_ATTACKS, "attack words")):
        value = described.get(key)
        got = len(value) if isinstance(value, list) else value
        if got != expected:
            notes.append(f"the paper's set has {expected} {what}; this folder gave {got}")
    if described.get("skipped"):
        notes.append(f"{len(described['skipped'])} entries or files skipped (listed in typographic/report.json)")
    return notes


def comparison_rows(results: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """One row per (protocol, space): object accuracy on all images, and the paper's number where it has one."""
    rows = []
    for proto in PROTOCOLS:
        for space in [s for s in SPACES if s in results] + [s for s in results if s not in SPACES]:
            paper = PAPER_ACCURACY.get(space) if (proto, "all") == REFERENCE else None
            rows.append({"protocol": proto, "protocol_label": PROTOCOLS[proto], "space": space,
                         **compare_rate(results[space][proto]["all"], paper),
                         "attacked": compare_rate(results[space][proto]["attacked"], None),
                         "attack_wins": compare_rate(results[space][proto]["attack_wins"], None)})
    return rows


def run_typographic(dataset_root: str | os.PathLike, clip, spaces: Mapping[str, Any], out: str | os.PathLike,
                    template: str = DEFAULT_TEMPLATE, batch_size: int = 32, progress: bool = True) -> dict:
    """Evaluate the photo folder in every space (`vqclip eval typographic`'s evaluation and files) into `out`.

    Returns the section of the reproduce report: dataset, comparison rows, the evaluation's table, timing, files.
    """
    start = time.perf_counter()
    out = Path(out)
    dataset = open_typographic_dataset(dataset_root, "annotation")
    report = evaluate_typographic(dataset, clip, spaces, template, batch_size, progress)
    report["clip"] = clip.describe()
    table = write_typographic_report(report, out)
    described = report["dataset"]
    return {"dataset": {k: described[k] for k in ("root", "images", "evaluated", "clean", "attacked", "objects",
                                                   "attack_words")},
            "skipped": described["skipped"], "notes": dataset_notes(described), "template": template,
            "rows": comparison_rows(report["results"]), "table": table,
            "seconds": round(time.perf_counter() - start, 2),
            "files": {"report": str(out / "report.json"), "table": str(out / "table.md"),
                      "predictions": str(out / "predictions.jsonl")}}


def typographic_section(o: ReproduceOptions, clip, root: str | os.PathLike, progress=None) -> dict:
    """The typographic part of a reproduce run: the photos in `root` in clip / learn / forget into
    OUT/typographic, with the names and hashes of the models used; `progress` (a `Progress`) counts the photos."""
    from ..evaluate.typographic import check_template
    from .assets import model_files, typographic_spaces

    check_template(o.template)
    spaces = typographic_spaces(clip, o)
    if progress is not None:
        progress.stage("typographic attacks")
    section = run_typographic(root, clip, spaces, Path(o.out) / "typographic", o.template, o.batch_size,
                              progress=not o.quiet)
    if progress is not None:
        progress.advance(section["dataset"]["images"])
    section["models"] = {"names": {"clip": clip.identity}, "files": model_files(o.pretrained, spaces)}
    return section
