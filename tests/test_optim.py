"""rnnlib.optim.SparseAdam against torch.optim.SparseAdam (float64), plus behaviour tests."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnlib.optim import SparseAdam, split_sparse_dense

DT = torch.float64


def random_sparse_grad(g, shape, step):
    """Uncoalesced sparse gradients: repeated rows, varying row sets, and now and then an empty one."""
    V, d = shape
    if step % 10 == 7:
        nnz = 0
    else:
        nnz = int(torch.randint(1, 12, (1,), generator=g))
    # Draw from the first half of the rows only, so the second half is never touched.
    rows = torch.randint(0, V // 2, (nnz,), generator=g)
    if nnz > 2:
        rows[1] = rows[0]  # at least one repeated index
    values = torch.randn(nnz, d, generator=g, dtype=DT)
    return torch.sparse_coo_tensor(rows.unsqueeze(0), values, (V, d), check_invariants=True)


def assert_same_state(ours, theirs):
    for p_ours, p_theirs in zip(
        [p for group in ours.param_groups for p in group["params"]],
        [p for group in theirs.param_groups for p in group["params"]],
    ):
        torch.testing.assert_close(p_ours, p_theirs, rtol=0, atol=0)
        s_ours, s_theirs = ours.state[p_ours], theirs.state[p_theirs]
        assert set(s_ours) == set(s_theirs)
        assert s_ours.get("step") == s_theirs.get("step")
        for key in ("exp_avg", "exp_avg_sq"):
            if key in s_theirs:
                torch.testing.assert_close(s_ours[key], s_theirs[key], rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"lr": 0.05, "betas": (0.5, 0.9), "eps": 1e-3}, {"lr": 0.01, "maximize": True}],
)
def test_matches_torch_sparse_adam_on_random_sparse_grads(kwargs):
    g = torch.Generator().manual_seed(0)
    init = torch.randn(20, 3, generator=g, dtype=DT)
    p_ours, p_theirs = init.clone().requires_grad_(), init.clone().requires_grad_()
    ours, theirs = SparseAdam([p_ours], **kwargs), torch.optim.SparseAdam([p_theirs], **kwargs)
    saw_empty = saw_repeat = False
    for step in range(50):
        grad = random_sparse_grad(g, init.shape, step)
        saw_empty |= grad._nnz() == 0
        saw_repeat |= grad.coalesce()._nnz() < grad._nnz()
        p_ours.grad, p_theirs.grad = grad.clone(), grad.clone()
        ours.step()
        theirs.step()
        assert_same_state(ours, theirs)
    assert saw_empty and saw_repeat
    assert ours.state[p_ours]["step"] == 50  # empty gradients still count as steps
    # Rows that never appear in any gradient are untouched, and their moments stay zero.
    torch.testing.assert_close(p_ours[10:], init[10:], rtol=0, atol=0)
    assert torch.all(ours.state[p_ours]["exp_avg"][10:] == 0)
    assert not torch.equal(p_ours[:10], init[:10])


def test_absent_rows_keep_stale_moments():
    p = torch.zeros(4, 2, dtype=DT, requires_grad=True)
    opt = SparseAdam([p], lr=0.1)
    p.grad = torch.sparse_coo_tensor([[0, 1]], torch.ones(2, 2, dtype=DT), (4, 2), check_invariants=True)
    opt.step()
    m_row1 = opt.state[p]["exp_avg"][1].clone()
    p_row1 = p[1].detach().clone()
    p.grad = torch.sparse_coo_tensor([[0]], torch.ones(1, 2, dtype=DT), (4, 2), check_invariants=True)
    opt.step()
    # Dense Adam would decay row 1's moment by beta1 and keep moving it; the lazy update does neither.
    torch.testing.assert_close(opt.state[p]["exp_avg"][1], m_row1, rtol=0, atol=0)
    torch.testing.assert_close(p[1].detach(), p_row1, rtol=0, atol=0)
    # First step: m = (1-b1) g, v = (1-b2) g^2, and eps is added to sqrt(v) before the bias correction,
    # so the move is lr * sqrt(1-b2) / (sqrt(1-b2) + eps), a little less than lr (torch's placement).
    r = (1 - 0.999) ** 0.5
    torch.testing.assert_close(p_row1, torch.full((2,), -0.1 * r / (r + 1e-8), dtype=DT), rtol=1e-14, atol=0)


def test_matches_torch_on_sparse_embedding_with_two_param_groups():
    torch.manual_seed(0)
    emb_a = nn.Embedding(30, 4, sparse=True, dtype=DT)
    emb_b = nn.Embedding(10, 3, sparse=True, dtype=DT)
    twin_a, twin_b = nn.Embedding(30, 4, sparse=True, dtype=DT), nn.Embedding(10, 3, sparse=True, dtype=DT)
    twin_a.load_state_dict(emb_a.state_dict())
    twin_b.load_state_dict(emb_b.state_dict())
    groups = lambda a, b: [{"params": a.parameters()}, {"params": b.parameters(), "lr": 0.1, "betas": (0.8, 0.99)}]
    ours = SparseAdam(groups(emb_a, emb_b), lr=0.01)
    theirs = torch.optim.SparseAdam(groups(twin_a, twin_b), lr=0.01)
    g = torch.Generator().manual_seed(1)
    for step in range(20):
        ids_a = torch.randint(0, 30, (5, 6), generator=g)
        ids_b = torch.randint(0, 10, (5,), generator=g)
        for a, b, opt in ((emb_a, emb_b, ours), (twin_a, twin_b, theirs)):
            opt.zero_grad()
            loss = (a(ids_a).sum(1).tanh() ** 2).sum() + (b(ids_b) ** 3).sum()
            loss.backward()
            opt.step()
        assert_same_state(ours, theirs)
    # The state dict has torch's layout, so it loads into torch's optimizer.
    fresh = torch.optim.SparseAdam(groups(twin_a, twin_b), lr=0.01)
    fresh.load_state_dict(ours.state_dict())
    assert fresh.state_dict()["state"][0]["step"] == 20


def test_dense_gradient_raises_with_advice():
    emb = nn.Embedding(5, 2)  # sparse=False: dense gradient
    opt = SparseAdam(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match=r"nn\.Embedding\(\.\.\., sparse=True\).*Adam"):
        opt.step()


def test_refused_step_moves_no_parameter():
    """A group holding a sparse-gradient and a dense-gradient parameter: torch refuses the step before
    touching either, and so does ours."""
    for make in (SparseAdam, torch.optim.SparseAdam):
        torch.manual_seed(0)
        sparse_emb, dense_emb = nn.Embedding(5, 2, sparse=True), nn.Embedding(5, 2)
        before = sparse_emb.weight.detach().clone()
        opt = make([sparse_emb.weight, dense_emb.weight])
        (sparse_emb(torch.tensor([1, 2])).sum() + dense_emb(torch.tensor([0])).sum()).backward()
        with pytest.raises((RuntimeError, ValueError)):
            opt.step()
        assert torch.equal(sparse_emb.weight, before), make.__module__


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": 0.0}, "Invalid learning rate"),
        ({"lr": -1.0}, "Invalid learning rate"),
        ({"eps": 0.0}, "Invalid epsilon"),
        ({"betas": (1.0, 0.9)}, "index 0"),
        ({"betas": (0.9, -0.1)}, "index 1"),
        ({"lr": torch.tensor([1e-3, 1e-3])}, "1-element"),
    ],
)
def test_constructor_validation_like_torch(kwargs, message):
    p = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(ValueError, match=message):
        SparseAdam(p, **kwargs)
    with pytest.raises(ValueError, match=message):
        torch.optim.SparseAdam(p, **kwargs)


def test_rejects_sparse_and_complex_parameters():
    with pytest.raises(ValueError, match="dense parameter"):
        SparseAdam([torch.zeros(3, 3).to_sparse().requires_grad_()])
    with pytest.raises(ValueError, match="complex"):
        SparseAdam([torch.zeros(3, dtype=torch.complex64, requires_grad=True)])


class TinyLM(nn.Module):
    def __init__(self, vocab=40, dim=5, hidden=6, sparse=True):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, sparse=sparse, dtype=DT)
        self.rnn = nn.GRU(dim, hidden, dtype=DT)
        self.head = nn.Linear(hidden, vocab, dtype=DT)

    def forward(self, ids):
        out, _ = self.rnn(self.embed(ids))
        return self.head(out)


def test_split_sparse_dense_and_combined_with_adam():
    torch.manual_seed(0)
    model, twin = TinyLM(), TinyLM()
    twin.load_state_dict(model.state_dict())
    initial_embed = model.embed.weight.detach().clone()
    sparse, dense = split_sparse_dense(model)
    assert [id(p) for p in sparse] == [id(model.embed.weight)]
    assert len(dense) == len(list(model.parameters())) - 1
    assert split_sparse_dense(TinyLM(sparse=False))[0] == []

    ours = [SparseAdam(sparse, lr=0.02), torch.optim.Adam(dense, lr=0.01)]
    twin_sparse, twin_dense = split_sparse_dense(twin)
    theirs = [torch.optim.SparseAdam(twin_sparse, lr=0.02), torch.optim.Adam(twin_dense, lr=0.01)]
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 20, (7, 3), generator=g)  # rows 20..39 never used
    targets = torch.randint(0, 40, (7, 3), generator=g)
    losses = []
    for step in range(15):
        for m, opts in ((model, ours), (twin, theirs)):
            for opt in opts:
                opt.zero_grad()
            loss = nn.functional.cross_entropy(m(ids).reshape(-1, 40), targets.reshape(-1))
            loss.backward()
            for opt in opts:
                opt.step()
        losses.append(loss.item())
        for a, b in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert losses[-1] < losses[0]
    torch.testing.assert_close(model.embed.weight[20:], initial_embed[20:], rtol=0, atol=0)
    assert not torch.equal(model.embed.weight[:20], initial_embed[:20])


def test_never_touched_rows_of_an_embedding_stay_unchanged():
    torch.manual_seed(0)
    emb = nn.Embedding(50, 4, sparse=True, dtype=DT)
    before = emb.weight.detach().clone()
    opt = SparseAdam(emb.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        emb(torch.tensor([3, 7, 7, 11])).pow(2).sum().backward()
        opt.step()
    changed = (emb.weight.detach() != before).any(dim=1)
    assert changed.nonzero().flatten().tolist() == [3, 7, 11]


def test_params_without_grad_are_skipped_and_closure_is_returned():
    a = torch.zeros(3, 2, requires_grad=True)
    b = torch.ones(3, 2, requires_grad=True)
    opt = SparseAdam([a, b])
    a.grad = torch.sparse_coo_tensor([[1]], torch.ones(1, 2), (3, 2), check_invariants=True)
    assert opt.step(lambda: torch.tensor(2.5)).item() == 2.5
    assert b not in opt.state and opt.state[a]["step"] == 1
    assert torch.equal(b, torch.ones(3, 2))


def test_matches_torch_when_the_gradient_is_sparse_in_every_dimension():
    # to_sparse() gives sparse_dim 2 (single entries, not whole rows): the general indexing path.
    g = torch.Generator().manual_seed(3)
    init = torch.randn(6, 5, generator=g, dtype=DT)
    p_ours, p_theirs = init.clone().requires_grad_(), init.clone().requires_grad_()
    ours, theirs = SparseAdam([p_ours], lr=0.1), torch.optim.SparseAdam([p_theirs], lr=0.1)
    for _ in range(10):
        dense = torch.randn(6, 5, generator=g, dtype=DT) * (torch.rand(6, 5, generator=g) < 0.3)
        grad = dense.to_sparse()
        assert grad.sparse_dim() == 2
        p_ours.grad, p_theirs.grad = grad.clone(), grad.clone()
        ours.step()
        theirs.step()
        assert_same_state(ours, theirs)


def test_a_row_first_seen_late_uses_the_global_step_count():
    p = torch.zeros(3, 2, dtype=DT, requires_grad=True)
    twin = p.detach().clone().requires_grad_()
    ours, theirs = SparseAdam([p], lr=0.01), torch.optim.SparseAdam([twin], lr=0.01)
    row0 = torch.sparse_coo_tensor([[0]], torch.ones(1, 2, dtype=DT), (3, 2), check_invariants=True)
    row1 = torch.sparse_coo_tensor([[1]], torch.ones(1, 2, dtype=DT), (3, 2), check_invariants=True)
    for step in range(1, 1001):
        grad = row1 if step == 1000 else row0
        p.grad, twin.grad = grad, grad
        ours.step()
        theirs.step()
    assert_same_state(ours, theirs)
    # Row 1's moments start now: m = 0.1, v = 0.001, but the bias correction is that of step 1000.
    expected = 0.01 * (1 - 0.999**1000) ** 0.5 / (1 - 0.9**1000) * 0.1 / (0.001**0.5 + 1e-8)
    assert expected == pytest.approx(0.0251, abs=1e-4)  # about 2.5 lr, not lr
    torch.testing.assert_close(p[1].detach(), torch.full((2,), -expected, dtype=DT), rtol=1e-12, atol=0)
