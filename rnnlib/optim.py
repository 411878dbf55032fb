r"""SparseAdam written from its equations, with the semantics (and numerics) of ``torch.optim.SparseAdam``.

Why sparse gradients arise. An embedding table ``E`` (V, d) over a large vocabulary is used by looking
up rows: a batch that mentions 2,000 distinct tokens touches 2,000 of the ``V`` rows, and every other row
has a zero gradient. ``nn.Embedding(sparse=True)`` returns that gradient as a sparse tensor holding only
the touched rows (possibly repeated, one entry per lookup). Dense Adam would still read and write all
``V`` rows of the parameter and of both moment buffers on every step; SparseAdam touches only the rows
present in the gradient, so its cost grows with the batch, not the vocabulary.

The update. For a parameter with step count ``k`` (incremented on every step in which it has a
gradient, even an empty one) and the rows :math:`R` present in its (coalesced) gradient :math:`g`:

.. math::

    m_R &\leftarrow m_R + (1 - \beta_1)(g_R - m_R) \qquad (= \beta_1 m_R + (1-\beta_1) g_R) \\
    v_R &\leftarrow v_R + (1 - \beta_2)(g_R^2 - v_R) \\
    \alpha_k &= \mathrm{lr} \cdot \sqrt{1 - \beta_2^k} \,/\, (1 - \beta_1^k) \\
    \theta_R &\leftarrow \theta_R - \alpha_k \, m_R / (\sqrt{v_R} + \epsilon)

Rows outside :math:`R` are left alone: parameter and both moments. Note where :math:`\epsilon` goes: it is
added to :math:`\sqrt{v}` before the bias correction is folded into the step size, exactly as PyTorch does
(so it is not the same as :math:`\hat v = v/(1-\beta_2^k)` followed by :math:`\sqrt{\hat v} + \epsilon`).
Repeated indices are summed first (coalescing): the update is non-linear in :math:`g`, so two entries for
one row must become one before squaring. With ``maximize=True`` the gradient's sign is flipped.

"Lazy" updates. A row seen rarely keeps stale moments between its visits: they are not decayed on the
steps it is absent (dense Adam would shrink them by :math:`\beta` every step). Its bias correction, on the
other hand, uses the parameter's global step count ``k``, not the number of times that row was seen. A
row first seen at step 1000 gets :math:`m = 0.1 g` and :math:`v = 0.001 g^2` (default betas), and the bias
corrections of step 1000 (:math:`1 - 0.9^{1000} \approx 1`, :math:`1 - 0.999^{1000} \approx 0.63`) barely
rescale them: its first move is about :math:`2.5\,\mathrm{lr}`, where a per-row count would give
:math:`\mathrm{lr}`. This is the approximation PyTorch's SparseAdam makes; the module reproduces it.

SparseAdam only accepts sparse gradients. Give it the parameters of ``nn.Embedding(sparse=True)`` and
a dense optimizer (``torch.optim.Adam``) the rest; :func:`split_sparse_dense` sorts a model's parameters.

References: D. P. Kingma and J. Ba, "Adam: A method for stochastic optimization", ICLR 2015.
PyTorch documentation, ``torch.optim.SparseAdam``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor, nn

__all__ = ["SparseAdam", "split_sparse_dense"]


class SparseAdam(torch.optim.Optimizer):
    """Adam for parameters whose gradients are sparse tensors (``nn.Embedding(sparse=True)``).

    Same constructor, state (``"step"``, ``"exp_avg"``, ``"exp_avg_sq"``) and updates as
    ``torch.optim.SparseAdam``, so state dicts move between the two. Parameters: dense tensors of any
    shape, e.g. an embedding weight (num_embeddings, embedding_dim); gradients: sparse COO tensors of
    the same shape.
    """

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        maximize: bool = False,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 < lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 < eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "maximize": maximize}
        super().__init__(params, defaults)
        for g, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                if p.is_sparse:
                    raise ValueError(
                        f"param {i} of group {g} is a sparse tensor: SparseAdam requires dense parameter tensors"
                    )
                if p.is_complex():
                    raise ValueError(
                        f"param {i} of group {g} is complex: SparseAdam does not support complex parameters"
                    )

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Tensor]] = None) -> Optional[Tensor]:
        """Update every parameter that has a gradient; ``closure`` re-evaluates the loss (optional)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Every gradient is checked before any parameter moves, so a refused step changes nothing.
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and not p.grad.is_sparse:
                    raise RuntimeError(
                        f"SparseAdam got a dense gradient for a parameter of shape {tuple(p.shape)}. "
                        "It only accepts sparse gradients: create the embedding with nn.Embedding(..., sparse=True) "
                        "and give the model's other (dense) parameters to a dense optimizer such as "
                        "torch.optim.Adam (rnnlib.optim.split_sparse_dense(model) separates them)."
                    )
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr = float(group["lr"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                # Counted even when the gradient turns out to be empty, as torch does.
                state["step"] += 1
                self._update(p, p.grad, state, lr, beta1, beta2, group["eps"], group["maximize"])
        return loss

    @staticmethod
    def _update(
        p: Tensor, grad: Tensor, state: dict, lr: float, beta1: float, beta2: float, eps: float, maximize: bool
    ) -> None:
        grad = grad.coalesce()  # one entry per row: the update is non-linear in g
        values = grad._values()  # (nnz, *dense dims)
        if values.numel() == 0:
            return
        if maximize:
            values = -values
        exp_avg, exp_avg_sq, k = state["exp_avg"], state["exp_avg_sq"], state["step"]
        indices = grad._indices()  # (sparse_dim, nnz)
        if indices.shape[0] == 1:
            # The embedding case: whole rows. index_select/index_copy_/index_add_ are the fast paths.
            rows = indices[0]
            gather = lambda t: t.index_select(0, rows)
            scatter = lambda t, new: t.index_copy_(0, rows, new)
            add = lambda t, delta: t.index_add_(0, rows, delta)
        else:
            rows = tuple(indices)  # one index tensor per sparse dim
            gather = lambda t: t[rows]
            scatter = lambda t, new: t.index_put_(rows, new)
            add = lambda t, delta: t.index_put_(rows, delta, accumulate=True)

        m = gather(exp_avg)  # (nnz, *dense dims): copies of the touched rows
        v = gather(exp_avg_sq)
        # m <- m + (1 - beta1)(g - m): torch's form, kept so that results agree to the last bit.
        m.add_((values - m).mul_(1 - beta1))
        v.add_(values.pow(2).sub_(v).mul_(1 - beta2))
        scatter(exp_avg, m)  # coalesced, so no row is written twice
        scatter(exp_avg_sq, v)

        step_size = lr * math.sqrt(1 - beta2**k) / (1 - beta1**k)
        # theta <- theta - step_size * m / (sqrt(v) + eps), in place on the gathered copies.
        add(p, m.div_(v.sqrt_().add_(eps)).mul_(-step_size))


def split_sparse_dense(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(sparse, dense)``: the parameters of ``nn.Embedding``/``nn.EmbeddingBag(sparse=True)``, and the rest.

    Only parameters with ``requires_grad`` are returned, each once (shared parameters are not repeated).

    >>> sparse, dense = split_sparse_dense(model)
    >>> optimizers = [SparseAdam(sparse, lr=1e-2), torch.optim.Adam(dense, lr=1e-3)]
    """
    sparse_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and module.sparse:
            sparse_ids.update(id(p) for p in module.parameters(recurse=False))
    sparse, dense = [], []
    for p in model.parameters():  # already de-duplicated by nn.Module
        if p.requires_grad:
            (sparse if id(p) in sparse_ids else dense).append(p)
    return sparse, dense
