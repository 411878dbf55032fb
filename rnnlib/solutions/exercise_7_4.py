"""Reference solution of exercise 7.4: reversing padded sequences, and a bidirectional encoder from two RNNs."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row of a right-padded batch x (B, T, ...) within its own length; padding stays at the end."""
    B, T = x.shape[:2]
    t = torch.arange(T, device=x.device).expand(B, T)  # (B, T)
    L = lengths.to(x.device)[:, None]  # (B, 1)
    source = torch.where(t < L, L - 1 - t, t)  # position t reads x[b, L-1-t] if real, else stays
    return x[torch.arange(B, device=x.device)[:, None], source]


def bidirectional(forward_rnn: nn.Module, backward_rnn: nn.Module, x: Tensor, lengths: Tensor):
    """outputs (B, T, 2H) = [forward; backward] at real positions, 0 at padding; summary (B, 2H)."""
    forward_out, _ = forward_rnn(x)  # padding comes after the real tokens, so it cannot affect them
    backward_out, _ = backward_rnn(reverse_padded(x, lengths))  # reads x[L-1], ..., x[0], then padding
    backward_out = reverse_padded(backward_out, lengths)  # position t again describes token t
    real = (torch.arange(x.size(1), device=x.device)[None, :] < lengths.to(x.device)[:, None])  # (B, T)
    outputs = torch.cat([forward_out, backward_out], dim=-1) * real[:, :, None]
    rows = torch.arange(x.size(0), device=x.device)
    summary = torch.cat([forward_out[rows, lengths - 1], backward_out[:, 0]], dim=-1)  # (B, 2H)
    return outputs, summary
