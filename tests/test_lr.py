"""rnnlib.lr.lr_range_test: the schedule it follows, where it stops, and that it leaves no trace."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rnnlib.lr import RangeTestResult, lr_range_test

DT = torch.float64


def quadratic_problem(curvature: float):
    """Full-batch loss 0.5 * curvature * ||w||^2: plain SGD converges for lr < 2 / curvature, diverges above."""
    model = nn.Linear(1, 1, bias=False).to(DT)
    with torch.no_grad():
        model.weight.fill_(1.0)

    def loss_fn(m, batch):
        return 0.5 * curvature * (m.weight**2).sum()

    def batches():
        while True:
            yield None

    return model, loss_fn, batches


def test_rates_grow_geometrically_from_min_to_max():
    model, loss_fn, batches = quadratic_problem(curvature=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = lr_range_test(model, opt, batches, loss_fn, min_lr=1e-4, max_lr=1e-1, steps=31, beta=0.0)
    assert not result.stopped_early  # lr never reaches 2 / curvature = 2
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) == 31
    assert result.lrs[0] == pytest.approx(1e-4) and result.lrs[-1] == pytest.approx(1e-1)
    ratios = torch.tensor(result.lrs[1:], dtype=DT) / torch.tensor(result.lrs[:-1], dtype=DT)
    torch.testing.assert_close(ratios, torch.full_like(ratios, 10 ** 0.1))
    # beta = 0: no smoothing; SGD on the quadratic multiplies the loss by (1 - lr * c)^2 each step.
    assert result.smoothed == result.losses
    for k in range(30):
        assert result.losses[k + 1] == pytest.approx(result.losses[k] * (1 - result.lrs[k]) ** 2, rel=1e-12)


def test_stops_soon_after_the_divergence_threshold_of_sgd():
    curvature = 10.0  # SGD diverges for lr > 2 / curvature = 0.2
    model, loss_fn, batches = quadratic_problem(curvature)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = lr_range_test(model, opt, batches, loss_fn, min_lr=1e-3, max_lr=100.0, steps=100, beta=0.5)
    assert result.stopped_early
    assert 2 / curvature < result.lrs[-1] < 4 * 2 / curvature
    below = [loss for lr, loss in zip(result.lrs, result.losses) if lr < 2 / curvature]
    assert all(b < a for a, b in zip(below, below[1:]))  # converging while the rate is below the threshold
    assert result.losses[-1] > result.losses[-2]  # and growing when the test stopped
    assert result.suggestion() == pytest.approx(result.best_lr / 10)


def test_stops_on_a_non_finite_loss():
    model, _, batches = quadratic_problem(1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def loss_fn(m, batch):
        calls.append(1)
        value = (m.weight**2).sum()
        return value * (math.nan if len(calls) == 5 else 1.0)

    result = lr_range_test(model, opt, batches, loss_fn, steps=50)
    assert result.stopped_early and len(result.losses) == 5 and math.isnan(result.losses[-1])
    assert math.isfinite(result.best_lr)


def test_restores_model_and_optimizer_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).to(DT)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    X, y = torch.randn(32, 3, dtype=DT), torch.randn(32, 1, dtype=DT)
    loss_fn = lambda m, batch: nn.functional.mse_loss(m(batch[0]), batch[1])
    for _ in range(3):  # give Adam some state to restore
        opt.zero_grad()
        loss_fn(model, (X, y)).backward()
        opt.step()
    before_params = {k: v.clone() for k, v in model.state_dict().items()}
    before_opt = {k: {n: t.clone() if torch.is_tensor(t) else t for n, t in s.items()} for k, s in opt.state_dict()["state"].items()}
    result = lr_range_test(model, opt, lambda: [(X, y)], loss_fn, min_lr=1e-4, max_lr=10.0, steps=20)
    assert len(result.lrs) >= 2
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before_params[k], rtol=0, atol=0)
    after = opt.state_dict()
    assert after["param_groups"][0]["lr"] == 3e-3
    for k, s in after["state"].items():
        for n, t in s.items():
            torch.testing.assert_close(torch.as_tensor(t), torch.as_tensor(before_opt[k][n]), rtol=0, atol=0)
    # and without restore the weights do change
    lr_range_test(model, opt, lambda: [(X, y)], loss_fn, min_lr=1e-4, max_lr=10.0, steps=20, restore=False)
    assert any(not torch.equal(v, before_params[k]) for k, v in model.state_dict().items())


def test_rejects_bad_arguments():
    model, loss_fn, batches = quadratic_problem(1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="min_lr"):
        lr_range_test(model, opt, batches, loss_fn, min_lr=1.0, max_lr=0.1)
    with pytest.raises(ValueError, match="steps"):
        lr_range_test(model, opt, batches, loss_fn, steps=1)
    with pytest.raises(ValueError, match="no steps"):
        RangeTestResult().best_lr
