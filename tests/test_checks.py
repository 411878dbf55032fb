"""The exercise checkers: each passes the reference solution and a correct implementation written in
another style, and rejects typical mistakes (small wrong implementations below) with the message meant
for them. A checker never raises, whatever the learner's code does.
"""
from __future__ import annotations

import inspect
import math
import signal

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnlib.checks as checks
from _learner import copy_of
from rnnlib.checks import _core
from rnnlib.solutions import exercise_7_1 as s71
from rnnlib.solutions import exercise_7_2 as s72
from rnnlib.solutions import exercise_7_3 as s73
from rnnlib.solutions import exercise_7_4 as s74
from rnnlib.solutions import exercise_7_5 as s75


def passes(result):
    assert result.status == "passed" and result, repr(result)


def uses_reference(result, *names):
    """The code checked is right but is, or calls, rnnlib's own: the verdict says so and names what ran."""
    assert result.status == "reference" and not result and result.usable, repr(result)
    assert "USES THE REFERENCE" in repr(result) and "your own code was not checked" in result.message.lower()
    for name in names:
        assert name in result.message, f"{name!r} not in {result!r}"


def rejects(result, *phrases, status="failed"):
    """The check failed with ``status`` and its message (or hint) contains every phrase."""
    assert not result and result.status == status, repr(result)
    text = f"{result.message} {result.hint}".lower()
    for phrase in phrases:
        assert phrase.lower() in text, f"{phrase!r} not in: {result!r}"


# ------------------------------------------------------------------------------------------------------
# 7.1 forecasting
# ------------------------------------------------------------------------------------------------------
def split_with_torch_split(values, val_fraction, test_fraction):
    n = len(values)
    sizes = [n - int(n * val_fraction) - int(n * test_fraction), int(n * val_fraction), int(n * test_fraction)]
    return torch.split(values, sizes)


def test_split_by_time():
    passes(checks.check_split_by_time(copy_of(s71.split_by_time)))
    passes(checks.check_split_by_time(split_with_torch_split))

    def shuffled(values, v, t):
        return s71.split_by_time(values[torch.randperm(len(values))], v, t)

    def test_first(values, v, t):
        n_test, n_val = round(len(values) * t), round(len(values) * v)
        return values[n_test + n_val:], values[n_test:n_test + n_val], values[:n_test]

    def overlapping(values, v, t):
        train, val, test = s71.split_by_time(values, v, t)
        return train, values[len(train) - 1: len(train) + len(val)], test

    def drops_the_end(values, v, t):
        train, val, test = s71.split_by_time(values, v, t)
        return train, val, test[:-2]

    rejects(checks.check_split_by_time(shuffled), "shuffled")
    rejects(checks.check_split_by_time(test_first), "test period comes first")
    rejects(checks.check_split_by_time(overlapping), "overlap")
    rejects(checks.check_split_by_time(drops_the_end), "are lost")


def test_normalize_splits():
    passes(checks.check_normalize_splits(copy_of(s71.normalize_splits)))

    def population_std(train, val, test):
        m, s = train.mean().item(), train.std(unbiased=False).item()
        return [(x - m) / s for x in (train, val, test)] + [m, s]

    passes(checks.check_normalize_splits(population_std))

    def all_data(train, val, test):
        everything = torch.cat([train, val, test])
        m, s = everything.mean(), everything.std()
        return (train - m) / s, (val - m) / s, (test - m) / s, m, s

    def own_statistics(train, val, test):
        m, s = train.mean(), train.std()
        return (train - m) / s, (val - val.mean()) / val.std(), (test - test.mean()) / test.std(), m, s

    def forgets_test(train, val, test):
        m, s = train.mean(), train.std()
        return (train - m) / s, (val - m) / s, test, m, s

    def variance(train, val, test):
        m, s = train.mean(), train.var()
        return (train - m) / s, (val - m) / s, (test - m) / s, m, s

    rejects(checks.check_normalize_splits(all_data), "all the data", "training part only")
    rejects(checks.check_normalize_splits(own_statistics), "val_n", "own mean")
    rejects(checks.check_normalize_splits(forgets_test), "test_n", "without normalization")
    rejects(checks.check_normalize_splits(variance), "variance")


def test_make_windows():
    passes(checks.check_make_windows(copy_of(s71.make_windows)))

    def with_unfold(series, window):
        frames = series.unfold(0, window + 1, 1)
        return frames[:, :window, None], frames[:, window]

    passes(checks.check_make_windows(with_unfold))

    def target_inside(series, window):
        X, _ = s71.make_windows(series, window)
        return X, X[:, -1, 0]

    def no_feature_dim(series, window):
        X, y = s71.make_windows(series, window)
        return X[..., 0], y

    def not_overlapping(series, window):
        X, y = s71.make_windows(series, window)
        return X[::window], y[::window]

    def column_target(series, window):
        X, y = s71.make_windows(series, window)
        return X, y[:, None]

    rejects(checks.check_make_windows(target_inside), "leak")
    rejects(checks.check_make_windows(no_feature_dim), "feature dimension")
    rejects(checks.check_make_windows(not_overlapping), "do not overlap")
    rejects(checks.check_make_windows(column_target), "one target per window")


def test_naive_forecast():
    passes(checks.check_naive_forecast(copy_of(s71.naive_forecast)))
    passes(checks.check_naive_forecast(lambda X: X.squeeze(-1)[:, X.size(1) - 1]))
    rejects(checks.check_naive_forecast(lambda X: X[:, 0, 0]), "first value")
    rejects(checks.check_naive_forecast(lambda X: X.mean(dim=(1, 2))), "mean of each window")
    rejects(checks.check_naive_forecast(lambda X: X[:, -1]), "shape")


class ForecasterUnbind(s71.Forecaster):
    def forward(self, x):
        h = None
        for x_t in x.unbind(1):
            h = self.cell(x_t, h)
        return self.head(h)[:, 0]


class ForecasterReset(s71.Forecaster):
    def forward(self, x):
        for t in range(x.size(1)):
            h = self.cell(x[:, t])  # a fresh zero state at every step
        return self.head(h).squeeze(-1)


class ForecasterFirstStep(s71.Forecaster):
    def forward(self, x):
        states, h = [], None
        for t in range(x.size(1)):
            h = self.cell(x[:, t], h)
            states.append(h)
        return self.head(states[0]).squeeze(-1)


class ForecasterColumn(s71.Forecaster):
    def forward(self, x):
        return super().forward(x)[:, None]


class ForecasterDetached(s71.Forecaster):
    def forward(self, x):
        h = None
        for t in range(x.size(1)):
            h = self.cell(x[:, t], None if h is None else h.detach())
        return self.head(h).squeeze(-1)


class ForecasterTimeFirst(s71.Forecaster):
    def forward(self, x):
        h = None
        for t in range(x.size(0)):  # reads x as (time, batch, 1): loops over the batch
            h = self.cell(x[t], h)
        return self.head(h).squeeze(-1)


def test_forecaster():
    passes(checks.check_forecaster(copy_of(s71.Forecaster)))
    passes(checks.check_forecaster(ForecasterUnbind))
    rejects(checks.check_forecaster(ForecasterReset), "not carried over time")
    rejects(checks.check_forecaster(ForecasterFirstStep), "first step")
    rejects(checks.check_forecaster(ForecasterColumn), "squeeze")
    rejects(checks.check_forecaster(ForecasterDetached), "gradient with respect to cell.weight_ih differs",
            ".detach() (in ForecasterDetached.forward")
    rejects(checks.check_forecaster(ForecasterTimeFirst), "ran over the batch dimension")


# ------------------------------------------------------------------------------------------------------
# 7.2 LSTM cell and loop
# ------------------------------------------------------------------------------------------------------
class LSTMSlices(s72.LSTMCell):
    """Correct, in another style: one F.linear per gate on row slices of the fused weights."""

    def forward(self, x, state=None):
        H = self.hidden_size
        h, c = state if state is not None else (x.new_zeros(len(x), H),) * 2

        def pre(k):
            rows = slice(k * H, (k + 1) * H)
            return (F.linear(x, self.weight_ih[rows], self.bias_ih[rows])
                    + F.linear(h, self.weight_hh[rows], self.bias_hh[rows]))

        i, f, g, o = torch.sigmoid(pre(0)), torch.sigmoid(pre(1)), torch.tanh(pre(2)), torch.sigmoid(pre(3))
        c = f * c + i * g
        return o * torch.tanh(c), c


def lstm_variant(order="ifgo", cand=torch.tanh, bias_hh=True, swap=False, use_h=True, tanh_c=True, tanh_gates=""):
    class Variant(s72.LSTMCell):
        def forward(self, x, state=None):
            h, c = state if state is not None else (x.new_zeros(len(x), self.hidden_size),) * 2
            gates = x @ self.weight_ih.T + self.bias_ih + (h if use_h else 0 * h) @ self.weight_hh.T
            if bias_hh:
                gates = gates + self.bias_hh
            parts = dict(zip(order, gates.chunk(4, -1)))
            gate = {k: torch.tanh if k in tanh_gates else torch.sigmoid for k in "ifo"}  # tanh_gates: a mistake
            i, f, g, o = gate["i"](parts["i"]), gate["f"](parts["f"]), cand(parts["g"]), gate["o"](parts["o"])
            c = f * c + i * g
            h = o * (torch.tanh(c) if tanh_c else c)
            return (c, h) if swap else (h, c)

    return Variant


def test_lstm_cell():
    passes(checks.check_lstm_cell(copy_of(s72.LSTMCell)))
    passes(checks.check_lstm_cell(LSTMSlices))
    rejects(checks.check_lstm_cell(lstm_variant(order="figo")), "order f, i, g, o")
    rejects(checks.check_lstm_cell(lstm_variant(order="igfo")), "order i, g, f, o")
    rejects(checks.check_lstm_cell(lstm_variant(cand=torch.sigmoid)), "candidate g goes through a sigmoid")
    rejects(checks.check_lstm_cell(lstm_variant(bias_hh=False)), "without bias_hh")
    rejects(checks.check_lstm_cell(lstm_variant(swap=True)), "return (c', h')")
    rejects(checks.check_lstm_cell(lstm_variant(use_h=False)), "previous hidden state h is ignored")
    rejects(checks.check_lstm_cell(lstm_variant(tanh_c=False)), "tanh of the new cell state is missing")


def test_lstm_cell_wrong_activations():
    forget = checks.check_lstm_cell(lstm_variant(tanh_gates="f"))
    rejects(forget, "forget gate f goes through tanh instead of a sigmoid", "other activations are right",
            "torch.sigmoid for f")
    assert "candidate" not in forget.message and "output gate" not in forget.message, repr(forget)
    rejects(checks.check_lstm_cell(lstm_variant(tanh_gates="o")), "output gate o goes through tanh")
    rejects(checks.check_lstm_cell(lstm_variant(tanh_gates="f", cand=torch.sigmoid)),
            "forget gate f goes through tanh", "candidate g goes through a sigmoid instead of tanh")
    rejects(checks.check_lstm_cell(lstm_variant(tanh_gates="ifo", cand=torch.sigmoid)),
            "swapped everywhere", "i, f and o go through tanh", "candidate g goes through a sigmoid")
    rejects(checks.check_lstm_cell(lstm_variant(tanh_gates="ifo")), "every gate goes through tanh")
    rejects(checks.check_lstm_cell(lstm_variant(cand=torch.sigmoid)), "candidate g goes through a sigmoid",
            "torch.tanh for the candidate g")
    # i through tanh and g through a sigmoid computes exactly what reading i and g exchanged does
    rejects(checks.check_lstm_cell(lstm_variant(tanh_gates="i", cand=torch.sigmoid)),
            "i and the candidate g are exchanged", "i goes through tanh and g through a sigmoid")
    rejects(checks.check_lstm_cell(lstm_variant(order="gfio")), "order g, f, i, o")


def test_lstm_cell_wrong_shapes_and_structure():
    class Gates(s72.LSTMCell):
        def forward(self, x, state=None):
            return x @ self.weight_ih.T

    class Transposed(s72.LSTMCell):
        def forward(self, x, state=None):
            h, c = s72.LSTMCell.forward(self, x, state)
            return h.T, c.T

    rejects(checks.check_lstm_cell(Gates), "pre-activations")
    rejects(checks.check_lstm_cell(Transposed), "shape")


def loop_unbind(cell, x, state=None):
    outputs = []
    for x_t in x.unbind(dim=1):
        state = cell(x_t, state)
        outputs.append(state[0])
    return torch.stack(outputs, 1), state


def test_lstm_loop():
    passes(checks.check_lstm_loop(copy_of(s72.run_lstm)))
    passes(checks.check_lstm_loop(loop_unbind))

    def reset(cell, x, state=None):
        outs = [cell(x[:, t], state) for t in range(x.size(1))]
        return torch.stack([o[0] for o in outs], 1), outs[-1]

    def time_first(cell, x, state=None):
        outputs, state = s72.run_lstm(cell, x, state)
        return outputs.transpose(0, 1), state

    def ignores_state(cell, x, state=None):
        return s72.run_lstm(cell, x, None)

    def returns_initial(cell, x, state=None):
        outputs, _ = s72.run_lstm(cell, x, state)
        zeros = x.new_zeros(x.size(0), cell.hidden_size)
        return outputs, state if state is not None else (zeros, zeros)

    rejects(checks.check_lstm_loop(reset), "not carried over time")
    rejects(checks.check_lstm_loop(time_first), "time first")
    rejects(checks.check_lstm_loop(ignores_state), "always starts from zeros")
    rejects(checks.check_lstm_loop(returns_initial), "initial state")


def loop_detached(cell, x, state=None):
    """Right values, but no backpropagation through time: the state is cut off the graph at every step."""
    outputs = []
    for t in range(x.size(1)):
        state = cell(x[:, t], state)
        outputs.append(state[0])
        state = tuple(s.detach() for s in state)
    return torch.stack(outputs, 1), state


def loop_shifted(cell, x, state=None):
    """Appends the state before the step: outputs are h_0 ... h_{T-1} instead of h_1 ... h_T."""
    if state is None:
        state = (x.new_zeros(x.size(0), cell.hidden_size),) * 2
    outputs = []
    for t in range(x.size(1)):
        outputs.append(state[0])
        state = cell(x[:, t], state)
    return torch.stack(outputs, 1), state


def test_lstm_loop_backpropagates_through_time():
    rejects(checks.check_lstm_loop(loop_detached), "h_T carries no gradient", "backpropagation through time",
            "is the state detached inside the loop?", "no .detach()", "calls .detach() (in loop_detached")


def test_lstm_loop_shifted_outputs():
    rejects(checks.check_lstm_loop(loop_shifted), "shifted by one step", "call the cell first")


# ------------------------------------------------------------------------------------------------------
# 7.3 GRU cell
# ------------------------------------------------------------------------------------------------------
class GRUPerGate(s73.GRUCell):
    """Correct, in another style: torch.nn.functional per gate, r and z from the sum of both projections."""

    def forward(self, x, h=None):
        H = self.hidden_size
        h = x.new_zeros(len(x), H) if h is None else h
        W_i, W_h, b_i, b_h = (t.split(H) for t in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh))
        r = torch.sigmoid(F.linear(x, W_i[0], b_i[0]) + F.linear(h, W_h[0], b_h[0]))
        z = torch.sigmoid(F.linear(x, W_i[1], b_i[1]) + F.linear(h, W_h[1], b_h[1]))
        n = torch.tanh(F.linear(x, W_i[2], b_i[2]) + r * F.linear(h, W_h[2], b_h[2]))
        return torch.lerp(n, h, z)  # n + z * (h - n) = (1 - z) n + z h


def gru_variant(reset_before=False, swap_z=False, b_hn_outside=False, order="rzn", tanh_gates="", cand=torch.tanh,
                no_bias_hh=False):
    class Variant(s73.GRUCell):
        def forward(self, x, h=None):
            H = self.hidden_size
            h = x.new_zeros(len(x), H) if h is None else h
            xs = dict(zip(order, (x @ self.weight_ih.T + self.bias_ih).chunk(3, -1)))
            W = dict(zip(order, self.weight_hh.chunk(3, 0)))
            b = dict(zip(order, (0 * self.bias_hh if no_bias_hh else self.bias_hh).chunk(3)))
            gate = {k: torch.tanh if k in tanh_gates else torch.sigmoid for k in "rz"}  # tanh_gates: a mistake
            r = gate["r"](xs["r"] + h @ W["r"].T + b["r"])
            z = gate["z"](xs["z"] + h @ W["z"].T + b["z"])
            if reset_before:
                n = cand(xs["n"] + (r * h) @ W["n"].T + b["n"])
            elif b_hn_outside:
                n = cand(xs["n"] + r * (h @ W["n"].T) + b["n"])
            else:
                n = cand(xs["n"] + r * (h @ W["n"].T + b["n"]))
            return z * n + (1 - z) * h if swap_z else (1 - z) * n + z * h

    return Variant


def test_gru_cell():
    passes(checks.check_gru_cell(copy_of(s73.GRUCell)))
    passes(checks.check_gru_cell(GRUPerGate))
    rejects(checks.check_gru_cell(gru_variant(reset_before=True)), "before the matrix product")
    rejects(checks.check_gru_cell(gru_variant(swap_z=True)), "z and 1 - z are swapped")
    rejects(checks.check_gru_cell(gru_variant(b_hn_outside=True)), "b_hn is added outside the reset gate")
    rejects(checks.check_gru_cell(gru_variant(order="zrn")), "order z, r, n")


def test_gru_cell_missing_bias():
    rejects(checks.check_gru_cell(gru_variant(no_bias_hh=True)), "without bias_hh", "adds bias_ih", "bias_hh")


def test_gru_cell_wrong_activations():
    rejects(checks.check_gru_cell(gru_variant(tanh_gates="rz", cand=torch.sigmoid)),
            "swapped everywhere", "r and z go through tanh", "candidate n goes through a sigmoid")
    update = checks.check_gru_cell(gru_variant(tanh_gates="z"))
    rejects(update, "update gate z goes through tanh instead of a sigmoid", "other activations are right",
            "torch.sigmoid for z")
    assert "reset gate" not in update.message and "candidate" not in update.message, repr(update)
    rejects(checks.check_gru_cell(gru_variant(tanh_gates="r")), "reset gate r goes through tanh")
    rejects(checks.check_gru_cell(gru_variant(cand=torch.sigmoid)), "candidate n goes through a sigmoid")
    rejects(checks.check_gru_cell(gru_variant(tanh_gates="r", cand=torch.sigmoid)),
            "reset gate r goes through tanh", "candidate n goes through a sigmoid instead of tanh")


def test_gru_cell_returning_a_tuple():
    class Pair(s73.GRUCell):
        def forward(self, x, h=None):
            h = s73.GRUCell.forward(self, x, h)
            return h, h

    rejects(checks.check_gru_cell(Pair), "no cell state")


# ------------------------------------------------------------------------------------------------------
# 7.4 reversal and bidirectional encoder
# ------------------------------------------------------------------------------------------------------
def reverse_loop(x, lengths):
    out = x.clone()
    for b, L in enumerate(lengths.tolist()):
        out[b, :L] = x[b, :L].flip(0)
    return out


def test_reverse_padded():
    passes(checks.check_reverse_padded(copy_of(s74.reverse_padded)))
    passes(checks.check_reverse_padded(reverse_loop))

    def in_place(x, lengths):
        for b, L in enumerate(lengths.tolist()):
            x[b, :L] = x[b, :L].flip(0).clone()
        return x

    def zeroed_padding(x, lengths):
        out = s74.reverse_padded(x, lengths)
        mask = torch.arange(x.size(1))[None, :] < lengths[:, None]
        return out * (mask if x.dim() == 2 else mask[..., None])

    def off_by_one(x, lengths):
        out = x.clone()
        for b, L in enumerate(lengths.tolist()):
            out[b, : L - 1] = x[b, 1:L].flip(0)
        return out

    rejects(checks.check_reverse_padded(lambda x, lengths: x.flip(1)), "whole padded row", "padding now comes first")
    rejects(checks.check_reverse_padded(in_place), "in place")
    rejects(checks.check_reverse_padded(zeroed_padding), "padded positions changed")
    rejects(checks.check_reverse_padded(off_by_one), "off-by-one")


def bidirectional_packed(forward_rnn, backward_rnn, x, lengths):
    """Correct, in another style: packing for the forward direction, a Python loop for the backward one."""
    T = x.size(1)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    forward_out, _ = pad_packed_sequence(forward_rnn(packed)[0], batch_first=True, total_length=T)
    backward_out = torch.zeros_like(forward_out)
    for b, L in enumerate(lengths.tolist()):
        out, _ = backward_rnn(x[b:b + 1, :L].flip(1))
        backward_out[b, :L] = out[0].flip(0)
    summary = torch.cat([forward_out[torch.arange(len(x)), lengths - 1], backward_out[:, 0]], -1)
    return torch.cat([forward_out, backward_out], -1), summary


def bidirectional_variant(flip_all=False, realign=True, order="fb", mask_padding=True, summary="right"):
    def encode(forward_rnn, backward_rnn, x, lengths):
        reverse = (lambda t, _: t.flip(1)) if flip_all else s74.reverse_padded
        f, f_n = forward_rnn(x)
        b, b_n = backward_rnn(reverse(x, lengths))
        if realign:
            b = reverse(b, lengths)
        real = (torch.arange(x.size(1))[None, :] < lengths[:, None])[..., None]
        out = torch.cat([f, b] if order == "fb" else [b, f], -1)
        if mask_padding:
            out = out * real
        rows = torch.arange(len(x))
        if summary == "h_n":
            s = torch.cat([f_n[0], b[:, 0]], -1)
        else:
            s = torch.cat([f[rows, lengths - 1], b[:, 0]], -1)
        return out, s

    return encode


def test_bidirectional():
    passes(checks.check_bidirectional(copy_of(s74.bidirectional)))
    passes(checks.check_bidirectional(bidirectional_packed))
    rejects(checks.check_bidirectional(bidirectional_variant(flip_all=True)), "read the padding first")
    rejects(checks.check_bidirectional(bidirectional_variant(realign=False)), "not re-aligned in time")
    rejects(checks.check_bidirectional(bidirectional_variant(order="bf")), "[backward; forward]")
    rejects(checks.check_bidirectional(bidirectional_variant(mask_padding=False)), "not 0 at the padded positions")
    rejects(checks.check_bidirectional(bidirectional_variant(summary="h_n")), "last padded position")


def test_bidirectional_one_direction_only():
    def forward_only(forward_rnn, backward_rnn, x, lengths):
        out, _ = forward_rnn(x)
        return out, out[:, -1]

    rejects(checks.check_bidirectional(forward_only), "only one direction")


def test_bidirectional_gradients_flow_through_both_rnns():
    class Detached(nn.Module):
        """The backward RNN with its outputs cut off the graph: right values, no gradient."""

        def __init__(self, rnn):
            super().__init__()
            self.rnn = rnn

        def forward(self, x):
            out, h_n = self.rnn(x)
            return out.detach(), h_n.detach()

    def backward_detached(forward_rnn, backward_rnn, x, lengths):
        return s74.bidirectional(forward_rnn, Detached(backward_rnn), x, lengths)

    rejects(checks.check_bidirectional(backward_detached), "no gradient reaches backward_rnn.weight_ih_l0", "is cut",
            ".detach() (in", "Detached.forward, line")


# ------------------------------------------------------------------------------------------------------
# 7.5 attention
# ------------------------------------------------------------------------------------------------------
def masked_softmax_by_hand(scores, mask):
    """Correct, in another style: exponentials of the unmasked scores minus their maximum, normalized, 0/0
    avoided by a clamp."""
    top = scores.masked_fill(~mask, torch.finfo(scores.dtype).min).amax(-1, keepdim=True)
    e = torch.exp(torch.where(mask, scores - top, float("-inf")))
    return e / e.sum(-1, keepdim=True).clamp_min(1e-30)


def test_masked_softmax():
    passes(checks.check_masked_softmax(copy_of(s75.masked_softmax)))
    passes(checks.check_masked_softmax(masked_softmax_by_hand))
    rejects(checks.check_masked_softmax(lambda s, m: torch.softmax(s.masked_fill(m, -1e9), -1)), "inverted")
    rejects(checks.check_masked_softmax(lambda s, m: torch.softmax(s.masked_fill(~m, 0.0), -1)), "set to 0")
    rejects(checks.check_masked_softmax(lambda s, m: torch.softmax(s, -1) * m), "without renormalizing")
    rejects(checks.check_masked_softmax(lambda s, m: torch.softmax(s.masked_fill(~m, -20.0), -1)), "instead of exactly 0")
    rejects(checks.check_masked_softmax(lambda s, m: torch.softmax(s.masked_fill(~m, float("-inf")), -1)), "nan")


def additive_with_expand(query, keys, W_q, W_k, v):
    B, Tq, S = query.size(0), query.size(1), keys.size(1)
    q = W_q(query).unsqueeze(2).expand(B, Tq, S, -1)
    k = W_k(keys).unsqueeze(1).expand(B, Tq, S, -1)
    return torch.tanh(q + k) @ v.weight[0]


def test_additive_scores():
    passes(checks.check_additive_scores(copy_of(s75.additive_scores)))
    passes(checks.check_additive_scores(additive_with_expand))

    def no_tanh(q, k, W_q, W_k, v):
        return v(W_q(q)[:, :, None] + W_k(k)[:, None]).squeeze(-1)

    def summed(q, k, W_q, W_k, v):
        return torch.tanh(W_q(q)[:, :, None] + W_k(k)[:, None]).sum(-1)

    def transposed(q, k, W_q, W_k, v):
        return s75.additive_scores(q, k, W_q, W_k, v).transpose(1, 2)

    def weights(q, k, W_q, W_k, v):
        return torch.softmax(s75.additive_scores(q, k, W_q, W_k, v), -1)

    rejects(checks.check_additive_scores(no_tanh), "tanh is missing")
    rejects(checks.check_additive_scores(summed), "summed instead of weighted by v")
    rejects(checks.check_additive_scores(transposed), "keys before queries")
    rejects(checks.check_additive_scores(weights), "returned attention weights")


def test_dot_scores():
    passes(checks.check_dot_scores(copy_of(s75.dot_scores)))
    passes(checks.check_dot_scores(lambda q, k: torch.einsum("btd,bsd->bts", q / math.sqrt(q.shape[-1]), k)))
    rejects(checks.check_dot_scores(lambda q, k: q @ k.transpose(1, 2)), "not scaled")
    rejects(checks.check_dot_scores(lambda q, k: q @ k.transpose(1, 2) / q.size(-1)), "divided by d")
    rejects(checks.check_dot_scores(lambda q, k: k @ q.transpose(1, 2) / math.sqrt(q.size(-1))), "keys before queries")
    rejects(checks.check_dot_scores(lambda q, k: torch.softmax(s75.dot_scores(q, k), -1)), "returned attention weights")


# ------------------------------------------------------------------------------------------------------
# Whatever the learner's code does, a checker reports it and returns
# ------------------------------------------------------------------------------------------------------
def test_not_implemented_is_a_friendly_todo():
    def scaffold(values, val_fraction, test_fraction):
        raise NotImplementedError("split_by_time")

    result = checks.check_split_by_time(scaffold)
    assert result.status == "todo" and not result
    assert "not yet implemented" in result.message.lower() and "scaffold" in result.message
    assert "NOT YET IMPLEMENTED" in repr(result)


def test_an_exception_is_reported_with_the_learners_line():
    class Broken(s72.LSTMCell):
        def forward(self, x, state=None):
            h, c = state
            return h + x, c  # (B, H) + (B, D) with D != H

    result = checks.check_lstm_cell(Broken)
    assert result.status == "error"
    assert "RuntimeError" in result.message and "Broken.forward" in result.message
    assert any("line" in d and "forward" in d for d in result.details), result.details


def test_an_endless_loop_is_stopped(monkeypatch):
    monkeypatch.setattr(_core, "TIME_LIMIT", 0.3)

    def forever(scores, mask):
        while True:
            pass

    previous = signal.getsignal(signal.SIGALRM)
    result = checks.check_masked_softmax(forever)
    rejects(result, "did not finish", status="error")
    assert signal.getsignal(signal.SIGALRM) == previous  # the alarm handler is put back
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_an_endless_loop_that_catches_exceptions_is_stopped_too(monkeypatch):
    monkeypatch.setattr(_core, "TIME_LIMIT", 0.3)

    def stubborn(query, keys):
        while True:
            try:
                pass
            except Exception:
                pass

    rejects(checks.check_dot_scores(stubborn), "did not finish", status="error")


def test_an_endless_loop_that_swallows_the_first_alarm_is_stopped(monkeypatch):
    monkeypatch.setattr(_core, "TIME_LIMIT", 0.2)

    def swallows_once(query, keys):
        try:
            while True:
                pass
        except:  # noqa: E722 (a bare except catches the time limit too: the alarm has to come again)
            pass
        while True:
            pass

    previous = signal.getsignal(signal.SIGALRM)
    rejects(checks.check_dot_scores(swallows_once), "did not finish", status="error")
    assert signal.getsignal(signal.SIGALRM) == previous
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # the repeating timer is cancelled


def test_garbage_is_reported_not_raised():
    rejects(checks.check_naive_forecast(lambda X: "tomorrow"), "should be a tensor")
    rejects(checks.check_make_windows(lambda s, w: None), "expected (X, y)")
    rejects(checks.check_dot_scores(lambda q, k: torch.zeros(3)), "shape")
    rejects(checks.check_bidirectional(lambda f, b, x, lengths: (x, x)), "shape")
    rejects(checks.check_masked_softmax(lambda s, m: torch.full_like(s, float("nan"))), "nan")
    rejects(checks.check_lstm_cell(None), "expected a function or class", status="error")


def test_a_class_with_the_wrong_parameters_is_reported():
    class OwnParameters(nn.Module):
        def __init__(self, input_size, hidden_size):
            super().__init__()
            self.W = nn.Linear(input_size + hidden_size, 4 * hidden_size)

        def forward(self, x, state=None):
            raise AssertionError("never reached")

    rejects(checks.check_lstm_cell(OwnParameters), "no parameter named 'weight_ih'")


def test_checkers_leave_the_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.check_lstm_cell(s72.LSTMCell)
    checks.check_bidirectional(s74.bidirectional)
    assert torch.equal(torch.rand(3), expected)


def test_result_displays_and_ready(capsys):
    good = checks.check_dot_scores(copy_of(s75.dot_scores))
    bad = checks.check_dot_scores(lambda q, k: q @ k.transpose(1, 2))
    assert repr(good).startswith("✔ check_dot_scores: PASSED")
    assert repr(bad).startswith("✘ check_dot_scores: FAILED") and "Hint:" in repr(bad)
    assert "check_dot_scores: FAILED" in bad._repr_html_()
    assert checks.ready(good) and not capsys.readouterr().out
    assert not checks.ready(good, bad)
    assert "Skipped" in capsys.readouterr().out


def solution_code_in(text):
    """The lines of solution code (stripped, inline comments cut off, longer than 25 characters, not comments)
    that appear in ``text``."""
    lines = {line.split("  # ")[0].strip() for module in (s71, s72, s73, s74, s75)
             for line in inspect.getsource(module).splitlines()}
    return [line for line in lines if len(line) > 25 and not line.startswith("#") and line in text]


def test_the_solution_scan_finds_a_line_of_solution_code():
    line = "backward_out = reverse_padded(backward_out, lengths)"
    assert line in inspect.getsource(s74)
    leaky = _core.CheckResult("check_bidirectional", "failed", "The backward half differs.", f"Write: {line}")
    assert solution_code_in(repr(leaky)) == [line]
    assert solution_code_in(repr(checks.check_dot_scores(copy_of(s75.dot_scores)))) == []


def test_messages_never_contain_the_solution_code():
    class Gates(s72.LSTMCell):
        def forward(self, x, state=None):
            return x @ self.weight_ih.T

    bad = [  # failures of every checker family, each from a different kind of mistake
        checks.check_split_by_time(lambda values, v, t: s71.split_by_time(values.flip(0), v, t)),
        checks.check_normalize_splits(lambda train, val, test: (train, val, test, 0.0, 1.0)),
        checks.check_make_windows(lambda series, window: (series[None, :window, None], series[None, window])),
        checks.check_naive_forecast(lambda X: X[:, 0, 0]),
        checks.check_forecaster(ForecasterReset), checks.check_forecaster(ForecasterDetached),
        checks.check_lstm_cell(lstm_variant(order="figo")), checks.check_lstm_cell(Gates),
        checks.check_lstm_loop(loop_shifted), checks.check_lstm_loop(loop_detached),
        checks.check_gru_cell(gru_variant(swap_z=True)), checks.check_gru_cell(gru_variant(b_hn_outside=True)),
        checks.check_reverse_padded(lambda x, lengths: x.flip(1)),
        checks.check_bidirectional(bidirectional_variant(realign=False)),
        checks.check_bidirectional(bidirectional_variant(summary="h_n")),
        checks.check_masked_softmax(lambda s, m: torch.softmax(s, -1)),
        checks.check_additive_scores(lambda q, k, W_q, W_k, v: v(W_q(q)[:, :, None] + W_k(k)[:, None]).squeeze(-1)),
        checks.check_dot_scores(lambda q, k: q @ k.transpose(1, 2)),
    ]
    assert all(r.status == "failed" for r in bad), [r for r in bad if r.status != "failed"]
    for result in bad:
        assert not solution_code_in(repr(result)), f"{result.check} shows solution code: {result!r}"

