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
Each compares values and gradients (with respect to the scores; the queries, keys and the layers' weights),
refuses PyTorch's fused attention (``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``), and
the softmax is also tried on large scores (100, 1000, 10^4: an exponential taken without subtracting the
row's maximum overflows) and on fully masked rows, whose weights are all 0 by this course's convention
(the row's context is then the zero vector), never NaN.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..attention import AdditiveAttention, DotProductAttention
from ..attention import masked_softmax as reference_masked_softmax
from ._core import (Mistake, call, checker, close, compare_gradients, describe, diagnose, expect_shape, expect_tensor,
                    fail, run)

__all__ = ["check_masked_softmax", "check_additive_scores", "check_dot_scores"]

FROM_SCRATCH = {"attention": "The exercise asks for the formula itself: write it with matrix products (or "
                             "broadcasting), torch.tanh, torch.softmax and masked_fill, not with PyTorch's fused "
                             "attention."}
LARGE = (100.0, 1000.0, 1e4)  # score scales at which exp() without subtracting the maximum overflows


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


def _softmax_call(masked_softmax, scores, mask, name, **kwargs):
    out = call(masked_softmax, scores.clone(), mask.clone(), what=f"{name}(scores, mask)", forbid=FROM_SCRATCH,
               **kwargs)
    expect_tensor(out, f"The result of {name}",
                  "Return the weights as one tensor of the same shape as scores, e.g. torch.softmax(..., dim=-1).")
    if tuple(out.shape) != tuple(scores.shape):
        raise fail(f"For scores of shape {tuple(scores.shape)} the result has shape {tuple(out.shape)}; expected the "
                   "same shape.", "The weights have one entry per score.")
    if not out.is_floating_point():
        raise fail(f"The result has dtype {out.dtype}; weights are floating-point numbers.",
                   "Return the softmax itself, not a mask or indices.")
    return out


def _check_weights(out, scores, mask, large: float = 0.0):
    ref = reference_masked_softmax(scores, mask)
    big = f" with large scores (up to {large:g} in size)" if large else ""
    if not torch.isfinite(out).all():
        if large:
            raise fail(f"The weights contain NaN or infinity{big}: exp() of a large score overflows (exp(100) is "
                       "about 2.7e43, exp(1000) is infinite in float32 and float64), and inf / inf is NaN.",
                       "Subtract each row's maximum over the unmasked positions before exp (softmax does not change), "
                       "or use torch.softmax, which does it for you.")
        raise fail("The result contains NaN although every row has at least one unmasked position.",
                   "Look at how masked scores are filled and at the division.")
    if not close(out, ref):
        found = diagnose(out, _softmax_mistakes(scores, mask))
        if found is not None:
            raise fail(found.message, found.hint)
        if large:
            raise fail(f"The weights differ from a softmax over the unmasked positions{big}, though smaller scores "
                       "work: a number underflows or overflows. Subtracting the maximum of ALL positions, masked "
                       "ones included, can leave every unmasked exp() at 0.",
                       "Subtract the maximum over the unmasked positions only (or fill the masked scores first and "
                       "use torch.softmax).")
        raise fail(f"The weights differ from a softmax over the unmasked positions (scores of shape "
                   f"{tuple(scores.shape)}).", "exp(e_j) / sum over unmasked k of exp(e_k) at unmasked j; 0 at masked j.")
    leaked = out[~mask]
    if leaked.numel() and not torch.equal(leaked, torch.zeros_like(leaked)):
        raise fail(f"Masked positions get weights up to {float(leaked.abs().max()):.2g} instead of exactly 0.",
                   "Fill masked scores with float('-inf') or torch.finfo(scores.dtype).min (a fill such as -100 "
                   "still leaves exp(-100) > 0), or set the masked weights to 0 after the softmax.")


@checker
def check_masked_softmax(masked_softmax) -> str:
    """Check ``masked_softmax(scores, mask)``: softmax over the last dimension restricted to ``mask == True``;
    exactly 0 where the mask is False, and all zeros (not NaN) for a row with nothing to attend to; the
    same for large scores; gradients with respect to the scores as the reference's."""
    gen = torch.Generator().manual_seed(77)
    name = getattr(masked_softmax, "__name__", "your function")
    for shape in ((3, 5), (2, 3, 6), (4, 1, 7)):
        scores = torch.randn(shape, generator=gen) * 3
        mask = _random_mask(shape, gen)
        out = _softmax_call(masked_softmax, scores, mask, name,
                            reference=lambda: reference_masked_softmax(scores, mask))
        _check_weights(out, scores, mask)
    # Large scores, with the largest ones at masked positions: exp() overflows unless a maximum is subtracted,
    # and everything underflows if it is the maximum over masked positions too.
    for large in LARGE:
        scores = torch.randn(2, 3, 6, generator=gen) * large
        mask = _random_mask(scores.shape, gen)
        scores = torch.where(mask, scores, scores.abs() + large)  # masked positions hold the largest scores
        _check_weights(_softmax_call(masked_softmax, scores, mask, name), scores, mask, large)
    # Rows with nothing to attend to (e.g. a query placed before every key under a causal mask): all zeros.
    scores = torch.randn(2, 3, 4, generator=gen) * torch.tensor([1.0, 1000.0])[:, None, None]
    mask = torch.tensor([[True, False, True, False], [False] * 4, [True] * 4])[None].repeat(2, 1, 1)
    out = call(masked_softmax, scores.clone(), mask.clone(), what=f"{name}(scores, mask)")
    if not isinstance(out, Tensor) or tuple(out.shape) != tuple(scores.shape) or not out.is_floating_point():
        raise fail(f"With a fully masked row, {name} returned {describe(out)}; expected weights of shape "
                   f"{tuple(scores.shape)}.", "Return the weights, one per score, for every row.")
    if torch.isnan(out).any():
        raise fail("A row whose positions are all masked gives NaN (exp(-inf) / 0). NaN then spreads to the context "
                   "vector, the loss and every gradient.",
                   "Fill with the most negative finite number, torch.finfo(scores.dtype).min, instead of -inf, and "
                   "zero the masked weights after the softmax (or replace NaN with torch.nan_to_num); a fully masked "
                   "row is then all zeros.")
    empty = out[:, 1]
    if not torch.equal(empty, torch.zeros_like(empty)):
        raise fail("A row whose positions are all masked gets weights "
                   f"{[round(v, 3) for v in empty[0].tolist()]}; this course's convention is all zeros (the row "
                   "attends to nothing, so its context is the zero vector), not a uniform or any other spread.",
                   "Zero the masked weights after the softmax: with every position masked, every weight is then 0.")
    _check_weights(out[:, [0, 2]], scores[:, [0, 2]], mask[:, [0, 2]], 1000.0)
    # Gradients with respect to the scores, on rows that have something to attend to.
    scores = (torch.randn(2, 3, 6, generator=gen) * 3).requires_grad_()
    mask = _random_mask(scores.shape, gen)
    out, watch = run(masked_softmax, scores, mask, what=f"{name}(scores, mask)")
    ref_scores = scores.detach().clone().requires_grad_()
    compare_gradients(out, [scores], reference_masked_softmax(ref_scores, mask), [ref_scores], ["the scores"], watch,
                      "the weights")
    return (f"{name} gives a softmax over the unmasked positions, exactly 0 at masked ones, all zeros (not NaN) for a "
            "row with nothing to attend to, stays exact for scores up to 10^4, and passes gradients back to the "
            "scores.")


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
    layers (d_q -> A, d_k -> A, A -> 1). Compared with :class:`rnnlib.attention.AdditiveAttention`, values
    and gradients (query, keys and the three layers' weights).
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
            out = call(additive_scores, query, keys, ref.W_q, ref.W_k, ref.v, what=f"{name}(query, keys, W_q, W_k, v)",
                       forbid=FROM_SCRATCH, reference=lambda: ref.score(query, keys))
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
                Mistake("W_q and W_k are swapped: W_q is applied to the keys and W_k to the queries.",
                        "W_q projects the query (decoder state), W_k the keys (encoder states).",
                        lambda: ref.v(torch.tanh(ref.W_k(query)[:, :, None] + ref.W_q(keys)[:, None])).squeeze(-1)),
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
    leaves = [query.clone().requires_grad_(), keys.clone().requires_grad_()]
    out, watch = run(additive_scores, *leaves, ref.W_q, ref.W_k, ref.v, what=f"{name}(query, keys, W_q, W_k, v)")
    weights = [ref.W_q.weight, ref.W_k.weight, ref.v.weight]
    twin = AdditiveAttention(query.size(-1), keys.size(-1), ref.v.weight.size(-1))
    twin.load_state_dict(ref.state_dict())
    ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]
    compare_gradients(out, leaves + weights, twin.score(*ref_leaves), ref_leaves + [twin.W_q.weight, twin.W_k.weight,
                      twin.v.weight], ["the query", "the keys", "W_q's weight", "W_k's weight", "v's weight"], watch,
                      "the scores")
    return (f"{name} matches additive (Bahdanau) attention scores for several batch, query, key and feature sizes, in "
            "values and in gradients.")


@checker
def check_dot_scores(dot_scores) -> str:
    """Check ``dot_scores(query, keys) -> (B, Tq, S)``: e_tj = s_t . h_j / sqrt(d), for query (B, Tq, d) and
    keys (B, S, d). Compared with :class:`rnnlib.attention.DotProductAttention` (scaled), values and
    gradients with respect to the query and the keys."""
    gen = torch.Generator().manual_seed(79)
    name = getattr(dot_scores, "__name__", "your function")
    for B, Tq, S, d, _ in CASES:
        query, keys = torch.randn(B, Tq, d, generator=gen), torch.randn(B, S, d, generator=gen)
        reference = DotProductAttention(d, d, scaled=True)
        out = call(dot_scores, query, keys, what=f"{name}(query, keys)", forbid=FROM_SCRATCH,
                   reference=lambda: reference.score(query, keys))
        _score_shape_check(out, B, Tq, S, name)
        expected = reference.score(query, keys)
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
    leaves = [query.clone().requires_grad_(), keys.clone().requires_grad_()]
    out, watch = run(dot_scores, *leaves, what=f"{name}(query, keys)")
    ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]
    compare_gradients(out, leaves, reference.score(*ref_leaves), ref_leaves, ["the query", "the keys"], watch,
                      "the scores")
    return f"{name} matches scaled dot-product scores, divided by sqrt(d), for several sizes, in values and gradients."
