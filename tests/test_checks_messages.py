"""What the checkers say: a diagnosis for each typical mistake (the ones added for issue 14), hints that fit
where an error came from, a learner's wrong result never blamed on rnnlib.checks, printed output captured
and summarized, a warning (not a failure) for code far slower than the reference."""
from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

import rnnlib.checks as checks
from _learner import copy_of
from test_checks import solution_code_in
from rnnlib.checks import _core
from rnnlib.solutions import exercise_7_1 as s71
from rnnlib.solutions import exercise_7_2 as s72
from rnnlib.solutions import exercise_7_3 as s73
from rnnlib.solutions import exercise_7_4 as s74
from rnnlib.solutions import exercise_7_5 as s75

Forecaster, LSTMCell, GRUCell = copy_of(s71.Forecaster), copy_of(s72.LSTMCell), copy_of(s73.GRUCell)
bidirectional, dot, masked_softmax = copy_of(s74.bidirectional), copy_of(s75.dot_scores), copy_of(s75.masked_softmax)


def says(result, *phrases, status="failed"):
    assert result.status == status, repr(result)
    assert not solution_code_in(repr(result)), f"{result.check} shows solution code: {result!r}"
    text = f"{result.message} {result.hint}".lower()
    for phrase in phrases:
        assert phrase.lower() in text, f"{phrase!r} not in: {result!r}"


# ------------------------------------------------------------------------------------------------------
# 7.1: the time loop off by one, state kept across calls, validation and test swapped
# ------------------------------------------------------------------------------------------------------
class StopsEarly(Forecaster):
    def forward(self, x):
        h = x.new_zeros(x.size(0), self.cell.hidden_size)
        for t in range(x.size(1) - 1):
            h = self.cell(x[:, t], h)
        return self.head(h).squeeze(-1)


class StartsLate(Forecaster):
    def forward(self, x):
        h = x.new_zeros(x.size(0), self.cell.hidden_size)
        for t in range(1, x.size(1)):
            h = self.cell(x[:, t], h)
        return self.head(h).squeeze(-1)


class KeepsState(Forecaster):
    def forward(self, x):
        h = getattr(self, "h", None)
        if h is None or h.shape[0] != x.size(0):
            h = x.new_zeros(x.size(0), self.cell.hidden_size)
        for t in range(x.size(1)):
            h = self.cell(x[:, t], h)
        self.h = h.detach()
        return self.head(h).squeeze(-1)


def test_forecaster_time_loop_off_by_one_and_state_kept_across_calls():
    says(checks.check_forecaster(StopsEarly), "stops one step early", "range(x.size(1))")
    says(checks.check_forecaster(StartsLate), "skips the first day", "starting at t = 0")
    result = checks.check_forecaster(KeepsState)
    says(result, "keeps its hidden state between calls", "local variable")
    assert "backpropagation" not in result.message.lower()


def test_split_validation_and_test_swapped():
    def swapped(values, v, t):
        train, val, test = s71.split_by_time(values, v, t)
        return train, test, val

    def sizes_swapped(values, v, t):
        return copy_of(s71.split_by_time)(values, t, v)

    result = checks.check_split_by_time(swapped)
    says(result, "validation and test are swapped", "most recent")
    assert "shuffled" not in result.message
    says(checks.check_split_by_time(sizes_swapped), "sizes of validation and test are swapped")


# ------------------------------------------------------------------------------------------------------
# 7.2: forget bias +1, interleaved gates
# ------------------------------------------------------------------------------------------------------
class ForgetBiasPlusOne(LSTMCell):
    def forward(self, x, state=None):
        h, c = state if state is not None else (x.new_zeros(len(x), self.hidden_size),) * 2
        i, f, g, o = (x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh).chunk(4, -1)
        c = torch.sigmoid(f + 1.0) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class Interleaved(LSTMCell):
    def forward(self, x, state=None):
        h, c = state if state is not None else (x.new_zeros(len(x), self.hidden_size),) * 2
        gates = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh
        i, f, g, o = gates.view(len(x), self.hidden_size, 4).unbind(-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


def test_lstm_forget_bias_and_interleaved_gates():
    says(checks.check_lstm_cell(ForgetBiasPlusOne), "extra +1", "initialize b_f")
    says(checks.check_lstm_cell(Interleaved), "interleaved columns", "four contiguous blocks", "chunk(4, dim=-1)")


# ------------------------------------------------------------------------------------------------------
# 7.3: reset gate on the sum, interleaved gates; the two versions of Cho et al. named
# ------------------------------------------------------------------------------------------------------
class ResetOnSum(GRUCell):
    def forward(self, x, h=None):
        h = x.new_zeros(len(x), self.hidden_size) if h is None else h
        xr, xz, xn = (x @ self.weight_ih.T + self.bias_ih).chunk(3, -1)
        hr, hz, hn = (h @ self.weight_hh.T + self.bias_hh).chunk(3, -1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        return (1 - z) * torch.tanh(r * (xn + hn)) + z * h


class GRUInterleaved(GRUCell):
    def forward(self, x, h=None):
        h = x.new_zeros(len(x), self.hidden_size) if h is None else h
        xr, xz, xn = (x @ self.weight_ih.T + self.bias_ih).view(len(x), -1, 3).unbind(-1)
        hr, hz, hn = (h @ self.weight_hh.T + self.bias_hh).view(len(x), -1, 3).unbind(-1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        return (1 - z) * torch.tanh(xn + r * hn) + z * h


class ResetBefore(GRUCell):
    def forward(self, x, h=None):
        h = x.new_zeros(len(x), self.hidden_size) if h is None else h
        W_hr, W_hz, W_hn = self.weight_hh.chunk(3)
        b_hr, b_hz, b_hn = self.bias_hh.chunk(3)
        xr, xz, xn = (x @ self.weight_ih.T + self.bias_ih).chunk(3, -1)
        r, z = torch.sigmoid(xr + h @ W_hr.T + b_hr), torch.sigmoid(xz + h @ W_hz.T + b_hz)
        return (1 - z) * torch.tanh(xn + (r * h) @ W_hn.T + b_hn) + z * h


def test_gru_reset_gate_on_the_sum_interleaved_and_the_paper_versions():
    says(checks.check_gru_cell(ResetOnSum), "sum of the input and hidden parts", "add the input part")
    says(checks.check_gru_cell(GRUInterleaved), "interleaved columns", "chunk(3, dim=-1)")
    result = checks.check_gru_cell(ResetBefore)
    says(result, "before the matrix product", "1406.1078v3", "first version", "cudnn")
    assert "original paper" not in result.message


# ------------------------------------------------------------------------------------------------------
# 7.4: the summary from both final states
# ------------------------------------------------------------------------------------------------------
def test_bidirectional_summary_from_both_final_states():
    def both_final(forward_rnn, backward_rnn, x, lengths):
        outputs, _ = bidirectional(forward_rnn, backward_rnn, x, lengths)
        _, f_n = forward_rnn(x)
        _, b_n = backward_rnn(copy_of(s74.reverse_padded)(x, lengths))
        return outputs, torch.cat([f_n[0], b_n[0]], -1)

    says(checks.check_bidirectional(both_final), "final states", "h_n of forward_rnn; h_n of backward_rnn",
         "lengths[b] - 1", "position 0")


# ------------------------------------------------------------------------------------------------------
# 7.5: a fully masked row shows its weights (not "a tensor of shape")
# ------------------------------------------------------------------------------------------------------
def test_fully_masked_row_message_shows_the_weights():
    def uniform(scores, mask):
        return torch.softmax(scores.masked_fill(~mask, -1e9), -1)

    result = checks.check_masked_softmax(uniform)
    says(result, "gets weights [0.25, 0.25, 0.25, 0.25]", "convention is all zeros")
    assert "a tensor of shape" not in result.message


# ------------------------------------------------------------------------------------------------------
# Hints that fit where the error came from; results never blamed on the checker
# ------------------------------------------------------------------------------------------------------
def test_the_signature_hint_only_for_a_call_that_does_not_fit():
    def one_argument(query):
        return query

    def type_error_inside(query, keys):
        return torch.cat(query, keys)  # TypeError raised inside torch, from the learner's line

    class NoState(LSTMCell):
        def forward(self, x):
            return super().forward(x)

    says(checks.check_dot_scores(one_argument), "TypeError", "check the signature", status="error")
    says(checks.check_lstm_cell(NoState), "TypeError", "check the signature", status="error")
    inside = checks.check_dot_scores(type_error_inside)
    says(inside, "TypeError", status="error")
    assert "signature" not in inside.hint and any("line" in d for d in inside.details), repr(inside)


@pytest.mark.parametrize("value", [torch.tensor(0.5), 0.5, None, "weights", [torch.ones(3)]],
                         ids=["0-d tensor", "float", "None", "str", "list"])
def test_a_result_that_is_not_a_tensor_of_the_right_shape_is_the_learners_error(value):
    for check in (checks.check_masked_softmax, checks.check_dot_scores, checks.check_reverse_padded,
                  checks.check_naive_forecast, checks.check_lstm_loop, checks.check_bidirectional):
        result = check(lambda *args, value=value: value)
        assert result.status == "failed" and "bug in rnnlib" not in result.message, repr(result)
    forecast = checks.check_forecaster(type("Scalar", (Forecaster,), {"forward": lambda self, x, value=value: value}))
    assert forecast.status == "failed" and "bug in rnnlib" not in forecast.message, repr(forecast)
    if isinstance(value, torch.Tensor):
        assert "0-d tensor (a single number)" in forecast.message, repr(forecast)


# ------------------------------------------------------------------------------------------------------
# Printed output and speed
# ------------------------------------------------------------------------------------------------------
def test_printed_output_is_captured_and_summarized(capsys):
    def chatty(query, keys):
        for k in range(4):
            print(f"step {k}: {tuple(query.shape)}")
        return dot(query, keys)

    result = checks.check_dot_scores(chatty)
    assert result.status == "passed", repr(result)
    assert not capsys.readouterr().out  # nothing reached the notebook while checking
    note = [n for n in result.notes if "printed" in n]
    assert note and "printed 16 lines" in note[0] and "first 3" in note[0], result.notes  # 4 calls of 4 lines
    assert result.details == ["step 0: (2, 3, 4)", "step 1: (2, 3, 4)", "step 2: (2, 3, 4)"]
    assert "Your code printed 16 lines" in repr(result) and "step 0" in result._repr_html_()


def test_code_far_slower_than_the_reference_gets_a_warning_not_a_failure():
    def slow(query, keys):
        time.sleep(0.2)  # a reference call takes well under 4 ms, even on a loaded machine
        return dot(query, keys)

    result = checks.check_dot_scores(slow)
    assert result.status == "passed", repr(result)
    assert any(n.startswith("⚠") and "as long as the reference" in n for n in result.notes), result.notes


def test_the_speed_ratio_is_measured_with_the_injected_clock(monkeypatch):
    ticks = iter(range(0, 10**6, 1))
    calls = []

    def fake_clock():  # the learner's code is timed first: make each of its runs take 100 ticks, the reference's 1
        calls.append(1)
        tick = next(ticks)
        return tick * (100 if len(calls) <= 6 else 1)

    monkeypatch.setattr(_core, "TIMER", fake_clock)
    result = checks.check_dot_scores(dot)
    assert any("100x as long" in n for n in result.notes), result.notes
    monkeypatch.setattr(_core, "TIMER", time.perf_counter)
    assert not checks.check_dot_scores(dot).notes


def test_ready_accepts_the_reference_and_refuses_failures(capsys):
    reference = checks.check_dot_scores(s75.dot_scores)
    assert reference.status == "reference" and checks.ready(reference) and not capsys.readouterr().out
    failed = checks.check_dot_scores(lambda q, k: q @ k.mT)
    assert not checks.ready(reference, failed) and "check_dot_scores" in capsys.readouterr().out
    assert "↺ check_dot_scores: USES THE REFERENCE" in repr(reference)
    assert "USES THE REFERENCE" in reference._repr_html_()
