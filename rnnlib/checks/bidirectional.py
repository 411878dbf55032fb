r"""Checkers of exercise 7.4: reversing padded sequences, and a bidirectional encoder built from two RNNs.

For a right-padded batch (sequence :math:`b` has :math:`L_b` real tokens, then padding), a bidirectional
layer computes, at every real position :math:`t < L_b`,

.. math::  \overrightarrow{H}_t = \text{forward RNN over } x_0 \dots x_t, \qquad
           \overleftarrow{H}_t = \text{backward RNN over } x_{L_b - 1}, x_{L_b - 2}, \dots, x_t,

outputs :math:`[\overrightarrow{H}_t; \overleftarrow{H}_t]` (zeros at padding), and the summary
:math:`[\overrightarrow{H}_{L_b-1}; \overleftarrow{H}_0]`. The reference is PyTorch's own
``nn.GRU(bidirectional=True)`` over a packed sequence (through :class:`rnnlib.models.PaddedRNN`), loaded with
the two RNNs' weights; the reversal is checked against :func:`rnnlib.models.reverse_padded`.

The checkers put random values (not zeros) at padded positions, so that code which reads padding before
the real tokens, or leaves the backward outputs in reversed order, gives visibly different numbers. Both
compare gradients too (the reversal of features, and the encoder with respect to ``x`` and both RNNs'
weights). The encoder must be built from the two RNNs it is given: any other recurrent module or fused
recurrent operator it runs (``nn.GRU(bidirectional=True)``, ``torch.gru``) fails the check.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models import PaddedRNN, reverse_padded
from ._core import (Mistake, call, checker, close, compare_gradients, describe, diagnose, expect_shape, expect_tensor,
                    fail, run)

__all__ = ["check_reverse_padded", "check_bidirectional"]

FROM_TWO_RNNS = ("Build the encoder from the two RNNs you are given: call forward_rnn on x and backward_rnn on x "
                 "reversed within each length, then combine their outputs. Another recurrent module or fused "
                 "operator (a bidirectional nn.GRU, torch.gru) is not the exercise.")


def _mask(lengths: Tensor, T: int) -> Tensor:
    return torch.arange(T)[None, :] < lengths[:, None]  # (B, T), True at real tokens


@checker
def check_reverse_padded(reverse) -> str:
    """Check ``reverse(x, lengths)``: each row reversed within its own length, padding left in place.

    ``x`` is (B, T) token ids or (B, T, D) features, right-padded; ``lengths`` (B,). Compared with
    :func:`rnnlib.models.reverse_padded`.
    """
    gen = torch.Generator().manual_seed(75)
    name = getattr(reverse, "__name__", "your function")
    cases = [((4, 6), [6, 3, 1, 4]), ((3, 5, 2), [2, 5, 4]), ((2, 1, 3), [1, 1])]
    for shape, lengths in cases:
        lengths = torch.tensor(lengths)
        x = (torch.randint(1, 50, shape, generator=gen) if len(shape) == 2
             else torch.randn(shape, generator=gen))
        before = x.clone()
        out = call(reverse, x, lengths.clone(), what=f"{name}(x, lengths)", cpu_args=(1,),
                   reference=lambda: reverse_padded(before, lengths))
        if not torch.equal(x, before):
            raise fail(f"{name} changed its input x in place.",
                       "Build a new tensor (e.g. by indexing x with the reversed positions) and leave x unchanged: "
                       "the forward direction still needs the original order.")
        out = expect_tensor(out, f"The result of {name}",
                            "Return one tensor with the same shape as x, e.g. x indexed with the reversed positions.")
        if out.dtype != x.dtype:
            raise fail(f"The result has dtype {out.dtype}; x has {x.dtype}.",
                       "Reversing only reorders positions: index x itself, so the values keep their dtype.")
        if tuple(out.shape) != tuple(shape):
            raise fail(f"For x of shape {tuple(shape)} the result has shape {tuple(out.shape)}; expected the same "
                       "shape as x.", "Reversing only reorders positions along the time axis (dim 1).")
        ref = reverse_padded(x, lengths)
        if torch.equal(out, ref):
            continue
        real = _mask(lengths, shape[1])
        if len(shape) == 3:
            real = real[:, :, None].expand(shape)
        if torch.equal(out, x.flip(1)):
            raise fail("You reversed each whole padded row: the padding now comes first, so a backward RNN "
                       "would read padding before the real tokens (for every sequence shorter than the batch).",
                       "Reverse only the first lengths[b] positions of row b; keep the padding at the end.")
        if torch.equal(out[real], ref[real]):
            raise fail("The real tokens are reversed correctly, but the padded positions changed.",
                       "Leave positions t >= lengths[b] exactly as they are.")
        if torch.equal(out, x):
            raise fail("The result is x unchanged.", "Row b should read x[b, L-1], ..., x[b, 0] followed by its padding.")
        raise fail(f"The result differs from reversing within each length (x of shape {tuple(shape)}, lengths "
                   f"{lengths.tolist()}).",
                   "For t < L the new row holds x[b, L - 1 - t]; for t >= L it holds x[b, t]. Check the first and "
                   "last real position for an off-by-one.")
    # Gradients: the backward RNN's outputs are reversed back with this function, so they must flow through it.
    x = torch.randn(3, 5, 2, generator=gen).requires_grad_()
    lengths = torch.tensor([2, 5, 4])
    out, watch = run(reverse, x, lengths.clone(), what=f"{name}(x, lengths)")
    x_ref = x.detach().clone().requires_grad_()
    compare_gradients(out, [x], reverse_padded(x_ref, lengths), [x_ref], ["x"], watch, "the result")
    return (f"{name} reverses every row within its own length and leaves the padding in place, for ids and features, "
            "and passes gradients back to x.")


# ------------------------------------------------------------------------------------------------------
# The bidirectional encoder
# ------------------------------------------------------------------------------------------------------
def _reference_module(fwd: nn.GRU, bwd: nn.GRU) -> PaddedRNN:
    """PyTorch's packed bidirectional GRU holding copies of the two modules' weights (``weight_ih_l0`` of
    ``bwd`` is its ``weight_ih_l0_reverse``)."""
    ref = PaddedRNN("gru", fwd.input_size, fwd.hidden_size, bidirectional=True, impl="torch")
    state = {f"rnn.{k}": v for k, v in fwd.state_dict().items()}
    state |= {f"rnn.{k}_reverse": v for k, v in bwd.state_dict().items()}
    ref.load_state_dict(state)
    return ref


def _bidirectional_reference(fwd: nn.GRU, bwd: nn.GRU, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        return _reference_module(fwd, bwd)(x, lengths)


def _run(module, x):
    with torch.no_grad():
        return module(x)[0]


def _output_mistakes(fwd, bwd, x, lengths, ref_out):
    H = fwd.hidden_size
    real = _mask(lengths, x.size(1))[:, :, None].float()
    f_out = _run(fwd, x)
    b_aligned = ref_out[:, :, H:]
    b_flip = _run(bwd, x.flip(1))
    b_unaligned = _run(bwd, reverse_padded(x, lengths))
    yield Mistake("The backward direction read the padding first: you flipped each whole padded row, so for a "
                  "sequence shorter than the batch the backward RNN starts on padding, not on the last real token.",
                  "Reverse each sequence within its own length (your reverse function), run the backward RNN, then "
                  "reverse its outputs back the same way.",
                  lambda: torch.cat([f_out, b_flip.flip(1)], -1) * real)
    yield Mistake("The backward outputs are not re-aligned in time: position t holds the backward state of the "
                  "mirrored position L - 1 - t. [H_t; H_t] must describe the same token t.",
                  "After running the backward RNN on the reversed input, reverse its outputs back within each length.",
                  lambda: torch.cat([f_out, b_unaligned], -1) * real)
    yield Mistake("The backward direction read the padding first and its outputs are not re-aligned in time.",
                  "Reverse within each length (not the whole padded row), and reverse the outputs back.",
                  lambda: torch.cat([f_out, b_flip], -1) * real)
    yield Mistake("The two halves are concatenated in the order [backward; forward].",
                  "Concatenate [forward; backward] along the last dimension, as nn.GRU(bidirectional=True) does.",
                  lambda: torch.cat([b_aligned, f_out], -1) * real)
    yield Mistake("The backward half is the forward RNN run again: the backward RNN's weights are not used.",
                  "Run backward_rnn (not forward_rnn) over the reversed input.",
                  lambda: torch.cat([f_out, reverse_padded(_run(fwd, reverse_padded(x, lengths)), lengths)], -1) * real)


def _summary_mistakes(out, lengths, f_final, b_final):
    H = out.size(-1) // 2
    rows = torch.arange(out.size(0))
    f_last = out[rows, lengths - 1, :H]
    b_first = out[:, 0, H:]
    yield Mistake("The summary is the two RNNs' final states [h_n of forward_rnn; h_n of backward_rnn]: both have "
                  "read padding (the forward RNN after the real tokens, the backward one after the reversed sequence).",
                  "Take each direction where it has just read the whole sequence: the forward output at position "
                  "lengths[b] - 1 and the backward output at position 0.",
                  lambda: torch.cat([f_final, b_final], -1))
    yield Mistake("The forward half of the summary is the state at the last padded position (or h_n of the forward "
                  "RNN), which has read the padding after the real tokens.",
                  "Take the forward output at position lengths[b] - 1, the last real token of row b.",
                  lambda: torch.cat([f_final, b_first], -1))
    yield Mistake("The backward half of the summary is h_n of the backward RNN, which read the padding after "
                  "the reversed sequence.",
                  "The backward direction has read the whole sequence at position 0: take its output there.",
                  lambda: torch.cat([f_last, b_final], -1))
    yield Mistake("The backward half of the summary is taken at the last real token, where the backward RNN has "
                  "read only that one token.",
                  "The backward direction has read the whole sequence at position 0: take its output there.",
                  lambda: torch.cat([f_last, out[rows, lengths - 1, H:]], -1))
    yield Mistake("The summary is the output at the last padded position, outputs[:, -1], for both halves.",
                  "Forward half: position lengths[b] - 1; backward half: position 0.",
                  lambda: out[:, -1])
    yield Mistake("The summary halves are in the order [backward; forward].",
                  "Concatenate [forward summary; backward summary].", lambda: torch.cat([b_first, f_last], -1))


@checker
def check_bidirectional(encode) -> str:
    """Check ``encode(forward_rnn, backward_rnn, x, lengths) -> (outputs, summary)``.

    ``forward_rnn`` and ``backward_rnn`` are ``nn.GRU(D, H, batch_first=True)``; ``x`` (B, T, D) is
    right-padded with ``lengths`` (B,). ``outputs`` (B, T, 2H) is ``[forward; backward]`` at real positions
    and 0 at padding; ``summary`` (B, 2H) is ``[forward at L-1; backward at 0]``. Compared with PyTorch's
    packed bidirectional GRU holding the same weights, values and gradients.
    """
    gen = torch.Generator().manual_seed(76)
    name = getattr(encode, "__name__", "your function")
    for (B, T, D, H), lengths in (((4, 6, 3, 5), [6, 2, 4, 1]), ((3, 5, 2, 3), [3, 5, 1]), ((2, 4, 4, 2), [4, 4])):
        lengths = torch.tensor(lengths)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
            fwd, bwd = nn.GRU(D, H, batch_first=True), nn.GRU(D, H, batch_first=True)
        x = torch.randn(B, T, D, generator=gen)  # padding holds random values too: reading it shows
        with torch.no_grad():
            got = call(encode, fwd, bwd, x, lengths.clone(), what=f"{name}(forward_rnn, backward_rnn, x, lengths)",
                       allow=[fwd, bwd], forbid={"layer": FROM_TWO_RNNS, "cell": FROM_TWO_RNNS}, cpu_args=(3,),
                       reference=lambda: _bidirectional_reference(fwd, bwd, x, lengths))
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            raise fail(f"{name} returned {describe(got)}; expected (outputs, summary).",
                       "End with: return outputs, summary")
        out, summary = got
        hint = ("outputs is (batch, T, 2 * hidden): forward and backward states side by side at every position, "
                "concatenated with torch.cat([...], dim=-1).")
        expect_tensor(out, "outputs", hint)
        if out.shape == (B, T, H):
            raise fail(f"outputs has shape {(B, T, H)}: only one direction.", hint)
        expect_shape(out, (B, T, 2 * H), f"outputs (x of shape {(B, T, D)}, hidden_size={H})", hint)
        expect_shape(summary, (B, 2 * H), "summary",
                     "summary is (batch, 2 * hidden): [forward summary; backward summary].")
        ref_out, ref_summary = _bidirectional_reference(fwd, bwd, x, lengths)
        real = _mask(lengths, T)[:, :, None].float()
        if not close(out * real, ref_out):
            found = diagnose(out * real, _output_mistakes(fwd, bwd, x, lengths, ref_out))
            if found is not None:
                raise fail(found.message, found.hint)
            half = "forward" if not close(out[..., :H] * real, ref_out[..., :H]) else "backward"
            raise fail(f"The {half} half of outputs differs from a bidirectional GRU at the real positions "
                       f"(lengths {lengths.tolist()}).",
                       "Forward half: forward_rnn over x as it is. Backward half: backward_rnn over x reversed "
                       "within each length, its outputs reversed back.")
        if not torch.equal(out * (1 - real), torch.zeros_like(out)):
            raise fail("outputs is right at the real tokens but not 0 at the padded positions.",
                       "Multiply the outputs by a (batch, T, 1) mask that is 1 where t < lengths[b] and 0 elsewhere.")
        if not close(summary, ref_summary):
            f_final = _run(fwd, x)[:, -1]
            b_final = _run(bwd, reverse_padded(x, lengths))[:, -1]
            found = diagnose(summary, _summary_mistakes(ref_out, lengths, f_final, b_final))
            if found is not None:
                raise fail(found.message, found.hint)
            raise fail("outputs is right but the summary differs from [forward at the last real token; backward at "
                       "position 0].", "Index outputs at position lengths[b] - 1 for the forward half, at 0 for the "
                       "backward half.")

    # Gradients with respect to x and both RNNs' weights (of the last case), against the packed reference's.
    x_leaf = x.clone().requires_grad_()
    got, watch = run(encode, fwd, bwd, x_leaf, lengths.clone(), what=f"{name}(forward_rnn, backward_rnn, x, lengths)",
                     allow=[fwd, bwd])
    weights = list(fwd.parameters()) + list(bwd.parameters())
    names = [f"forward_rnn.{k}" for k, _ in fwd.named_parameters()] + [f"backward_rnn.{k}" for k, _ in
                                                                       bwd.named_parameters()]
    ref = _reference_module(fwd, bwd)
    ref_params = dict(ref.rnn.named_parameters())
    ref_leaves = [ref_params[k] for k, _ in fwd.named_parameters()]
    ref_leaves += [ref_params[f"{k}_reverse"] for k, _ in bwd.named_parameters()]
    ref_leaves.append(x.clone().requires_grad_())
    compare_gradients(tuple(got), weights + [x_leaf], ref(ref_leaves[-1], lengths), ref_leaves, names + ["x"], watch,
                      "outputs and summary", ("outputs", "summary"))
    return (f"{name} matches PyTorch's bidirectional GRU over packed sequences: outputs aligned in time, padding never "
            "read first and zero in the outputs, summary from the right positions, gradients flowing through both "
            "RNNs.")
