r"""Checkers of exercise 7.6: the log-space scan and a minGRU layer, written by the learner.

The references are :func:`rnnlib.scan.linear_recurrence` (the loop, in float64) and
:class:`rnnlib.minrnn.MinGRU`. The learner's functions::

    log_scan(log_a, log_b, h0=None) -> h        log_a, log_b (B, T, H), time on dim 1; h0 (B, H) or None
        a*_t = sum_{s<=t} log a_s,   h_t = exp(a*_t + logcumsumexp_{s<=t}(log b_s - a*_s)) + exp(a*_t) h0

    MinGRU(input_size, hidden_size) with linear_z, linear_h (nn.Linear); forward(x (B, T, D), h0=None) -> h (B, T, H)
        h_t = (1 - z_t) h_{t-1} + z_t g(linear_h(x_t)),   z_t = sigmoid(linear_z(x_t))

Both are compared in values and gradients on random inputs of several shapes; in the float64 pass also on a
long sequence (2,000 steps) with gates near 0 and 1, where a closed form in linear space overflows and a
logarithm of a gate computed as ``log(1 - sigmoid(k))`` rounds to ``log 0``.

The scan is asked for, so a Python loop over time fails the check: the checker counts the PyTorch
operators one call dispatches for two sequence lengths; a scan's count grows by a few operators when T
grows eightfold (``cumsum`` and ``logcumsumexp`` are one operator each, whatever T), a loop's by two or more
per added step. Calling rnnlib's own scan or layer gives the status "uses the reference" (``_core``).

Typical mistakes recognised by recomputing the result under each: the cumulative sums over the wrong
dimension (the batch or the units instead of time), ``h0`` forgotten, ``h0`` put through a logarithm
(NaN for a negative ``h0``) or through ``g``, the sums shifted by one step (``a*`` without the current
step, or the states shifted by one), ``cumsum`` where ``logcumsumexp`` belongs or ``exp`` that overflows,
``a*`` not added back, log h returned instead of h; in the layer: the log of the raw candidate (NaN for a
negative one), ``log(1 - sigmoid(k))`` instead of ``-softplus(k)``, the gate's convention swapped, the
gate and candidate layers swapped.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from ..minrnn import MinGRU, g, log_g
from ..scan import linear_recurrence
from ._core import (Mistake, build, checker, close, compare_gradients, describe, diagnose, expect_shape, fail,
                    float64_pass, run, set_parameters)

__all__ = ["check_log_scan", "check_min_gru"]

CASES = [(3, 7, 4), (2, 1, 5), (4, 33, 3)]  # (batch, T, hidden): all different, so a wrong axis shows
LONG = (2, 2000, 3)                          # float64 pass only: a long sequence with saturated gates
LOOP_LENGTHS = (32, 256)
SCAN_HINT = ("Compute all steps at once: a* = torch.cumsum(log_a, dim=1), then torch.logcumsumexp(log_b - a*, "
             "dim=1); no Python loop over t.")


# ------------------------------------------------------------------------------------------------------
# Counting operators, to tell a scan from a loop
# ------------------------------------------------------------------------------------------------------
class _CountOperators(TorchDispatchMode):
    """Count the ATen operators dispatched inside the block (the learner's code runs inside it)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:  # as in _watch: no import of torch._dynamo on the first call
        return False

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def _refuse_a_loop(fn: Callable, make_args: Callable[[int], tuple], what: str) -> None:
    """Fail when ``fn(*make_args(T))`` dispatches operators in proportion to T (a Python loop over time)."""
    counts = []
    for T in LOOP_LENGTHS:
        args = make_args(T)
        with torch.no_grad(), _CountOperators() as counter:
            run(fn, *args, what=what)
        counts.append(counter.calls)
    extra = counts[1] - counts[0]
    steps = LOOP_LENGTHS[1] - LOOP_LENGTHS[0]
    if extra > steps / 2:
        raise fail(f"{what} runs a loop over time: it dispatches {counts[0]} PyTorch operators for T = {LOOP_LENGTHS[0]} "
                   f"steps and {counts[1]} for T = {LOOP_LENGTHS[1]}, about {extra / steps:.1f} more per step. A scan's "
                   "count hardly changes with T.", SCAN_HINT)


# ------------------------------------------------------------------------------------------------------
# The log-space scan
# ------------------------------------------------------------------------------------------------------
def _reference(log_a: Tensor, log_b: Tensor, h0: Optional[Tensor]) -> Tensor:
    """The loop in float64, cast back: what every correct answer must give."""
    h = linear_recurrence(log_a.double().exp(), log_b.double().exp(), None if h0 is None else h0.double(), dim=1)
    return h.to(log_a.dtype)


def _variant(log_a, log_b, h0, cs_dim=1, lcse_dim=1, h0_mode="linear", shift=None, inner="lcse", add_back=True,
             log_out=False):
    """The closed form with one typical mistake (float64). Knobs: the dimensions of cumsum and logcumsumexp;
    ``h0_mode`` "linear" (right), "none" (forgotten), "g" (put through g); ``shift`` "exclusive" (a* without
    a_t), "states" (h_0, h_1, ..., h_{T-1}); ``inner`` "lcse" (right), "cumsum_log" (log of a sum as a sum of
    logs), "exp" (log of cumsum of exp: overflows); ``add_back`` False: a* not added back; ``log_out``: log h."""
    la, lb = log_a.double(), log_b.double()
    a_star = torch.cumsum(la, dim=cs_dim)
    if shift == "exclusive":
        a_star = a_star - la
    x = lb - a_star
    if inner == "lcse":
        s = torch.logcumsumexp(x, dim=lcse_dim)
    elif inner == "cumsum_log":
        s = torch.cumsum(x, dim=lcse_dim)
    else:
        s = torch.log(torch.cumsum(torch.exp(x), dim=lcse_dim))
    log_h = (a_star + s) if add_back else s
    h = torch.exp(log_h)
    if h0 is not None and h0_mode != "none":
        start = h0.double() if h0_mode == "linear" else g(h0.double())
        h = h + torch.exp(a_star) * start.unsqueeze(1)
    if shift == "states":
        first = torch.zeros_like(h[:, :1]) if h0 is None else h0.double().unsqueeze(1)
        h = torch.cat([first, h[:, :-1]], dim=1)
    if log_out:
        h = torch.log(h)
    return h.to(log_a.dtype)


def _same(out: Any, expected: Any) -> bool:
    """Close where both are finite, and non-finite at the same places (overflows and NaNs match too)."""
    if not (isinstance(out, Tensor) and isinstance(expected, Tensor)) or out.shape != expected.shape:
        return False
    a, b = out.detach().double(), expected.detach().double()
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    if not torch.equal(fa, fb):
        return False
    return close(a[fa], b[fb], rtol=1e-3, atol=1e-5)


def _scan_mistakes(log_a, log_b, h0):
    for cs, lc, where in ((0, 0, "dimension 0 (the batch)"), (2, 2, "dimension 2 (the units, the last one)")):
        yield Mistake(f"The cumulative sums run over {where}; time is dimension 1 of (batch, T, hidden).",
                      "Use dim=1 in both torch.cumsum and torch.logcumsumexp.",
                      lambda cs=cs, lc=lc: _variant(log_a, log_b, h0, cs, lc))
    for cs, lc in ((1, 0), (1, 2), (0, 1), (2, 1)):
        wrong = "torch.cumsum" if cs != 1 else "torch.logcumsumexp"
        yield Mistake(f"{wrong} runs over dimension {cs if cs != 1 else lc}; time is dimension 1 of (batch, T, hidden).",
                      "Both cumulative sums run over time: dim=1.",
                      lambda cs=cs, lc=lc: _variant(log_a, log_b, h0, cs, lc))
    if h0 is not None:
        yield Mistake("h0 is ignored: your result is what the recurrence gives from h0 = 0.",
                      "Add the initial state's share, exp(a*_t) * h0 (h0 of shape (B, H) becomes (B, 1, H) with "
                      "h0.unsqueeze(1)).", lambda: _variant(log_a, log_b, h0, h0_mode="none"))
        yield Mistake("h0 goes through g before it enters the recurrence, as the paper's code does with log_g(h_0); here "
                      "h0 is the state itself (for example the last state of the previous chunk of text), so it "
                      "enters as it is.", "Add exp(a*_t) * h0 with h0 as given, in linear space.",
                      lambda: _variant(log_a, log_b, h0, h0_mode="g"))
    yield Mistake("Your sums are off by one step: a*_t leaves out log a_t (an exclusive cumulative sum), so every "
                  "state misses its own step's decay.", "a*_t = sum of log a_s for s = 1..t, t included: "
                  "torch.cumsum(log_a, dim=1) as it is.", lambda: _variant(log_a, log_b, h0, shift="exclusive"))
    yield Mistake("Your states are shifted by one step: you return h_0, h_1, ..., h_{T-1} instead of h_1, ..., h_T.",
                  "The output at position t is the state after step t: drop the initial state, keep the last.",
                  lambda: _variant(log_a, log_b, h0, shift="states"))
    yield Mistake("You sum logarithms where the formula takes the log of a sum: log sum_s exp(x_s) is not sum_s x_s.",
                  "Use torch.logcumsumexp(log_b - a_star, dim=1), the log of the running sum of exponentials.",
                  lambda: _variant(log_a, log_b, h0, inner="cumsum_log"))
    yield Mistake("a*_t is not added back: exp(logcumsumexp(log b - a*)) is B_t / A_t, not B_t.",
                  "log B_t = a*_t + logcumsumexp(log_b - a*, dim=1): add a_star before the exp.",
                  lambda: _variant(log_a, log_b, h0, add_back=False))
    yield Mistake("You return log h; the function returns the states h themselves.",
                  "Apply torch.exp to log B_t (and add exp(a*_t) * h0 after that, in linear space).",
                  lambda: _variant(log_a, log_b, h0, log_out=True))
    yield Mistake("Your result overflows: exp(log_b - a*) is computed before summing, and -a* grows with every step "
                  "(exp of more than 88 is infinite in float32, of more than 709 in float64).",
                  "torch.logcumsumexp(x, dim=1) computes log(cumsum(exp(x))) without ever forming exp(x).",
                  lambda: _variant(log_a, log_b, h0, inner="exp"))


def _scan_inputs(B, T, H, gen, extreme=False):
    """log a = log(1 - sigmoid(k)), log b = log(sigmoid(k) c): as a minGRU makes them; h0 of both signs."""
    k = torch.randn(B, T, H, generator=gen) * 2
    if extreme:  # a third of the gates near 0, a third near 1
        pick = torch.randint(0, 3, (B, T, H), generator=gen)
        k = torch.where(pick == 0, torch.full_like(k, 30.0), torch.where(pick == 1, torch.full_like(k, -30.0), k))
    c = torch.rand(B, T, H, generator=gen) + 0.2
    log_a, log_b = -F.softplus(k), -F.softplus(-k) + torch.log(c)
    h0 = torch.randn(B, H, generator=gen)
    h0[0] = -h0[0].abs() - 0.1  # the first row negative: a log of h0 shows
    return log_a, log_b, h0


def _check_scan_output(log_scan, out, ref, log_a, log_b, h0, B, T, H, name):
    if isinstance(out, (tuple, list)):
        raise fail(f"{name} returned {describe(out)}; it returns one tensor, the states h of shape {(B, T, H)}.",
                   "Return h only.")
    if isinstance(out, Tensor) and tuple(out.shape) == (B, T + 1, H):
        raise fail(f"{name} returns T + 1 = {T + 1} states: h_0 is included.",
                   "Return the states after each step, h_1 ... h_T: shape (B, T, H).")
    if isinstance(out, Tensor) and out.shape == ref.shape and not torch.isfinite(out).all():
        if h0 is not None and (h0 < 0).any():
            flipped = h0.abs()
            again = run(log_scan, log_a, log_b, flipped, what=f"{name}(log_a, log_b, h0)")[0]
            if _same(again, _reference(log_a, log_b, flipped)):
                raise fail(f"{name} gives NaN when h0 has negative entries (and the right states when h0 >= 0): it takes "
                           "the logarithm of h0. The initial state can have any sign.",
                           "Keep h0 in linear space: h_t = exp(a*_t + logcumsumexp(...)) + exp(a*_t) * h0.")
        found = diagnose(out, _scan_mistakes(log_a, log_b, h0), match=_same)
        if found is not None:
            raise fail(found.message, found.hint)
    expect_shape(out, (B, T, H), f"The states h you return (log_a of shape {(B, T, H)})",
                 "h has the shape of log_a: (batch, T, hidden), time on dimension 1.")
    if not close(out, ref):
        found = diagnose(out, _scan_mistakes(log_a, log_b, h0), match=_same)
        if found is not None:
            raise fail(found.message, found.hint)
        raise fail(f"h differs from the recurrence h_t = a_t h_(t-1) + b_t (largest difference "
                   f"{float((out.detach().double() - ref.double()).abs().max()):.3g}, shape {(B, T, H)}) and no single "
                   "typical mistake explains it.",
                   "Check a* = cumsum(log_a, dim=1) first, then log B = a* + logcumsumexp(log_b - a*, dim=1), on a tiny "
                   "input you can follow by hand (T = 2).")


@checker
def check_log_scan(log_scan) -> str:
    """Check ``log_scan(log_a, log_b, h0=None) -> h`` for (B, T, H) logs of positive coefficients, time on dim 1.

    Compared with the loop h_t = a_t h_(t-1) + b_t (rnnlib.scan.linear_recurrence, float64) on several shapes,
    with h0 of both signs and without; on 2,000 steps with gates near 0 and 1 (float64 pass); in gradients;
    and it must not loop over time.
    """
    gen = torch.Generator().manual_seed(76)
    name = getattr(log_scan, "__name__", "your log_scan")
    cases = [(c, False) for c in CASES] + ([(LONG, True)] if float64_pass() else [])
    for (B, T, H), extreme in cases:
        log_a, log_b, h0 = _scan_inputs(B, T, H, gen, extreme)
        for start in (None, h0):
            what = f"{name}(log_a, log_b, {'h0' if start is not None else 'None'})"
            out = run(log_scan, log_a, log_b, start, what=what, reference=lambda: _reference(log_a, log_b, start))[0]
            _check_scan_output(log_scan, out, _reference(log_a, log_b, start), log_a, log_b, start, B, T, H, name)

    _refuse_a_loop(log_scan, lambda T: _scan_inputs(2, T, 3, torch.Generator().manual_seed(T)), f"{name}(log_a, log_b, h0)")

    B, T, H = 3, 9, 4
    leaves = [t.requires_grad_() for t in _scan_inputs(B, T, H, gen)]
    out, watch = run(log_scan, *leaves, what=f"{name}(log_a, log_b, h0)")
    ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]
    ref = linear_recurrence(ref_leaves[0].exp(), ref_leaves[1].exp(), ref_leaves[2], dim=1)
    compare_gradients(out, leaves, ref, ref_leaves, ["log_a", "log_b", "h0"], watch, "h")
    return (f"{name} equals the recurrence h_t = a_t h_(t-1) + b_t on {len(CASES)} shapes (with h0 of both signs and "
            "without), on 2,000 steps with gates near 0 and 1, and in its gradients, without a loop over time.")


# ------------------------------------------------------------------------------------------------------
# The minGRU layer
# ------------------------------------------------------------------------------------------------------
LAYER_CASES = [(3, 6, 4, 5), (2, 1, 3, 2), (4, 17, 2, 3)]  # (batch, T, input_size, hidden_size)


def _layer_reference(p: dict, x: Tensor, h0: Optional[Tensor], D: int, H: int, swap_z=False, swap_layers=False,
                     h0_through_g=False, scan_dim=1) -> Tensor:
    """rnnlib's MinGRU (loop evaluation, float64) with the learner's weights, optionally with one mistake."""
    z_w, z_b, h_w, h_b = (p["linear_z.weight"], p["linear_z.bias"], p["linear_h.weight"], p["linear_h.bias"])
    if swap_layers:
        z_w, z_b, h_w, h_b = h_w, h_b, z_w, z_b
    if swap_z:
        z_w, z_b = -z_w, -z_b              # 1 - sigmoid(k) = sigmoid(-k): z and 1 - z swapped
    layer = MinGRU(D, H, batch_first=True, scan="loop", dtype=torch.float64)
    with torch.no_grad():
        layer.weight_ih_l0.copy_(torch.cat([z_w, h_w]).double())
        layer.bias_ih_l0.copy_(torch.cat([z_b, h_b]).double())
    xs = x.double() if scan_dim == 1 else x.double().transpose(0, 1)
    start = None if h0 is None else (g(h0.double()) if h0_through_g else h0.double())
    if scan_dim != 1:
        if start is not None:
            return None                      # scanning over the batch: only defined here without h0
        return layer(xs)[0].detach().transpose(0, 1).to(x.dtype)
    return layer(xs, None if start is None else start[None])[0].detach().to(x.dtype)


def _layer_mistakes(p, x, h0, D, H):
    yield Mistake("z and 1 - z are swapped: your state keeps the share z of the old state and takes 1 - z of the "
                  "candidate.", "In minGRU, h_t = (1 - z_t) h_(t-1) + z_t g(candidate): log a = -softplus(k) is "
                  "log(1 - z), log z = -softplus(-k) goes with the candidate.",
                  lambda: _layer_reference(p, x, h0, D, H, swap_z=True))
    yield Mistake("linear_z and linear_h are swapped: the gate is computed by linear_h and the candidate by linear_z.",
                  "k = self.linear_z(x) for the gate, self.linear_h(x) for the candidate.",
                  lambda: _layer_reference(p, x, h0, D, H, swap_layers=True))
    if h0 is not None:
        yield Mistake("h0 goes through g, as in the paper's code (log_g(h_0)); here h0 is the state itself, e.g. the "
                      "last state of the previous chunk of a text, so it enters as it is (a carried state would "
                      "otherwise change every time it is passed on).", "Pass h0 to your log_scan unchanged.",
                      lambda: _layer_reference(p, x, h0, D, H, h0_through_g=True))
        yield Mistake("h0 is ignored: your result is the layer's output from h0 = 0.", "Pass h0 to log_scan.",
                      lambda: _layer_reference(p, x, None, D, H))
    else:
        yield Mistake("The recurrence runs over dimension 0 (the batch) instead of dimension 1 (time) of x (B, T, D).",
                      "x is batch first: time is dimension 1, as in your log_scan.",
                      lambda: _layer_reference(p, x, None, D, H, scan_dim=0))


def _layer_shapes(D, H):
    return {"linear_z.weight": (H, D), "linear_z.bias": (H,), "linear_h.weight": (H, D), "linear_h.bias": (H,)}


@checker
def check_min_gru(layer_class) -> str:
    """Check a minGRU layer class ``layer_class(input_size, hidden_size)`` with ``linear_z``, ``linear_h``
    (``nn.Linear``) and ``forward(x (B, T, D), h0=None) -> h (B, T, H)``.

    Compared with rnnlib.minrnn.MinGRU on random weights and inputs, h0 of both signs and None; in the float64
    pass also with weights large enough to saturate the gates, on 1,000 steps; in gradients (weights, x, h0);
    and the recurrence must not be a loop over time.
    """
    gen = torch.Generator().manual_seed(77)
    name = getattr(layer_class, "__name__", "your layer")
    cases = [(c, 0.8) for c in LAYER_CASES] + ([((2, 1000, 3, 4), 6.0)] if float64_pass() else [])
    for (B, T, D, H), scale in cases:
        layer = build(layer_class, D, H, what=f"{name}({D}, {H})")
        p = set_parameters(layer, _layer_shapes(D, H), gen, name, scale=scale)
        x = torch.randn(B, T, D, generator=gen) * (3.0 if scale > 1 else 1.0)
        h0 = torch.randn(B, H, generator=gen)
        for start in (None, h0):
            what = f"{name}.forward(x, {'h0' if start is not None else 'None'})"
            ref = _layer_reference(p, x, start, D, H)
            out = run(layer, x, start, what=what, reference=lambda: _layer_reference(p, x, start, D, H))[0]
            if isinstance(out, (tuple, list)):
                raise fail(f"forward returned {describe(out)}; this layer returns one tensor, all the states h of shape "
                           f"{(B, T, H)}.", "Return the result of your log_scan (the last state is h[:, -1]).")
            if isinstance(out, Tensor) and out.shape == ref.shape and not torch.isfinite(out).all():
                if scale > 1:
                    raise fail(f"{what} gives NaN or infinite values when the gates saturate (weights large enough "
                               "that z is within float rounding of 0 or 1): log(1 - torch.sigmoid(k)) is then log(0).",
                               "Compute log(1 - z) as -F.softplus(k) and log(z) as -F.softplus(-k): they never "
                               "round to log(0).")
                raise fail(f"{what} gives NaN: the candidate linear_h(x) is negative for some inputs, and the logarithm "
                           "of a negative number is NaN.",
                           "Take log_g(self.linear_h(x)), the logarithm of g(candidate), which is always positive.")
            expect_shape(out, (B, T, H), f"The states you return (x of shape {(B, T, D)}, hidden_size={H})",
                         "Return all states, (batch, T, hidden_size), as your log_scan gives them.")
            if not close(out, ref):
                found = diagnose(out, _layer_mistakes(p, x, start, D, H))
                if found is not None:
                    raise fail(found.message, found.hint)
                raise fail(f"{what} differs from the minGRU equations (largest difference "
                           f"{float((out.detach().double() - ref.double()).abs().max()):.3g}) and no single typical "
                           "mistake explains it.",
                           "log a = -softplus(k), log b = -softplus(-k) + log_g(linear_h(x)) with k = linear_z(x); "
                           "then h = log_scan(log a, log b, h0).")

    layer = build(layer_class, 3, 4, what=f"{name}(3, 4)")
    set_parameters(layer, _layer_shapes(3, 4), gen, name)
    _refuse_a_loop(layer, lambda T: (torch.randn(2, T, 3, generator=torch.Generator().manual_seed(T)), None),
                   f"{name}.forward(x, None)")

    B, T, D, H = 3, 8, 4, 5
    layer = build(layer_class, D, H, what=f"{name}({D}, {H})")
    p = set_parameters(layer, _layer_shapes(D, H), gen, name)
    x, h0 = torch.randn(B, T, D, generator=gen).requires_grad_(), torch.randn(B, H, generator=gen).requires_grad_()
    weights = [dict(layer.named_parameters())[k] for k in _layer_shapes(D, H)]
    out, watch = run(layer, x, h0, what=f"{name}.forward(x, h0)")
    ref_layer = MinGRU(D, H, batch_first=True, scan="loop", dtype=x.dtype)
    ref_leaves = [t.detach().clone().requires_grad_() for t in weights + [x, h0]]
    ref_w = torch.cat([ref_leaves[0], ref_leaves[2]])
    ref_b = torch.cat([ref_leaves[1], ref_leaves[3]])
    ref = torch.func.functional_call(ref_layer, {"weight_ih_l0": ref_w, "bias_ih_l0": ref_b},
                                     (ref_leaves[4], ref_leaves[5][None]))[0]
    compare_gradients(out, weights + [x, h0], ref, ref_leaves, list(_layer_shapes(D, H)) + ["x", "h0"], watch, "h")
    return (f"{name} computes minGRU, h_t = (1 - z_t) h_(t-1) + z_t g(linear_h(x_t)), on {len(LAYER_CASES)} random "
            "sizes with and without h0, with saturated gates on 1,000 steps, and in its gradients, with a scan.")

