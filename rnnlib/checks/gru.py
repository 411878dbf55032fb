r"""Checker of exercise 7.3: a GRU cell written by the learner, the way ``torch.nn.GRUCell`` computes it.

The reference is :func:`rnnlib.cells.gru_cell_step`. With the fused weights split in PyTorch's order
(r, z, n)::

    r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
    z = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
    n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))     the reset gate acts after the product
    h' = (1 - z) * n + z * h

Typical mistakes it recognizes: the reset gate applied before the product (the variant of the EMNLP 2014
version of Cho et al., arXiv 1406.1078v3, which ``nn.GRU`` does not compute; the first arXiv version and
cuDNN apply it after the product, as here), the reset gate applied to the sum of the input and hidden
parts, ``z`` and ``1 - z`` swapped, ``b_hn`` outside the reset gate, another gate order, gates read from
interleaved columns, a wrong activation (any of the 7 ways of swapping sigmoid and tanh among r, z, n), a
missing bias, the previous state ignored. Gradients are compared too, and PyTorch's fused GRU
(``torch.gru_cell``, ``nn.GRUCell``, ``nn.GRU``, however reached) fails the check.
"""
from __future__ import annotations

import itertools

import torch
from torch import Tensor

from ..cells import gru_cell_step
from ._core import (Mistake, activation_swaps, build, call, checker, close, compare_gradients, describe, diagnose,
                    expect_shape, fail, run, set_parameters, swapped_acts)

__all__ = ["check_gru_cell"]

GATES = "rzn"
CASES = [(3, 5, 4), (1, 6, 2), (4, 2, 7)]  # (batch, input_size, hidden_size)
FROM_SCRATCH = ("The exercise asks you to write the step from its equations: the input and hidden projections "
                "(x @ weight_ih.T + bias_ih, h @ weight_hh.T + bias_hh), cut into r, z, n, then torch.sigmoid and "
                "torch.tanh; not PyTorch's GRU, which computes the same thing for you.")


def _reference(x, h, p, reset_after=True):
    return gru_cell_step(x, h, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"], reset_after)


def _step(x, h, p, order=GATES, acts="sst", biases=(True, True), use_h=True, b_hn_inside=True, use_r=True,
          update="(1-z)n+zh", interleaved=False, reset_sum=False):
    """One GRU step (reset after the product, as nn.GRU), optionally with one typical mistake."""
    h_in = h if use_h else torch.zeros_like(h)
    xp = x @ p["weight_ih"].T + (p["bias_ih"] if biases[0] else 0)
    hp = h_in @ p["weight_hh"].T
    b_hh = p["bias_hh"] if biases[1] else torch.zeros_like(p["bias_hh"])

    def split(t):
        return t.reshape(*t.shape[:-1], -1, 3).unbind(-1) if interleaved else t.chunk(3, dim=-1)

    xs = dict(zip(order, split(xp)))
    hs = dict(zip(order, split(hp)))
    bs = dict(zip(order, split(b_hh)))
    fn = {"s": torch.sigmoid, "t": torch.tanh}
    r = fn[acts[0]](xs["r"] + hs["r"] + bs["r"])
    z = fn[acts[1]](xs["z"] + hs["z"] + bs["z"])
    gate = r if use_r else torch.ones_like(r)
    if reset_sum:
        n = fn[acts[2]](gate * (xs["n"] + hs["n"] + bs["n"]))
    elif b_hn_inside:
        n = fn[acts[2]](xs["n"] + gate * (hs["n"] + bs["n"]))
    else:
        n = fn[acts[2]](xs["n"] + gate * hs["n"] + bs["n"])
    return {"(1-z)n+zh": (1 - z) * n + z * h_in, "zn+(1-z)h": z * n + (1 - z) * h_in, "n": n,
            "zn": z * n}[update]


# ------------------------------------------------------------------------------------------------------
# Wrong activations: each of r, z, n can get the other one of sigmoid / tanh (7 combinations)
# ------------------------------------------------------------------------------------------------------
_RIGHT_ACTS = "sst"  # r, z: sigmoid; n: tanh
_GATE_NAMES = {"r": "the reset gate r", "z": "the update gate z", "n": "the candidate n"}


def _activation_text(wrong: str) -> tuple[str, str]:
    """The message and hint for the gates in ``wrong`` having the wrong activation."""
    gates = [g for g in wrong if g != "n"]  # gates through tanh instead of a sigmoid
    candidate = "n" in wrong  # the candidate through a sigmoid instead of tanh
    if wrong == "n":
        message = ("The candidate n goes through a sigmoid (so all of r, z and n use a sigmoid); it needs tanh, "
                   "so that it can be negative.")
    elif wrong == "rz":
        message = ("The reset and update gates r and z go through tanh (so all of r, z and n use tanh); "
                   "gates need a sigmoid, only the candidate n uses tanh.")
    elif wrong == "rzn":
        message = ("The activations are swapped everywhere: the reset and update gates r and z go through tanh, "
                   "and the candidate n goes through a sigmoid.")
    else:
        parts = [f"{_GATE_NAMES[g]} goes through tanh instead of a sigmoid" for g in gates]
        if candidate:
            parts.append("the candidate n goes through a sigmoid instead of tanh")
        text = "; and ".join(parts)
        message = f"{text[0].upper()}{text[1:]}; the other activations are right."
    hints = []
    if gates:
        hints.append(f"Use torch.sigmoid for {' and '.join(gates)}: the gates r and z lie in (0, 1), because r "
                     "scales the hidden state's contribution and z mixes the old state with the candidate")
    if candidate:
        hints.append(("use" if gates else "Use") + " torch.tanh for the candidate n, so that it can be negative")
    return message, "; ".join(hints) + "."


def _mistakes(x, h, p):
    yield Mistake("The reset gate multiplies h before the matrix product, n = tanh(x W_in^T + b_in + (r * h) W_hn^T "
                  "+ b_hn): that is the GRU of the EMNLP 2014 version of Cho et al. (arXiv 1406.1078v3), but "
                  "torch.nn.GRU and cuDNN apply r to the result of the product, as the paper's first version did.",
                  "Compute h W_hn^T + b_hn first, then multiply it by r.",
                  lambda: _reference(x, h, p, reset_after=False))
    yield Mistake("The reset gate multiplies the sum of the input and hidden parts, n = tanh(r * (x W_in^T + b_in + "
                  "h W_hn^T + b_hn)); it scales only the hidden part.",
                  "Only the hidden part (h W_hn^T + b_hn) is multiplied by r; add the input part x W_in^T + b_in "
                  "outside that product.",
                  lambda: _step(x, h, p, reset_sum=True))
    yield Mistake("Your gates read interleaved columns of the (batch, 3H) projections (every third column, as "
                  ".view(batch, H, 3) gives); PyTorch stores r, z and n as three contiguous blocks of H columns.",
                  "Cut each projection into three consecutive chunks: .chunk(3, dim=-1).",
                  lambda: _step(x, h, p, interleaved=True))
    yield Mistake("z and 1 - z are swapped: your h' = z * n + (1 - z) * h.",
                  "In PyTorch's convention z is how much of the OLD state is kept: h' = (1 - z) * n + z * h.",
                  lambda: _step(x, h, p, update="zn+(1-z)h"))
    yield Mistake("b_hn is added outside the reset gate: n = tanh(x_n + r * (h W_hn^T) + b_hn).",
                  "In torch.nn.GRU the reset gate multiplies (h W_hn^T + b_hn), bias included.",
                  lambda: _step(x, h, p, b_hn_inside=False))
    for order in itertools.permutations(GATES):
        order = "".join(order)
        if order != GATES:
            yield Mistake(f"Your gates read the three chunks of the fused weights in the order {', '.join(order)}; "
                          "they are stored in PyTorch's order r, z, n (rows 0:H reset, H:2H update, 2H:3H candidate).",
                          "Split both projections into three chunks in the order r, z, n.",
                          lambda order=order: _step(x, h, p, order=order))
    for wrong in activation_swaps(GATES):
        message, hint = _activation_text(wrong)
        yield Mistake(message, hint, lambda wrong=wrong: _step(x, h, p, acts=swapped_acts(wrong, GATES, _RIGHT_ACTS)))
    yield Mistake("The reset gate is computed but never used: n = tanh(x_n + h W_hn^T + b_hn).",
                  "Multiply (h W_hn^T + b_hn) by r inside the candidate.", lambda: _step(x, h, p, use_r=False))
    yield Mistake("h' = n: the update gate does not mix the candidate with the old state.",
                  "h' = (1 - z) * n + z * h.", lambda: _step(x, h, p, update="n"))
    yield Mistake("h' = z * n: the old state's share, z * h, is missing.",
                  "h' = (1 - z) * n + z * h.", lambda: _step(x, h, p, update="zn"))
    for biases, which in (((True, False), "bias_hh"), ((False, True), "bias_ih"), ((False, False), "both biases")):
        yield Mistake(f"The result is what the cell gives without {which}.",
                      "torch.nn.GRU adds bias_ih to the input projection and bias_hh to the hidden projection.",
                      lambda biases=biases: _step(x, h, p, biases=biases))
    yield Mistake("The previous hidden state h is ignored (the result is the same as with h = 0).",
                  "Use the h you are given, in the gates and in h' = (1 - z) * n + z * h.",
                  lambda: _step(x, h, p, use_h=False))


def _shapes(D, H):
    return {"weight_ih": (3 * H, D), "weight_hh": (3 * H, H), "bias_ih": (3 * H,), "bias_hh": (3 * H,)}


@checker
def check_gru_cell(cell_class) -> str:
    """Check a GRU cell class ``cell_class(input_size, hidden_size)`` with ``forward(x, h=None) -> h'``.

    Its parameters must be the scaffold's: ``weight_ih`` (3H, D), ``weight_hh`` (3H, H), ``bias_ih``,
    ``bias_hh`` (3H,), gates in the order r, z, n. Compared with rnnlib's GRU step (which matches
    torch.nn.GRUCell) on random weights, inputs and states, with ``h=None``, and for gradients.
    """
    gen = torch.Generator().manual_seed(74)
    name = getattr(cell_class, "__name__", "your cell")
    for B, D, H in CASES:
        cell = build(cell_class, D, H, what=f"{name}({D}, {H})")
        p = set_parameters(cell, _shapes(D, H), gen, name)
        x, h = torch.randn(B, D, generator=gen), torch.randn(B, H, generator=gen) * 0.8
        out = call(cell, x, h, what=f"{name}.forward", forbid={"cell": FROM_SCRATCH, "layer": FROM_SCRATCH},
                   reference=lambda: _reference(x, h, p))
        if isinstance(out, (tuple, list)):
            raise fail(f"forward returned {describe(out)}; a GRU cell returns one tensor, the new state h'.",
                       "A GRU has no cell state: return h_new only.")
        expect_shape(out, (B, H), f"The h' you return (input {(B, D)}, hidden_size={H})",
                     "h' is (batch, hidden_size); the three gates together are (batch, 3H): split them into "
                     "three (batch, H) chunks.")
        ref = _reference(x, h, p)
        if not close(out, ref):
            found = diagnose(out, _mistakes(x, h, p))
            if found is not None:
                raise fail(found.message, found.hint)
            raise fail(f"h' differs from the reference GRU step (largest difference "
                       f"{float((out.detach() - ref).abs().max()):.3g}) and no single typical mistake explains it.",
                       "Check r, z and n one at a time against the equations (print them for a tiny input).")

    out = call(cell, x, None, what=f"{name}.forward(x, None)")
    if not close(out, _reference(x, torch.zeros_like(h), p)):
        raise fail("With h=None the result differs from starting at h = 0.",
                   "When h is None, start from zeros of shape (batch, hidden_size), e.g. x.new_zeros(...).")

    x_leaf, h_leaf = x.clone().requires_grad_(), h.clone().requires_grad_()
    weights = [dict(cell.named_parameters())[k] for k in _shapes(D, H)]
    out, watch = run(cell, x_leaf, h_leaf, what=f"{name}.forward")
    ref_leaves = [t.detach().clone().requires_grad_() for t in weights + [x, h]]
    ref = _reference(ref_leaves[4], ref_leaves[5], dict(zip(_shapes(D, H), ref_leaves[:4])))
    compare_gradients(out, weights + [x_leaf, h_leaf], ref, ref_leaves, list(_shapes(D, H)) + ["x", "h"], watch, "h'")
    return (f"{name} matches torch.nn.GRUCell's equations (gate order r, z, n; reset gate after the product) on "
            f"{len(CASES)} random sizes, with h=None, and in its gradients.")
