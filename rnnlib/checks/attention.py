r"""Checkers of exercise 7.5: the masked softmax, additive scores and scaled dot-product scores.

For a query :math:`s` (decoder state) and keys :math:`h_j` (encoder states), with :math:`M` the set of
positions that may be attended to (real tokens, not padding):

.. math::
    e_j^{\text{add}} = v^\top \tanh(W_q s + W_k h_j), \qquad
    e_j^{\text{dot}} = \frac{s^\top h_j}{\sqrt{d}}, \qquad
    \alpha_j = \frac{\exp(e_j)}{\sum_{k \in M} \exp(e_k)} \ (j \in M), \quad \alpha_j = 0 \ (j \notin M).

The references are :mod:`rnnlib.attention`'s ``masked_softmax``, ``AdditiveAttention.score`` and
``DotProductAttention.score``. Shapes: queries (B, Tq, d_q), keys (B, S, d_k), scores and weights (B, Tq, S).
The checkers use sizes that all differ (Tq, S, d), so a transposed result or a scale by the wrong size shows.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..attention import AdditiveAttention, DotProductAttention
from ..attention import masked_softmax as reference_masked_softmax
from ._core import Mistake, call, checker, close, describe, diagnose, expect_shape, expect_tensor, fail

__all__ = ["check_masked_softmax", "check_additive_scores", "check_dot_scores"]


def _random_mask(shape, gen) -> Tensor:
    mask = torch.rand(shape, generator=gen) < 0.6
    mask[..., 0] = True  # at least one position per row may be attended to (fully masked rows are tested apart)
    return mask


def _softmax_mistakes(scores: Tensor, mask: Tensor):
    weights = torch.softmax(scores, -1)
    yield Mistake("The mask is inverted: your weights are non-zero exactly where mask is False.",
                  "In this course mask is True where attending is allowed (real tokens): hide positions where it "
                  "is False, e.g. scores.masked_fill(~mask, ...).",
                  lambda: reference_masked_softmax(scores, ~mask))
    yield Mistake("The mask is not applied: the result is a plain softmax over all positions.",
                  "Positions where mask is False must get weight exactly 0 (fill their scores with -inf, or zero "
                  "them and renormalize).", lambda: weights)
    yield Mistake("Masked scores are set to 0 before the softmax; a score of 0 still gets weight exp(0).",
                  "Fill masked scores with -inf (or the most negative float), not 0, so that exp() of them is 0.",
                  lambda: torch.softmax(scores.masked_fill(~mask, 0.0), -1))
    yield Mistake("The softmax is multiplied by the mask without renormalizing: the weights of a row no longer "
                  "sum to 1.", "Mask the scores before the softmax (or divide by the new row sums).",
                  lambda: weights * mask)
    for dim in range(scores.dim() - 1):
        yield Mistake(f"The softmax is taken over dimension {dim}; it must be over the last one, the key positions.",
                      "Use dim=-1: each query's weights over the S keys sum to 1.",
                      lambda dim=dim: reference_masked_softmax(scores, mask, dim=dim))


@checker
def check_masked_softmax(masked_softmax) -> str:
    """Check ``masked_softmax(scores, mask)``: softmax over the last dimension restricted to ``mask == True``;
    exactly 0 where the mask is False, and all zeros (not NaN) for a row with nothing to attend to."""
    gen = torch.Generator().manual_seed(77)
    name = getattr(masked_softmax, "__name__", "your function")
    for shape in ((3, 5), (2, 3, 6), (4, 1, 7)):
        scores = torch.randn(shape, generator=gen) * 3
        mask = _random_mask(shape, gen)
        out = call(masked_softmax, scores.clone(), mask.clone(), what=f"{name}(scores, mask)")
        expect_tensor(out, f"The result of {name}",
                      "Return the weights as one tensor of the same shape as scores, e.g. torch.softmax(..., dim=-1).")
        if tuple(out.shape) != shape:
            raise fail(f"For scores of shape {shape} the result has shape {tuple(out.shape)}; expected the same shape.",
                       "The weights have one entry per score.")
        ref = reference_masked_softmax(scores, mask)
        if torch.isnan(out).any():
            raise fail("The result contains NaN although every row has at least one unmasked position.",
                       "Look at how masked scores are filled and at the division.")
        if not close(out, ref):
            found = diagnose(out, _softmax_mistakes(scores, mask))
            if found is not None:
                raise fail(found.message, found.hint)
            raise fail(f"The weights differ from a softmax over the unmasked positions (scores of shape {shape}).",
                       "exp(e_j) / sum over unmasked k of exp(e_k) at unmasked j; 0 at masked j.")
        leaked = out[~mask]
        if leaked.numel() and not torch.equal(leaked, torch.zeros_like(leaked)):
            raise fail(f"Masked positions get weights up to {float(leaked.abs().max()):.2g} instead of exactly 0.",
                       "Fill masked scores with float('-inf') or torch.finfo(scores.dtype).min (a fill such as -100 "
                       "still leaves exp(-100) > 0), or set the masked weights to 0 after the softmax.")
    # A row with nothing to attend to (e.g. a query placed before every key under a causal mask).
    scores = torch.randn(3, 4, generator=gen)
    mask = torch.tensor([[True, False, True, False], [False] * 4, [True] * 4])
    out = call(masked_softmax, scores.clone(), mask.clone(), what=f"{name}(scores, mask)")
    if not isinstance(out, Tensor) or torch.isnan(out).any():
        raise fail("A row whose positions are all masked gives NaN (exp(-inf) / 0). NaN then spreads to the context "
                   "vector, the loss and every gradient.",
                   "Fill with the most negative finite number, torch.finfo(scores.dtype).min, instead of -inf, and "
                   "zero the masked weights after the softmax; a fully masked row is then all zeros.")
    if not torch.equal(out[1], torch.zeros_like(out[1])):
        raise fail(f"A row whose positions are all masked gets weights {describe(out[1])} that are not all 0.",
                   "Zero the masked weights after the softmax: a row with nothing to attend to has context 0.")
    return (f"{name} gives a softmax over the unmasked positions, exactly 0 at masked ones, and zeros (not NaN) "
            "for a row with nothing to attend to.")


# ------------------------------------------------------------------------------------------------------
# Scores
# ------------------------------------------------------------------------------------------------------
CASES = [(2, 3, 5, 4, 6), (3, 1, 6, 9, 5), (1, 4, 2, 16, 3)]  # (B, Tq, S, d_q, d_k); A = attention size


def _score_shape_check(out, B, Tq, S, name):
    expect_tensor(out, f"The scores from {name}", "Return the scores as one tensor of shape (batch, Tq, S).")
    if tuple(out.shape) == (B, S, Tq) and S != Tq:
        raise fail(f"The scores have shape {(B, S, Tq)}, keys before queries; expected (batch, Tq, S) = {(B, Tq, S)}.",
                   "Row t of a batch element holds query t's scores against the S keys: transpose the last two dims.")
    if Tq == 1 and tuple(out.shape) == (B, S):
        raise fail(f"For a query of shape {(B, 1)} + (d,) the scores have shape {(B, S)}; keep the query dimension: "
                   f"{(B, 1, S)}.", "Do not squeeze: the scores are (batch, Tq, S) even when Tq = 1.")
    expect_shape(out, (B, Tq, S), f"The scores (query Tq={Tq}, keys S={S})",
                 "The scores are (batch, Tq, S): one per query-key pair.")


@checker
def check_additive_scores(additive_scores) -> str:
    """Check ``additive_scores(query, keys, W_q, W_k, v) -> (B, Tq, S)``, e_tj = v^T tanh(W_q s_t + W_k h_j).

    ``query`` (B, Tq, d_q), ``keys`` (B, S, d_k); ``W_q``, ``W_k``, ``v`` are bias-free ``nn.Linear``
    layers (d_q -> A, d_k -> A, A -> 1). Compared with :class:`rnnlib.attention.AdditiveAttention`.
    """
    gen = torch.Generator().manual_seed(78)
    name = getattr(additive_scores, "__name__", "your function")
    for B, Tq, S, dq, dk in CASES:
        A = 7
        ref = AdditiveAttention(dq, dk, A)
        for p in ref.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        query, keys = torch.randn(B, Tq, dq, generator=gen), torch.randn(B, S, dk, generator=gen)
        with torch.no_grad():
            out = call(additive_scores, query, keys, ref.W_q, ref.W_k, ref.v, what=f"{name}(query, keys, W_q, W_k, v)")
            expected = ref.score(query, keys)
            _score_shape_check(out, B, Tq, S, name)
            if close(out, expected):
                continue
            q, k = ref.W_q(query)[:, :, None], ref.W_k(keys)[:, None]  # (B, Tq, 1, A), (B, 1, S, A)
            mistakes = [
                Mistake("The tanh is missing: the scores are v^T (W_q s + W_k h_j).",
                        "Apply torch.tanh to W_q s + W_k h_j before v.", lambda: ref.v(q + k).squeeze(-1)),
                Mistake("The A features are summed instead of weighted by v.",
                        "Apply the layer v (A -> 1) to tanh(W_q s + W_k h_j), then drop the last dimension of size 1.",
                        lambda: torch.tanh(q + k).sum(-1)),
                Mistake("v is applied before the tanh: the scores are tanh(v^T (W_q s + W_k h_j)).",
                        "The tanh acts on the A features; v comes last.", lambda: torch.tanh(ref.v(q + k)).squeeze(-1)),
                Mistake("The nonlinearity is a ReLU; additive attention uses tanh.", "Use torch.tanh.",
                        lambda: ref.v(torch.relu(q + k)).squeeze(-1)),
                Mistake("The nonlinearity is a sigmoid; additive attention uses tanh.", "Use torch.tanh.",
                        lambda: ref.v(torch.sigmoid(q + k)).squeeze(-1)),
                Mistake("You returned attention weights (a softmax over the keys), not scores.",
                        "Return the raw scores e; the masked softmax is a separate step.",
                        lambda: torch.softmax(expected, -1)),
            ]
            found = diagnose(out, mistakes)
            if found is not None:
                raise fail(found.message, found.hint)
            raise fail(f"The scores differ from v^T tanh(W_q s + W_k h_j) (query {tuple(query.shape)}, keys "
                       f"{tuple(keys.shape)}).",
                       "Project the queries to (B, Tq, 1, A) and the keys to (B, 1, S, A), add them (broadcasting "
                       "pairs every query with every key), then tanh and v.")
    return f"{name} matches additive (Bahdanau) attention scores for several batch, query, key and feature sizes."


@checker
def check_dot_scores(dot_scores) -> str:
    """Check ``dot_scores(query, keys) -> (B, Tq, S)``: e_tj = s_t . h_j / sqrt(d), for query (B, Tq, d) and
    keys (B, S, d). Compared with :class:`rnnlib.attention.DotProductAttention` (scaled)."""
    gen = torch.Generator().manual_seed(79)
    name = getattr(dot_scores, "__name__", "your function")
    for B, Tq, S, d, _ in CASES:
        query, keys = torch.randn(B, Tq, d, generator=gen), torch.randn(B, S, d, generator=gen)
        out = call(dot_scores, query, keys, what=f"{name}(query, keys)")
        _score_shape_check(out, B, Tq, S, name)
        expected = DotProductAttention(d, d, scaled=True).score(query, keys)
        if close(out, expected):
            continue
        raw = query @ keys.transpose(1, 2)
        mistakes = [
            Mistake(f"The scores are not scaled: with d = {d} features their spread grows like sqrt(d), which pushes "
                    "the softmax towards one-hot weights and small gradients.",
                    "Divide the dot products by math.sqrt(d), d = the number of features (query.size(-1)).",
                    lambda: raw),
            Mistake("The scores are divided by d; scaled dot-product attention divides by sqrt(d).",
                    "Divide by math.sqrt(d).", lambda: raw / d),
            Mistake("The scores are multiplied by sqrt(d) instead of divided by it.", "Divide by math.sqrt(d).",
                    lambda: raw * math.sqrt(d)),
            Mistake("The scores are divided by the square root of the number of keys S; the scale is sqrt(d), d the "
                    "number of features.", "Divide by math.sqrt(query.size(-1)).", lambda: raw / math.sqrt(S)),
            Mistake("The scores are divided by the square root of the number of queries; the scale is sqrt(d), d the "
                    "number of features.", "Divide by math.sqrt(query.size(-1)).", lambda: raw / math.sqrt(Tq)),
            Mistake("You returned attention weights (a softmax over the keys), not scores.",
                    "Return the raw scaled scores; the masked softmax is a separate step.",
                    lambda: torch.softmax(expected, -1)),
        ]
        found = diagnose(out, mistakes)
        if found is not None:
            raise fail(found.message, found.hint)
        raise fail(f"The scores differ from s_t . h_j / sqrt(d) (query {tuple(query.shape)}, keys {tuple(keys.shape)}).",
                   "One batched matrix product of the queries, (B, Tq, d), with the keys turned to (B, d, S) pairs every "
                   "query with every key; then scale by 1/sqrt(d).")
    return f"{name} matches scaled dot-product scores, divided by sqrt(d), for several sizes."
