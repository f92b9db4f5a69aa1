"""Retrieval metrics of docs/method.md §6 on precomputed features, in any embedding space.

Word retrieval is deduplicated by word: the string gallery holds each word once, and an image query counts as
correct when it retrieves any item carrying its word, so a word that occurs twice is never scored as a miss.
Every metric is split by the real / nonsense flag of the query's word.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .featureset import SpellingFeatures

# metric name -> (query view, gallery view, what must match): 'word' = same word, 'item' = same tuple.
PAIR_METRICS: Mapping[str, tuple[str, str, str]] = {
    "x_t->y_t": ("x_t", "y_t", "word"),
    "y_t->x_t": ("y_t", "x_t", "word"),
    "x_it->x_t": ("x_it", "x_t", "word"),
    "x_t->x_it": ("x_t", "x_it", "word"),
    "x_it->x_i": ("x_it", "x_i", "item"),
    "x_i->x_it": ("x_i", "x_it", "item"),
    "x_it->y_t": ("x_it", "y_t", "word"),
    "y_t->x_it": ("y_t", "x_it", "word"),
}
CLASS_METRICS = ("class(x_i)", "class(x_it)")
WRITTEN_METRICS = ("x_t->y_t", "y_t->x_t", "x_it->x_t", "x_t->x_it", "x_it->y_t", "y_t->x_it")
VISUAL_METRICS = ("x_it->x_i", "x_i->x_it", "class(x_i)", "class(x_it)")

Projector = Callable[[torch.Tensor], torch.Tensor]


def as_projector(space) -> Projector:
    """A Space, a (d, D) matrix W, or None (original CLIP space) -> e ↦ unit vectors in that space."""
    if space is None:
        return lambda e: F.normalize(e.float(), dim=-1)
    if isinstance(space, torch.Tensor):
        W = space.detach().float()
        return lambda e: F.normalize(e.float().to(W.device) @ W.T, dim=-1)  # (N, D) @ (D, d)
    return lambda e: space.project(e.float().to(_space_device(space)))


def _space_device(space) -> torch.device:
    W = space if isinstance(space, torch.Tensor) else getattr(space, "W", None)
    return W.device if isinstance(W, torch.Tensor) else torch.device("cpu")


def project_chunked(e: torch.Tensor, proj: Projector, chunk: int = 65536) -> torch.Tensor:
    """Project (N, D) features in chunks, so half-precision stores are converted a piece at a time."""
    return torch.cat([proj(e[i:i + chunk]) for i in range(0, len(e), chunk)]) if len(e) else proj(e)


def top1(queries: torch.Tensor, gallery: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(Q, d), (K, d) unit vectors -> (Q,) index of each query's nearest gallery item (cosine)."""
    out = [(queries[i:i + chunk] @ gallery.T).argmax(dim=1) for i in range(0, len(queries), chunk)]  # (q, K)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=queries.device)


def split_accuracy(correct: torch.Tensor, is_real: torch.Tensor | None) -> dict[str, float | int | None]:
    """Top-1 accuracy overall and for real / nonsense queries, with counts."""
    def acc(mask):
        n = int(mask.sum())
        return (float(correct[mask].float().mean()) if n else None), n

    correct, is_real = correct.cpu(), (is_real.cpu() if is_real is not None else None)
    everything = torch.ones_like(correct, dtype=torch.bool)
    out: dict[str, float | int | None] = {}
    out["all"], out["n"] = acc(everything)
    if is_real is not None:
        out["real"], out["n_real"] = acc(is_real.bool())
        out["nonsense"], out["n_nonsense"] = acc(~is_real.bool())
    return out


def unique_words(word_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct word ids and, for each, the index of its first tuple."""
    uniq, inverse = torch.unique(word_ids, return_inverse=True)
    first = torch.full((len(uniq),), len(word_ids), dtype=torch.long, device=word_ids.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(word_ids), device=word_ids.device), reduce="amin")
    return uniq, first


def pair_retrieval(views: Mapping[str, torch.Tensor], word_ids: torch.Tensor, is_real: torch.Tensor,
                   query: str, gallery: str, match: str) -> dict:
    """Top-1 retrieval of `gallery` items by `query` items; y_t appears once per distinct word."""
    n = len(word_ids)
    _, first = unique_words(word_ids)
    ids = {"word": word_ids, "item": torch.arange(n, device=word_ids.device)}[match]
    q_rows = first if query == "y_t" else torch.arange(n, device=word_ids.device)  # strings: one per word
    g_rows = first if gallery == "y_t" else torch.arange(n, device=word_ids.device)
    hit = top1(views[query][q_rows], views[gallery][g_rows])  # (Q,) gallery positions
    correct = ids[g_rows][hit] == ids[q_rows]
    return split_accuracy(correct, is_real[q_rows])


def class_accuracy(images: torch.Tensor, class_ids: torch.Tensor, class_views: torch.Tensor,
                   is_real: torch.Tensor | None = None) -> dict:
    """Zero-shot accuracy of projected images against projected class prompts (C, d)."""
    return split_accuracy(top1(images, class_views) == class_ids, is_real)


def retrieval_metrics(f: "SpellingFeatures", space=None, device: str | torch.device | None = None) -> dict[str, dict]:
    """Every metric of docs/method.md §6 for the tuples in `f`, in `space` (Space, W, or None for CLIP).

    The N×N similarity searches run on `device` (default: where the space's W lives), a chunk of queries at a time.
    """
    if isinstance(space, torch.Tensor) and device is not None:
        space = space.to(device)
    proj = as_projector(space)
    dev = torch.device(device) if device is not None else _space_device(space)
    views = {k: project_chunked(getattr(f, k), proj).to(dev) for k in ("x_i", "x_t", "x_it", "y_t")}
    word_ids, is_real, class_ids = f.word_ids.to(dev), f.is_real.to(dev).bool(), f.class_ids.to(dev)
    out = {name: pair_retrieval(views, word_ids, is_real, *spec) for name, spec in PAIR_METRICS.items()}
    class_views = proj(f.class_features).to(dev)  # (C, d)
    out["class(x_i)"] = class_accuracy(views["x_i"], class_ids, class_views)
    out["class(x_it)"] = class_accuracy(views["x_it"], class_ids, class_views, is_real)
    if f.class_image_features is not None:
        out["visual_comprehension"] = visual_comprehension(views["x_i"], class_ids, f.class_image_features,
                                                           f.class_features, space, projected=True)
    return out


def visual_comprehension(x_i: torch.Tensor, class_ids: torch.Tensor, class_images: torch.Tensor,
                         class_prompts: torch.Tensor, space=None, projected: bool = False) -> dict[str, float | int]:
    """Classify natural images by the nearest rendered class-name image (image encoder only) vs text zero-shot."""
    proj = as_projector(space)
    images = x_i if projected else project_chunked(x_i, proj)
    dev = images.device
    class_ids = class_ids.to(dev)
    n_classes = len(class_images)
    return {
        "image_only": float((top1(images, proj(class_images).to(dev)) == class_ids).float().mean()),
        "text_zero_shot": float((top1(images, proj(class_prompts).to(dev)) == class_ids).float().mean()),
        "chance": 1.0 / n_classes,
        "n": len(class_ids),
        "classes": n_classes,
    }


def summary_scores(metrics: Mapping[str, dict]) -> dict[str, float]:
    """Mean written-word and visual accuracy: a one-glance view of what a space keeps."""
    def mean(names):
        vals = [metrics[n]["all"] for n in names if n in metrics and metrics[n].get("all") is not None]
        return sum(vals) / len(vals) if vals else float("nan")

    return {"written": mean(WRITTEN_METRICS), "visual": mean(VISUAL_METRICS)}


def format_table(results: Mapping[str, Mapping[str, dict]]) -> str:
    """Metrics (rows) × spaces (columns) as a text table: all / real / nonsense top-1 in percent."""
    spaces = list(results)
    names = [*PAIR_METRICS, *CLASS_METRICS]
    head = f"{'metric':<14}" + "".join(f"{s[:26]:>28}" for s in spaces)
    sub = f"{'':<14}" + "".join(f"{'all  real  nons':>28}" for _ in spaces)
    lines = [head, sub, "-" * len(head)]

    def pct(v):
        return "    -" if v is None else f"{100 * v:5.1f}"

    for name in names:
        cells = []
        for s in spaces:
            m = results[s].get(name, {})
            cells.append(f"{pct(m.get('all'))} {pct(m.get('real'))} {pct(m.get('nonsense'))}")
        lines.append(f"{name:<14}" + "".join(f"{c:>28}" for c in cells))
    vc = [results[s].get("visual_comprehension") for s in spaces]
    if any(vc):
        lines.append("-" * len(head))
        for key, label in (("image_only", "vis.comp img"), ("text_zero_shot", "vis.comp text"), ("chance", "chance")):
            cells = [f"{pct(v.get(key) if v else None)} {pct(None)} {pct(None)}" for v in vc]
            lines.append(f"{label:<14}" + "".join(f"{c:>28}" for c in cells))
    return "\n".join(lines)
