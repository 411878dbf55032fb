r"""How gradients travel back through time: gradient norms per step, Jacobian products, spectral radius.

The loss reaches an early state only through the chain of step Jacobians. With a state :math:`H_t`
(a column vector here; for the LSTM the state is :math:`[h_t; c_t]`) and
:math:`J_t = \partial H_t / \partial H_{t-1}` (entry ``[i, j]`` is :math:`\partial H_t[i] / \partial H_{t-1}[j]`),

.. math::

    \frac{\partial L}{\partial H_{t}} = \frac{\partial L}{\partial H_T} J_T J_{T-1} \cdots J_{t+1}
    \quad\text{(for a loss on } H_T \text{ only; row-vector gradients).}

For the Elman RNN :math:`H_t = \phi(X_t W_{xh} + H_{t-1} W_{hh} + b_h)` (course's row convention,
``W_hh = weight_hh.T`` in PyTorch's storage) the step Jacobian is

.. math::

    J_t = \mathrm{diag}(\phi'(A_t))\, W_{hh}^\top = \mathrm{diag}(\phi'(A_t))\, \texttt{weight\_hh},

with :math:`\phi' = 1 - H_t^2` for tanh and :math:`\mathbf{1}[A_t > 0]` for ReLU. Since
:math:`|\phi'| \le 1`, the product's norm is at most :math:`\|W_{hh}\|_2^{k}` after ``k`` steps: when the
largest singular value (the spectral norm) is below one the gradient vanishes geometrically, and only an
expanding :math:`W_{hh}` (with units that stay unsaturated, as ReLU allows) can make it explode. For an
orthogonal matrix times :math:`\rho`, as :func:`recurrent_weight` builds by default, spectral norm and
spectral radius are both :math:`\rho`. For a matrix that is not normal (:math:`W W^\top \ne W^\top W`)
the spectral radius :math:`\rho(W_{hh})` (largest eigenvalue modulus) can lie far below the spectral norm;
it then says how :math:`W_{hh}^k` behaves for very large ``k`` but bounds neither one step nor, once
:math:`\mathrm{diag}(\phi')` mixes in, the rate itself (``recurrent_weight(..., kind="nonnormal")``).

Everything here works with ``torch.nn.RNN/LSTM/GRU`` (one layer, one direction), their cells, and
``rnnlib``'s versions, which share the interface and parameter names.

References: Y. Bengio, P. Simard and P. Frasconi, "Learning long-term dependencies with gradient descent
is difficult", IEEE Trans. Neural Networks 5(2), 1994. R. Pascanu, T. Mikolov and Y. Bengio, "On the
difficulty of training recurrent neural networks", ICML 2013.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor, nn

__all__ = [
    "state_grad_norms",
    "step_jacobians",
    "analytic_rnn_jacobians",
    "jacobian_norms",
    "recurrent_weight",
    "grad_norms_vs_distance",
    "fit_decay_rate",
]

State = tuple[Tensor, ...]  # (h,) or (h, c), each (B, H)
Step = Callable[[Tensor, State], State]


def _describe(module: nn.Module) -> tuple[bool, int, Tensor, Step]:
    """``(is_lstm, hidden_size, weight_hh, step)`` for a one-layer, one-direction layer or a cell.

    Layers and cells are told apart by their parameter names (``weight_hh_l0`` vs ``weight_hh``), and the
    kind by the number of gate blocks in ``weight_ih`` (1 RNN, 3 GRU, 4 LSTM), so torch.nn and rnnlib
    modules are handled alike.
    """
    H = module.hidden_size
    if hasattr(module, "weight_hh_l0"):
        if getattr(module, "num_layers", 1) != 1 or getattr(module, "bidirectional", False):
            raise ValueError(
                "expected a one-layer, unidirectional recurrent layer, got "
                f"num_layers={module.num_layers}, bidirectional={module.bidirectional}; "
                "build a separate one-layer module to study the gradient flow"
            )
        if getattr(module, "proj_size", 0):
            raise ValueError("LSTM layers with proj_size are not supported")
        weight_ih, weight_hh = module.weight_ih_l0, module.weight_hh_l0
        is_lstm = weight_ih.shape[0] == 4 * H
        time_dim = 1 if getattr(module, "batch_first", False) else 0

        def step(x_t: Tensor, state: State) -> State:
            hx = tuple(s.unsqueeze(0) for s in state)  # (1, B, H) each
            _, h_n = module(x_t.unsqueeze(time_dim), hx if is_lstm else hx[0])
            return tuple(s[0] for s in h_n) if is_lstm else (h_n[0],)

    elif hasattr(module, "weight_hh"):
        weight_ih, weight_hh = module.weight_ih, module.weight_hh
        is_lstm = weight_ih.shape[0] == 4 * H

        def step(x_t: Tensor, state: State) -> State:
            out = module(x_t, state if is_lstm else state[0])
            return tuple(out) if is_lstm else (out,)

    else:
        raise TypeError(f"expected an RNN/LSTM/GRU layer or cell, got {type(module).__name__}")
    return is_lstm, H, weight_hh, step


def _sequence_and_state(module: nn.Module, x: Tensor, hx) -> tuple[Tensor, State, bool]:
    """``x`` as (T, B, D) and the initial state as a tuple of (B, H) tensors."""
    is_lstm, H, _, _ = _describe(module)
    is_layer = hasattr(module, "weight_hh_l0")
    batch_first = is_layer and getattr(module, "batch_first", False)
    if x.dim() != 3 or x.shape[-1] != module.input_size:
        layout = "(batch, seq_len, {})" if batch_first else "(seq_len, batch, {})"
        raise ValueError(f"expected x of shape {layout.format(module.input_size)}, got {tuple(x.shape)}")
    if batch_first:
        x = x.transpose(0, 1)
    B = x.shape[1]
    if hx is None:
        zeros = x.new_zeros(B, H)
        state = (zeros, zeros.clone()) if is_lstm else (zeros,)
    else:
        parts = tuple(hx) if is_lstm else (hx,)
        state = tuple(p[0] if is_layer else p for p in parts)
        for p in state:
            if tuple(p.shape) != (B, H):
                expected = f"(1, {B}, {H})" if is_layer else f"({B}, {H})"
                raise ValueError(f"expected hx of shape {expected}, got {tuple(p.shape)}")
    return x, state, is_lstm


def _projection(H: int, dtype: torch.dtype, device, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(H, generator=g, dtype=torch.float64) / H**0.5).to(dtype=dtype, device=device)


def state_grad_norms(
    layer: nn.Module,
    x: Tensor,
    hx: Union[Tensor, tuple[Tensor, Tensor], None] = None,
    loss: Union[str, Callable[[Tensor], Tensor]] = "last",
    seed: int = 0,
) -> dict[str, Tensor]:
    r"""Norms of the total gradients :math:`\partial L/\partial H_t` (and :math:`\partial L/\partial C_t`), t = 1..T.

    ``layer``: a one-layer unidirectional RNN/LSTM/GRU (torch.nn or rnnlib) or one of their cells.
    ``x``: (T, B, input_size) ((B, T, input_size) for a ``batch_first`` layer; a cell takes (T, B, input_size)).
    ``hx``: the module's usual initial state, or None for zeros.
    ``loss``: ``"last"`` for :math:`L = \sum_b H_T[b] \cdot v` with a fixed random vector ``v`` (drawn
    from ``seed``), which gives every sample the same, non-degenerate gradient at the last state; or a
    callable mapping the outputs (T, B, H) (the stacked :math:`h_t`) to a scalar.

    The sequence is run one step at a time and every state keeps its ``.grad``, so the gradient at
    :math:`H_t` includes both the direct path (through output ``t``) and everything from later steps.
    Returns ``{"h": (T,)}`` (plus ``"c": (T,)`` for an LSTM): for each ``t`` the Euclidean norm of the
    gradient of one sample's state, **averaged over the batch**. For an LSTM, :math:`\partial L/\partial C_t`
    is total too: it includes the path through :math:`H_t = o_t \odot \tanh(C_t)`, which a fused
    ``nn.LSTM`` keeps inside one kernel (its graph has no edge from ``c_t`` to ``h_t``), so that term is
    added from the output gate recomputed from the weights.
    """
    x, state, is_lstm = _sequence_and_state(layer, x, hx)
    _, H, _, step = _describe(layer)
    # A fresh leaf state: the graph exists even when neither the weights nor x require grad.
    state = tuple(s.detach().requires_grad_() for s in state)
    h_prev = state[0].detach()
    history: list[State] = []
    with torch.enable_grad():
        # A throwaway step (its own graph) tells whether this LSTM's graph links c_t to h_t.
        fused = is_lstm and not _h_depends_on_c(*step(x[0], tuple(s.detach().requires_grad_() for s in state)))
        for x_t in x:
            state = step(x_t, state)
            for s in state:
                s.retain_grad()
            history.append(state)
        outputs = torch.stack([s[0] for s in history])  # (T, B, H)
        if loss == "last":
            L = (outputs[-1] @ _projection(H, outputs.dtype, outputs.device, seed)).sum()
        elif callable(loss):
            L = loss(outputs)
        else:
            raise ValueError(f'loss must be "last" or a callable taking outputs (T, B, H), got {loss!r}')
        if L.dim() != 0:
            raise ValueError(f"the loss must be a scalar, got shape {tuple(L.shape)}")
        L.backward()

    grads = [[s.grad if s.grad is not None else torch.zeros_like(s) for s in st] for st in history]
    if fused:
        # A fused nn.LSTM returns h_t and c_t side by side, so its graph has no edge c_t -> h_t and
        # c_t.grad misses the path through h_t = o_t * tanh(c_t). Add it: dL/dh_t * o_t * (1 - tanh^2 c_t).
        for t, (h_t, c_t) in enumerate(history):
            o_t = _lstm_output_gate(layer, x[t], h_prev)
            grads[t][1] = grads[t][1] + grads[t][0] * o_t * (1 - torch.tanh(c_t.detach()) ** 2)
            h_prev = h_t.detach()

    def norms(i: int) -> Tensor:
        return torch.stack([g[i] for g in grads]).norm(dim=-1).mean(dim=1).detach()  # (T, B, H) -> (T,)

    result = {"h": norms(0)}
    if is_lstm:
        result["c"] = norms(1)
    return result


def _h_depends_on_c(h: Tensor, c: Tensor) -> bool:
    """Whether the module's autograd graph computes h_t from c_t (LSTM cells do, fused layers do not)."""
    (grad,) = torch.autograd.grad(h, c, torch.ones_like(h), retain_graph=True, allow_unused=True)
    return grad is not None


@torch.no_grad()
def _lstm_output_gate(module: nn.Module, x_t: Tensor, h_prev: Tensor) -> Tensor:
    """o_t = sigmoid(x_t W_io^T + b_io + h_{t-1} W_ho^T + b_ho), gate order (i, f, g, o) as in PyTorch."""
    suffix = "_l0" if hasattr(module, "weight_hh_l0") else ""
    H = module.hidden_size
    W_io = getattr(module, "weight_ih" + suffix)[3 * H:]  # rows of the output gate
    W_ho = getattr(module, "weight_hh" + suffix)[3 * H:]
    pre = x_t @ W_io.T + h_prev @ W_ho.T
    if getattr(module, "bias", False):
        pre = pre + getattr(module, "bias_ih" + suffix)[3 * H:] + getattr(module, "bias_hh" + suffix)[3 * H:]
    return torch.sigmoid(pre)


def _single_sequence(module: nn.Module, x: Tensor) -> Tensor:
    """Accept (T, D) or the module's batched layout with batch 1; return (T, 1, D)."""
    if x.dim() == 2:
        x = x.unsqueeze(1)
        return x.transpose(0, 1) if getattr(module, "batch_first", False) and hasattr(module, "weight_hh_l0") else x
    return x


def step_jacobians(
    module: nn.Module, x: Tensor, hx: Union[Tensor, tuple[Tensor, Tensor], None] = None
) -> Tensor:
    r"""The step Jacobians :math:`J_t = \partial H_t / \partial H_{t-1}` along one sequence, (T, S, S).

    ``x``: (T, input_size), or the module's batched layout with batch 1. ``S = H``, or ``2H`` for an LSTM
    whose state is :math:`[h; c]`. Computed with ``torch.autograd.functional.jacobian`` at each point of
    the trajectory the sequence actually takes.
    """
    x, state, is_lstm = _sequence_and_state(module, _single_sequence(module, x), hx)
    if x.shape[1] != 1:
        raise ValueError(f"step_jacobians expects one sequence (batch 1), got batch {x.shape[1]}")
    _, H, _, step = _describe(module)
    jacobians = []
    s = torch.cat(state, dim=-1)[0].detach()  # (S,)
    for x_t in x:
        def f(flat: Tensor, x_t: Tensor = x_t) -> Tensor:
            parts = tuple(p.unsqueeze(0) for p in flat.split(H))
            return torch.cat(step(x_t, parts), dim=-1)[0]

        jacobians.append(torch.autograd.functional.jacobian(f, s))  # (S, S)
        with torch.no_grad():
            s = f(s)
    return torch.stack(jacobians)


def analytic_rnn_jacobians(
    module: nn.Module, x: Tensor, hx: Optional[Tensor] = None
) -> Tensor:
    r""":math:`J_t = \mathrm{diag}(\phi'(A_t))\,\texttt{weight\_hh}` for a tanh/ReLU RNN layer or cell, (T, H, H).

    Same arguments as :func:`step_jacobians`; ``weight_hh`` is PyTorch's (H, H) storage, i.e.
    :math:`W_{hh}^\top` in the course's row convention.
    """
    is_lstm, H, weight_hh, step = _describe(module)
    if is_lstm or weight_hh.shape[0] != H:
        raise ValueError("analytic_rnn_jacobians is for the Elman RNN (tanh or relu); use step_jacobians")
    x, state, _ = _sequence_and_state(module, _single_sequence(module, x), hx)
    jacobians = []
    with torch.no_grad():
        for x_t in x:
            (h,) = state = step(x_t, state)
            # phi'(A_t) from H_t itself: tanh' = 1 - tanh^2, relu' = 1 where the unit is active.
            d = 1 - h[0] ** 2 if module.nonlinearity == "tanh" else (h[0] > 0).to(h.dtype)
            jacobians.append(d[:, None] * weight_hh)
    return torch.stack(jacobians)


def jacobian_norms(
    module: nn.Module,
    x: Tensor,
    hx: Union[Tensor, tuple[Tensor, Tensor], None] = None,
    from_end: bool = False,
) -> dict[str, Tensor]:
    r"""Spectral norm and spectral radius of the Jacobian product after k = 1..T steps.

    By default the product is :math:`\partial H_k / \partial H_0 = J_k \cdots J_1`; with ``from_end=True``
    it is :math:`\partial H_T / \partial H_{T-k} = J_T \cdots J_{T-k+1}`, the factor that carries the
    gradient of a loss on :math:`H_T` back ``k`` steps. Returns ``{"spectral_norm": (T,),
    "spectral_radius": (T,)}`` (largest singular value; largest eigenvalue modulus).
    """
    J = step_jacobians(module, x, hx)
    if from_end:
        J = J.flip(0)
    product = torch.eye(J.shape[-1], dtype=J.dtype, device=J.device)
    norms, radii = [], []
    for J_t in J:
        # Later steps multiply on the left going forward; earlier steps on the right going backward.
        product = product @ J_t if from_end else J_t @ product
        norms.append(torch.linalg.matrix_norm(product, ord=2))
        radii.append(torch.linalg.eigvals(product).abs().max())
    return {"spectral_norm": torch.stack(norms), "spectral_radius": torch.stack(radii)}


def recurrent_weight(
    hidden_size: int,
    spectral_radius: float,
    seed: int = 0,
    kind: str = "orthogonal",
    dtype: Optional[torch.dtype] = None,
    shear: float = 2.0,
) -> Tensor:
    r"""A random (H, H) recurrent matrix whose spectral radius (the largest eigenvalue modulus) is ``spectral_radius``.

    ``kind="orthogonal"``: a random orthogonal matrix times the radius, so every eigenvalue and every
    singular value has that modulus (the cleanest case: the norm changes by exactly the radius per step
    in the linear regime). ``kind="gaussian"``: a standard Gaussian matrix divided by its own spectral
    radius, then scaled; its singular values spread around the radius. ``kind="nonnormal"``: a matrix
    given by its real Schur form, :math:`W = Q (R + N) Q^\top` with :math:`Q` random orthogonal,
    :math:`R` block diagonal with 2 x 2 rotations scaled by the radius (the eigenvalues, all of that
    modulus) and :math:`N` strictly upper triangular above those blocks, with Gaussian entries of
    standard deviation ``shear / sqrt(H)``. :math:`N` leaves the eigenvalues alone but raises the
    spectral norm (``shear=0`` gives a normal matrix, spectral norm = radius), so the spectral radius no
    longer bounds how much one step can stretch a vector. The radius of a matrix equals that of its
    transpose, so the result can be copied into ``weight_hh_l0`` directly.
    """
    if not isinstance(hidden_size, int) or hidden_size < 1:
        raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}")
    if spectral_radius < 0:
        raise ValueError(f"spectral_radius must be non-negative, got {spectral_radius}")
    if kind not in ("orthogonal", "gaussian", "nonnormal"):
        raise ValueError(f'kind must be "orthogonal", "gaussian" or "nonnormal", got {kind!r}')
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(hidden_size, hidden_size, generator=g, dtype=torch.float64)
    if kind == "gaussian":
        return (spectral_radius * (G / torch.linalg.eigvals(G).abs().max())).to(dtype or torch.get_default_dtype())
    Q, R = torch.linalg.qr(G)
    Q = Q * torch.sign(torch.diagonal(R))  # sign fix: uniformly distributed orthogonal matrix
    if kind == "orthogonal":
        return (spectral_radius * Q).to(dtype or torch.get_default_dtype())
    if hidden_size % 2:
        raise ValueError(f'kind="nonnormal" needs an even hidden_size (it uses 2 x 2 blocks), got {hidden_size}')
    if shear < 0:
        raise ValueError(f"shear must be non-negative, got {shear}")
    angles = torch.rand(hidden_size // 2, generator=g, dtype=torch.float64) * torch.pi
    c, s = torch.cos(angles), torch.sin(angles)
    rotations = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (H/2, 2, 2)
    blocks = spectral_radius * torch.block_diag(*rotations)  # eigenvalues radius * exp(+-i angle)
    outside = torch.block_diag(*torch.ones(hidden_size // 2, 2, 2, dtype=torch.float64)) == 0
    above = torch.triu(outside.to(torch.float64), diagonal=1)  # strictly above the 2 x 2 diagonal blocks
    N = torch.randn(hidden_size, hidden_size, generator=g, dtype=torch.float64) * shear / hidden_size**0.5 * above
    return (Q @ (blocks + N) @ Q.T).to(dtype or torch.get_default_dtype())


def grad_norms_vs_distance(
    spectral_radius: float,
    nonlinearity: str = "tanh",
    seq_len: int = 50,
    hidden_size: int = 32,
    input_size: int = 4,
    batch_size: int = 8,
    seed: int = 0,
    kind: str = "orthogonal",
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    r"""Gradient norms :math:`\|\partial L/\partial H_{T-d}\|` for d = 0..seq_len-1, shape (seq_len,).

    Builds a ``torch.nn.RNN(input_size, hidden_size, nonlinearity=...)`` whose ``weight_hh_l0`` comes from
    :func:`recurrent_weight`, feeds it standard normal inputs (all from ``seed``), takes the loss on the
    last state (see :func:`state_grad_norms`) and orders the norms by distance ``d`` from it: index 0 is
    the last state.
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f'nonlinearity must be "tanh" or "relu", got {nonlinearity!r}')
    g = torch.Generator().manual_seed(seed)
    rnn = nn.RNN(input_size, hidden_size, nonlinearity=nonlinearity, dtype=dtype)
    bound = hidden_size**-0.5
    with torch.no_grad():
        for p in rnn.parameters():
            p.copy_((torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 - 1) * bound)
        rnn.weight_hh_l0.copy_(recurrent_weight(hidden_size, spectral_radius, seed=seed, kind=kind, dtype=dtype))
    x = torch.randn(seq_len, batch_size, input_size, generator=g, dtype=torch.float64).to(dtype)
    return state_grad_norms(rnn, x, seed=seed)["h"].flip(0)


def fit_decay_rate(norms: Tensor) -> float:
    r"""The per-step factor ``r`` of the geometric fit :math:`\|g_d\| \approx C r^d` (least squares on log norms).

    ``norms`` ordered by distance ``d = 0, 1, ...`` (as from :func:`grad_norms_vs_distance`). ``r < 1``
    means vanishing, ``r > 1`` exploding gradients. Slice off transients before fitting if needed.
    """
    norms = torch.as_tensor(norms, dtype=torch.float64).flatten()
    if norms.numel() < 2:
        raise ValueError(f"need at least two norms to fit a rate, got {norms.numel()}")
    if not torch.all(torch.isfinite(norms) & (norms > 0)):
        raise ValueError(
            "norms must be positive and finite to fit on a log scale; slice off the steps where the "
            "gradient underflowed to 0 or overflowed to inf"
        )
    d = torch.arange(norms.numel(), dtype=torch.float64)
    log_n = norms.log()
    slope = ((d - d.mean()) * (log_n - log_n.mean())).sum() / ((d - d.mean()) ** 2).sum()
    return float(slope.exp())
