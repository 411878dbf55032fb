"""The training loop: it learns, clips, stops early, checkpoints and survives an interrupt."""
import math

import pytest
import torch
from torch import nn

from rnnlib.train import History, LMLoss, TrainConfig, detach_state, evaluate_lm, fit, load_checkpoint, save_checkpoint


def regression_task(seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(256, 4, generator=g)
    y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1

    def batches():
        perm = torch.randperm(256, generator=g)
        for k in range(0, 256, 32):
            idx = perm[k : k + 32]
            yield X[idx], y[idx]

    def loss_fn(model, batch):
        xb, yb = batch
        return ((model(xb).squeeze(-1) - yb) ** 2).mean()

    def val_fn(model):
        return float(loss_fn(model, (X, y)))

    return batches, loss_fn, val_fn


def quiet(**kw):
    return TrainConfig(progress=False, **kw)


def test_loss_goes_down_and_history_is_complete():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    batches, loss_fn, val_fn = regression_task()
    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.05), batches, loss_fn, val_fn, quiet(steps=200, eval_every=50))
    assert h.val_loss[-1] < 0.01 * h.val_loss[0]
    assert h.step == list(range(1, 201)) and len(h.train_loss) == len(h.grad_norm) == len(h.lr) == 200
    assert h.val_step == [0, 50, 100, 150, 200]


def test_clip_norm_bounds_the_update_and_history_reports_the_raw_norm():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.mul_(100)  # huge gradients
    batches, loss_fn, _ = regression_task()
    xb, yb = next(batches())
    before = [p.detach().clone() for p in model.parameters()]
    model.zero_grad()
    loss_fn(model, (xb, yb)).backward()
    raw = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    lr, clip = 0.1, 0.5
    h = fit(model, torch.optim.SGD(model.parameters(), lr=lr), [(xb, yb)], loss_fn, None,
            quiet(steps=1, eval_every=None, clip_norm=clip))
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)]).norm()
    assert raw > 10 * clip
    assert math.isclose(float(step), lr * clip, rel_tol=1e-4)
    assert math.isclose(h.grad_norm[0], float(raw), rel_tol=1e-4)


def test_clip_value_bounds_each_entry():
    model = nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.mul_(100)
    batches, loss_fn, _ = regression_task()
    before = [p.detach().clone() for p in model.parameters()]
    fit(model, torch.optim.SGD(model.parameters(), lr=1.0), batches, loss_fn, None, quiet(steps=1, eval_every=None, clip_value=0.01))
    for p, b in zip(model.parameters(), before):
        assert (p.detach() - b).abs().max() <= 0.01 * (1 + 1e-4)


def test_early_stopping_stops_and_restores_best_weights():
    model = nn.Linear(4, 1)
    batches, loss_fn, _ = regression_task()
    scores = iter([5.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    snapshots = []

    def val_fn(m):
        snapshots.append(m.weight.detach().clone())
        return next(scores)

    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.01), batches, loss_fn, val_fn,
            quiet(steps=100, eval_every=5, patience=2))
    assert h.stopped_early and h.val_step == [0, 5, 10, 15]
    assert h.best_step == 5 and h.best_val_loss == 1.0
    assert torch.equal(model.weight, snapshots[1])


def test_exhausted_iterable_is_an_error_but_a_function_restarts_epochs():
    model = nn.Linear(4, 1)
    batches, loss_fn, _ = regression_task()
    with pytest.raises(ValueError, match="fresh iterable"):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.01), list(batches()), loss_fn, None, quiet(steps=20, eval_every=None))
    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.01), batches, loss_fn, None, quiet(steps=20, eval_every=None))
    assert h.steps_done == 20


def test_keyboard_interrupt_keeps_model_and_history(capsys):
    model = nn.Linear(4, 1)
    batches, loss_fn, _ = regression_task()

    def interrupting(m, batch):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(1)
        return loss_fn(m, batch)

    calls = []
    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.01), batches, interrupting, None, quiet(steps=50, eval_every=None))
    assert h.interrupted and h.steps_done == 5
    assert "interrupted after step 5" in capsys.readouterr().out
    # Usable: the record is consistent, the model works, and training carries on from where it stopped.
    assert len(h.step) == len(h.train_loss) == len(h.grad_norm) == len(h.lr) == 5
    assert torch.isfinite(model(torch.randn(3, 4))).all()
    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.01), batches, loss_fn, None,
            quiet(steps=45, eval_every=None), history=h)
    assert not h.interrupted and h.step == list(range(1, 51))


def test_interrupt_during_validation_leaves_the_model_in_training_mode(capsys):
    model = nn.Linear(4, 1)
    batches, loss_fn, _ = regression_task()

    def interrupted_validation(m):
        raise KeyboardInterrupt

    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.01), batches, loss_fn, interrupted_validation,
            quiet(steps=50, eval_every=3))
    assert h.interrupted and model.training
    assert "interrupted" in capsys.readouterr().out


def test_non_finite_loss_says_what_to_do():
    model = nn.Linear(4, 1)
    batches, _, _ = regression_task()
    with pytest.raises(FloatingPointError, match="clip"):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), batches, lambda m, b: m(b[0]).sum() * math.inf, None,
            quiet(steps=3, eval_every=None))


def test_checkpoint_resume_continues_identically(tmp_path):
    batches_a, loss_fn, val_fn = regression_task(seed=1)
    torch.manual_seed(0)
    straight = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))
    init = {k: v.clone() for k, v in straight.state_dict().items()}
    opt = torch.optim.Adam(straight.parameters(), lr=0.01)
    data = list(batches_a()) * 3  # a fixed stream of 24 batches, so both runs see the same data
    torch.manual_seed(123)
    h_straight = fit(straight, opt, iter(data), loss_fn, val_fn, quiet(steps=20, eval_every=10))

    resumed = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))
    resumed.load_state_dict(init)
    opt2 = torch.optim.Adam(resumed.parameters(), lr=0.01)
    torch.manual_seed(123)
    h1 = fit(resumed, opt2, iter(data[:10]), loss_fn, val_fn, quiet(steps=10, eval_every=10))
    save_checkpoint(tmp_path / "ck.pt", resumed, opt2, history=h1, extra={"note": "half way"})
    torch.manual_seed(999)  # disturb the RNG: the checkpoint must restore it

    fresh = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))
    opt3 = torch.optim.Adam(fresh.parameters(), lr=0.01)
    loaded = load_checkpoint(tmp_path / "ck.pt", fresh, opt3)
    assert loaded["extra"] == {"note": "half way"} and loaded["history"].steps_done == 10
    h2 = fit(fresh, opt3, iter(data[10:]), loss_fn, val_fn, quiet(steps=10, eval_every=10), history=loaded["history"])
    for a, b in zip(straight.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    assert h2.train_loss == h_straight.train_loss and h2.val_loss == h_straight.val_loss


def test_checkpoint_round_trip_restores_outputs(tmp_path):
    model = nn.LSTM(3, 5)
    x = torch.randn(7, 2, 3)
    save_checkpoint(tmp_path / "m.pt", model)
    other = nn.LSTM(3, 5)
    load_checkpoint(tmp_path / "m.pt", other)
    assert torch.equal(model(x)[0], other(x)[0])
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt", other)


def test_history_round_trip():
    h = History(step=[1, 2], train_loss=[1.0, 0.5], best_val_loss=0.7)
    assert History.from_dict(h.to_dict()) == h


def test_val_loss_at_time_interpolates_on_training_time():
    # 10 steps of 0.5 s each (evaluations not counted), validation at steps 0, 4 and 10
    h = History(step=list(range(1, 11)), val_step=[0, 4, 10], val_loss=[4.0, 3.0, 1.5], elapsed=9.0,
                train_seconds=5.0)
    assert h.val_loss_at_time(0.0) == 4.0
    assert h.val_loss_at_time(1.0) == pytest.approx(3.5)     # half-way to step 4 (2 s)
    assert h.val_loss_at_time(2.0) == pytest.approx(3.0)
    assert h.val_loss_at_time(3.5) == pytest.approx(2.25)
    assert h.val_loss_at_time(5.0) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="covers 0 to 5 s"):
        h.val_loss_at_time(6.0)                               # beyond the run: no extrapolation
    with pytest.raises(ValueError, match="eval_every"):
        History(step=[1]).val_loss_at_time(0.0)


def test_detach_state_handles_tuples():
    h = torch.ones(2, requires_grad=True) * 2
    c = torch.ones(2, requires_grad=True) * 3
    out = detach_state((h, c))
    assert isinstance(out, tuple) and not out[0].requires_grad and not out[1].requires_grad


class TinyLM(nn.Module):
    def __init__(self, V=5, H=16):
        super().__init__()
        self.rnn = nn.GRU(V, H, batch_first=True)
        self.out = nn.Linear(H, V)
        self.V = V

    def forward(self, x, state=None):
        y, state = self.rnn(nn.functional.one_hot(x, self.V).float(), state)
        return self.out(y), state


def test_lm_loss_carries_detached_state_and_evaluate_lm_learns_a_cycle():
    from rnnlib.text import sequential_batches

    torch.manual_seed(0)
    ids = torch.arange(2000) % 5  # 0 1 2 3 4 0 1 ...: perfectly predictable
    model = TinyLM()
    loss = LMLoss(carry_state=True)
    before = evaluate_lm(model, ids, batch_size=4, seq_len=20)
    h = fit(model, torch.optim.Adam(model.parameters(), lr=0.02), lambda: sequential_batches(ids, 8, 25), loss,
            lambda m: evaluate_lm(m, ids, 4, 20), quiet(steps=60, eval_every=30))
    assert loss.state is not None and not loss.state.requires_grad
    assert before > 1.3 and h.val_loss[-1] < 0.05


def test_two_optimizers_and_sparse_gradients_with_clipping():
    from rnnlib.optim import SparseAdam, split_sparse_dense

    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 8, sparse=True), nn.Flatten(), nn.Linear(24, 1))
    sparse, dense = split_sparse_dense(model)
    opts = [SparseAdam(sparse, lr=0.05), torch.optim.Adam(dense, lr=0.05)]
    x = torch.randint(0, 50, (64, 3))
    y = x.float().sum(1, keepdim=True) / 75.0

    def loss_fn(m, batch):
        return ((m(batch[0]) - batch[1]) ** 2).mean()

    emb_before = model[0].weight.detach().clone()
    h = fit(model, opts, [(x, y)] * 60, loss_fn, None, quiet(steps=60, eval_every=None, clip_norm=10.0))
    assert h.train_loss[-1] < 0.2 * h.train_loss[0]
    assert all(n > 0 for n in h.grad_norm)  # sparse gradients counted in the norm
    untouched = torch.ones(50, dtype=torch.bool)
    untouched[x.unique()] = False
    assert torch.equal(model[0].weight[untouched], emb_before[untouched])  # lazy: rows never seen stay put
    assert 0 < h.seconds_per_step <= h.elapsed / 60


def test_clip_norm_matches_torch_clip_grad_norm():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 4) * 10
    for m in (a, b):
        (m(x) ** 2).sum().backward()
    from rnnlib.train import _clip_by_norm, _grad_norm

    norm = _grad_norm(list(a.parameters()))
    _clip_by_norm(list(a.parameters()), norm, 0.5)
    torch_norm = torch.nn.utils.clip_grad_norm_(b.parameters(), 0.5)
    assert math.isclose(norm, float(torch_norm), rel_tol=1e-6)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-6)
