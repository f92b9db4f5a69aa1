"""`vqclip score`: OCR every generated image once, measure text and prompt-word legibility, write the reports."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import bad_arg
from ..io import write_json, write_text
from .ocr import OcrCache, OcrReader, OcrResult, ocr_images
from .sources import ImageItem, describe_item
from .textscore import (DEFAULT_MAX_DISTANCE, DEFAULT_THRESHOLDS, UNKNOWN, bar_chart, group_value, markdown_table,
                        score_detections, summarise)

OUTPUT_FILES = {"records": "scores.jsonl", "summary": "summary.json", "table": "table.md", "chart": "chart.png"}


def image_record(item: ImageItem, result: OcrResult, info: Mapping[str, Any], thresholds: Sequence[float],
                 max_distance: float) -> dict:
    """The per-image JSONL record: identity, metadata, every detection and the measures derived from them."""
    base = {"path": str(item.path), **info}
    if result.detections is None:
        return {**base, "status": "skipped", "reason": result.error or "not scored", "sha256": result.sha256}
    rec = {**base, "status": "ok", "sha256": result.sha256, "size": list(result.size) if result.size else None,
           "cached": result.cached, "detections": [d.to_dict() for d in result.detections]}
    rec.update(score_detections(result.detections, info.get("words") or [], thresholds, max_distance))
    rec["meta"] = {k: v for k, v in item.meta.items() if k not in rec}
    return rec


def _field_paths(obj: Mapping[str, Any], prefix: str = "", depth: int = 3) -> set[str]:
    """Dotted paths of the non-empty scalar values in a metadata mapping (`settings.steps`, `seed`, ...)."""
    out: set[str] = set()
    for key, value in obj.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if depth > 1:
                out |= _field_paths(value, path + ".", depth - 1)
        elif value is not None and value != "" and not isinstance(value, (list, tuple)):
            out.add(path)
    return out


def check_group_fields(items: Sequence[ImageItem], fields: Sequence[str],
                       words: Mapping[str, str | None] | None = None, default_space: str | None = None,
                       stem_words: bool = True) -> None:
    """Refuse `--group-by` fields that no image carries (all would land in 'unknown'), before any OCR runs."""
    records = [{"path": str(it.path), **describe_item(it, words, default_space, stem_words), "meta": it.meta}
               for it in items]
    missing = [f for f in fields if all(group_value(r, f) == UNKNOWN for r in records)]
    if missing:
        known = sorted(set().union(*(_field_paths({k: v for k, v in r.items() if k != "meta"}) |
                                     _field_paths(r["meta"]) for r in records)) - {"path"})
        shown = ", ".join(known[:60]) + (f" and {len(known) - 60} more" if len(known) > 60 else "")
        raise bad_arg("--group-by", "no image has this metadata field, so every image would land in 'unknown'",
                      ", ".join(missing), f"Fields these images carry: {shown or '(none)'}.")


def score_items(items: Sequence[ImageItem], reader: OcrReader, cache: OcrCache | None = None,
                words: Mapping[str, str | None] | None = None, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                max_distance: float = DEFAULT_MAX_DISTANCE, default_space: str | None = None,
                stem_words: bool = True, batch_size: int = 8, progress: bool = True,
                records: list[dict] | None = None) -> list[dict]:
    """Per-image records in input order; `records` (if given) fills as results arrive, so an interrupt keeps them."""
    infos = [describe_item(it, words, default_space, stem_words) for it in items]
    out = records if records is not None else []
    by_index: dict[int, dict] = {}

    def collect(res: OcrResult) -> None:
        rec = image_record(items[res.index], res, infos[res.index], thresholds, max_distance)
        by_index[res.index] = rec
        out.append(rec)

    ocr_images([it.path for it in items], reader, cache, batch_size, progress, on_result=collect)
    out[:] = [by_index[i] for i in sorted(by_index)]
    return out


def write_reports(records: Sequence[Mapping[str, Any]], skipped: Sequence[Mapping[str, Any]], out_dir: str |
                  os.PathLike, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                  max_distance: float = DEFAULT_MAX_DISTANCE, group_by: Sequence[str] = ("space", "word_type"),
                  extra: Mapping[str, Any] | None = None, chart: bool = True) -> dict:
    """Write scores.jsonl, summary.json, table.md and chart.png (each atomically); return the summary."""
    import json

    out = Path(out_dir)
    scored = [r for r in records if r.get("status") == "ok"]
    skipped_all = list(skipped) + [{"path": r["path"], "reason": r["reason"]} for r in records
                                   if r.get("status") != "ok"]
    groups = summarise(scored, group_by, thresholds)
    summary = {
        **(extra or {}),
        "thresholds": list(thresholds), "max_distance": max_distance, "group_by": list(group_by),
        "n_images": len(records) + len(skipped), "n_scored": len(scored), "n_skipped": len(skipped_all),
        "n_cached": sum(1 for r in scored if r.get("cached")),
        "n_with_prompt_word": sum(1 for r in scored if r.get("legibility") is not None),
        "skipped": skipped_all, "groups": groups,
        "files": {k: str(out / v) for k, v in OUTPUT_FILES.items()},
    }
    lines = [json.dumps(r, default=str) for r in list(records)] + \
            [json.dumps({**s, "status": "skipped"}, default=str) for s in skipped]
    write_text(out / OUTPUT_FILES["records"], "\n".join(lines) + ("\n" if lines else ""))
    table = markdown_table(groups, thresholds, max_distance)
    write_text(out / OUTPUT_FILES["table"], table)
    if chart and groups:
        bar_chart(groups, out / OUTPUT_FILES["chart"], thresholds, max_distance)
    else:
        summary["files"].pop("chart")
    summary["table"] = table
    write_json(out / OUTPUT_FILES["summary"], summary)
    return summary


def score_paths(items: Sequence[ImageItem], skipped: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike,
                reader: OcrReader, cache: OcrCache | None = None, words: Mapping[str, str | None] | None = None,
                thresholds: Sequence[float] = DEFAULT_THRESHOLDS, max_distance: float = DEFAULT_MAX_DISTANCE,
                group_by: Sequence[str] = ("space", "word_type"), default_space: str | None = None,
                stem_words: bool = True, batch_size: int = 8, progress: bool = True,
                extra: Mapping[str, Any] | None = None, chart: bool = True) -> dict:
    """Score `items` and write the reports; on an interrupt, the images scored so far are still reported."""
    from .. import __version__

    started = time.time()
    records: list[dict] = []
    meta = {"vqclip_version": __version__, "ocr": reader.key, **(extra or {})}
    try:
        score_items(items, reader, cache, words, thresholds, max_distance, default_space, stem_words, batch_size,
                    progress, records)
    except BaseException:
        if records:  # keep what was gathered: OCR results are cached too, so a re-run resumes at once
            write_reports(records, skipped, out_dir, thresholds, max_distance, group_by,
                          {**meta, "partial": True}, chart=False)
        raise
    meta["seconds"] = round(time.time() - started, 2)
    return write_reports(records, skipped, out_dir, thresholds, max_distance, group_by, {**meta, "partial": False},
                         chart=chart)
