"""Reference solution of exercise 7.5: the masked softmax, additive scores and scaled dot-product scores.

    additive:  e_tj = v^T tanh(W_q s_t + W_k h_j)
    dot:       e_tj = s_t . h_j / sqrt(d)
    weights:   alpha_tj = exp(e_tj) / sum over unmasked k of exp(e_tk), and 0 where masked
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last dimension where mask is True; exactly 0 where it is False (all 0 if a row has none)."""
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)  # finite, so a fully masked row gives no NaN
    return torch.softmax(filled, dim=-1).masked_fill(~mask, 0.0)


def additive_scores(query: Tensor, keys: Tensor, W_q: nn.Linear, W_k: nn.Linear, v: nn.Linear) -> Tensor:
    """query (B, Tq, d_q), keys (B, S, d_k) -> scores (B, Tq, S)."""
    features = torch.tanh(W_q(query)[:, :, None, :] + W_k(keys)[:, None, :, :])  # (B, Tq, S, A)
    return v(features).squeeze(-1)


def dot_scores(query: Tensor, keys: Tensor) -> Tensor:
    """query (B, Tq, d), keys (B, S, d) -> scores (B, Tq, S), divided by sqrt(d)."""
    return query @ keys.transpose(1, 2) / math.sqrt(query.size(-1))
