"""The checkers of exercise 7.6 (rnnlib.checks.scan): wrong answers are refused with a specific message and hint
(at least three per checker and kind of mistake), rnnlib's own code gives "uses the reference", a loop over time
is refused, and correct answers written differently pass."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnnlib
from _learner import copy_of
from rnnlib.checks.scan import check_log_scan, check_min_gru
from rnnlib.solutions import exercise_7_6 as s76

log_scan = copy_of(s76.log_scan)          # the learner's own, correct code (copied from the revealed solution)
MinGRUOk = copy_of(s76.MinGRU)


def verdict(result, status, *phrases):
    assert result.status == status, repr(result)
    text = f"{result.message} {result.hint} {' '.join(result.details)}".lower()
    for phrase in phrases:
        assert phrase.lower() in text, f"{phrase!r} not in: {result!r}"


def test_the_reference_solution_and_a_copy_of_it():
    verdict(check_log_scan(s76.log_scan), "reference", "rnnlib.solutions.exercise_7_6.log_scan")
    assert check_log_scan(log_scan).passed
    verdict(check_min_gru(s76.MinGRU), "reference", "exercise_7_6")
    assert check_min_gru(MinGRUOk).passed


def test_not_yet_implemented():
    def scaffold(log_a, log_b, h0=None):
        raise NotImplementedError("log_scan")

    class Scaffold(nn.Module):
        def __init__(self, input_size, hidden_size):
            super().__init__()
            self.linear_z, self.linear_h = nn.Linear(input_size, hidden_size), nn.Linear(input_size, hidden_size)

        def forward(self, x, h0=None):
            raise NotImplementedError

    verdict(check_log_scan(scaffold), "todo", "not yet implemented")
    verdict(check_min_gru(Scaffold), "todo", "not yet implemented")


# ------------------------------------------------------------------------------------------------------
# The scan: wrong answers
# ------------------------------------------------------------------------------------------------------
def _closed_form(log_a, log_b, h0, cs=1, lc=1, h0_mode="linear", exclusive=False, inner="lcse", add_back=True):
    a_star = torch.cumsum(log_a, dim=cs)
    if exclusive:
        a_star = a_star - log_a
    x = log_b - a_star
    s = {"lcse": lambda: torch.logcumsumexp(x, dim=lc), "cumsum": lambda: torch.cumsum(x, dim=lc),
         "exp": lambda: torch.log(torch.cumsum(torch.exp(x), dim=lc))}[inner]()
    h = torch.exp(a_star + s if add_back else s)
    if h0 is not None and h0_mode == "linear":
        h = h + torch.exp(a_star) * h0.unsqueeze(1)
    return h


def wrong_axis_last(log_a, log_b, h0=None):
    return _closed_form(log_a, log_b, h0, cs=-1, lc=-1)


def wrong_axis_batch(log_a, log_b, h0=None):
    return _closed_form(log_a, log_b, h0, cs=0, lc=0)


def wrong_axis_lcse_only(log_a, log_b, h0=None):
    return _closed_form(log_a, log_b, h0, cs=1, lc=2)


@pytest.mark.parametrize("fn,phrase", [(wrong_axis_last, "dimension 2"), (wrong_axis_batch, "dimension 0"),
                                       (wrong_axis_lcse_only, "logcumsumexp runs over dimension 2")])
def test_cumsum_on_the_wrong_axis(fn, phrase):
    verdict(check_log_scan(fn), "failed", phrase, "dim=1")


def forgets_h0(log_a, log_b, h0=None):
    return _closed_form(log_a, log_b, h0, h0_mode="none")


def forgets_h0_everywhere(log_a, log_b, h0=None):
    a_star = log_a.cumsum(1)
    return (a_star + (log_b - a_star).logcumsumexp(1)).exp()


def h0_only_at_the_first_step(log_a, log_b, h0=None):
    h = _closed_form(log_a, log_b, None)
    if h0 is not None:
        h = h + torch.cat([(log_a[:, :1].exp() * h0.unsqueeze(1)), torch.zeros_like(h[:, 1:])], dim=1)
    return h


@pytest.mark.parametrize("fn,phrase", [(forgets_h0, "h0 is ignored"), (forgets_h0_everywhere, "h0 is ignored"),
                                       (h0_only_at_the_first_step, "no single typical mistake")])
def test_forgetting_h0(fn, phrase):
    verdict(check_log_scan(fn), "failed", phrase)


def log_of_h0(log_a, log_b, h0=None):  # the paper's form: h0 as the first log value
    if h0 is None:
        return _closed_form(log_a, log_b, None)
    values = torch.cat([torch.log(h0).unsqueeze(1), log_b], dim=1)
    a_star = F.pad(torch.cumsum(log_a, dim=1), (0, 0, 1, 0))
    return torch.exp(a_star + torch.logcumsumexp(values - a_star, dim=1))[:, 1:]


def log_of_h0_via_where(log_a, log_b, h0=None):
    if h0 is None:
        return _closed_form(log_a, log_b, None)
    a_star = torch.cumsum(log_a, dim=1)
    log_h0 = torch.log(h0).unsqueeze(1)
    return torch.exp(a_star + torch.logaddexp(log_h0, torch.logcumsumexp(log_b - a_star, dim=1)))


def log_of_h0_complex_free(log_a, log_b, h0=None):
    a_star = torch.cumsum(log_a, dim=1)
    h = torch.exp(a_star + torch.logcumsumexp(log_b - a_star, dim=1))
    return h if h0 is None else h + torch.exp(a_star + torch.log(h0).unsqueeze(1))


@pytest.mark.parametrize("fn", [log_of_h0, log_of_h0_via_where, log_of_h0_complex_free])
def test_log_of_a_negative_h0(fn):
    verdict(check_log_scan(fn), "failed", "logarithm of h0", "any sign", "linear space")


def exclusive_sum(log_a, log_b, h0=None):
    return _closed_form(log_a, log_b, h0, exclusive=True)


def shifted_states(log_a, log_b, h0=None):
    h = _closed_form(log_a, log_b, h0)
    first = torch.zeros_like(h[:, :1]) if h0 is None else h0.unsqueeze(1)
    return torch.cat([first, h[:, :-1]], dim=1)


def includes_h0(log_a, log_b, h0=None):
    h = _closed_form(log_a, log_b, h0)
    first = torch.zeros_like(h[:, :1]) if h0 is None else h0.unsqueeze(1)
    return torch.cat([first, h], dim=1)


@pytest.mark.parametrize("fn,phrase", [(exclusive_sum, "off by one"), (shifted_states, "shifted by one"),
                                       (includes_h0, "t + 1")])
def test_off_by_one(fn, phrase):
    verdict(check_log_scan(fn), "failed", phrase)


def sum_of_logs(log_a, log_b, h0=None):
    return _closed_form(log_a, log_b, h0, inner="cumsum")


def overflowing_exp(log_a, log_b, h0=None):
    return _closed_form(log_a, log_b, h0, inner="exp")


def naive_linear_closed_form(log_a, log_b, h0=None):
    A = torch.cumprod(log_a.exp(), dim=1)
    h = A * torch.cumsum(log_b.exp() / A, dim=1)
    return h if h0 is None else h + A * h0.unsqueeze(1)


def not_added_back(log_a, log_b, h0=None):
    return _closed_form(log_a, log_b, h0, add_back=False)


def returns_log_h(log_a, log_b, h0=None):
    return torch.log(_closed_form(log_a, log_b, h0))


@pytest.mark.parametrize("fn,phrases", [(sum_of_logs, ("log of a sum",)), (overflowing_exp, ("overflow", "logcumsumexp")),
                                        (naive_linear_closed_form, ("overflow",)),
                                        (not_added_back, ("not added back",)), (returns_log_h, ("log h",))])
def test_other_formula_mistakes(fn, phrases):
    verdict(check_log_scan(fn), "failed", *phrases)


# A loop over time, written three ways: refused by counting operators for two lengths.
def loop_in_linear_space(log_a, log_b, h0=None):
    a, b = log_a.exp(), log_b.exp()
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    states = []
    for t in range(a.size(1)):
        h = a[:, t] * h + b[:, t]
        states.append(h)
    return torch.stack(states, dim=1)


def loop_in_log_space(log_a, log_b, h0=None):
    logs = []
    log_h = torch.full_like(log_b[:, 0], float("-inf"))
    for t in range(log_a.size(1)):
        log_h = torch.logaddexp(log_a[:, t] + log_h, log_b[:, t])
        logs.append(log_h)
    h = torch.stack(logs, dim=1).exp()
    return h if h0 is None else h + torch.cumsum(log_a, 1).exp() * h0.unsqueeze(1)


def loop_through_rnnlib(log_a, log_b, h0=None):
    return rnnlib.scan.linear_recurrence(log_a.exp(), log_b.exp(), h0, dim=1)


@pytest.mark.parametrize("fn", [loop_in_linear_space, loop_in_log_space, loop_through_rnnlib])
def test_a_loop_over_time_is_refused(fn):
    verdict(check_log_scan(fn), "failed", "loop over time", "per step", "cumsum")


def rnnlib_log_scan(log_a, log_b, h0=None):
    return rnnlib.scan.log_scan(log_a, log_b, h0, dim=1)


def rnnlib_tree(log_a, log_b, h0=None):
    return rnnlib.scan.scan_tree(log_a.exp(), log_b.exp(), h0, dim=1)


class Subclassed(nn.Module):
    def __call__(self, log_a, log_b, h0=None):
        return rnnlib.scan.log_scan(log_a, log_b, h0, dim=1, chunk_size=4)


@pytest.mark.parametrize("fn,name", [(rnnlib_log_scan, "rnnlib.scan.log_scan"), (rnnlib_tree, "rnnlib.scan.scan_tree"),
                                     (Subclassed(), "rnnlib.scan.log_scan")])
def test_rnnlib_scans_use_the_reference(fn, name):
    verdict(check_log_scan(fn), "reference", name, "not checked")


def detached(log_a, log_b, h0=None):
    return log_scan(log_a.detach(), log_b, h0)


def through_numpy(log_a, log_b, h0=None):
    h = log_scan(log_a, log_b, h0)
    return torch.from_numpy(h.detach().numpy())


def no_grad_inside(log_a, log_b, h0=None):
    with torch.no_grad():
        a_star = torch.cumsum(log_a, dim=1)
    h = torch.exp(a_star + torch.logcumsumexp(log_b - a_star, dim=1))
    return h if h0 is None else h + torch.exp(a_star) * h0.unsqueeze(1)


@pytest.mark.parametrize("fn,phrase", [(detached, "log_a"), (through_numpy, "no gradient"), (no_grad_inside, "log_a")])
def test_cut_gradients(fn, phrase):
    verdict(check_log_scan(fn), "failed", "gradient", phrase)


def fixed_dtype(log_a, log_b, h0=None):
    return log_scan(log_a.float(), log_b.float(), None if h0 is None else h0.float())


def zeros_float32(log_a, log_b, h0=None):
    start = torch.zeros(log_a.size(0), log_a.size(2)) if h0 is None else h0
    return log_scan(log_a, log_b, start)


@pytest.mark.parametrize("fn,phrase", [(fixed_dtype, "float64"), (zeros_float32, "does not follow the inputs")])
def test_a_fixed_dtype_or_device_is_refused(fn, phrase):
    verdict(check_log_scan(fn), "failed", phrase)


# ------------------------------------------------------------------------------------------------------
# The scan: correct answers written differently
# ------------------------------------------------------------------------------------------------------
def time_first(log_a, log_b, h0=None):
    la, lb = log_a.transpose(0, 1), log_b.transpose(0, 1)            # (T, B, H)
    a_star = la.cumsum(0)
    h = (a_star + (lb - a_star).logcumsumexp(0)).exp()
    if h0 is not None:
        h = h + a_star.exp() * h0
    return h.transpose(0, 1)


def negative_dims(log_a, log_b, h0=None):
    a_star = torch.cumsum(log_a, dim=-2)
    h = torch.exp(a_star + torch.logcumsumexp(log_b - a_star, dim=-2))
    return h if h0 is None else torch.addcmul(h, torch.exp(a_star), h0[:, None, :])


def exclusive_plus_own_step(log_a, log_b, h0=None):
    before = torch.cumsum(log_a, dim=1) - log_a                      # sum over s < t
    a_star = before + log_a
    h = torch.exp(a_star + torch.logcumsumexp(log_b - a_star, dim=1))
    return h if h0 is None else h + torch.exp(a_star) * h0.unsqueeze(1)


def doubling_in_linear_space(log_a, log_b, h0=None):
    A, B = log_a.exp(), log_b.exp()
    d = 1
    while d < A.size(1):
        A_prev = torch.cat([torch.ones_like(A[:, :d]), A[:, :-d]], dim=1)
        B_prev = torch.cat([torch.zeros_like(B[:, :d]), B[:, :-d]], dim=1)
        A, B = A * A_prev, A * B_prev + B
        d *= 2
    return B if h0 is None else B + A * h0.unsqueeze(1)


def chunked_with_a_loop_over_chunks(log_a, log_b, h0=None, C=64):
    h = torch.zeros_like(log_b[:, 0]) if h0 is None else h0
    pieces = []
    for start in range(0, log_a.size(1), C):
        piece = log_scan(log_a[:, start:start + C], log_b[:, start:start + C], h)
        pieces.append(piece)
        h = piece[:, -1]
    return torch.cat(pieces, dim=1)


@pytest.mark.parametrize("fn", [time_first, negative_dims, exclusive_plus_own_step, doubling_in_linear_space,
                                chunked_with_a_loop_over_chunks])
def test_correct_scans_written_differently_pass(fn):
    result = check_log_scan(fn)
    assert result.passed, repr(result)


# ------------------------------------------------------------------------------------------------------
# The layer
# ------------------------------------------------------------------------------------------------------
class LayerBase(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_size = hidden_size
        self.linear_z = nn.Linear(input_size, hidden_size)
        self.linear_h = nn.Linear(input_size, hidden_size)


def g(x):
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x):
    return torch.where(x >= 0, torch.log(x.clamp(min=0) + 0.5), -F.softplus(-x))


class RawCandidate(LayerBase):
    def forward(self, x, h0=None):
        k = self.linear_z(x)
        return log_scan(-F.softplus(k), -F.softplus(-k) + torch.log(self.linear_h(x)), h0)


class TanhCandidate(LayerBase):
    def forward(self, x, h0=None):
        k = self.linear_z(x)
        return log_scan(-F.softplus(k), -F.softplus(-k) + torch.log(torch.tanh(self.linear_h(x))), h0)


class ReluCandidateNoShift(LayerBase):
    def forward(self, x, h0=None):
        k = self.linear_z(x)
        return log_scan(-F.softplus(k), -F.softplus(-k) + torch.log(F.relu(self.linear_h(x))), h0)


@pytest.mark.parametrize("cls", [RawCandidate, TanhCandidate])
def test_log_of_a_negative_candidate(cls):
    verdict(check_min_gru(cls), "failed", "nan", "negative", "log_g")


def test_a_candidate_that_can_be_zero():
    verdict(check_min_gru(ReluCandidateNoShift), "failed")


class NaiveLogGate(LayerBase):
    def forward(self, x, h0=None):
        z = torch.sigmoid(self.linear_z(x))
        return log_scan(torch.log(1 - z), torch.log(z) + log_g(self.linear_h(x)), h0)


class Log1pGate(LayerBase):
    def forward(self, x, h0=None):
        z = torch.sigmoid(self.linear_z(x))
        return log_scan(torch.log1p(-z), torch.log(z) + log_g(self.linear_h(x)), h0)


class ManualSigmoidGate(LayerBase):
    def forward(self, x, h0=None):
        z = 1 / (1 + torch.exp(-self.linear_z(x)))
        return log_scan(torch.log(1 - z), torch.log(z) + log_g(self.linear_h(x)), h0)


@pytest.mark.parametrize("cls", [NaiveLogGate, Log1pGate, ManualSigmoidGate])
def test_log_of_a_saturated_gate(cls):
    verdict(check_min_gru(cls), "failed", "saturate", "softplus")


class SwappedZ(LayerBase):
    def forward(self, x, h0=None):
        k = self.linear_z(x)
        return log_scan(-F.softplus(-k), -F.softplus(k) + log_g(self.linear_h(x)), h0)


class SwappedLayers(LayerBase):
    def forward(self, x, h0=None):
        k = self.linear_h(x)
        return log_scan(-F.softplus(k), -F.softplus(-k) + log_g(self.linear_z(x)), h0)


class H0ThroughG(LayerBase):
    def forward(self, x, h0=None):
        k = self.linear_z(x)
        return log_scan(-F.softplus(k), -F.softplus(-k) + log_g(self.linear_h(x)), None if h0 is None else g(h0))


class IgnoresH0(LayerBase):
    def forward(self, x, h0=None):
        k = self.linear_z(x)
        return log_scan(-F.softplus(k), -F.softplus(-k) + log_g(self.linear_h(x)))


class ScansTheBatch(LayerBase):
    def forward(self, x, h0=None):
        k = self.linear_z(x).transpose(0, 1)
        c = self.linear_h(x).transpose(0, 1)
        return log_scan(-F.softplus(k), -F.softplus(-k) + log_g(c)).transpose(0, 1)


@pytest.mark.parametrize("cls,phrase", [(SwappedZ, "z and 1 - z are swapped"), (SwappedLayers, "linear_z and linear_h"),
                                        (H0ThroughG, "h0 goes through g"), (IgnoresH0, "h0 is ignored"),
                                        (ScansTheBatch, "dimension 0 (the batch)")])
def test_layer_mistakes(cls, phrase):
    verdict(check_min_gru(cls), "failed", phrase)


class LoopLayer(LayerBase):
    def forward(self, x, h0=None):
        z, c = torch.sigmoid(self.linear_z(x)), g(self.linear_h(x))
        h = x.new_zeros(x.size(0), self.hidden_size) if h0 is None else h0
        states = []
        for t in range(x.size(1)):
            h = (1 - z[:, t]) * h + z[:, t] * c[:, t]
            states.append(h)
        return torch.stack(states, dim=1)


class LoopCellByCell(LayerBase):
    def forward(self, x, h0=None):
        h = x.new_zeros(x.size(0), self.hidden_size) if h0 is None else h0
        states = []
        for x_t in x.unbind(1):
            z = torch.sigmoid(self.linear_z(x_t))
            h = torch.lerp(h, g(self.linear_h(x_t)), z)
            states.append(h)
        return torch.stack(states, dim=1)


class LoopViaLearnerScan(LayerBase):
    def forward(self, x, h0=None):
        k = self.linear_z(x)
        return loop_in_linear_space(-F.softplus(k), -F.softplus(-k) + log_g(self.linear_h(x)), h0)


@pytest.mark.parametrize("cls", [LoopLayer, LoopCellByCell, LoopViaLearnerScan])
def test_a_layer_that_loops_over_time_is_refused(cls):
    verdict(check_min_gru(cls), "failed", "loop over time")


class UsesRnnlibLayer(LayerBase):
    def forward(self, x, h0=None):
        layer = rnnlib.MinGRU(x.size(-1), self.hidden_size, batch_first=True).to(x.dtype)
        weights = {"weight_ih_l0": torch.cat([self.linear_z.weight, self.linear_h.weight]),
                   "bias_ih_l0": torch.cat([self.linear_z.bias, self.linear_h.bias])}
        return torch.func.functional_call(layer, weights, (x, None if h0 is None else h0[None]))[0]


class UsesRnnlibScan(LayerBase):
    def forward(self, x, h0=None):
        k = self.linear_z(x)
        return rnnlib.scan.log_scan(-F.softplus(k), -F.softplus(-k) + log_g(self.linear_h(x)), h0, dim=1)


class UsesSolutionScan(LayerBase):
    def forward(self, x, h0=None):
        k = self.linear_z(x)
        return s76.log_scan(-F.softplus(k), -F.softplus(-k) + log_g(self.linear_h(x)), h0)


@pytest.mark.parametrize("cls", [UsesRnnlibLayer, UsesRnnlibScan, UsesSolutionScan])
def test_a_layer_built_on_rnnlib_uses_the_reference(cls):
    verdict(check_min_gru(cls), "reference", "not checked")


class DetachedGate(LayerBase):
    def forward(self, x, h0=None):
        k = self.linear_z(x).detach()
        return log_scan(-F.softplus(k), -F.softplus(-k) + log_g(self.linear_h(x)), h0)


class DetachedState(LayerBase):
    def forward(self, x, h0=None):
        k = self.linear_z(x)
        return log_scan(-F.softplus(k), -F.softplus(-k) + log_g(self.linear_h(x)), None if h0 is None else h0.detach())


class NoGradCandidate(LayerBase):
    def forward(self, x, h0=None):
        k = self.linear_z(x)
        with torch.no_grad():
            c = log_g(self.linear_h(x))
        return log_scan(-F.softplus(k), -F.softplus(-k) + c, h0)


@pytest.mark.parametrize("cls,phrase", [(DetachedGate, "linear_z"), (DetachedState, "h0"), (NoGradCandidate, "linear_h")])
def test_layer_gradients_cut(cls, phrase):
    verdict(check_min_gru(cls), "failed", "gradient", phrase)


class ReturnsTuple(LayerBase):
    def forward(self, x, h0=None):
        h = MinGRUOk.forward(self, x, h0)
        return h, h[:, -1]


def test_a_tuple_is_refused_with_the_expected_return():
    verdict(check_min_gru(ReturnsTuple), "failed", "returns one tensor")


# ------------------------------------------------------------------------------------------------------
# The layer: correct answers written differently
# ------------------------------------------------------------------------------------------------------
class LogSigmoid(LayerBase):
    def forward(self, x, h0=None):
        k = self.linear_z(x)
        return log_scan(F.logsigmoid(-k), F.logsigmoid(k) + log_g(self.linear_h(x)), h0)


class FunctionalLinear(LayerBase):
    def forward(self, x, h0=None):
        k = F.linear(x, self.linear_z.weight, self.linear_z.bias)
        c = torch.addmm(self.linear_h.bias, x.reshape(-1, x.size(-1)), self.linear_h.weight.T).view(*x.shape[:2], -1)
        return log_scan(-F.softplus(k), -F.softplus(-k) + log_g(c), h0)


class DoublingInside(LayerBase):
    def forward(self, x, h0=None):
        k = self.linear_z(x)
        return doubling_in_linear_space(-F.softplus(k), -F.softplus(-k) + log_g(self.linear_h(x)), h0)


class GThenLog(LayerBase):
    def forward(self, x, h0=None):
        k, c = self.linear_z(x), self.linear_h(x)
        log_candidate = torch.where(c >= 0, torch.log(torch.where(c >= 0, c, torch.zeros_like(c)) + 0.5), F.logsigmoid(c))
        return log_scan(-F.softplus(k), -F.softplus(-k) + log_candidate, h0)


@pytest.mark.parametrize("cls", [LogSigmoid, FunctionalLinear, DoublingInside, GThenLog])
def test_correct_layers_written_differently_pass(cls):
    result = check_min_gru(cls)
    assert result.passed, repr(result)


def test_checks_leave_the_random_state_alone():
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    check_log_scan(log_scan)
    check_min_gru(MinGRUOk)
    assert torch.equal(torch.rand(3), before)


def test_messages_never_contain_the_solution_code():
    import inspect

    lines = {line.split("  # ")[0].strip() for line in inspect.getsource(s76).splitlines()}
    lines = [line for line in lines if len(line) > 25 and not line.startswith(("#", '"""'))]
    bad = [check_log_scan(f) for f in (wrong_axis_last, forgets_h0, log_of_h0, exclusive_sum, shifted_states,
                                       sum_of_logs, overflowing_exp, not_added_back, returns_log_h, loop_in_linear_space,
                                       detached)]
    bad += [check_min_gru(c) for c in (RawCandidate, NaiveLogGate, SwappedZ, SwappedLayers, H0ThroughG, IgnoresH0,
                                       ScansTheBatch, LoopLayer, DetachedGate)]
    assert all(r.status == "failed" for r in bad), [r for r in bad if r.status != "failed"]
    for result in bad:
        shown = [line for line in lines if line in repr(result)]
        assert not shown, f"{result.check} shows solution code {shown}: {result!r}"
