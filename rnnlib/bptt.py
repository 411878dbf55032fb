r"""Backpropagation through time written by hand, each backward step beside its forward step.

The model is the course's vanilla RNN with an output layer (row convention: a batch of row vectors):

.. math::

    A_t = X_t W_{xh} + H_{t-1} W_{hh} + b_h, \qquad H_t = \tanh(A_t), \qquad O_t = H_t W_{hq} + b_q

with ``X_t`` (B, D), ``H_t`` (B, H), ``W_xh`` (D, H), ``W_hh`` (H, H), ``b_h`` (H,), ``W_hq`` (H, Q),
``b_q`` (Q,), for ``t = 1 .. T``. The loss is the **mean** of the per-step losses over the steps and
the batch (PyTorch's ``reduction="mean"``, and the course's convention throughout):

* ``loss="cross_entropy"``: integer targets ``Y`` (T, B); :math:`L = \frac{1}{TB}\sum_{t,b} -\log
  \mathrm{softmax}(O_t)_{b, Y_{t,b}}`, so :math:`\partial L/\partial O_t = (\mathrm{softmax}(O_t) -
  \mathrm{onehot}(Y_t)) / (TB)`.
* ``loss="mse"``: float targets ``Y`` (T, B, Q); :math:`L = \frac{1}{TBQ}\sum (O - Y)^2` (the same as
  ``F.mse_loss(O, Y)``), so :math:`\partial L/\partial O_t = 2 (O_t - Y_t) / (TBQ)`.

Derivation in short. ``H_t`` reaches the loss along two paths: directly through ``O_t``, and through
``A_{t+1}`` into every later step. Writing :math:`dZ` for :math:`\partial L/\partial Z` (the total
gradient, same shape as ``Z``):

.. math::

    dH_T = dO_T W_{hq}^\top, \qquad
    dH_t = dO_t W_{hq}^\top + dA_{t+1} W_{hh}^\top, \qquad
    dA_t = dH_t \odot (1 - H_t^2)

and the parameter gradients collect one term per step,

.. math::

    dW_{hq} = \sum_t H_t^\top dO_t, \quad db_q = \sum_t \mathbf{1}^\top dO_t, \quad
    dW_{xh} = \sum_t X_t^\top dA_t, \quad dW_{hh} = \sum_t H_{t-1}^\top dA_t, \quad
    db_h = \sum_t \mathbf{1}^\top dA_t.

The term :math:`H_{t-1}^\top dA_t` is "the contribution of step t" to :math:`\partial L/\partial W_{hh}`;
:func:`bptt` returns all of them so the chapter can plot them. Unrolling the recursion shows that the
loss at step ``s`` reaches step ``t < s`` through the product of ``s - t`` factors
:math:`\mathrm{diag}(1 - H^2) W_{hh}^\top`: the source of vanishing and exploding gradients.

Truncated BPTT (``truncate=k``). Training on sequential batches carries the hidden state from one
chunk of ``k`` steps to the next but detaches it, so no gradient flows from chunk ``j + 1`` into chunk
``j``. Here that means: the state ``H_t`` at each boundary ``t = k, 2k, ... (< T)`` is detached before
it enters step ``t + 1``, i.e. the term :math:`dA_{t+1} W_{hh}^\top` is dropped from :math:`dH_t` at
those ``t``. The forward pass (and the loss) is unchanged; the gradient is biased, because every
dependency that crosses a boundary is missing. :func:`contribution_matrix` shows which terms go.

References: P. J. Werbos, "Backpropagation through time: what it does and how to do it",
Proc. IEEE 78(10), 1990. R. J. Williams and J. Peng, "An efficient gradient-based algorithm for
on-line training of recurrent network trajectories", Neural Computation 2(4), 1990 (truncation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional

import torch
from torch import Tensor, nn

__all__ = [
    "RNNParams", "ForwardCache", "BPTTResult", "rnn_step", "rnn_step_backward", "output_layer",
    "output_layer_backward", "forward", "bptt", "contribution_matrix",
]

_LOSSES = ("cross_entropy", "mse")


@dataclass
class RNNParams:
    """The five parameters of the RNN above, in the course's (row) convention."""

    W_xh: Tensor  # (D, H) input to hidden
    W_hh: Tensor  # (H, H) hidden to hidden
    b_h: Tensor  # (H,)   hidden bias
    W_hq: Tensor  # (H, Q) hidden to output
    b_q: Tensor  # (Q,)   output bias

    @classmethod
    def init(
        cls,
        D: int,
        H: int,
        Q: int,
        generator: Optional[torch.Generator] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> "RNNParams":
        """Uniform(-1/sqrt(H), 1/sqrt(H)) entries, the same scheme as ``nn.RNN`` and ``nn.Linear(H, Q)``."""
        dtype = dtype or torch.get_default_dtype()
        bound = 1.0 / math.sqrt(H)

        def uniform(*shape: int) -> Tensor:
            return (torch.rand(*shape, generator=generator, dtype=dtype) * 2 - 1) * bound

        return cls(W_xh=uniform(D, H), W_hh=uniform(H, H), b_h=uniform(H), W_hq=uniform(H, Q), b_q=uniform(Q))

    @property
    def sizes(self) -> tuple[int, int, int]:
        """``(D, H, Q)``."""
        return self.W_xh.shape[0], self.W_hh.shape[0], self.W_hq.shape[1]

    def as_dict(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_torch(cls, rnn: nn.RNN, linear: nn.Linear) -> "RNNParams":
        """Copy a one-layer tanh ``nn.RNN`` and its output ``nn.Linear`` (PyTorch stores weights transposed).

        ``weight_ih_l0`` is ``W_xh.T``, ``weight_hh_l0`` is ``W_hh.T``, ``linear.weight`` is ``W_hq.T``,
        and ``nn.RNN`` has two hidden biases whose sum is ``b_h``.
        """
        if rnn.num_layers != 1 or rnn.bidirectional or rnn.nonlinearity != "tanh":
            raise ValueError(
                "from_torch expects nn.RNN(num_layers=1, nonlinearity='tanh', bidirectional=False), got "
                f"num_layers={rnn.num_layers}, nonlinearity={rnn.nonlinearity!r}, bidirectional={rnn.bidirectional}"
            )
        if getattr(rnn, "proj_size", 0):
            raise ValueError("from_torch does not support nn.RNN with proj_size")
        if linear.in_features != rnn.hidden_size:
            raise ValueError(
                f"linear.in_features ({linear.in_features}) must equal rnn.hidden_size ({rnn.hidden_size})"
            )
        with torch.no_grad():
            W_ih, W_hh = rnn.weight_ih_l0, rnn.weight_hh_l0
            b_h = rnn.bias_ih_l0 + rnn.bias_hh_l0 if rnn.bias else torch.zeros_like(W_hh[0])
            b_q = linear.bias if linear.bias is not None else torch.zeros_like(linear.weight[:, 0])
            return cls(
                W_xh=W_ih.T.clone(), W_hh=W_hh.T.clone(), b_h=b_h.clone(),
                W_hq=linear.weight.T.clone(), b_q=b_q.clone(),
            )

    def to_torch(self) -> tuple[nn.RNN, nn.Linear]:
        """An ``nn.RNN`` + ``nn.Linear`` pair that computes the same ``O`` (``bias_hh_l0`` is set to zero)."""
        D, H, Q = self.sizes
        dtype = self.W_hh.dtype
        rnn = nn.RNN(D, H, nonlinearity="tanh", dtype=dtype)
        linear = nn.Linear(H, Q, dtype=dtype)
        with torch.no_grad():
            rnn.weight_ih_l0.copy_(self.W_xh.T)
            rnn.weight_hh_l0.copy_(self.W_hh.T)
            rnn.bias_ih_l0.copy_(self.b_h)
            rnn.bias_hh_l0.zero_()
            linear.weight.copy_(self.W_hq.T)
            linear.bias.copy_(self.b_q)
        return rnn, linear


@dataclass
class ForwardCache:
    """What the backward pass needs from the forward pass."""

    X: Tensor  # (T, B, D) inputs
    H: Tensor  # (T+1, B, H) states, H[0] = H_0
    O: Tensor  # (T, B, Q) outputs


@dataclass
class BPTTResult:
    """The loss and its gradients from :func:`bptt`. Keys of ``grads`` are the fields of :class:`RNNParams`."""

    loss: Tensor  # () scalar
    grads: dict[str, Tensor]  # name -> same shape as the parameter
    dH: Tensor  # (T, B, H) total dL/dH_t for t = 1..T (dH[0] is for H_1)
    W_hh_per_step: Tensor  # (T, H, H) H_{t-1}^T dA_t; sums to grads["W_hh"]
    dH0: Tensor  # (B, H) dL/dH_0


def _check_inputs(X: Tensor, params: RNNParams, H0: Optional[Tensor]) -> None:
    D, H, Q = params.sizes
    if X.dim() != 3 or X.shape[-1] != D:
        raise ValueError(f"expected X of shape (seq_len, batch, {D}), got {tuple(X.shape)}")
    if X.shape[0] == 0:
        raise ValueError("expected a sequence of at least one step, got seq_len 0")
    expected = {"W_xh": (D, H), "W_hh": (H, H), "b_h": (H,), "W_hq": (H, Q), "b_q": (Q,)}
    for name, shape in expected.items():
        if tuple(getattr(params, name).shape) != shape:
            raise ValueError(f"expected {name} of shape {shape}, got {tuple(getattr(params, name).shape)}")
    if H0 is not None and tuple(H0.shape) != (X.shape[1], H):
        raise ValueError(f"expected H0 of shape ({X.shape[1]}, {H}), got {tuple(H0.shape)}")


# Each operation of the model, and right below it the backward of that operation (micrograd's layout).
# A backward function takes the gradient of the loss with respect to the operation's output and the
# tensors its forward saw, and returns the gradients with respect to its inputs and parameters.


def rnn_step(x_t: Tensor, h_prev: Tensor, params: RNNParams) -> Tensor:
    """Forward of one step: A_t = X_t W_xh + H_{t-1} W_hh + b_h, H_t = tanh(A_t). Shapes (B, D), (B, H) -> (B, H)."""
    return torch.tanh(x_t @ params.W_xh + h_prev @ params.W_hh + params.b_h)


def rnn_step_backward(
    dh_t: Tensor, x_t: Tensor, h_prev: Tensor, h_t: Tensor, params: RNNParams
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Backward of :func:`rnn_step`, given the total dL/dH_t (B, H).

    Returns ``(dH_prev, dW_xh_t, dW_hh_t, db_h_t)``: the step's share of each gradient. ``dH_prev``
    is only the part that flows through this step's recurrence; the caller adds H_{t-1}'s direct term.
    """
    dA = dh_t * (1 - h_t**2)  # tanh'(A_t) = 1 - H_t^2                       (B, H)
    dh_prev = dA @ params.W_hh.T  # A_t depends on H_{t-1} through W_hh       (B, H)
    return dh_prev, x_t.T @ dA, h_prev.T @ dA, dA.sum(dim=0)


def output_layer(H: Tensor, params: RNNParams) -> Tensor:
    """Forward of the output layer at every step: O_t = H_t W_hq + b_q. Shapes (T, B, H) -> (T, B, Q)."""
    return H @ params.W_hq + params.b_q


def output_layer_backward(dO: Tensor, H: Tensor, params: RNNParams) -> tuple[Tensor, Tensor, Tensor]:
    """Backward of :func:`output_layer`: ``(dH_direct, dW_hq, db_q)`` from dL/dO (T, B, Q).

    ``dH_direct`` (T, B, H) is the direct term of each dL/dH_t; the weight gradients sum over steps and batch.
    """
    return dO @ params.W_hq.T, torch.einsum("tbh,tbq->hq", H, dO), dO.sum(dim=(0, 1))


@torch.no_grad()
def forward(X: Tensor, params: RNNParams, H0: Optional[Tensor] = None) -> tuple[Tensor, Tensor, ForwardCache]:
    """Run the RNN over ``X`` (T, B, D) without autograd.

    Returns ``O`` (T, B, Q), ``H`` (T+1, B, H) with ``H[0] = H0`` (zeros when ``H0`` is None), and the cache.
    """
    _check_inputs(X, params, H0)
    T, B, _ = X.shape
    H = X.new_zeros(T + 1, B, params.W_hh.shape[0])  # (T+1, B, H)
    if H0 is not None:
        H[0] = H0
    for t, x_t in enumerate(X.unbind(0), start=1):
        H[t] = rnn_step(x_t, H[t - 1], params)  # (B, H)
    O = output_layer(H[1:], params)  # (T, B, Q)
    return O, H, ForwardCache(X=X, H=H, O=O)


def _loss_and_dO(O: Tensor, Y: Tensor, loss: str) -> tuple[Tensor, Tensor]:
    """The mean loss over the sequence and its gradient with respect to every ``O_t``."""
    T, B, Q = O.shape
    if loss == "cross_entropy":
        if Y.shape != (T, B) or Y.dtype != torch.long:
            raise ValueError(
                f"cross_entropy expects integer targets Y of shape ({T}, {B}), got {tuple(Y.shape)} {Y.dtype}"
            )
        log_p = O - torch.logsumexp(O, dim=-1, keepdim=True)  # (T, B, Q) log softmax
        value = -log_p.gather(-1, Y.unsqueeze(-1)).sum() / (T * B)
        # d/dO of -log softmax(O)[y] is softmax(O) - onehot(y)
        dO = torch.exp(log_p)
        dO.scatter_add_(-1, Y.unsqueeze(-1), -torch.ones_like(dO[..., :1]))
        return value, dO / (T * B)
    if loss == "mse":
        if Y.shape != O.shape:
            raise ValueError(f"mse expects float targets Y of shape ({T}, {B}, {Q}), got {tuple(Y.shape)}")
        diff = O - Y
        n = diff.numel()
        return (diff**2).sum() / n, 2 * diff / n
    raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")


def _is_boundary(t: int, truncate: Optional[int], T: int) -> bool:
    """True when H_t is detached before entering step t + 1."""
    return truncate is not None and 0 < t < T and t % truncate == 0


def _check_truncate(truncate: Optional[int]) -> None:
    if truncate is not None and (not isinstance(truncate, int) or truncate < 1):
        raise ValueError(f"truncate must be None or a positive int (chunk length), got {truncate!r}")


@torch.no_grad()
def bptt(
    X: Tensor,
    Y: Tensor,
    params: RNNParams,
    H0: Optional[Tensor] = None,
    loss: str = "cross_entropy",
    truncate: Optional[int] = None,
) -> BPTTResult:
    """Loss and gradients of the RNN above by backpropagation through time, without autograd.

    ``X`` (T, B, D); ``Y`` (T, B) long for ``"cross_entropy"`` or (T, B, Q) float for ``"mse"``;
    ``H0`` (B, H) or None; ``truncate=k`` detaches the state at ``t = k, 2k, ...`` (see the module docstring).
    """
    if loss not in _LOSSES:
        raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")
    _check_truncate(truncate)
    O, H, _ = forward(X, params, H0)
    value, dO = _loss_and_dO(O, Y, loss)  # dO: (T, B, Q)
    T = X.shape[0]

    # Backward in the reverse order of the forward: first the output layer, then the steps T .. 1.
    dH_direct, dW_hq, db_q = output_layer_backward(dO, H[1:], params)  # dH_direct: (T, B, H)
    grads = {"W_hq": dW_hq, "b_q": db_q, "W_xh": torch.zeros_like(params.W_xh), "b_h": torch.zeros_like(params.b_h)}
    dH = torch.zeros_like(H[1:])  # (T, B, H) total dL/dH_t
    W_hh_per_step = H.new_zeros(T, *params.W_hh.shape)  # (T, H, H)
    dH_later = torch.zeros_like(H[0])  # what flows into H_t from step t + 1 (none into H_T)
    for t in range(T, 0, -1):
        if _is_boundary(t, truncate, T):  # H_t was detached before step t + 1: that path is cut
            dH_later = torch.zeros_like(dH_later)
        dH[t - 1] = dH_direct[t - 1] + dH_later  # the two paths from H_t to the loss
        dH_later, dW_xh_t, W_hh_per_step[t - 1], db_h_t = rnn_step_backward(
            dH[t - 1], X[t - 1], H[t - 1], H[t], params
        )
        grads["W_xh"] += dW_xh_t
        grads["b_h"] += db_h_t
    grads["W_hh"] = W_hh_per_step.sum(dim=0)
    dH0 = dH_later  # (B, H): H_0 reaches the loss only through step 1
    grads = {name: grads[name] for name in params.as_dict()}
    return BPTTResult(loss=value, grads=grads, dH=dH, W_hh_per_step=W_hh_per_step, dH0=dH0)


@torch.no_grad()
def contribution_matrix(
    X: Tensor,
    Y: Tensor,
    params: RNNParams,
    H0: Optional[Tensor] = None,
    loss: str = "cross_entropy",
    truncate: Optional[int] = None,
) -> Tensor:
    r"""Who contributes what to :math:`\partial L/\partial W_{hh}`: a (T, T) matrix of Frobenius norms.

    Entry ``[s-1, t-1]`` is the norm of the part of :math:`\partial \ell_s / \partial W_{hh}` that is
    collected at step ``t`` (:math:`H_{t-1}^\top dA_t` when only the loss at step ``s`` is backpropagated).
    It is zero above the diagonal (step ``t > s`` cannot affect :math:`\ell_s`) and, with ``truncate=k``,
    wherever ``s`` and ``t`` lie in different chunks. Summing matrices (not norms) over ``s`` gives the
    per-step contributions of :func:`bptt`; grouping by the lag ``s - t`` shows that truncation removes
    long-range terms. Costs O(T^2) backward steps: meant for short sequences in plots.
    """
    if loss not in _LOSSES:
        raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")
    _check_truncate(truncate)
    O, H, _ = forward(X, params, H0)
    _, dO = _loss_and_dO(O, Y, loss)
    T = X.shape[0]
    norms = H.new_zeros(T, T)
    for s in range(1, T + 1):
        dH_t = dO[s - 1] @ params.W_hq.T  # the loss at step s alone
        for t in range(s, 0, -1):
            dH_t, _, dW_hh_t, _ = rnn_step_backward(dH_t, X[t - 1], H[t - 1], H[t], params)
            norms[s - 1, t - 1] = torch.linalg.matrix_norm(dW_hh_t)
            if _is_boundary(t - 1, truncate, T):
                break
    return norms
