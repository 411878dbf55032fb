"""Reference solution of exercise 7.2: an LSTM cell (gate order i, f, g, o, as in torch.nn) and its loop.

    i = sigmoid(x W_ii^T + b_ii + h W_hi^T + b_hi)      f and o likewise
    g = tanh(x W_ig^T + b_ig + h W_hg^T + b_hg)
    c' = f * c + i * g,   h' = o * tanh(c')
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn


class LSTMCell(nn.Module):
    """One LSTM step: x (B, D) and state (h, c), each (B, H), or None for zeros -> (h', c')."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        H = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * H, input_size))  # rows: i, f, g, o
        self.weight_hh = nn.Parameter(torch.empty(4 * H, H))
        self.bias_ih = nn.Parameter(torch.empty(4 * H))
        self.bias_hh = nn.Parameter(torch.empty(4 * H))
        bound = 1 / math.sqrt(H)  # PyTorch's initialisation
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor, state: Optional[tuple[Tensor, Tensor]] = None) -> tuple[Tensor, Tensor]:
        if state is None:
            zeros = x.new_zeros(x.size(0), self.hidden_size)
            state = (zeros, zeros)
        h, c = state
        gates = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=-1)  # (B, H) each
        i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
        g = torch.tanh(g)
        c_new = f * c + i * g
        h_new = o * torch.tanh(c_new)
        return h_new, c_new


def run_lstm(cell: nn.Module, x: Tensor, state=None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Run ``cell`` over batch-first ``x`` (B, T, D): outputs (B, T, H) and the final state (h_T, c_T)."""
    outputs = []
    for t in range(x.size(1)):
        state = cell(x[:, t], state)  # the state of step t feeds step t + 1
        outputs.append(state[0])
    return torch.stack(outputs, dim=1), state
