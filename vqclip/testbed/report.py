"""The testbed's directions (the paper's qualitative claims made checkable) and its Markdown reports."""

from __future__ import annotations

import math
import statistics
from typing import Any, Mapping

from .config import Margins

# (margin field, claim, at least / at most, what the number is, how the margin reads): the paper's qualitative
# claims made checkable.
DIRECTIONS = (
    ("reads", "clip reads: attacked accuracy falls well below clean accuracy", ">=", "clip clean - attacked",
     "needs >= {}"),
    ("forget_recovers", "forget recovers most of the attack loss", ">=", "share of clip's attack loss forget wins back",
     "needs >= {}"),
    ("forget_keeps_clean", "forget keeps clean accuracy", "<=", "clip clean - forget clean", "may fall by <= {}"),
    ("learn_keeps_words", "learn keeps or improves word retrieval", "<=", "clip - learn word retrieval",
     "may fall by <= {}"),
    ("learn_drops_objects", "learn loses object accuracy on clean images", ">=", "clip clean - learn clean",
     "must fall by >= {}"),
)


def direction_values(rows: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The number behind each direction, from one run's rows (fractions). No attack loss means nothing recovered."""
    c, l, f = rows["clip"], rows["learn"], rows["forget"]
    loss = c["clean_accuracy"] - c["attacked_accuracy"]
    return {"reads": loss,
            "forget_recovers": (f["attacked_accuracy"] - c["attacked_accuracy"]) / loss if loss > 0 else 0.0,
            "forget_keeps_clean": c["clean_accuracy"] - f["clean_accuracy"],
            "learn_keeps_words": c["word_retrieval"] - l["word_retrieval"],
            "learn_drops_objects": c["clean_accuracy"] - l["clean_accuracy"]}


def _checks(values: Mapping[str, float], margins: Margins, details: Mapping[str, str]) -> list[dict]:
    out = []
    for key, claim, sense, _, rule in DIRECTIONS:
        limit = getattr(margins, key)
        passed = values[key] >= limit if sense == ">=" else values[key] <= limit
        out.append({"claim": claim, "key": key, "value": values[key], "margin": limit, "passed": bool(passed),
                    "detail": f"{details[key]} ({rule.format(limit)})"})
    return out


def check_directions(rows: Mapping[str, Mapping[str, float]], margins: Margins) -> list[dict]:
    """The paper's three qualitative claims on one run, each with the numbers and the margin it was held to."""
    c, l, f = rows["clip"], rows["learn"], rows["forget"]
    v = direction_values(rows)
    details = {
        "reads": f"clean {c['clean_accuracy']:.3f} - attacked {c['attacked_accuracy']:.3f} = {v['reads']:.3f}",
        "forget_recovers": f"recovers {v['forget_recovers']:.2f} of the loss: attacked {c['attacked_accuracy']:.3f} -> "
                           f"{f['attacked_accuracy']:.3f}",
        "forget_keeps_clean": f"clean {c['clean_accuracy']:.3f} -> {f['clean_accuracy']:.3f}",
        "learn_keeps_words": f"word retrieval {c['word_retrieval']:.3f} -> {l['word_retrieval']:.3f}",
        "learn_drops_objects": f"clean {c['clean_accuracy']:.3f} -> {l['clean_accuracy']:.3f}",
    }
    return _checks(v, margins, details)


def check_median(runs: Mapping[int, Mapping[str, Mapping[str, float]]], margins: Margins) -> list[dict]:
    """The directions on the median over seeds ({seed: rows}) of each direction's number.

    One small CLIP trained from scratch is one draw: which features it learns first depends on the seed and even
    on the CPU's float kernels. The median of a few draws is what the world and the recipe make typical.
    """
    per_seed = {seed: direction_values(rows) for seed, rows in runs.items()}
    values = {key: statistics.median(v[key] for v in per_seed.values()) for key, *_ in DIRECTIONS}
    details = {key: f"median {values[key]:.3f} of {what} over seeds {', '.join(map(str, per_seed))} "
                    f"({', '.join(f'{v[key]:.3f}' for v in per_seed.values())})"
               for key, _, _, what, _ in DIRECTIONS}
    return _checks(values, margins, details)


COLUMNS = (("clean_accuracy", "clean acc."), ("attacked_accuracy", "attacked acc."),
           ("attack_win_rate", "attack word wins"), ("word_retrieval", "word retrieval x_t→y_t"),
           ("word_retrieval_real", "(real)"), ("word_retrieval_nonsense", "(nonsense)"),
           ("string_to_image", "y_t→x_t"), ("word_on_object", "x_it→y_t"))


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def markdown_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """One row per space, percentages."""
    lines = ["| space | dim | " + " | ".join(label for _, label in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for name, row in rows.items():
        lines.append(f"| {name} | {row.get('dim') or 'D'} | " + " | ".join(_pct(row.get(k)) for k, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def markdown_report(result: Mapping[str, Any]) -> str:
    """results.md: the table, the directions checked, and how the numbers were made."""
    cfg = result["config"]
    lines = ["# vqclip testbed", "",
             f"Synthetic world seed {cfg['seed']}; small CLIP trained {cfg['clip_steps']} steps on "
             f"{cfg['n_pairs']} pairs; {cfg['n_tuples']} five-tuples; {cfg['n_attacks']} attacked objects. "
             "Accuracies are zero-shot over the object classes (prompt \"an image of a {class}\"); word retrieval "
             "is x_t -> y_t top-1 on the test tuples.", "",
             markdown_table(result["rows"]), "", "## Directions", ""]
    for c in result["checks"]:
        lines.append(f"- [{'x' if c['passed'] else ' '}] {c['claim']}: {c['detail']}")
    lines += ["", f"A linear read-out of CLIP's features recognises {_pct(result['attacked_object_probe'])} % of the "
              "attacked objects (ridge classifier, half fit, half scored): no projection can recover more."]
    lines += ["", f"Total time {result['seconds']['total']:.0f} s ({result['machine']})."]
    return "\n".join(lines) + "\n"


def markdown_summary(summary: Mapping[str, Any]) -> str:
    """summary.md: each seed's table, then the directions on the median over seeds."""
    lines = ["# vqclip testbed over seeds", "",
             f"Seeds {', '.join(map(str, summary['seeds']))}; every seed's own report is in seed-N/results.md. The "
             "directions are checked on the median over the seeds of each direction's number.", ""]
    for seed, run in summary["per_seed"].items():
        lines += [f"## Seed {seed}", "", markdown_table(run["rows"]),
                  f"Linear read-out of the attacked objects: {_pct(run['attacked_object_probe'])} %.", ""]
    lines += ["## Directions (median over seeds)", ""]
    for c in summary["checks"]:
        lines.append(f"- [{'x' if c['passed'] else ' '}] {c['claim']}: {c['detail']}")
    lines += ["", f"Total time {summary['seconds']:.0f} s ({summary['machine']})."]
    return "\n".join(lines) + "\n"
