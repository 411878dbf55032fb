"""Reference solution of exercise 7.1: forecasting daily minimum temperatures with a basic RNN, without leaks."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def split_by_time(values: Tensor, val_fraction: float, test_fraction: float) -> tuple[Tensor, Tensor, Tensor]:
    """Consecutive periods: the earliest for training, then validation, then the most recent for testing."""
    n = len(values)
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    n_train = n - n_val - n_test
    return values[:n_train], values[n_train:n_train + n_val], values[n_train + n_val:]


def normalize_splits(train: Tensor, val: Tensor, test: Tensor):
    """Standardize all three parts with the training period's mean and standard deviation only."""
    mean, std = train.mean(), train.std()
    return (train - mean) / std, (val - mean) / std, (test - mean) / std, mean, std


def make_windows(series: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """Windows X (N, window, 1) of consecutive days and the next day's value y (N,), N = len(series) - window."""
    N = len(series) - window
    X = torch.stack([series[t:t + window] for t in range(N)])  # (N, window)
    y = series[window:]  # y[t] = series[t + window]
    return X.unsqueeze(-1), y


def naive_forecast(X: Tensor) -> Tensor:
    """Tomorrow = today: the last value of each window."""
    return X[:, -1, 0]


class Forecaster(nn.Module):
    """An RNN cell unrolled over the window; a linear head on the state after the last day."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.cell = nn.RNNCell(1, hidden_size)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, T, 1)
        h = x.new_zeros(x.size(0), self.cell.hidden_size)
        for t in range(x.size(1)):
            h = self.cell(x[:, t], h)  # the state carries over from day to day
        return self.head(h).squeeze(-1)  # (B,)
