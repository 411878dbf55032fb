r"""Linear recurrences :math:`h_t = a_t \odot h_{t-1} + b_t` and three ways to evaluate them: a loop, and scans.

A nonlinear recurrence such as the GRU's, :math:`h_t = f(x_t, h_{t-1})`, can only be evaluated one step
after another. A *linear* recurrence whose coefficients do not depend on the state,

.. math::
    h_t = a_t \odot h_{t-1} + b_t, \qquad t = 1, \dots, T,

has a closed form, :math:`h_t = A_t \odot h_0 + B_t` with :math:`A_t = \prod_{s \le t} a_s` and
:math:`B_t = \sum_{s \le t} \big(\prod_{s < r \le t} a_r\big) \odot b_s`, and can be evaluated in
:math:`O(\log T)` sequential steps. The reason is that one step is an affine map
:math:`h \mapsto a h + b`, a pair :math:`(a, b)`, and composing two of them gives another pair,

.. math::
    (a_1, b_1) \bullet (a_2, b_2) = (a_2 \odot a_1,\; a_2 \odot b_1 + b_2)
    \qquad \text{(first step 1, then step 2)},

an associative operation with the identity :math:`(1, 0)`. The prefix compositions
:math:`(A_t, B_t) = (a_1, b_1) \bullet \dots \bullet (a_t, b_t)` are therefore a *scan* (prefix sum) under
:math:`\bullet`, and any bracketing gives the same result, so independent pairs can be combined at the
same time.

* :func:`linear_recurrence`: the reference, a Python loop over time (:math:`T` sequential steps).
* :func:`scan_doubling`: recursive doubling (Hillis & Steele 1986; the Kogge-Stone adder): at round
  :math:`k` every position combines with the one :math:`2^k` steps earlier. Depth :math:`\lceil\log_2 T\rceil`
  rounds, work :math:`O(T \log T)` combines.
* :func:`scan_tree`: the work-efficient scan (Ladner & Fischer 1980; the recursive form of Blelloch's
  1990 up-sweep/down-sweep): combine neighbouring pairs, scan the :math:`T/2` pair results, then fill in
  the positions in between. Depth about :math:`2\log_2 T` rounds, work :math:`O(T)` combines.
* :func:`log_scan`: the log-space form for positive coefficients (Heinsen 2023), two library scans:
  with :math:`a^*_t = \sum_{s \le t} \log a_s`,

  .. math::
      B_t = \exp\Big(a^*_t + \log \sum_{s \le t} \exp(\log b_s - a^*_s)\Big),
      \qquad h_t = e^{a^*_t} h_0 + B_t ,

  computed with ``torch.cumsum`` and ``torch.logcumsumexp``. Products of many gates become sums of logs,
  so nothing underflows, but :math:`a^*_t` grows like :math:`t` and the final addition cancels two large
  numbers: the relative error grows with :math:`|a^*_t|` times the machine epsilon (measured in chapter 7.6).
  ``chunk_size=C`` restarts the sums every :math:`C` steps, which bounds :math:`|a^*_t|`, and joins the
  chunks with a short scan over their last states. It needs :math:`a_t > 0` and :math:`b_t > 0`;
  :math:`h_0` may have any sign (it stays in linear space).

:func:`count_ops` counts the operators a function dispatches and the elements they write, which is how
the chapter measures depth and work instead of asserting them; :func:`scan_pattern` lists which positions
each round of the two scans combines (for drawing them).

Shapes: ``a`` and ``b`` are ``(..., T, H)`` with time on ``dim`` (default ``-2``), ``h0`` is the same
without the time dimension (``(..., H)``), and every function returns all states ``h_1 ... h_T`` in the
shape of ``b``.

References: Hillis & Steele, "Data parallel algorithms" (1986); Ladner & Fischer, "Parallel prefix
computation" (1980); Blelloch, "Prefix sums and their applications" (1990); Martin & Cundy, "Parallelizing
linear recurrent neural nets over sequence length" (2018); Heinsen, "Efficient parallelization of a
ubiquitous sequential computation" (2023).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

__all__ = ["combine", "linear_recurrence", "scan_doubling", "scan_tree", "log_scan", "count_ops", "OpCount",
           "scan_pattern"]


# ------------------------------------------------------------------------------------------------------
# Checks and layout
# ------------------------------------------------------------------------------------------------------
def _check(a: Tensor, b: Tensor, h0: Optional[Tensor], dim: int, names=("a", "b")) -> int:
    """Validate the arguments; return ``dim`` as a non-negative index."""
    for name, x in zip(names, (a, b)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}; convert with .float()")
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape (..., T, H), got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    if a.dim() == 0:
        raise ValueError(f"{names[0]} must have a time dimension, got a 0-d tensor")
    if not -a.dim() <= dim < a.dim():
        raise ValueError(f"dim={dim} is out of range for tensors with {a.dim()} dimensions")
    dim = dim % a.dim()
    if a.size(dim) == 0:
        raise ValueError(f"the sequence is empty: {names[0]} has size 0 along the time dimension dim={dim}")
    if h0 is not None:
        expected = a.shape[:dim] + a.shape[dim + 1:]
        if not isinstance(h0, Tensor) or h0.shape != expected:
            got = tuple(h0.shape) if isinstance(h0, Tensor) else type(h0).__name__
            raise ValueError(f"h0 must have the shape of one time step, {tuple(expected)} (the inputs' shape "
                             f"{tuple(a.shape)} without dim={dim}), got {got}")
    return dim


def combine(first: tuple[Tensor, Tensor], second: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    r"""The composition of two steps: apply ``first``, then ``second``.

    :math:`(a_1, b_1) \bullet (a_2, b_2) = (a_2 a_1,\; a_2 b_1 + b_2)`, since
    :math:`a_2 (a_1 h + b_1) + b_2 = (a_2 a_1) h + (a_2 b_1 + b_2)`.
    """
    a1, b1 = first
    a2, b2 = second
    return a2 * a1, a2 * b1 + b2


# ------------------------------------------------------------------------------------------------------
# The reference: one step after another
# ------------------------------------------------------------------------------------------------------
def linear_recurrence(a: Tensor, b: Tensor, h0: Optional[Tensor] = None, dim: int = -2) -> Tensor:
    """``h_t = a_t * h_{t-1} + b_t`` for t = 1..T, one step at a time (T sequential steps); ``h0`` = 0 if None."""
    dim = _check(a, b, h0, dim)
    h = torch.zeros_like(b.select(dim, 0)) if h0 is None else h0
    states = []
    for a_t, b_t in zip(a.unbind(dim), b.unbind(dim)):  # unbind: indexing a[t] makes backward quadratic in T
        h = a_t * h + b_t
        states.append(h)
    return torch.stack(states, dim)


# ------------------------------------------------------------------------------------------------------
# Parallel scans: O(log T) rounds, each a few whole-tensor operations
# ------------------------------------------------------------------------------------------------------
def scan_doubling(a: Tensor, b: Tensor, h0: Optional[Tensor] = None, dim: int = -2) -> Tensor:
    """The recurrence by recursive doubling: ceil(log2 T) rounds, O(T log T) combines in all.

    After the round with offset ``d``, position t holds the composition of the steps ``t - 2d + 1 .. t``
    (or ``1 .. t`` near the start); positions with no partner ``d`` steps back combine with the
    identity (1, 0).
    """
    dim = _check(a, b, h0, dim)
    A, B = a.movedim(dim, 0), b.movedim(dim, 0)  # (T, ...): time first, so A[:d] is the first d steps
    T, d = A.size(0), 1
    while d < T:
        A_prev = torch.cat([torch.ones_like(A[:d]), A[:-d]])   # the composition ending d steps earlier
        B_prev = torch.cat([torch.zeros_like(B[:d]), B[:-d]])
        A, B = combine((A_prev, B_prev), (A, B))
        d *= 2
    h = B if h0 is None else A * h0 + B  # h_t = A_t h_0 + B_t
    return h.movedim(0, dim)


def _tree(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Prefix compositions (A_t, B_t) of time-first (T, ...) coefficients, work-efficiently."""
    T = a.size(0)
    if T == 1:
        return a, b
    # 1. Combine neighbours (0, 1), (2, 3), ...: T // 2 pairs, all at once.
    n = T // 2
    pa, pb = combine((a[0:2 * n:2], b[0:2 * n:2]), (a[1:2 * n:2], b[1:2 * n:2]))
    # 2. Scan the pairs (half the length): pair k ends at step 2k + 1, so this gives the odd positions.
    A_odd, B_odd = _tree(pa, pb)
    # 3. Each even position 2k > 0 is the odd prefix just before it followed by its own step.
    A_even, B_even = combine((A_odd[: (T - 1) // 2], B_odd[: (T - 1) // 2]), (a[2::2], b[2::2]))
    A_even, B_even = torch.cat([a[:1], A_even]), torch.cat([b[:1], B_even])  # position 0 is its own prefix
    # 4. Interleave even and odd positions back into time order.
    A = torch.stack([A_even[:n], A_odd], 1).flatten(0, 1)
    B = torch.stack([B_even[:n], B_odd], 1).flatten(0, 1)
    if T % 2:  # an odd length leaves the last (even) position over
        A, B = torch.cat([A, A_even[n:]]), torch.cat([B, B_even[n:]])
    return A, B


def scan_tree(a: Tensor, b: Tensor, h0: Optional[Tensor] = None, dim: int = -2) -> Tensor:
    """The recurrence by the work-efficient scan: about 2 log2 T rounds, O(T) combines in all.

    Combine neighbouring steps in pairs, scan the sequence of pairs (half as long, recursively), then
    compute the positions in between from the pair prefixes. The recursion is Blelloch's up-sweep
    (going down) and down-sweep (coming back up), written recursively.
    """
    dim = _check(a, b, h0, dim)
    A, B = _tree(a.movedim(dim, 0), b.movedim(dim, 0))
    h = B if h0 is None else A * h0 + B
    return h.movedim(0, dim)


def _log_scan(log_a: Tensor, log_b: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """(A_t, B_t) of the closed form from the logs, along ``dim``, by two library scans."""
    a_star = torch.cumsum(log_a, dim)                                       # log A_t = sum_{s<=t} log a_s
    log_B = a_star + torch.logcumsumexp(log_b - a_star, dim)                # log B_t
    return torch.exp(a_star), torch.exp(log_B)


def log_scan(log_a: Tensor, log_b: Tensor, h0: Optional[Tensor] = None, dim: int = -2,
             chunk_size: Optional[int] = None) -> Tensor:
    """The recurrence for positive coefficients, from their logarithms ``log_a``, ``log_b``: two library scans.

    ``log_a`` must be finite (a_t > 0); ``log_b`` may hold ``-inf`` (b_t = 0). ``h0`` is given in linear
    space and may have any sign. Returns ``h`` (not its logarithm).

    ``chunk_size``: if given, the sums of logs restart every ``chunk_size`` steps, which bounds
    :math:`|a^*_t|` and with it the cancellation error; the states entering each chunk then follow from the
    chunk ends by a short linear recurrence (``T / chunk_size`` steps, evaluated with :func:`scan_tree`).
    """
    dim = _check(log_a, log_b, h0, dim, names=("log_a", "log_b"))
    if not bool(torch.isfinite(log_a).all()):
        raise ValueError("log_a must be finite (every a_t > 0). Compute log(1 - sigmoid(k)) as -softplus(k) "
                         "and log(sigmoid(k)) as -softplus(-k), which never round to log(0).")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    T = log_a.size(dim)
    if chunk_size is None or chunk_size >= T:
        A, B = _log_scan(log_a, log_b, dim)
        return B if h0 is None else A * h0.unsqueeze(dim) + B               # h_t = A_t h_0 + B_t
    # Chunks: pad time to a multiple of C with steps that change nothing (a = 1, b = 0), then (n, C, ...).
    C = chunk_size
    n = -(-T // C)
    la, lb = log_a.movedim(dim, 0), log_b.movedim(dim, 0)                  # (T, ...)
    pad = n * C - T
    if pad:
        la = torch.cat([la, la.new_zeros((pad,) + la.shape[1:])])
        lb = torch.cat([lb, lb.new_full((pad,) + lb.shape[1:], -math.inf)])
    A, B = _log_scan(la.reshape((n, C) + la.shape[1:]), lb.reshape((n, C) + lb.shape[1:]), 1)  # within chunks
    # The state entering chunk c: one step per chunk, (A, B) of the chunk's last position.
    h_start = torch.zeros_like(B[0, 0]) if h0 is None else h0              # (...): the shape of one step
    ends = scan_tree(A[:, -1], B[:, -1], h_start, dim=0)                   # state after each chunk (n, ...)
    starts = torch.cat([h_start[None], ends[:-1]])                          # state before each chunk (n, ...)
    h = A * starts[:, None] + B                                             # (n, C, ...)
    return h.reshape((n * C,) + h.shape[2:])[:T].movedim(0, dim)


# ------------------------------------------------------------------------------------------------------
# Measuring depth and work
# ------------------------------------------------------------------------------------------------------
@dataclass
class OpCount:
    """What a call dispatched: ``calls`` operators (kernel launches: a proxy for depth when each runs in
    parallel over its elements) writing ``elements`` numbers in all (a proxy for work)."""

    calls: int
    elements: int


_FREE = {"view", "_unsafe_view", "expand", "t", "transpose", "permute", "select", "slice", "unbind", "unsqueeze",
         "squeeze", "movedim", "alias", "detach", "as_strided", "split", "split_with_sizes", "chunk", "unflatten",
         "flatten", "reshape", "lift_fresh", "_to_copy", "empty_like", "empty", "zeros_like", "ones_like",
         "zeros", "ones", "full", "fill", "scalar_tensor", "_local_scalar_dense", "isfinite", "all", "is_nonzero"}


def count_ops(fn: Callable, *args, **kwargs) -> tuple[object, OpCount]:
    """Run ``fn(*args, **kwargs)`` and count the arithmetic operators it dispatches, and their outputs.

    Operators that only re-view memory or create constants (``view``, ``select``, ``zeros_like``,
    ``isfinite`` ...) are not counted: they are bookkeeping, not steps of the computation. Returns
    ``(result, OpCount)``. Counts the forward computation only (run it under ``torch.no_grad()`` or not;
    backward is not included).
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    count = OpCount(0, 0)

    class _Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.__name__.split(".")[0] not in _FREE:
                count.calls += 1
                outs = out if isinstance(out, (tuple, list)) else [out]
                count.elements += sum(o.numel() for o in outs if isinstance(o, Tensor))
            return out

    with _Counter():
        result = fn(*args, **kwargs)
    return result, count


def scan_pattern(kind: str, T: int) -> list[list[tuple[int, int]]]:
    """The combines of each round of a scan over positions 0..T-1: ``rounds[r]`` holds ``(src, dst)`` pairs,
    meaning "position dst becomes (what src holds) followed by (what dst holds)", all at once.

    ``"doubling"``: round r pairs every t >= 2^r with t - 2^r, as :func:`scan_doubling` does.
    ``"tree"``: the positions :func:`scan_tree` combines at each level of its recursion, the pair reduction
    on the way down (up-sweep) and the fill-in on the way back (down-sweep).
    """
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    if kind == "doubling":
        rounds, d = [], 1
        while d < T:
            rounds.append([(t - d, t) for t in range(d, T)])
            d *= 2
        return rounds
    if kind != "tree":
        raise ValueError(f"kind must be 'doubling' or 'tree', got {kind!r}")
    up, down, positions = [], [], list(range(T))  # positions: where the current level's elements live
    while len(positions) > 1:
        n = len(positions)
        up.append([(positions[2 * k], positions[2 * k + 1]) for k in range(n // 2)])      # pair reduction
        down.append([(positions[2 * k - 1], positions[2 * k]) for k in range(1, (n + 1) // 2)])  # fill-in
        positions = positions[1::2]                                                     # the pairs' last steps
    return up + [r for r in reversed(down) if r]
