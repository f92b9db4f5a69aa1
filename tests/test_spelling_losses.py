"""The six InfoNCE terms, the penalty and the presets against their formulas, on hand-made vectors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vqclip.errors import VqclipError
from vqclip.spelling.losses import (PRESETS, TERMS, duplicate_mask, orthogonality_penalty, parse_weights,
                                    resolve_preset, spelling_objective, symmetric_cross_entropy)


def _ce_by_hand(a, b):
    """Symmetric InfoNCE at temperature 1 written out with plain Python floats."""
    n = len(a)
    dot = [[sum(x * y for x, y in zip(a[i], b[j])) for j in range(n)] for i in range(n)]
    rows = sum(-dot[i][i] + math.log(sum(math.exp(dot[i][j]) for j in range(n))) for i in range(n)) / n
    cols = sum(-dot[j][j] + math.log(sum(math.exp(dot[i][j]) for i in range(n))) for j in range(n)) / n
    return (rows + cols) / 2


A = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]
B = [[0.8, 0.6], [1.0, 0.0], [0.0, -1.0]]


def test_symmetric_cross_entropy_equals_formula():
    got = symmetric_cross_entropy(torch.tensor(A), torch.tensor(B))
    assert float(got) == pytest.approx(_ce_by_hand(A, B), abs=1e-6)
    # asymmetric pairs: swapping the arguments gives the same value (both directions are averaged)
    assert float(symmetric_cross_entropy(torch.tensor(B), torch.tensor(A))) == pytest.approx(float(got), abs=1e-6)


def test_mask_removes_false_negatives():
    a = torch.tensor(A)
    mask = duplicate_mask(torch.tensor([7, 7, 3]))  # items 0 and 1 share a class
    assert mask.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    got = symmetric_cross_entropy(a, a, mask)
    dot = (a @ a.T).tolist()
    # by hand: row 0 sees only columns 0 and 2
    r0 = -dot[0][0] + math.log(math.exp(dot[0][0]) + math.exp(dot[0][2]))
    r1 = -dot[1][1] + math.log(math.exp(dot[1][1]) + math.exp(dot[1][2]))
    r2 = -dot[2][2] + math.log(sum(math.exp(dot[2][j]) for j in range(3)))
    assert float(got) == pytest.approx((r0 + r1 + r2) / 3, abs=1e-6)  # a·aᵀ is symmetric: both ways equal


@pytest.mark.parametrize("term", sorted(TERMS))
def test_each_term_uses_its_pair_and_sign(term):
    g = torch.Generator().manual_seed(1)
    views = {k: F.normalize(torch.randn(5, 4, generator=g), dim=-1) for k in ("x_i", "y_i", "x_t", "y_t", "x_it")}
    batch = {**views, "class_ids": torch.arange(5), "word_ids": torch.arange(5)}
    W = torch.eye(4)  # identity projection: projected views equal the raw unit vectors
    a, b = TERMS[term]
    expected = _ce_by_hand(views[a].tolist(), views[b].tolist())
    plus, parts = spelling_objective(W, batch, {term: 1.0}, gamma=0.0)
    minus, _ = spelling_objective(W, batch, {term: -2.0}, gamma=0.0)
    assert float(plus) == pytest.approx(expected, abs=1e-5)
    assert parts[term] == pytest.approx(expected, abs=1e-5)
    assert float(minus) == pytest.approx(-2 * expected, abs=1e-5)


def test_objective_sums_signed_terms_and_penalty():
    g = torch.Generator().manual_seed(2)
    batch = {k: F.normalize(torch.randn(6, 8, generator=g), dim=-1) for k in ("x_i", "y_i", "x_t", "y_t", "x_it")}
    W = torch.randn(3, 8, generator=g) * 0.3
    weights = {"L1": 1.0, "L2": 1.0, "L5": -1.0, "L6": 1.0}
    total, parts = spelling_objective(W, batch, weights, gamma=0.5)
    proj = {k: F.normalize(v @ W.T, dim=-1) for k, v in batch.items()}
    expected = sum(w * _ce_by_hand(proj[TERMS[t][0]].tolist(), proj[TERMS[t][1]].tolist()) for t, w in weights.items())
    expected += 0.5 * float(torch.linalg.matrix_norm(torch.eye(3) - W @ W.T))
    assert float(total) == pytest.approx(expected, abs=1e-5)
    assert set(parts) == {"L1", "L2", "L5", "L6", "R"}


def test_orthogonality_penalty_formula():
    W = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    # I - W Wᵀ = diag(0, -3): Frobenius norm 3 (not squared: 9)
    assert float(orthogonality_penalty(W)) == pytest.approx(3.0)
    Q = torch.linalg.qr(torch.randn(6, 6))[0][:4]  # orthonormal rows
    assert float(orthogonality_penalty(Q)) == pytest.approx(0.0, abs=1e-5)
    W2 = torch.tensor([[1.0, 1.0]])
    assert float(orthogonality_penalty(W2)) == pytest.approx(1.0)  # |1 - 2|


def test_presets_have_the_documented_signed_weights():
    assert PRESETS["learn"]["weights"] == {"L1": -1.0, "L3": 1.0, "L4": 1.0, "L5": 1.0}
    assert PRESETS["forget"]["weights"] == {"L1": 1.0, "L2": 1.0, "L5": -1.0, "L6": 1.0}
    assert PRESETS["learn"]["dim"] == 64 and PRESETS["forget"]["dim"] == 256
    learn = resolve_preset("learn", embed_dim=512)
    assert learn["dim"] == 64 and learn["weights"]["L1"] == -1.0
    forget = resolve_preset("forget", embed_dim=512)
    assert forget["dim"] == 256 and forget["weights"]["L5"] == -1.0
    # overrides
    custom = resolve_preset("forget", dim=128, weights="L1=1,L2=0.5,L5=-2", gamma=0.1, embed_dim=512)
    assert custom == {"space": "forget", "dim": 128, "weights": {"L1": 1.0, "L2": 0.5, "L5": -2.0}, "gamma": 0.1}
    # a small CLIP keeps the paper's d/D ratio
    assert resolve_preset("learn", embed_dim=32)["dim"] == 4
    assert resolve_preset("forget", embed_dim=32)["dim"] == 16
    assert parse_weights("full-forget") == {"L1": 1, "L2": 1, "L3": -1, "L4": -1, "L5": -1, "L6": 1}


@pytest.mark.parametrize("text, fragment", [("L7=1", "unknown loss term"), ("L1:1", "TERM=WEIGHT"),
                                            ("L1=0", "non-zero"), ("foo=1,L2=1", "unknown loss term")])
def test_bad_weights_are_clear_errors(text, fragment):
    with pytest.raises(VqclipError, match=fragment) as e:
        parse_weights(text)
    assert "--weights" in str(e.value)


@pytest.mark.parametrize("dim", [0, -3, 33])
def test_dim_outside_range(dim):
    with pytest.raises(VqclipError, match="--dim"):
        resolve_preset("learn", dim=dim, embed_dim=32)


def test_unknown_space_and_negative_gamma():
    with pytest.raises(VqclipError, match="--space"):
        resolve_preset("clip")
    with pytest.raises(VqclipError, match="--gamma"):
        resolve_preset("learn", gamma=-1.0)
