r"""The learning-rate range test: find a usable learning rate from one short run.

Smith (2017) trains for a few hundred steps while the learning rate grows geometrically from
:math:`\eta_{\min}` to :math:`\eta_{\max}`,

.. math::  \eta_k = \eta_{\min} \, (\eta_{\max} / \eta_{\min})^{k / (K - 1)}, \qquad k = 0, \dots, K - 1,

and records the training loss of every step. Read against :math:`\log \eta`, the curve is flat while the
rate is too small to matter, falls once the rate is large enough to make progress, reaches a minimum,
then turns up and explodes once the steps overshoot. The loss of one mini-batch is noisy, so the curve
is smoothed with a bias-corrected exponential moving average (the one TensorBoard draws):

.. math::  a_k = \beta a_{k-1} + (1 - \beta)\,\ell_k, \qquad \bar\ell_k = a_k / (1 - \beta^{k+1}).

The test stops early once :math:`\bar\ell_k` exceeds ``diverge`` times its smallest value so far, or a
loss is not finite. A common choice of constant rate is the rate at the minimum of :math:`\bar\ell`
divided by about 10 (:meth:`RangeTestResult.suggestion`): well inside the region where the loss still
falls, with a margin for the later, more delicate part of training.

The test changes the weights, so by default the model's and the optimizer's states are saved before
it starts and restored when it ends: it leaves nothing behind but its result.

References: L. N. Smith, "Cyclical learning rates for training neural networks", WACV 2017.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from .train import _to_device

__all__ = ["RangeTestResult", "lr_range_test"]


@dataclass
class RangeTestResult:
    """What :func:`lr_range_test` measured: one entry per step taken."""

    lrs: list = field(default_factory=list)       # learning rate of each step
    losses: list = field(default_factory=list)    # training loss of each step (before its update)
    smoothed: list = field(default_factory=list)  # bias-corrected moving average of ``losses``
    stopped_early: bool = False                   # True if the loss diverged before ``max_lr``

    @property
    def best_lr(self) -> float:
        """The learning rate at the minimum of the smoothed loss."""
        if not self.smoothed:
            raise ValueError("the range test took no steps")
        finite = [(s, lr) for s, lr in zip(self.smoothed, self.lrs) if math.isfinite(s)]
        return min(finite)[1]

    def suggestion(self, factor: float = 10.0) -> float:
        """``best_lr / factor``: a rate where the loss still falls steadily."""
        if factor <= 0:
            raise ValueError(f"factor must be positive, got {factor}")
        return self.best_lr / factor


def lr_range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable | Callable[[], Iterable],
    loss_fn: Callable[[nn.Module, object], torch.Tensor],
    min_lr: float = 1e-5,
    max_lr: float = 1.0,
    steps: int = 100,
    beta: float = 0.9,
    diverge: float = 4.0,
    clip_norm: float | None = None,
    restore: bool = True,
) -> RangeTestResult:
    """Train for up to ``steps`` steps with the rate growing geometrically from ``min_lr`` to ``max_lr``.

    Args:
        batches, loss_fn: as for :func:`rnnlib.train.fit` (an iterable of batches or a function that
            returns one; ``loss_fn(model, batch)`` returns a scalar loss).
        beta: smoothing of the recorded loss (0 = none).
        diverge: stop once the smoothed loss exceeds this multiple of its minimum so far.
        clip_norm: clip the global gradient norm, as the real training run will (``None``: no clipping).
        restore: put the model's and optimizer's states back as they were before the test.

    Every parameter group gets the same rate at each step. Returns a :class:`RangeTestResult`.
    """
    if not 0 < min_lr < max_lr:
        raise ValueError(f"need 0 < min_lr < max_lr, got min_lr={min_lr}, max_lr={max_lr}")
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    if diverge <= 1:
        raise ValueError(f"diverge must be > 1, got {diverge}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    device = params[0].device
    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())) if restore else None

    result = RangeTestResult()
    ratio = max_lr / min_lr
    average, best = 0.0, math.inf
    iterator = None
    was_training = model.training
    model.train()
    try:
        for k in range(steps):
            if iterator is None:
                iterator = iter(batches() if callable(batches) else batches)
            try:
                batch = next(iterator)
            except StopIteration:
                if not callable(batches):
                    raise ValueError("the batch iterable ran out; pass a function that returns a fresh one") from None
                iterator = iter(batches())
                batch = next(iterator)
            lr = min_lr * ratio ** (k / (steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, _to_device(batch, device))
            value = float(loss.detach())
            result.lrs.append(lr)
            result.losses.append(value)
            if not math.isfinite(value):
                result.smoothed.append(math.inf)
                result.stopped_early = True
                break
            average = beta * average + (1 - beta) * value
            smoothed = average / (1 - beta ** (k + 1))
            result.smoothed.append(smoothed)
            best = min(best, smoothed)
            if smoothed > diverge * best:
                result.stopped_early = True
                break
            loss.backward()
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, clip_norm)
            optimizer.step()
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.train(was_training)
        if saved is not None:
            model.load_state_dict(saved[0])
            optimizer.load_state_dict(saved[1])
    return result
