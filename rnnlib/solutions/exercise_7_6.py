"""Reference solution of exercise 7.6: the log-space scan and a minGRU layer that uses it.

    a*_t  = sum_{s<=t} log a_s                                  (cumsum over time)
    h_t   = exp(a*_t + logcumsumexp_{s<=t}(log b_s - a*_s)) + exp(a*_t) h_0

    z_t = sigmoid(k_t),  k_t = W_z x_t + b_z:   log(1 - z_t) = -softplus(k_t),  log z_t = -softplus(-k_t)
    h_t = (1 - z_t) h_{t-1} + z_t g(W_h x_t + b_h)               a_t = 1 - z_t,  b_t = z_t g(...)
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def log_scan(log_a: Tensor, log_b: Tensor, h0: Optional[Tensor] = None) -> Tensor:
    """h_t = a_t h_{t-1} + b_t for positive a, b given by their logs (B, T, H); h0 (B, H) or None -> h (B, T, H)."""
    a_star = torch.cumsum(log_a, dim=1)                              # log of a_1 a_2 ... a_t, (B, T, H)
    h = torch.exp(a_star + torch.logcumsumexp(log_b - a_star, dim=1))
    if h0 is not None:
        h = h + torch.exp(a_star) * h0.unsqueeze(1)                  # h0 stays in linear space: any sign
    return h


def log_g(x: Tensor) -> Tensor:
    """log g(x) with g(x) = x + 1/2 (x >= 0), sigmoid(x) (x < 0); never the log of a negative number."""
    return torch.where(x >= 0, torch.log(x.clamp(min=0) + 0.5), -F.softplus(-x))


class MinGRU(nn.Module):
    """minGRU layer, batch first: x (B, T, D), h0 (B, H) or None -> all states h (B, T, H)."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.linear_z = nn.Linear(input_size, hidden_size)   # update gate
        self.linear_h = nn.Linear(input_size, hidden_size)   # candidate

    def forward(self, x: Tensor, h0: Optional[Tensor] = None) -> Tensor:
        k = self.linear_z(x)                                 # (B, T, H)
        log_a = -F.softplus(k)                               # log(1 - z)
        log_b = -F.softplus(-k) + log_g(self.linear_h(x))    # log z + log g(candidate)
        return log_scan(log_a, log_b, h0)
