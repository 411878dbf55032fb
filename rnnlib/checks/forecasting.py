r"""Checkers of exercise 7.1: forecasting a daily series with a basic RNN, done without leaks.

The five pieces the learner writes, and what each is compared with:

* ``split_by_time(values, val_fraction, test_fraction)``: consecutive periods, training first, then
  validation, then test (no shuffling: the model must be judged on days after the ones it learnt from);
* ``normalize_splits(train, val, test)``: z-scores :math:`(x - \mu) / \sigma` with :math:`\mu, \sigma`
  from the **training** period only, applied to all three;
* ``make_windows(series, window)``: :func:`rnnlib.synthetic.sliding_windows`, the target being the value
  right after each window (never a value inside it);
* ``naive_forecast(X)``: "same as yesterday", the last value of each window;
* ``Forecaster``: an ``nn.RNNCell`` unrolled over the window, :math:`H_t = \tanh(X_t W_{xh} + H_{t-1} W_{hh} + b_h)`,
  with the prediction :math:`H_T W_{hq} + b_q` from the state after the last step; compared with
  :class:`rnnlib.models.SequenceRegressor` holding the same weights, in values and gradients; its cell must
  be called exactly once per day (a fused RNN layer such as ``torch.rnn_tanh`` or ``nn.RNN`` fails), and two
  calls on the same windows must give the same predictions (no state kept between calls).

The four data functions are compared on values only: they prepare data that nothing is trained through.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call

from ..models import SequenceRegressor
from ..synthetic import sliding_windows
from ._core import (Mistake, build, call, checker, close, compare_gradients, describe, diagnose, expect_shape, fail,
                    run, set_parameters)

__all__ = ["check_split_by_time", "check_normalize_splits", "check_make_windows", "check_naive_forecast",
           "check_forecaster"]


def _as_1d(x, what: str) -> Tensor:
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x)
        except Exception:
            raise fail(f"{what} should be a 1-D tensor, got {describe(x)}.",
                       "Return slices of the tensor you were given, e.g. values[:a].") from None
    if x.dim() != 1:
        raise fail(f"{what} should be 1-D (one value per day), got shape {tuple(x.shape)}.",
                   "Slice along the only dimension, values[a:b]; do not reshape, stack or add dimensions.")
    return x


@checker
def check_split_by_time(split_by_time) -> str:
    """Check ``split_by_time(values, val_fraction, test_fraction) -> (train, val, test)``: consecutive
    periods in time order covering every value once, their sizes the given fractions (to within one day)."""
    gen = torch.Generator().manual_seed(71)
    name = getattr(split_by_time, "__name__", "your function")
    for n, val_fraction, test_fraction in ((100, 0.1, 0.2), (37, 0.2, 0.2), (365, 0.15, 0.25)):
        values = torch.randn(n, generator=gen)
        out = call(split_by_time, values.clone(), val_fraction, test_fraction,
                   what=f"{name}(values, {val_fraction}, {test_fraction})")
        if not (isinstance(out, (tuple, list)) and len(out) == 3):
            raise fail(f"{name} returned {describe(out)}; expected (train, val, test).",
                       "End with: return train, val, test")
        train, val, test = (_as_1d(part, what) for part, what in zip(out, ("train", "val", "test")))
        total = len(train) + len(val) + len(test)
        if total > n:
            raise fail(f"The three parts hold {total} values but the series has {n}: they overlap.",
                       "Each value belongs to exactly one part: end one slice where the next begins, e.g. "
                       "values[:a], values[a:b], values[b:].")
        if total < n:
            raise fail(f"The three parts hold {total} values but the series has {n}: {n - total} are lost.",
                       "Slice up to the end: values[b:] for the last part.")
        joined = torch.cat([train, val, test])
        if not torch.equal(joined, values):
            if torch.equal(torch.sort(joined).values, torch.sort(values).values):
                if torch.equal(torch.cat([test, val, train]), values):
                    raise fail("The parts are in the wrong order: the test period comes first.",
                               "Training is the earliest period, then validation, then test (the most recent).")
                if torch.equal(torch.cat([train, test, val]), values):
                    raise fail("Validation and test are swapped: the validation part you return is the most recent "
                               "period, and the test part the one before it.",
                               "The test period is the last one, the most recent days; validation comes just before it.")
                raise fail("The values are shuffled: the parts are not consecutive periods of the series.",
                           "For a time series the model must be judged on days after those it learnt from: take "
                           "consecutive slices in time order, without shuffling.")
            raise fail("The parts are not slices of the series you were given.", "Slice values; do not change them.")
        if (val_fraction != test_fraction and abs(len(val) - n * test_fraction) <= 1
                and abs(len(test) - n * val_fraction) <= 1):
            raise fail(f"The sizes of validation and test are swapped: validation holds {len(val)} values and test "
                       f"{len(test)}, but val_fraction={val_fraction} and test_fraction={test_fraction}.",
                       "The validation part holds val_fraction of the values, the test part test_fraction.")
        for part, fraction, label in ((val, val_fraction, "validation"), (test, test_fraction, "test")):
            if abs(len(part) - n * fraction) > 1:
                raise fail(f"With {n} values and a {label} fraction of {fraction}, the {label} part should hold about "
                           f"{n * fraction:.0f} values; it holds {len(part)}.",
                           "Compute the sizes from the fractions, e.g. n_test = round(n * test_fraction).")
    return f"{name} cuts the series into consecutive training, validation and test periods of the right sizes."


@checker
def check_normalize_splits(normalize_splits) -> str:
    """Check ``normalize_splits(train, val, test) -> (train_n, val_n, test_n, mean, std)``: the mean and
    standard deviation of the training part only (either ``unbiased`` setting), applied to all three parts."""
    gen = torch.Generator().manual_seed(711)
    name = getattr(normalize_splits, "__name__", "your function")
    # Three periods with different levels and spreads (a warming trend, a change of season), so that
    # statistics fitted on anything but the training period give different numbers.
    train = 10 + 2 * torch.randn(60, generator=gen)
    val = 14 + 3 * torch.randn(20, generator=gen)
    test = 6 + 1 * torch.randn(25, generator=gen)
    out = call(normalize_splits, train.clone(), val.clone(), test.clone(), what=f"{name}(train, val, test)")
    if not (isinstance(out, (tuple, list)) and len(out) == 5):
        raise fail(f"{name} returned {describe(out)}; expected (train_n, val_n, test_n, mean, std).",
                   "End with: return train_n, val_n, test_n, mean, std")
    try:
        mean, std = float(out[3]), float(out[4])
    except (TypeError, ValueError, RuntimeError):
        raise fail(f"mean and std should be numbers (or 0-d tensors); got {describe(out[3])} and {describe(out[4])}.",
                   "Return train.mean() and train.std(), or their .item().") from None
    everything = torch.cat([train, val, test])
    if abs(mean - float(everything.mean())) < 1e-4:
        raise fail("The mean is that of all the data: the validation and test periods leak into the normalization, "
                   "so the model is tuned with information from the future it is meant to forecast.",
                   "Fit the statistics on the training part only, then apply them to all three parts.")
    if abs(mean - float(train.mean())) > 1e-4 * max(1.0, abs(float(train.mean()))):
        raise fail(f"The mean you return ({mean:.4g}) is not the training mean ({float(train.mean()):.4g}).",
                   "Compute the mean from the training part alone.")
    stds = (float(train.std(unbiased=True)), float(train.std(unbiased=False)))
    if abs(std - float(everything.std())) < 1e-4 or abs(std - float(everything.std(unbiased=False))) < 1e-4:
        raise fail("The standard deviation is that of all the data: the validation and test periods leak into "
                   "the normalization.", "Fit the statistics on the training part only.")
    if abs(std - stds[0] ** 2) < 1e-3 or abs(std - stds[1] ** 2) < 1e-3:
        raise fail("The std you return is the variance of the training data.",
                   "The standard deviation is the square root of the variance.")
    if min(abs(std - s) for s in stds) > 1e-4 * stds[0]:
        raise fail(f"The std you return ({std:.4g}) is not the training standard deviation ({stds[0]:.4g}).",
                   "Compute the standard deviation from the training part alone.")
    for k, (part, label) in enumerate(((train, "train_n"), (val, "val_n"), (test, "test_n"))):
        got = expect_shape(out[k], part.shape, label, "Normalizing keeps one value per day.")
        expected = (part - mean) / std
        if close(got, expected):
            continue
        own_message = (f"{label} is normalized with its own mean and std: each part then has mean 0, which hides "
                       "the very change in level the model should forecast, and uses statistics of the future.")
        mistakes = [
            Mistake(own_message, "Use the training mean and std for all three parts.",
                    lambda: (part - part.mean()) / part.std()),
            Mistake(own_message, "Use the training mean and std for all three parts.",
                    lambda: (part - part.mean()) / part.std(unbiased=False)),
            Mistake(f"{label} is returned without normalization.", "Apply (x - mean) / std to every part.",
                    lambda: part),
            Mistake(f"{label} is only centred (x - mean), not divided by std.", "Apply (x - mean) / std.",
                    lambda: part - mean),
            Mistake(f"{label} is min-max scaled; this exercise standardizes: (x - mean) / std.",
                    "Use the training mean and standard deviation.",
                    lambda: (part - train.min()) / (train.max() - train.min())),
        ]
        found = diagnose(got, mistakes)
        if found is not None:
            raise fail(found.message, found.hint)
        raise fail(f"{label} differs from (x - mean) / std with the training mean and std.",
                   "Apply exactly (x - mean) / std, with the mean and std you return.")
    return f"{name} standardizes all three parts with the training period's mean and standard deviation only."


@checker
def check_make_windows(make_windows) -> str:
    """Check ``make_windows(series, window) -> (X, y)``: X (N, window, 1) the overlapping windows, y (N,)
    the value right after each window, N = len(series) - window. Compared with ``sliding_windows``."""
    gen = torch.Generator().manual_seed(712)
    name = getattr(make_windows, "__name__", "your function")
    for n, window in ((20, 3), (31, 7), (12, 1)):
        series = torch.randn(n, generator=gen)
        out = call(make_windows, series.clone(), window, what=f"{name}(series, {window})")
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise fail(f"{name} returned {describe(out)}; expected (X, y).", "End with: return X, y")
        X, y = out
        X_ref, Y_ref = sliding_windows(series, window)
        y_ref = Y_ref[:, 0]
        N = len(y_ref)
        if isinstance(X, Tensor) and tuple(X.shape) == (N, window):
            raise fail(f"X has shape {(N, window)}: the feature dimension is missing.",
                       "A recurrent layer reads (batch, time, features): add it with X.unsqueeze(-1).")
        if isinstance(X, Tensor) and X.dim() == 3 and X.shape[1:] == (window, 1) and X.size(0) != N:
            if X.size(0) == (n - window) // window or X.size(0) == n // window:
                raise fail(f"You made {X.size(0)} windows that do not overlap; windows slide by one day, giving "
                           f"{N} from {n} values.", "Start a window at every day t = 0 .. n - window - 1.")
            raise fail(f"You made {X.size(0)} windows from {n} values and window={window}; there are {N} windows "
                       "whose next value exists (n - window).",
                       "The last window ends the day before the last value, which is its target.")
        expect_shape(X, (N, window, 1), f"X (series of {n} values, window={window})",
                     "X is (number of windows, window, 1).")
        if isinstance(y, Tensor) and tuple(y.shape) == (N, 1):
            raise fail(f"y has shape {(N, 1)}; expected {(N,)}, one target per window.",
                       "Use y.squeeze(-1), or index the 1-D series directly.")
        expect_shape(y, (N,), "y", "y holds one target per window.")
        if not torch.equal(X, X_ref):
            if torch.equal(X, X_ref.flip(1)):
                raise fail("Each window is in reverse time order.", "Keep the days in order: series[t : t + window].")
            raise fail("The windows differ from consecutive slices series[t : t + window].",
                       "Window t holds the values of days t, t + 1, ..., t + window - 1.")
        if torch.equal(y, y_ref):
            continue
        if torch.equal(y, X_ref[:, -1, 0]):
            raise fail("Each target is the last value inside its window: the model would be asked to predict a value "
                       "it has just read (a leak), and would look perfect.",
                       "The target of the window ending on day t + window - 1 is the next day: series[t + window].")
        if N > 1 and torch.equal(y[:-1], y_ref[1:]):
            raise fail("Each target is two days after its window, skipping the next day.",
                       "The target is series[t + window], the day right after the window.")
        raise fail("The targets differ from the value right after each window.", "y[t] = series[t + window].")
    return f"{name} makes overlapping windows with the next day's value as the target, as sliding_windows does."


@checker
def check_naive_forecast(naive_forecast) -> str:
    """Check ``naive_forecast(X) -> (N,)``: the last value of each window ("tomorrow = today")."""
    gen = torch.Generator().manual_seed(713)
    name = getattr(naive_forecast, "__name__", "your function")
    for N, T in ((5, 4), (3, 1), (7, 9)):
        X = torch.randn(N, T, 1, generator=gen)
        out = call(naive_forecast, X.clone(), what=f"{name}(X)")
        if isinstance(out, Tensor) and tuple(out.shape) in ((N, 1), (N, 1, 1)):
            raise fail(f"The forecast has shape {tuple(out.shape)}; expected {(N,)}, one value per window.",
                       "Select the last time step and the only feature, so that one number per window remains.")
        expect_shape(out, (N,), f"The forecast (X of shape {(N, T, 1)})", "One value per window.")
        if torch.equal(out, X[:, -1, 0]):
            continue
        mistakes = [
            Mistake("Your forecast is the first value of each window, not the last.",
                    "'Same as yesterday' is the most recent value: the last time step.", lambda: X[:, 0, 0]),
            Mistake("Your forecast is the mean of each window; the baseline asked for is 'same as yesterday'.",
                    "Use the last value of the window.", lambda: X.mean(1)[:, 0]),
            Mistake("Your forecast is the value two days before the target.", "Use the last value of the window.",
                    lambda: X[:, -2, 0]),
        ]
        found = diagnose(out, mistakes)
        if found is not None:
            raise fail(found.message, found.hint)
        raise fail("The forecast is not the last value of each window.", "Take the most recent day of each window.")
    return f"{name} predicts the last value of each window."


# ------------------------------------------------------------------------------------------------------
# The RNN forecaster
# ------------------------------------------------------------------------------------------------------
def _reference(p: dict, x: Tensor) -> Tensor:
    """SequenceRegressor's prediction with the learner's parameters ``p`` (differentiable in them)."""
    H = p["cell.weight_hh"].size(0)
    model = SequenceRegressor(input_size=1, hidden_size=H, cell="rnn", impl="rnnlib")
    params = {"rnn.weight_ih_l0": p["cell.weight_ih"], "rnn.weight_hh_l0": p["cell.weight_hh"],
              "rnn.bias_ih_l0": p["cell.bias_ih"], "rnn.bias_hh_l0": p["cell.bias_hh"],
              "head.weight": p["head.weight"], "head.bias": p["head.bias"]}
    return functional_call(model, params, (x,)).squeeze(-1)  # (B,)


def _cell(p, x_t, h):
    return torch.tanh(x_t @ p["cell.weight_ih"].T + p["cell.bias_ih"] + h @ p["cell.weight_hh"].T + p["cell.bias_hh"])


def _head(p, h):
    return (h @ p["head.weight"].T + p["head.bias"]).squeeze(-1)


def _states(p, x, reset=False, reverse=False, steps=None):
    h = x.new_zeros(x.size(0), p["cell.weight_hh"].size(0))
    steps = (range(x.size(1) - 1, -1, -1) if reverse else range(x.size(1))) if steps is None else steps
    states = []
    for t in steps:
        h = _cell(p, x[:, t], torch.zeros_like(h) if reset else h)
        states.append(h)
    return states


def _forecaster_mistakes(p, x):
    yield Mistake("The hidden state is not carried over time: every step starts from a zero state, so the "
                  "prediction depends on the last day only (the source chapter's mistake).",
                  "Start from h = 0 once, before the loop, and feed each step the h of the previous step.",
                  lambda: _head(p, _states(p, x, reset=True)[-1]))
    yield Mistake("The prediction comes from the state after the first step, not the last.",
                  "Predict from the hidden state after the whole window has been read.",
                  lambda: _head(p, _states(p, x)[0]))
    yield Mistake("The window is read backwards in time.", "Loop t = 0, 1, ..., T - 1 over x[:, t].",
                  lambda: _head(p, _states(p, x, reverse=True)[-1]))
    T = x.size(1)
    yield Mistake("The time loop stops one step early: the last day of the window, the most recent one, is never read.",
                  "Loop over all T days: for t in range(x.size(1)).",
                  lambda: _head(p, _states(p, x, steps=range(T - 1))[-1]) if T > 1 else None)
    yield Mistake("The time loop skips the first day of the window (it starts at t = 1).",
                  "Loop over all T days, starting at t = 0: for t in range(x.size(1)).",
                  lambda: _head(p, _states(p, x, steps=range(1, T))[-1]) if T > 1 else None)
    yield Mistake("The prediction is the mean of the head over all steps, not the head of the last state.",
                  "Apply the head once, to the hidden state after the last step.",
                  lambda: torch.stack([_head(p, h) for h in _states(p, x)], 1).mean(1))


FROM_SCRATCH = ("Unroll the RNN yourself: loop over the days and call self.cell once per day. A fused RNN layer "
                "(nn.RNN, torch.rnn_tanh) would do the loop for you, and the loop is the exercise.")


def _forecaster_shapes(H):
    return {"cell.weight_ih": (H, 1), "cell.weight_hh": (H, H), "cell.bias_ih": (H,), "cell.bias_hh": (H,),
            "head.weight": (1, H), "head.bias": (1,)}


@checker
def check_forecaster(model_class) -> str:
    """Check ``model_class(hidden_size)`` with ``forward(x (B, T, 1)) -> (B,)``: the scaffold's ``cell``
    (``nn.RNNCell(1, H)``) unrolled over the window, ``head`` (``nn.Linear(H, 1)``) on the last state.
    Compared with :class:`rnnlib.models.SequenceRegressor` holding the same weights, values and gradients."""
    gen = torch.Generator().manual_seed(714)
    name = getattr(model_class, "__name__", "your model")
    for B, T, H in ((4, 6, 5), (3, 1, 2), (2, 9, 8)):
        model = build(model_class, H, what=f"{name}({H})")
        p = set_parameters(model, _forecaster_shapes(H), gen, name)
        x = torch.randn(B, T, 1, generator=gen)
        with torch.no_grad():
            out, watch = run(model, x, what=f"{name}.forward", allow=[model.cell], count=[model.cell],
                             forbid={"layer": FROM_SCRATCH}, reference=lambda: _reference(p, x))
            ref = _reference(p, x)
        if isinstance(out, (tuple, list)):
            raise fail(f"forward returned {describe(out)}; expected one tensor of predictions, shape {(B,)}.",
                       "Return only the predictions, one number per window.")
        if isinstance(out, Tensor) and tuple(out.shape) == (B, 1):
            raise fail(f"forward returned shape {(B, 1)}; expected {(B,)}, one prediction per window.",
                       "Drop the last dimension of the head's output: .squeeze(-1).")
        if isinstance(out, Tensor) and tuple(out.shape) in ((B, T), (B, T, 1)) and T > 1:
            raise fail(f"forward returned a prediction for every step, shape {tuple(out.shape)}; expected {(B,)}.",
                       "Predict once, from the hidden state after the last step.")
        if isinstance(out, Tensor) and out.dim() >= 1 and out.size(0) == T and T != B:
            raise fail(f"forward returned shape {tuple(out.shape)} for x of shape {(B, T, 1)}: it looks as if the loop "
                       "ran over the batch dimension.",
                       "x is batch first, (B, T, 1): loop over x[:, t] for t in range(T).")
        if isinstance(out, Tensor) and tuple(out.shape) == (B, H):
            raise fail(f"forward returned the hidden state, shape {(B, H)}; apply the head to it.",
                       "Apply self.head to the state after the last day.")
        expect_shape(out, (B,), f"The prediction (x of shape {(B, T, 1)}, hidden_size={H})",
                     "One prediction per window: shape (batch,).")
        if not close(out, ref):
            found = diagnose(out, _forecaster_mistakes(p, x))
            if found is not None:
                raise fail(found.message, found.hint)
            raise fail("The prediction differs from an RNN unrolled over the window with the head on its last state.",
                       "Start from a zero state, update it with self.cell one day at a time, and apply self.head "
                       "once, to the state after the last day.")
        if watch.count(model.cell) != T and not watch.reference:  # rnnlib's code that ran is named in the verdict
            raise fail(f"forward called self.cell {watch.count(model.cell)} times for a window of T={T} days; unrolling "
                       "the RNN calls it exactly once per day.",
                       "Loop over the days and call h = self.cell(x[:, t], h) once for each t.")
        with torch.no_grad():
            again = call(model, x, what=f"{name}.forward")
        if not close(again, out):
            raise fail("Called twice on the same windows, your model gives different predictions the second time: it "
                       "keeps its hidden state between calls (e.g. in self.h), so each batch starts where an "
                       "unrelated batch ended.",
                       "Start every call from a fresh zero state held in a local variable: h = x.new_zeros(...).")

    x_leaf = x.clone().requires_grad_()
    weights = [dict(model.named_parameters())[k] for k in _forecaster_shapes(H)]
    out, watch = run(model, x_leaf, what=f"{name}.forward", allow=[model.cell])
    ref_leaves = [t.detach().clone().requires_grad_() for t in weights + [x]]
    ref = _reference(dict(zip(_forecaster_shapes(H), ref_leaves[:-1])), ref_leaves[-1])
    compare_gradients(out, weights + [x_leaf], ref, ref_leaves, list(_forecaster_shapes(H)) + ["x"], watch,
                      "the predictions")
    return (f"{name} unrolls its RNN cell over the whole window, carrying the hidden state, and predicts from the "
            "last state: values and gradients match the reference.")
