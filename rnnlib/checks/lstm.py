r"""Checkers of exercise 7.2: an LSTM cell written by the learner, and the loop that runs it over time.

The reference is rnnlib's own LSTM (:mod:`rnnlib.cells`, :mod:`rnnlib.layers`), which matches
``torch.nn.LSTM``. With the fused weights split in PyTorch's order (i, f, g, o)::

    i = sigmoid(x W_ii^T + b_ii + h W_hi^T + b_hi)     f, o likewise
    g = tanh(x W_ig^T + b_ig + h W_hg^T + b_hg)
    c' = f * c + i * g,   h' = o * tanh(c')

A wrong cell is diagnosed by recomputing the step under each typical mistake (the 23 other gate orders,
gates read from interleaved columns, the 15 ways of giving some gates the wrong one of sigmoid / tanh, a
missing bias, a forget bias of +1 added in forward, the state ignored, ...) and naming the one that
matches. Both checkers compare gradients too (inputs, states and weights) and require code written from
the equations: PyTorch's fused LSTM (``torch.lstm_cell``, ``nn.LSTMCell``, ``torch.lstm``, ``nn.LSTM``,
however reached) fails the check, and the loop must call the cell it is given exactly once per time step.
"""
from __future__ import annotations

import itertools
from typing import Optional

import torch
from torch import Tensor

from ..cells import LSTMCell, lstm_cell_step
from ..layers import LSTM
from ._core import (Mistake, _Verdict, activation_swaps, build, call, checker, close, compare_gradients, describe, diagnose,
                    expect_shape, fail, run, set_parameters, swapped_acts)

__all__ = ["check_lstm_cell", "check_lstm_loop"]

GATES = "ifgo"
CASES = [(3, 5, 4), (1, 6, 2), (4, 2, 7)]  # (batch, input_size, hidden_size): all different, small
CELL_FROM_SCRATCH = ("The exercise asks you to write the step from its equations: one matrix product per weight "
                     "(x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh), cut into the four gates, then "
                     "torch.sigmoid and torch.tanh; not PyTorch's LSTM, which computes the same thing for you.")
LOOP_FROM_SCRATCH = ("Loop over the time steps yourself and call the cell you are given once per step, with the "
                     "state the previous step returned; PyTorch's fused LSTM layer is what this exercise rebuilds.")


def _step(x, h, c, p, order=GATES, acts="sstS", cell_act=torch.tanh, biases=(True, True), use_h=True,
          use_c=True, cell_rule="fc+ig", return_c_in_h=False, forget_bias=0.0, interleaved=False):
    """One LSTM step, optionally with one typical mistake. ``acts``: s = sigmoid, t = tanh, S = sigmoid (o)."""
    pre = x @ p["weight_ih"].T + (h if use_h else torch.zeros_like(h)) @ p["weight_hh"].T
    if biases[0]:
        pre = pre + p["bias_ih"]
    if biases[1]:
        pre = pre + p["bias_hh"]
    parts = pre.reshape(*pre.shape[:-1], -1, 4).unbind(-1) if interleaved else pre.chunk(4, dim=-1)
    chunks = dict(zip(order, parts))  # the learner's names for chunk 0, 1, 2, 3
    chunks["f"] = chunks["f"] + forget_bias
    fn = {"s": torch.sigmoid, "S": torch.sigmoid, "t": torch.tanh}
    i, f, g, o = (fn[a](chunks[name]) for a, name in zip(acts, GATES))
    c_prev = c if use_c else torch.zeros_like(c)
    c_new = {"fc+ig": f * c_prev + i * g, "fc+g": f * c_prev + g, "c+ig": c_prev + i * g,
             "ic+fg": i * c_prev + f * g}[cell_rule]
    h_new = o * (cell_act(c_new) if cell_act is not None else c_new)
    if return_c_in_h:
        h_new = o * torch.tanh(c_prev)
    return h_new, c_new


# ------------------------------------------------------------------------------------------------------
# Wrong activations: each gate can get the other one of sigmoid / tanh (15 combinations; swapping
# i and g alone is diagnosed together with reading their chunks exchanged, see _mistakes)
# ------------------------------------------------------------------------------------------------------
_RIGHT_ACTS = "sstS"  # i, f, o: sigmoid; g: tanh
_GATE_NAMES = {"i": "the input gate i", "f": "the forget gate f", "g": "the candidate g", "o": "the output gate o"}


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _activation_text(wrong: str) -> tuple[str, str]:
    """The message and hint for the gates in ``wrong`` having the wrong activation."""
    gates = [g for g in wrong if g != "g"]  # gates through tanh instead of a sigmoid
    candidate = "g" in wrong  # the candidate through a sigmoid instead of tanh
    if wrong == "g":
        message = ("The candidate g goes through a sigmoid (so all of i, f, g and o use a sigmoid); it needs tanh, "
                   "so that it can be negative and write values in (-1, 1) into the cell.")
    elif wrong == "ifo":
        message = ("Every gate goes through tanh (all of i, f, g and o use tanh): the input, forget and output "
                   "gates i, f and o need a sigmoid; only the candidate g uses tanh.")
    elif wrong == "ifgo":
        message = ("The activations are swapped everywhere: the input, forget and output gates i, f and o go "
                   "through tanh, and the candidate g goes through a sigmoid.")
    else:
        parts = []
        if gates:
            names = _join([_GATE_NAMES[g] for g in gates])
            parts.append(f"{names} {'goes' if len(gates) == 1 else 'go'} through tanh instead of a sigmoid")
        if candidate:
            parts.append("the candidate g goes through a sigmoid instead of tanh")
        text = "; and ".join(parts)
        message = f"{text[0].upper()}{text[1:]}; the other activations are right."
    hints = []
    if gates:
        hints.append(f"Use torch.sigmoid for {_join(gates)}: the gates i, f and o lie in (0, 1), because they "
                     "multiply what they let through")
    if candidate:
        hints.append(("use" if gates else "Use") + " torch.tanh for the candidate g, so that it can be negative")
    hint = "; ".join(hints) + ". The new cell state also goes through tanh on its way into h': h' = o * tanh(c')."
    return message, hint


def _mistakes(x, h, c, p):
    ref = _step(x, h, c, p)
    yield Mistake("You return (c', h'); the cell should return (h', c'), like torch.nn.LSTMCell.",
                  "Swap the two tensors in your return statement.", lambda: (ref[1], ref[0]))
    # i and g reading each other's chunks gives exactly the output of i through tanh and g through a sigmoid
    # (c' uses the product i * g), so no input can tell them apart: one message names both.
    yield Mistake("The input gate i and the candidate g are exchanged: either they read each other's chunks of the "
                  "fused pre-activation (order g, f, i, o instead of i, f, g, o), or i goes through tanh and g "
                  "through a sigmoid. Both give the same result, because c' = f * c + i * g only uses their product.",
                  "Take i from rows 0:H and g from rows 2H:3H of the pre-activation; use torch.sigmoid for i "
                  "(a gate in (0, 1)) and torch.tanh for g (a candidate that can be negative).",
                  lambda: _step(x, h, c, p, order="gfio"))
    for order in itertools.permutations(GATES):
        order = "".join(order)
        if order not in (GATES, "gfio"):
            yield Mistake(
                f"Your gates read the four chunks of the fused pre-activation in the order "
                f"{', '.join(order)}; the weights store them in PyTorch's order i, f, g, o "
                "(rows 0:H input gate, H:2H forget gate, 2H:3H candidate, 3H:4H output gate).",
                "Split the (batch, 4H) pre-activation into four chunks in the order i, f, g, o.",
                lambda order=order: _step(x, h, c, p, order=order))
    yield Mistake("Your gates read interleaved columns of the (batch, 4H) pre-activation (every fourth column, as "
                  ".view(batch, H, 4) gives); PyTorch stores the four gates as four contiguous blocks of H columns.",
                  "Cut the pre-activation into four consecutive chunks: pre.chunk(4, dim=-1), or .view(batch, 4, H).",
                  lambda: _step(x, h, c, p, interleaved=True))
    yield Mistake("The forget gate gets an extra +1 in forward: f = sigmoid(... + 1). nn.LSTM adds nothing: a forget "
                  "bias of 1 (chapter 7.2) is a way to initialize b_f, set once in the bias parameters.",
                  "Compute f = sigmoid(x W_if^T + b_if + h W_hf^T + b_hf) with the biases as they are.",
                  lambda: _step(x, h, c, p, forget_bias=1.0))
    for wrong in activation_swaps(GATES):
        if wrong == "ig":  # the same output as the exchange of i and g above
            continue
        message, hint = _activation_text(wrong)
        yield Mistake(message, hint, lambda wrong=wrong: _step(x, h, c, p, acts=swapped_acts(wrong, GATES, _RIGHT_ACTS)))
    yield Mistake("h' = o * c': the tanh of the new cell state is missing.",
                  "The hidden state is the output gate times tanh(c').", lambda: _step(x, h, c, p, cell_act=None))
    yield Mistake("h' = o * sigmoid(c'): the cell state should go through tanh, not a sigmoid.",
                  "The hidden state is the output gate times tanh(c').",
                  lambda: _step(x, h, c, p, cell_act=torch.sigmoid))
    yield Mistake("h' uses the previous cell state c instead of the new one c'.",
                  "Compute c' first, then h' = o * tanh(c').", lambda: _step(x, h, c, p, return_c_in_h=True))
    for biases, which in (((True, False), "bias_hh"), ((False, True), "bias_ih"), ((False, False), "both biases")):
        yield Mistake(f"The result is what the cell gives without {which}.",
                      "PyTorch's LSTM adds both bias_ih and bias_hh to the pre-activation.",
                      lambda biases=biases: _step(x, h, c, p, biases=biases))
    yield Mistake("The previous hidden state h is ignored (the result is the same as with h = 0).",
                  "The pre-activation is x W_ih^T + b_ih + h W_hh^T + b_hh: use the h you are given.",
                  lambda: _step(x, h, c, p, use_h=False))
    yield Mistake("The previous cell state c is ignored (the result is the same as with c = 0).",
                  "The new cell state keeps f * c of the old one: c' = f * c + i * g.",
                  lambda: _step(x, h, c, p, use_c=False))
    rules = [("fc+g", "c' = f * c + g: the input gate i does not scale the candidate."),
             ("c+ig", "c' = c + i * g: the forget gate f does not scale the old cell state."),
             ("ic+fg", "c' = i * c + f * g: the input and forget gates are swapped in the cell update.")]
    for rule, message in rules:
        yield Mistake(message, "c' = f * c + i * g.", lambda rule=rule: _step(x, h, c, p, cell_rule=rule))


def _partial_diagnosis(out, ref) -> str:
    if close(out[1], ref[1]):
        return ("c' is right but h' differs: look at the output gate o and at h' = o * tanh(c').")
    if close(out[0], ref[0]):
        return "h' is right but the c' you return differs: return the new cell state."
    return ("Both h' and c' differ and no single typical mistake explains it: check the gates one at a time "
            "against the equations (print i, f, g, o for a tiny input).")


def _reference(x, h, c, p):
    """rnnlib's LSTM step (the same as torch.nn.LSTMCell): (h', c')."""
    return lstm_cell_step(x, h, c, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"])


def _shapes(B, D, H):
    return {"weight_ih": (4 * H, D), "weight_hh": (4 * H, H), "bias_ih": (4 * H,), "bias_hh": (4 * H,)}


@checker
def check_lstm_cell(cell_class) -> str:
    """Check an LSTM cell class ``cell_class(input_size, hidden_size)`` with ``forward(x, state=None) -> (h, c)``.

    Its parameters must be the scaffold's: ``weight_ih`` (4H, D), ``weight_hh`` (4H, H), ``bias_ih``,
    ``bias_hh`` (4H,), gates in the order i, f, g, o. Compared with rnnlib's LSTM step on random weights,
    inputs and states of several sizes, with ``state=None`` (zeros), and for gradients.
    """
    gen = torch.Generator().manual_seed(72)
    name = getattr(cell_class, "__name__", "your cell")
    for B, D, H in CASES:
        cell = build(cell_class, D, H, what=f"{name}({D}, {H})")
        p = set_parameters(cell, _shapes(B, D, H), gen, name)
        x = torch.randn(B, D, generator=gen)
        h, c = torch.randn(B, H, generator=gen) * 0.8, torch.randn(B, H, generator=gen)
        out = call(cell, x, (h, c), what=f"{name}.forward", forbid={"cell": CELL_FROM_SCRATCH, "layer": CELL_FROM_SCRATCH},
                   reference=lambda: _reference(x, h, c, p))
        ref = _reference(x, h, c, p)
        if isinstance(out, Tensor):
            hint = "return (h_new, c_new), a tuple of two tensors"
            if out.dim() and out.shape[-1] == 4 * H:
                raise fail(f"forward returned one tensor of shape {tuple(out.shape)}: the gate pre-activations, "
                           "not the new state.", hint.capitalize() + ".")
            raise fail(f"forward returned {describe(out)}; expected a tuple (h', c').", hint.capitalize() + ".")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise fail(f"forward returned {describe(out)}; expected a tuple (h', c') of two tensors.",
                       "End forward with: return h_new, c_new")
        for k, part in enumerate(("h'", "c'")):
            expect_shape(out[k], (B, H), f"The {part} you return (input {tuple(x.shape)}, hidden_size={H})",
                         "Each of h' and c' is (batch, hidden_size). The four gates together are (batch, 4H): "
                         "split them into four (batch, H) chunks.")
        if not close(out, ref):
            found = diagnose(out, _mistakes(x, h, c, p))
            if found is not None:
                raise fail(found.message, found.hint)
            raise fail(f"The output differs from the reference LSTM step (largest difference "
                       f"{_max_diff(out, ref):.3g}).", _partial_diagnosis(out, ref))

    # The default state: zeros.
    out = call(cell, x, None, what=f"{name}.forward(x, None)")
    if not close(out, _reference(x, torch.zeros_like(h), torch.zeros_like(c), p)):
        raise fail("With state=None the result differs from starting at h = c = 0.",
                   "When state is None, start from zeros of shape (batch, hidden_size), e.g. x.new_zeros(...).")

    # Gradients with respect to the weights, the input and the state.
    leaves = [x.clone().requires_grad_(), h.clone().requires_grad_(), c.clone().requires_grad_()]
    ours, watch = run(cell, leaves[0], (leaves[1], leaves[2]), what=f"{name}.forward")
    weights = [dict(cell.named_parameters())[k] for k in _shapes(B, D, H)]
    ref_leaves = [t.detach().clone().requires_grad_() for t in weights + leaves]
    ref_p = dict(zip(_shapes(B, D, H), ref_leaves[:4]))
    compare_gradients(ours, weights + leaves, _reference(ref_leaves[4], ref_leaves[5], ref_leaves[6], ref_p), ref_leaves,
                      list(_shapes(B, D, H)) + ["x", "h", "c"], watch, "(h', c')", ("h'", "c'"))
    return (f"{name} matches the reference LSTM step (gate order i, f, g, o) on {len(CASES)} random sizes, "
            "with state=None, and in its gradients.")


def _max_diff(a, b) -> float:
    return max(float((x.detach() - y).abs().max()) for x, y in zip(a, b))


# ------------------------------------------------------------------------------------------------------
# The loop over time
# ------------------------------------------------------------------------------------------------------
def _as_layer(cell: LSTMCell) -> LSTM:
    """rnnlib's one-layer LSTM holding the cell's weights (copies: ``weight_ih_l0`` is ``weight_ih``)."""
    layer = LSTM(cell.input_size, cell.hidden_size, batch_first=True)
    layer.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
    return layer


def _loop_reference(cell: LSTMCell, x: Tensor, state, layer: Optional[LSTM] = None):
    """(outputs, (h_T, c_T)) of the LSTM layer; differentiable with respect to ``layer``, ``x`` and ``state``."""
    layer = _as_layer(cell) if layer is None else layer
    h0, c0 = state if state is not None else (x.new_zeros(x.size(0), cell.hidden_size),) * 2
    out, (h_n, c_n) = layer(x, (h0[None], c0[None]))
    return out, (h_n[0], c_n[0])


def _loop_variant(cell, x, state, reset=False, reverse=False, record="h", start_zero=False):
    B = x.size(0)
    zeros = (x.new_zeros(B, cell.hidden_size), x.new_zeros(B, cell.hidden_size))
    first = zeros if (state is None or start_zero) else state
    s, outs = first, []
    steps = range(x.size(1) - 1, -1, -1) if reverse else range(x.size(1))
    with torch.no_grad():
        for t in steps:
            s = cell(x[:, t], first if reset else s)
            outs.append(s[0] if record == "h" else s[1])
    if reverse:
        outs.reverse()
    return torch.stack(outs, 1), s


def _loop_mistakes(cell, x, state, ref):
    T = x.size(1)
    yield Mistake("The state is not carried over time: every step starts again from the initial state, so the "
                  "output at step t depends on x_t alone.",
                  "Inside the loop, feed each step the state the previous step returned.",
                  lambda: _loop_variant(cell, x, state, reset=True))
    yield Mistake("The loop runs backwards in time (from the last step to the first).",
                  "Loop t = 0, 1, ..., T - 1 over x[:, t].", lambda: _loop_variant(cell, x, state, reverse=True))
    h0 = state[0] if state is not None else x.new_zeros(x.size(0), cell.hidden_size)
    yield Mistake("The outputs are shifted by one step: position t holds the hidden state before step t (h_0 first), "
                  "not the one after it, and the last step's h_T is missing from them.",
                  "Inside the loop, call the cell first and append the h it returns: outputs[:, t] is the state "
                  "after reading x[:, t].",
                  lambda: (torch.cat([h0[:, None], ref[0][:, :-1]], 1), ref[1]))
    yield Mistake("The outputs hold the cell states c_t; they should hold the hidden states h_t (as nn.LSTM's do).",
                  "Append h after each step, and return (h_T, c_T) as the final state.",
                  lambda: _loop_variant(cell, x, state, record="c"))
    yield Mistake("The state you were given is ignored: the loop always starts from zeros.",
                  "Start from state when it is given, and from zeros only when it is None.",
                  lambda: _loop_variant(cell, x, state, start_zero=True))
    yield Mistake("The outputs are right, but the final state you return is the initial state.",
                  "Return the state after the last step.", lambda: (ref[0], state))
    first = _loop_variant(cell, x[:, :1], state)[1]
    yield Mistake("The outputs are right, but the final state you return is the state after the first step.",
                  "Return the state after the last step.", lambda: (ref[0], first))
    if T > 1:
        before_last = _loop_variant(cell, x[:, : T - 1], state)[1]
        yield Mistake("The outputs are right, but the final state is the one before the last step.",
                      "Return the state after the last step.", lambda: (ref[0], before_last))


@checker
def check_lstm_loop(run_lstm) -> str:
    """Check ``run_lstm(cell, x, state=None) -> (outputs, (h_T, c_T))`` for batch-first ``x`` (B, T, D).

    ``outputs`` is (B, T, H), the hidden state after every step; ``state`` is a pair (h_0, c_0) of
    (B, H) tensors or None for zeros. Compared with rnnlib's LSTM layer, using rnnlib's LSTMCell as ``cell``.
    """
    gen = torch.Generator().manual_seed(73)
    name = getattr(run_lstm, "__name__", "your loop")
    for B, T, D, H, given in ((3, 5, 4, 6, True), (2, 7, 3, 4, False), (4, 1, 2, 3, True)):
        cell = LSTMCell(D, H)
        x = torch.randn(B, T, D, generator=gen)
        state = (torch.randn(B, H, generator=gen), torch.randn(B, H, generator=gen)) if given else None
        with torch.no_grad():
            out, watch = run(run_lstm, cell, x, state, what=f"{name}(cell, x, state)", allow=[cell], count=[cell],
                             forbid={"layer": LOOP_FROM_SCRATCH, "cell": LOOP_FROM_SCRATCH},
                             reference=lambda: _loop_reference(cell, x, state))
            ref = _loop_reference(cell, x, state)
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[1], (tuple, list))
                and len(out[1]) == 2):
            raise fail(f"{name} returned {describe(out)}; expected (outputs, (h_T, c_T)).",
                       "Return the stacked outputs and the final state as a pair: return outputs, (h, c)")
        outputs, final = out
        if isinstance(outputs, (list, tuple)):
            raise fail(f"outputs is a Python {type(outputs).__name__}; expected one tensor of shape {(B, T, H)}.",
                       "Stack the per-step hidden states with torch.stack(..., dim=1).")
        hint = (f"outputs stacks the hidden states of the T={T} steps batch-first: (batch, T, hidden) = {(B, T, H)}. "
                "Use torch.stack(list_of_h, dim=1).")
        if isinstance(outputs, Tensor) and tuple(outputs.shape) == (T, B, H) and T != B:
            raise fail(f"outputs has shape {(T, B, H)} (time first); expected batch first {(B, T, H)}.", hint)
        expect_shape(outputs, (B, T, H), f"outputs (x of shape {(B, T, D)}, hidden_size={H})", hint)
        for k, part in enumerate(("h_T", "c_T")):
            expect_shape(final[k], (B, H), f"The final {part}", "The final state is (h_T, c_T), each (batch, hidden).")
        if not close((outputs, tuple(final)), ref):
            found = diagnose((outputs, tuple(final)), _loop_mistakes(cell, x, state, ref))
            if found is not None:
                raise fail(found.message, found.hint)
            where = "outputs" if not close(outputs, ref[0]) else "the final state"
            raise fail(f"{where} differs from running the cell step by step (x of shape {(B, T, D)}).",
                       "Loop over t, call cell(x[:, t], state), keep the new state, and collect its h.")
        if watch.count(cell) != T and not watch.reference:  # rnnlib's code that ran is named in the verdict
            instead = f" (it ran {', '.join(watch.reference[:2])} instead)" if watch.reference else ""
            raise fail(f"{name} called the cell {watch.count(cell)} times for a sequence of T={T} steps{instead}; a "
                       "loop over time calls it exactly once per step.",
                       "Call cell(x[:, t], state) once for each t and reuse what it returns; do not compute the steps "
                       "another way or call the cell again for the same step.")

    # Backpropagation through time: the gradients of the outputs and final state with respect to the input,
    # the initial state and the cell's weights, compared with the layer's on copies of the same values.
    B, T, D, H = 2, 4, 3, 5
    cell = LSTMCell(D, H)
    leaves = [torch.randn(B, T, D, generator=gen).requires_grad_(), torch.randn(B, H, generator=gen).requires_grad_(),
              torch.randn(B, H, generator=gen).requires_grad_()]
    (outputs, final), watch = run(run_lstm, cell, leaves[0], (leaves[1], leaves[2]), what=f"{name}(cell, x, state)",
                                  allow=[cell])
    weights = [dict(cell.named_parameters())[k] for k in _shapes(B, D, H)]
    layer = _as_layer(cell)
    ref_leaves = [dict(layer.named_parameters())[f"{k}_l0"] for k in _shapes(B, D, H)]
    ref_leaves += [t.detach().clone().requires_grad_() for t in leaves]
    ref_outputs, ref_final = _loop_reference(cell, ref_leaves[4], (ref_leaves[5], ref_leaves[6]), layer)
    try:
        compare_gradients((outputs, *final), weights + leaves, (ref_outputs, *ref_final), ref_leaves,
                          [f"the cell's {k}" for k in _shapes(B, D, H)] + ["x", "h_0", "c_0"], watch,
                          "the outputs", ("outputs", "h_T", "c_T"))
    except _Verdict as verdict:  # name backpropagation through time, the usual way to cut it here
        verdict.message += (" Backpropagation through time needs each step to get exactly the state the previous "
                            "step returned: is the state detached inside the loop?")
        verdict.hint = ("Pass each step exactly the state the previous step returned: no .detach(), .data or "
                        "torch.no_grad() inside the loop. Truncated BPTT detaches between batches, in the training "
                        "loop, never between the steps of one forward pass.")
        raise
    return (f"{name} runs the cell over time exactly like an LSTM layer, with and without a given state, and "
            "backpropagates through time like it.")
