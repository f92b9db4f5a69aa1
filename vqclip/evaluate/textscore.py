"""Text in generated images (docs/method.md §6): any-text rates, prompt-word legibility, Wilson intervals, tables,
chart."""

from __future__ import annotations

import itertools
import math
import re
from typing import Any, Iterable, Mapping, Sequence

from ..errors import MissingExtraError, pip_extra
from .ocr import Detection

DEFAULT_THRESHOLDS = (0.0, 0.25)  # the paper's OCR confidence cut-offs
DEFAULT_MAX_DISTANCE = 0.3  # one wrong letter in 4-6 letters, two in 7-8; 3-letter words must be exact
ALL = "all"
UNKNOWN = "unknown"
SPACE_ORDER = ("clip", "learn", "forget")  # the column order of grid, ui and score (the paper's figure: learn first)
WORD_TYPE_ORDER = (ALL, "nonsense", "real")

# docs/method.md §6: share of images with any detected text (%), read from the paper's figure (±0.5).
PAPER_ANY_TEXT = {
    (0.0, ALL): {"learn": 53.3, "clip": 33.0, "forget": 3.3},
    (0.0, "nonsense"): {"learn": 54.5, "clip": 45.9, "forget": 2.1},
    (0.0, "real"): {"learn": 53.1, "clip": 19.3, "forget": 4.9},
    (0.25, ALL): {"learn": 39.0, "clip": 25.3, "forget": 0.7},
    (0.25, "nonsense"): {"learn": 41.2, "clip": 37.2, "forget": 0.3},
    (0.25, "real"): {"learn": 36.6, "clip": 12.6, "forget": 1.3},
}


# ---------------------------------------------------------------- strings

def normalise_text(text: str) -> str:
    """Case-insensitive, letters only: `"Ap-ple!"` -> `"apple"`."""
    return "".join(ch for ch in text.casefold() if ch.isalpha())


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def normalised_edit_distance(a: str, b: str) -> float:
    """Edit distance divided by the longer length: 0 = identical, 1 = nothing in common."""
    longest = max(len(a), len(b))
    return 0.0 if longest == 0 else edit_distance(a, b) / longest


_WEIGHT_SUFFIX = re.compile(r"^(.*?)(?::\s*-?\d*\.?\d+(?:e-?\d+)?){1,2}\s*$")


def prompt_words(prompt: str | None = None, prompts: Sequence[Mapping[str, Any]] | None = None) -> list[str]:
    """The word(s) an image was asked to show: tokens of the positively weighted prompts, letters only."""
    texts: list[str] = []
    if prompts:
        texts = [str(p.get("text", "")) for p in prompts if float(p.get("weight", 1.0) or 0.0) > 0]
    elif prompt:
        for part in str(prompt).split("|"):
            m = _WEIGHT_SUFFIX.match(part.strip())
            text, weight = (m.group(1), part.strip()[len(m.group(1)):]) if m else (part, "")
            if weight and weight.lstrip(": ").startswith("-"):
                continue  # a negative prompt is what the image should avoid
            texts.append(text)
    words: list[str] = []
    for text in texts:
        tokens = [normalise_text(t) for t in text.split()]
        tokens = [t for t in tokens if t]
        # in a phrase, short words ("a", "of") would match stray glyphs; the paper's words have 3-8 letters
        keep = tokens if len(tokens) == 1 else [t for t in tokens if len(t) >= 3]
        for t in keep:
            if t not in words:
                words.append(t)
    return words


# ---------------------------------------------------------------- per-image criteria

def any_text(detections: Iterable[Detection], threshold: float) -> bool:
    """At least one detection with confidence above `threshold` (the paper's criterion)."""
    return any(d.confidence > threshold for d in detections)


def _reading_order(detections: Sequence[Detection]) -> list[Detection]:
    def centre(d):
        ys = [p[1] for p in d.box] or [0.0]
        xs = [p[0] for p in d.box] or [0.0]
        return (round(sum(ys) / len(ys) / 16), sum(xs) / len(xs))  # rows of 16 px, then left to right
    return sorted(detections, key=centre)


def candidate_strings(detections: Sequence[Detection]) -> list[str]:
    """Strings to compare with the prompt word: each detection, its tokens, and all detections joined."""
    out: list[str] = []
    for d in detections:
        for s in [d.text, *d.text.split()]:
            n = normalise_text(s)
            if n and n not in out:
                out.append(n)
    if len(detections) > 1:  # OCR often splits one painted word into pieces
        joined = normalise_text("".join(d.text for d in _reading_order(detections)))
        if joined and joined not in out:
            out.append(joined)
    return out


def word_legibility(words: Sequence[str], detections: Sequence[Detection], max_distance: float =
                    DEFAULT_MAX_DISTANCE, min_confidence: float = 0.0) -> dict:
    """Best normalised edit distance between the prompt word(s) and the detected strings (beyond the paper:
    docs/method.md §8)."""
    dets = [d for d in detections if d.confidence >= min_confidence]
    targets = [normalise_text(w) for w in words if normalise_text(w)]
    best = {"best_distance": 1.0, "best_word": targets[0] if targets else None, "best_text": None}
    for word, text in itertools.product(targets, candidate_strings(dets)):
        dist = normalised_edit_distance(word, text)
        if dist < best["best_distance"]:
            best = {"best_distance": dist, "best_word": word, "best_text": text}
    best["best_distance"] = round(best["best_distance"], 6)
    best["exact"] = bool(targets) and best["best_distance"] == 0.0
    best["legible"] = bool(targets) and best["best_distance"] <= max_distance
    return best


def threshold_key(t: float) -> str:
    return f"{float(t):g}" if float(t) != int(t) else f"{float(t):.1f}"


def score_detections(detections: Sequence[Detection], words: Sequence[str],
                     thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                     max_distance: float = DEFAULT_MAX_DISTANCE, min_confidence: float = 0.0) -> dict:
    """All per-image measures: any-text flags per threshold, max confidence and prompt-word legibility."""
    return {
        "n_detections": len(detections),
        "max_confidence": max((d.confidence for d in detections), default=None),
        "any_text": {threshold_key(t): any_text(detections, t) for t in thresholds},
        "legibility": word_legibility(words, detections, max_distance, min_confidence) if words else None,
    }


# ---------------------------------------------------------------- rates

def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval for k successes in n trials; (0, 1) when n = 0."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n; got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, min(p, centre - half))  # exact ends: rounding must not exclude p
    hi = 1.0 if k == n else min(1.0, max(p, centre + half))
    return lo, hi


def rate(k: int, n: int) -> dict:
    """{k, n, rate, ci95}; rate is None when there is nothing to count."""
    lo, hi = wilson_interval(k, n)
    return {"k": int(k), "n": int(n), "rate": (k / n) if n else None, "ci95": [lo, hi]}


def metric_names(thresholds: Sequence[float]) -> list[str]:
    return [f"any_text>{threshold_key(t)}" for t in thresholds] + ["legible", "exact"]


def record_metrics(record: Mapping[str, Any], thresholds: Sequence[float]) -> dict[str, bool | None]:
    """The binary outcomes of one scored image; None where a measure does not apply (no prompt word)."""
    out: dict[str, bool | None] = {}
    for t in thresholds:
        out[f"any_text>{threshold_key(t)}"] = bool(record["any_text"][threshold_key(t)])
    leg = record.get("legibility")
    out["legible"] = None if leg is None else bool(leg["legible"])
    out["exact"] = None if leg is None else bool(leg["exact"])
    return out


def group_value(record: Mapping[str, Any], field: str) -> str:
    """A record's value for a grouping field (dotted paths reach into metadata); missing -> 'unknown'."""
    value: Any = record
    for part in field.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, Mapping) and isinstance(value.get("meta"), Mapping) and part in value["meta"]:
            value = value["meta"][part]
        else:
            return UNKNOWN
    if value is None or value == "":
        return UNKNOWN
    return value if isinstance(value, str) else str(value)


def summarise(records: Sequence[Mapping[str, Any]], group_by: Sequence[str] = ("space", "word_type"),
              thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> list[dict]:
    """Rates per group: every field in `group_by` but the first also appears marginalised as 'all'."""
    fields = list(group_by)
    metrics = metric_names(thresholds)
    counts: dict[tuple, dict[str, list[int]]] = {}
    for rec in records:
        outcome = record_metrics(rec, thresholds)
        values = [group_value(rec, f) for f in fields]
        options = [[values[0]]] + [[v, ALL] for v in values[1:]]
        for key in itertools.product(*options):
            c = counts.setdefault(key, {m: [0, 0] for m in metrics})
            for m, hit in outcome.items():
                if hit is not None:
                    c[m][0] += int(hit)
                    c[m][1] += 1
    groups = []
    for key, c in counts.items():
        groups.append({"key": dict(zip(fields, key)), "n": c[metrics[0]][1],
                       "metrics": {m: rate(k, n) for m, (k, n) in c.items()}})
    groups.sort(key=lambda g: [_order_key(f, g["key"][f]) for f in fields])
    return groups


def _order_key(field: str, value: str):
    order = SPACE_ORDER if field == "space" else WORD_TYPE_ORDER if field == "word_type" else (ALL,)
    if value in order:
        return (0, order.index(value), "")
    return (2 if value == UNKNOWN else 1, 0, value)


# ---------------------------------------------------------------- reports

def _metric_label(metric: str, max_distance: float) -> str:
    if metric.startswith("any_text>"):
        return f"any text, OCR conf > {metric.split('>')[1]}"
    if metric == "legible":
        return f"prompt word legible (edit dist ≤ {max_distance:g})"
    return "prompt word exact"


def format_cell(r: Mapping[str, Any]) -> str:
    if not r or not r["n"]:
        return "–"
    lo, hi = r["ci95"]
    return f"{100 * r['rate']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] ({r['k']}/{r['n']})"


def markdown_table(groups: Sequence[Mapping[str, Any]], thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                   max_distance: float = DEFAULT_MAX_DISTANCE, reference: bool = True) -> str:
    """Shaped like the table of docs/method.md §6: one row per (measure, group), one column per space;
    % [95 % CI] (k/n)."""
    if not groups:
        return "_no scored images_\n"
    fields = list(groups[0]["key"])
    col_field, row_fields = fields[0], fields[1:]
    columns = sorted({g["key"][col_field] for g in groups}, key=lambda v: _order_key(col_field, v))
    rows = sorted({tuple(g["key"][f] for f in row_fields) for g in groups},
                  key=lambda r: [_order_key(f, v) for f, v in zip(row_fields, r)])
    cell = {(tuple(g["key"][f] for f in row_fields), g["key"][col_field]): g["metrics"] for g in groups}
    show_ref = reference and row_fields[:1] == ["word_type"]
    header = ["measure", *row_fields, *columns] + (["paper (CLIP / learn / forget)"] if show_ref else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for metric in metric_names(thresholds):
        for row in rows:
            cells = [format_cell(cell.get((row, c), {}).get(metric, {})) for c in columns]
            if all(c == "–" for c in cells):
                continue
            line = [_metric_label(metric, max_distance), *row, *cells]
            if show_ref:
                line.append(_reference_cell(metric, row[0]) if all(v == ALL for v in row[1:]) else "")
            lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines) + "\n"


def _reference_cell(metric: str, word_type: str) -> str:
    if not metric.startswith("any_text>"):
        return ""
    ref = PAPER_ANY_TEXT.get((float(metric.split(">")[1]), word_type))
    return "" if ref is None else f"{ref['clip']} / {ref['learn']} / {ref['forget']}"


SPACE_COLOURS = {"learn": "#3b6fb6", "clip": "#8c8c8c", "forget": "#c8453c"}  # the paper: blue written, red visual


def bar_chart(groups: Sequence[Mapping[str, Any]], path, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
              max_distance: float = DEFAULT_MAX_DISTANCE) -> None:
    """Grouped bars like the paper's figure: one panel per measure, word groups on x, one bar per space."""
    from ..cache import matplotlib_dir

    matplotlib_dir()  # its config and font cache in vqclip's cache, not in HOME
    try:
        from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend and figures alone
    except ImportError as e:
        raise MissingExtraError(f"The score chart needs matplotlib: {pip_extra('ocr')} (or: pip install matplotlib)"
                                ) from e

    from ..io import atomic_path

    fields = list(groups[0]["key"]) if groups else ["space"]
    col_field, row_fields = fields[0], fields[1:]
    columns = sorted({g["key"][col_field] for g in groups}, key=lambda v: _order_key(col_field, v))
    rows = sorted({tuple(g["key"][f] for f in row_fields) for g in groups},
                  key=lambda r: [_order_key(f, v) for f, v in zip(row_fields, r)])
    metrics = [m for m in metric_names(thresholds)
               if any(g["metrics"][m]["n"] for g in groups)]
    fig = Figure(figsize=(3.2 * max(1, len(metrics)) + 1, 3.4))
    axes = fig.subplots(1, max(1, len(metrics)), squeeze=False, sharey=True)
    index = {(tuple(g["key"][f] for f in row_fields), g["key"][col_field]): g["metrics"] for g in groups}
    width = 0.8 / max(1, len(columns))
    for ax, metric in zip(axes[0], metrics):
        for j, col in enumerate(columns):
            xs, ys, errs = [], [], [[], []]
            for i, row in enumerate(rows):
                r = index.get((row, col), {}).get(metric)
                if not r or not r["n"]:
                    continue
                xs.append(i + (j - (len(columns) - 1) / 2) * width)
                ys.append(100 * r["rate"])
                errs[0].append(100 * (r["rate"] - r["ci95"][0]))
                errs[1].append(100 * (r["ci95"][1] - r["rate"]))
            ax.bar(xs, ys, width, yerr=errs, capsize=2, label=col, color=SPACE_COLOURS.get(col))
        ax.set_xticks(range(len(rows)), ["/".join(r) or ALL for r in rows])
        ax.set_title(_metric_label(metric, max_distance), fontsize=9)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("% of images")
    axes[0][-1].legend(title=col_field, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
