"""`vqclip score`: OCR every generated image once, measure text and prompt-word legibility, write the reports."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import bad_arg
from ..io import check_replaceable, record_written, write_json, write_text
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


SUFFIX_CHARS = 16  # a distinguishing suffix is short: the chart legend and the table header must stay readable


def _suffixes(variants: Sequence[Mapping[str, Any]]) -> list[str]:
    """Short strings that tell apart spaces of one name: the projection file's stem, else d, else the content hash,
    else a number."""
    candidates = (lambda d: Path(str(d.get("path") or "")).stem[:SUFFIX_CHARS],
                  lambda d: f"d{d['dim']}" if d.get("dim") else "",
                  lambda d: str(d.get("sha256") or "")[:8])
    for make in candidates:
        found = [make(d) for d in variants]
        if all(found) and len(set(found)) == len(found):
            return found
    return [str(i + 1) for i in range(len(variants))]


def label_spaces(infos: Sequence[dict]) -> None:
    """Label each image's space by its name where the metadata holds the whole description (run.json of `vqclip
    generate`: `{'space': 'forget', 'dim': 64, ...}`); spaces that share a name but not their projection get a
    short suffix (`forget:forget_d128`). The description is kept as `space_detail`. Changes `infos` in place."""
    def key(d: Mapping[str, Any]) -> str:
        return json.dumps(d, sort_keys=True, default=str)

    described = [i for i in infos if isinstance(i.get("space"), Mapping)]
    by_name: dict[str, dict[str, Mapping[str, Any]]] = {}
    for info in described:
        by_name.setdefault(str(info["space"].get("space") or UNKNOWN), {})[key(info["space"])] = info["space"]
    labels: dict[str, str] = {}
    for name, variants in by_name.items():
        if len(variants) == 1:
            labels.update({k: name for k in variants})
        else:
            labels.update({k: f"{name}:{s}" for k, s in zip(variants, _suffixes(list(variants.values())))})
    for info in described:
        info["space_detail"] = info["space"]
        info["space"] = labels[key(info["space"])]


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
    label_spaces(infos)
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
                  extra: Mapping[str, Any] | None = None, chart: bool = True, overwrite: bool = False) -> dict:
    """Write scores.jsonl, summary.json, table.md and chart.png (each atomically); return the summary.

    A file of those names is replaced only when vqclip wrote it (the folder's ledger, `io.record_written`), or with
    `overwrite`; a user's file is refused (`output_paths` lets the CLI check that before any OCR)."""
    import json

    out = Path(out_dir)
    check_replaceable(output_paths(out), overwrite, "--out")
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
    record_written(*[out / name for key, name in OUTPUT_FILES.items() if key in summary["files"]])
    return summary


def output_paths(out_dir: str | os.PathLike) -> list[Path]:
    """The files `write_reports` writes into `out_dir`."""
    return [Path(out_dir) / name for name in OUTPUT_FILES.values()]


def score_paths(items: Sequence[ImageItem], skipped: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike,
                reader: OcrReader, cache: OcrCache | None = None, words: Mapping[str, str | None] | None = None,
                thresholds: Sequence[float] = DEFAULT_THRESHOLDS, max_distance: float = DEFAULT_MAX_DISTANCE,
                group_by: Sequence[str] = ("space", "word_type"), default_space: str | None = None,
                stem_words: bool = True, batch_size: int = 8, progress: bool = True,
                extra: Mapping[str, Any] | None = None, chart: bool = True, overwrite: bool = False) -> dict:
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
                          {**meta, "partial": True}, chart=False, overwrite=overwrite)
        raise
    meta["seconds"] = round(time.time() - started, 2)
    return write_reports(records, skipped, out_dir, thresholds, max_distance, group_by, {**meta, "partial": False},
                         chart=chart, overwrite=overwrite)


def score_report(summary: Mapping[str, Any], out: Path) -> str:
    """`vqclip score`'s report on stdout: the table, the counts and the first ten skipped images."""
    lines = [summary["table"].rstrip("\n"), "",
             f"scored {summary['n_scored']} images ({summary['n_cached']} from the OCR cache), "
             f"skipped {summary['n_skipped']}; reports in {out}"]
    lines += [f"  skipped {s['path']}: {s['reason']}" for s in summary["skipped"][:10]]
    if summary["n_skipped"] > 10:
        lines.append(f"  ... {summary['n_skipped'] - 10} more in {Path(out) / 'summary.json'}")
    return "\n".join(lines) + "\n"
