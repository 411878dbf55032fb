r"""Memory of a training step: measure it, and cut it on long sequences.

Measuring. Backpropagation needs the intermediate results of the forward pass, so autograd keeps them
(the *saved tensors*) from the forward pass until the backward pass has used them. Two ways to count them:

* :func:`saved_tensor_bytes` asks autograd itself: ``torch.autograd.graph.saved_tensors_hooks`` sees every
  tensor saved for backward, and each underlying storage is counted once (parameters excluded);
* :class:`rnnlib.profiling.AllocationTracker` asks the allocator: ``torch.profiler`` records every
  allocation and free of PyTorch's CPU (and CUDA) allocator, and the tracker turns them into the most
  memory allocated inside a block that was live at one moment (``peak``). It counts tensors only, byte
  for byte, so (unlike the process's resident memory) the numbers repeat from run to run, and it also
  sees what the backward pass allocates.

Cutting. For a recurrent model read over :math:`T` steps, the saved tensors grow in proportion to
:math:`T`. :func:`segmented_lm_backward` computes the gradient of the mean next-token cross-entropy

.. math:: L = \frac{1}{BT} \sum_{b=1}^{B} \sum_{t=1}^{T} \ell_{b,t}

over segments of ``segment`` steps, in one of three ways:

* ``"full"``: one forward pass over all :math:`T` steps, then one backward pass (everything saved at once);
* ``"truncated"``: truncated BPTT, as ``LMLoss(carry_state=True)`` does between batches: forward and
  backward one segment at a time, the state carried to the next segment but detached, so gradients
  never cross a segment boundary. Only one segment is saved at a time, but the gradient is not that of
  :math:`L`: the terms that cross a boundary are missing;
* ``"checkpoint"``: activation checkpointing (Chen et al. 2016; Gruslys et al. 2016 for BPTT) with
  ``torch.utils.checkpoint``: each segment's forward pass keeps only its inputs (token ids and the state
  it starts from); the backward pass runs the segment's forward again to rebuild what it needs. The
  gradient is that of :math:`L` (up to rounding), at the price of a second forward pass.

With :math:`m` the bytes one time step of the batch keeps for backward and :math:`b` those of a state,
the memory held at once is about :math:`T m` (full), :math:`s m` (truncated) and
:math:`(T/s)\, b + s m` (checkpoint).

References: T. Chen, B. Xu, C. Zhang and C. Guestrin, "Training deep nets with sublinear memory cost",
arXiv:1604.06174 (2016); A. Gruslys, R. Munos, I. Danihelka, M. Lanctot and A. Graves, "Memory-efficient
backpropagation through time", NIPS 2016; R. J. Williams and J. Peng, "An efficient gradient-based
algorithm for on-line training of recurrent network trajectories", Neural Computation 2(4), 1990.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["saved_tensor_bytes", "segmented_lm_backward", "tensor_bytes"]


def tensor_bytes(t: Tensor) -> int:
    """Bytes of the memory ``t`` holds: for a sparse COO tensor its indices and values, else its storage."""
    if t.is_sparse:
        return tensor_bytes(t._indices()) + tensor_bytes(t._values())
    return t.untyped_storage().nbytes()


def saved_tensor_bytes(fn: Callable[[], object], exclude: Iterable[Tensor] = ()) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn()`` runs (each storage once).

    Storages of the tensors in ``exclude`` (e.g. ``model.parameters()``, which exist anyway) are not
    counted. Tensors saved inside ``torch.utils.checkpoint`` regions are handled by checkpoint's own hooks
    and are not seen: measure those with :class:`rnnlib.profiling.AllocationTracker`.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    sizes: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            sizes[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(sizes.values())


def segmented_lm_backward(model: nn.Module, X: Tensor, Y: Tensor, segment: Optional[int] = None,
                          method: str = "full") -> float:
    """Backpropagate the mean next-token cross-entropy of ``model`` on ``(X, Y)``; return its value.

    ``model(x, state) -> (logits (B, t, V), state)`` as :class:`rnnlib.models.CharLM`; ``X`` and ``Y`` are
    token ids ``(B, T)``. ``method`` is ``"full"``, ``"truncated"`` or ``"checkpoint"`` (see the module
    docstring); the last two work on segments of ``segment`` steps (the last may be shorter). Gradients
    are accumulated into ``.grad`` as ``loss.backward()`` does; the optimizer step is the caller's.
    """
    if method not in ("full", "truncated", "checkpoint"):
        raise ValueError(f"method must be 'full', 'truncated' or 'checkpoint', got {method!r}")
    if X.dim() != 2 or X.shape != Y.shape:
        raise ValueError(f"expected token ids X and targets Y of the same shape (B, T), got {tuple(X.shape)} "
                         f"and {tuple(Y.shape)}")
    B, T = X.shape
    if method == "full":
        segment = T
    elif not isinstance(segment, int) or isinstance(segment, bool) or segment < 1:
        raise ValueError(f"method={method!r} needs segment, a positive number of time steps, got {segment!r}")

    def segment_loss(x: Tensor, y: Tensor, *state: Tensor):
        # (h, c) for an LSTM, a single tensor h for an RNN or a GRU; nothing before the first segment.
        logits, new_state = model(x, None if not state else state[0] if len(state) == 1 else state)
        # Summed over the segment and divided by B*T: the segments' losses add up to the mean L.
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum") / (B * T)
        return (loss, *new_state) if isinstance(new_state, tuple) else (loss, new_state)

    total, state, losses = 0.0, (), []
    for start in range(0, T, segment):
        x, y = X[:, start:start + segment], Y[:, start:start + segment]
        if method == "checkpoint":
            loss, *state = checkpoint(segment_loss, x, y, *state, use_reentrant=False)
        else:
            loss, *state = segment_loss(x, y, *state)
        if method == "truncated":
            loss.backward()
            state = [s.detach() for s in state]
        else:
            losses.append(loss)
        total += float(loss.detach())
    if losses:
        torch.stack(losses).sum().backward()
    return total
