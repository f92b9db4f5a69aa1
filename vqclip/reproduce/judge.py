"""The object check of the text-in-generated-images part (issue 27): after OCR, a second CLIP (--judge-clip) says
whether each real word's image still shows its object (`vqclip.evaluate.objectjudge`), per space / method, overall
and on the images where OCR found no text. Nonsense words have no object and are not judged."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import VqclipError, bad_arg
from ..evaluate.objectjudge import ARG, JUDGE_TEMPLATE, PROXY_NOTE, judge_images, kept_rates, load_judge, \
    parse_judge_clip
from ..evaluate.textscore import threshold_key
from .options import ReproduceOptions
from .paper import compare_rate

JUDGE_DIR = "judge"
JUDGE_KIND = "judge CLIP weights"  # the preflight's name for the judge's weights
JUDGEMENTS = "judgements.jsonl"


def judge_needs(o: ReproduceOptions) -> list:
    """The judge CLIP's weights for the preflight (none when off or from a file / folder the user gave)."""
    from ..preflight import clip_need

    judge = parse_judge_clip(o.judge_clip)
    need = clip_need(judge[0], judge[1], o.cache_dir) if judge else None
    if need is None:
        return []
    return [dataclasses.replace(need, kind=JUDGE_KIND,
                                how=need.how.replace("--pretrained ", f"{ARG} {judge[0]}:")
                                .replace("--clip local-dir:", f"{ARG} local-dir:"))]


def judge_missing_error(o: ReproduceOptions, missing: Sequence) -> VqclipError | None:
    """When the judge's weights are all a preflight misses: the one-line error naming --judge-clip (with other
    files missing too, the preflight's list names them all, the judge's among them)."""
    if not missing or any(n.kind != JUDGE_KIND for n in missing):
        return None
    n = missing[0]
    return bad_arg(ARG, "the judge CLIP's weights are not on this machine, and it cannot download them now",
                   o.judge_clip, f"{_capital(n.how) if n.how else f'Get {n.source} and put it at {n.path}'}, or "
                   "pass --judge-clip none to skip the object check.")


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def judged_records(scores: Sequence[Mapping[str, Any]], jobs, threshold: float) -> list[dict]:
    """The real-word images OCR scored, with their prompt word and whether OCR found no text above `threshold`."""
    by_id = {job.id: job for job in jobs}
    out = []
    for r in scores:
        job = by_id.get(r.get("id"))
        if r.get("status") != "ok" or job is None or job.item.word_type != "real":
            continue
        out.append({"id": job.id, "path": r["path"], "space": job.space, "word": job.item.prompt,
                    "no_text": not r["any_text"][threshold_key(threshold)]})
    return out


def object_section(o: ReproduceOptions, plan, scored: Mapping[str, Any], models, progress=None) -> dict:
    """Judge every real word's image of the batch with --judge-clip; the report's `object` part: one row per
    column of the OCR table with "object kept (judge)" and "object kept, no text" (Wilson 95 % intervals), the
    judge's description, and the per-image verdicts in OUT/ocr/judge/judgements.jsonl."""
    from ..io import check_replaceable, read_jsonl

    start = time.perf_counter()
    check_replaceable([plan.folder / JUDGE_DIR / JUDGEMENTS], arg="--out")  # never a file vqclip did not write
    if progress is not None:
        progress.stage("judging objects")
    threshold = min(scored["thresholds"])
    records = judged_records(read_jsonl(scored["files"]["records"]), plan.spec.jobs, threshold)
    words = list(dict.fromkeys(it.prompt for it in plan.items if it.word_type == "real"))
    device = models.clip.device if models is not None else o.device
    judge = load_judge(o.judge_clip, device=device, precision=o.precision, cache_dir=o.cache_dir)
    verdicts = judge_images(judge, [r["path"] for r in records], [r["word"] for r in records], words,
                            batch_size=o.batch_size, progress=not o.quiet) if records else []
    records = [{**r, **v} for r, v in zip(records, verdicts)]
    path = _write_judgements(plan.folder / JUDGE_DIR / JUDGEMENTS, records)
    rates = kept_rates(records)
    rows = [{"space": col, "kept": compare_rate(rates.get(col, {}).get("kept"), None),
             "kept_no_text": compare_rate(rates.get(col, {}).get("kept_no_text"), None)} for col in o.columns]
    return {"judge": {"clip": o.judge_clip, "identity": judge.identity, "template": JUDGE_TEMPLATE,
                      "words": len(words), "chance_percent": round(100 / max(1, len(words)), 2),
                      "no_text": f"OCR found no text at confidence > {threshold:g}", "note": PROXY_NOTE},
            "rows": rows, "judged": len(records), "unreadable": sum(r.get("kept") is None for r in records),
            "file": str(path), "seconds": round(time.perf_counter() - start, 2)}


def _write_judgements(path: Path, records: Sequence[Mapping[str, Any]]) -> Path:
    """One JSON line per judged image, written atomically (replaced on every run: the verdicts are recomputed)."""
    from ..io import record_written, write_text

    write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in records))
    record_written(path)
    return path
