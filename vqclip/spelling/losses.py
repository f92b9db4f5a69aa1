"""The six symmetric InfoNCE terms, their signed weights and the orthogonality penalty (docs/method.md §2, §4).

A term Lk is the symmetric cross-entropy between two projected, normalised sets at temperature 1 (logits are raw
cosines). The objective is  Σ_k w_k · Lk + γ ‖I − W Wᵀ‖_F ; a negative weight pushes a pair of views apart.
"""

from __future__ import annotations

import math

import re
from typing import Mapping

import torch
import torch.nn.functional as F

from ..errors import bad_arg, choices_hint

# term -> (view a, view b); "kind" says whether the pair shares what is depicted or what is written.
TERMS: Mapping[str, tuple[str, str]] = {
    "L1": ("x_i", "x_it"),
    "L2": ("x_i", "y_i"),
    "L3": ("x_t", "x_it"),
    "L4": ("x_t", "y_t"),
    "L5": ("x_it", "y_t"),
    "L6": ("x_it", "y_i"),
}
TERM_KIND: Mapping[str, str] = {"L1": "visual", "L2": "visual", "L3": "written", "L4": "written",
                                "L5": "written", "L6": "visual"}
# Which in-batch duplicates are false negatives for a term: same class (y_i views) or same word (y_t views).
TERM_DUPLICATE_KEY: Mapping[str, str | None] = {"L1": None, "L2": "class", "L3": None, "L4": "word",
                                                "L5": "word", "L6": "class"}

DEFAULT_GAMMA = 1.0  # the paper does not publish γ; 1.0 keeps ‖I − WWᵀ‖_F near 1e-3 at lr 1e-4 in our runs

# The ablation presets the paper found best (docs/method.md §4, §1): learn d=64, forget d=256.
PRESETS: Mapping[str, Mapping] = {
    "learn": {"dim": 64, "weights": {"L1": -1.0, "L3": 1.0, "L4": 1.0, "L5": 1.0}, "gamma": DEFAULT_GAMMA},
    "forget": {"dim": 256, "weights": {"L1": 1.0, "L2": 1.0, "L5": -1.0, "L6": 1.0}, "gamma": DEFAULT_GAMMA},
}
# The paper's full objectives, for reference and `--weights full`.
FULL_OBJECTIVES: Mapping[str, Mapping[str, float]] = {
    "learn": {"L1": -1.0, "L2": -1.0, "L3": 1.0, "L4": 1.0, "L5": 1.0, "L6": -1.0},
    "forget": {"L1": 1.0, "L2": 1.0, "L3": -1.0, "L4": -1.0, "L5": -1.0, "L6": 1.0},
}


def symmetric_cross_entropy(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE both ways at temperature 1: mean of CE(a·bᵀ, diag) and CE(b·aᵀ, diag); `mask` drops false negatives."""
    logits = a @ b.T  # (B, B) raw cosines for unit vectors
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def orthogonality_penalty(W: torch.Tensor) -> torch.Tensor:
    """R(W) = ‖I_d − W Wᵀ‖_F (Frobenius norm, not squared)."""
    eye = torch.eye(W.shape[0], device=W.device, dtype=W.dtype)
    return torch.linalg.matrix_norm(eye - W @ W.T)  # (d, D) @ (D, d)


def duplicate_mask(keys: torch.Tensor) -> torch.Tensor:
    """(B,) ids -> (B, B) True where two different batch items share an id (off-diagonal false negatives)."""
    same = keys[:, None] == keys[None, :]
    return same & ~torch.eye(len(keys), dtype=torch.bool, device=keys.device)


def project(e: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """normalize(e Wᵀ): (B, D) -> (B, d) unit vectors."""
    return F.normalize(e @ W.T, dim=-1)


def term_loss(term: str, views: Mapping[str, torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
    """One Lk on already projected views {'x_i', 'y_i', 'x_t', 'y_t', 'x_it'}."""
    a, b = TERMS[term]
    return symmetric_cross_entropy(views[a], views[b], mask)


def L1(views, mask=None):
    """x_i ↔ x_it."""
    return term_loss("L1", views, mask)


def L2(views, mask=None):
    """x_i ↔ y_i."""
    return term_loss("L2", views, mask)


def L3(views, mask=None):
    """x_t ↔ x_it."""
    return term_loss("L3", views, mask)


def L4(views, mask=None):
    """x_t ↔ y_t."""
    return term_loss("L4", views, mask)


def L5(views, mask=None):
    """x_it ↔ y_t."""
    return term_loss("L5", views, mask)


def L6(views, mask=None):
    """x_it ↔ y_i."""
    return term_loss("L6", views, mask)


def spelling_objective(W: torch.Tensor, batch: Mapping[str, torch.Tensor], weights: Mapping[str, float],
                       gamma: float, mask_duplicates: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ w_k Lk + γ R(W) on a batch of raw CLIP features; returns (loss, per-term values for logging).

    `batch` holds (B, D) features x_i, y_i, x_t, y_t, x_it and, for masking, (B,) ids `class_ids`, `word_ids`.
    """
    needed = {v for t, w in weights.items() if w for v in TERMS[t]}
    views = {k: project(batch[k], W) for k in needed}  # (B, d) each
    masks = {}
    if mask_duplicates:
        masks = {"class": duplicate_mask(batch["class_ids"]), "word": duplicate_mask(batch["word_ids"])}
    total = torch.zeros((), device=W.device)
    parts: dict[str, float] = {}
    for term, w in weights.items():
        if not w:
            continue
        key = TERM_DUPLICATE_KEY[term]
        value = term_loss(term, views, masks.get(key) if key else None)
        total = total + w * value
        parts[term] = float(value.detach())
    penalty = orthogonality_penalty(W)
    parts["R"] = float(penalty.detach())
    return total + gamma * penalty, parts


def parse_weights(text: str | Mapping[str, float], arg: str = "--weights") -> dict[str, float]:
    """'L1=-1,L3=1' (or a mapping, or 'full-learn'/'full-forget') -> {term: weight}; unknown terms are errors."""
    if isinstance(text, Mapping):
        items = [(str(k), v) for k, v in text.items()]
    else:
        s = text.strip()
        if s in ("full-learn", "full-forget"):
            return dict(FULL_OBJECTIVES[s.split("-")[1]])
        items = []
        for part in filter(None, (p.strip() for p in s.split(","))):
            m = re.fullmatch(r"(\w+)\s*=\s*([-+]?[0-9.]+(?:e[-+]?\d+)?)", part)
            if not m:
                raise bad_arg(arg, "must be TERM=WEIGHT pairs separated by commas", text,
                              f"For example {arg} L1=-1,L3=1,L4=1,L5=1 (or full-learn / full-forget).")
            items.append((m.group(1), m.group(2)))
    weights = {}
    for term, value in items:
        if term.upper() not in TERMS:
            raise bad_arg(arg, "unknown loss term", term, choices_hint(TERMS) + " (L1 x_i↔x_it, L2 x_i↔y_i, "
                          "L3 x_t↔x_it, L4 x_t↔y_t, L5 x_it↔y_t, L6 x_it↔y_i)")
        try:
            weights[term.upper()] = float(value)
        except (TypeError, ValueError) as e:
            raise bad_arg(arg, "a weight must be a number", f"{term}={value}", "Use e.g. L1=-1.") from e
    if not any(weights.values()):
        raise bad_arg(arg, "at least one term needs a non-zero weight", text, "For example L1=1,L2=1.")
    return weights


def resolve_preset(space: str, dim: int | None = None, weights: str | Mapping[str, float] | None = None,
                   gamma: float | None = None, embed_dim: int | None = None,
                   flags: Mapping[str, str] | None = None) -> dict:
    """The preset for `space` with any of dim, weights, gamma overridden; validates d in 1..D.

    `flags` renames the options errors blame, for commands that spell them differently (`{"dim": "--learn-dim"}`).
    """
    flag = {"dim": "--dim", "weights": "--weights", "gamma": "--gamma", **(flags or {})}
    if space not in PRESETS:
        raise bad_arg("--space", "training makes a learn or forget projection", space, choices_hint(PRESETS))
    preset = PRESETS[space]
    d = int(preset["dim"] if dim is None else dim)
    if embed_dim is not None and dim is None and embed_dim < 512:
        # Smaller CLIPs than ViT-B/32 keep the paper's ratio d/D (1/8 learn, 1/2 forget) rather than d >= D.
        d = max(1, round(d * embed_dim / 512))
    if d < 1 or (embed_dim is not None and d > embed_dim):
        raise bad_arg(flag["dim"], f"must be between 1 and the CLIP embedding size D={embed_dim}", d,
                      "At d = D a projection is only a rotation; the paper used 64 (learn) and 256 (forget).")
    g = float(preset["gamma"] if gamma is None else gamma)
    if not math.isfinite(g) or g < 0:
        raise bad_arg(flag["gamma"], "must be a finite number >= 0", g, "Use e.g. 1.0 (0 switches the orthogonality penalty off).")
    w = dict(preset["weights"]) if weights is None else parse_weights(weights, flag["weights"])
    return {"space": space, "dim": d, "weights": w, "gamma": g}
