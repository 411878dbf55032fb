"""fit when things go wrong: non-finite losses and gradients, exploding losses, interrupts at the worst
moment (real SIGINTs), and the best weights across calls. Each test failed on the loop before issue 15."""
import math
import os
import signal

import pytest
import torch
from torch import nn

from rnnlib import train as train_module
from rnnlib.train import (History, LMLoss, StepResult, TrainConfig, TrainingDiverged, evaluate, fit, load_checkpoint,
                          save_checkpoint, train_step)


def quiet(**kw):
    return TrainConfig(progress=False, **kw)


def data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    return X, X @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1


def mse(model, batch):
    x, y = batch
    return ((model(x).squeeze(-1) - y) ** 2).mean()


def stream(n_batches=400, seed=0):
    X, y = data(seed=seed)
    return [(X[k % 4 * 16:(k % 4 + 1) * 16], y[k % 4 * 16:(k % 4 + 1) * 16]) for k in range(n_batches)]


def nan_grad_of_bias_at(steps):
    """A loss that is finite, but whose gradient is NaN for the bias only, at the given steps (1-based)."""
    calls = []

    def loss_fn(model, batch):
        calls.append(1)
        loss = mse(model, batch)
        if len(calls) in steps:  # where() picks the finite branch; the other one's gradient is NaN
            poison = torch.sqrt(-(model.bias.abs() + 1.0)).sum()
            loss = torch.where(torch.tensor(True), loss, poison)
        return loss

    return loss_fn


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------ non-finite steps
def test_a_nan_gradient_in_one_parameter_never_reaches_the_weights():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    reference = nn.Linear(4, 1)
    reference.load_state_dict(model.state_dict())
    fit(reference, torch.optim.SGD(reference.parameters(), lr=0.05), iter(stream()), mse, None,
        quiet(steps=4, eval_every=None, clip_norm=1.0))
    with pytest.raises(TrainingDiverged) as info:
        fit(model, opt, iter(stream()), nan_grad_of_bias_at({5}), None, quiet(steps=10, eval_every=None, clip_norm=1.0))
    err = info.value
    assert isinstance(err, FloatingPointError)
    assert err.step == 5 and "bias" in err.what and "weight" not in err.what
    assert "step 5" in str(err) and "the loss was" in str(err)
    assert "clip_norm" not in str(err)  # clip_norm is set: not suggested again
    assert 'on_nonfinite="skip"' in str(err) and "learning rate (now 0.05)" in str(err)
    assert err.history.steps_done == 4 and len(err.history.train_loss) == 4
    for k, v in weights(model).items():  # exactly the weights after step 4
        assert torch.isfinite(v).all() and torch.equal(v, reference.state_dict()[k]), k


def test_a_non_finite_loss_without_clipping_suggests_clipping_and_names_the_loss():
    model = nn.Linear(4, 1)
    with pytest.raises(TrainingDiverged, match=r"the loss \(inf\) is not finite at step 1.*clip_norm=1.0") as info:
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), iter(stream()), lambda m, b: mse(m, b) * math.inf,
            None, quiet(steps=3, eval_every=None))
    assert "set_detect_anomaly" not in str(info.value)  # that hint is for gradients


def test_a_batch_with_nan_is_named_as_the_cause():
    model = nn.Linear(4, 1)
    batches = stream()
    batches[2] = (batches[2][0].clone().index_fill_(0, torch.tensor([3]), math.nan), batches[2][1])
    with pytest.raises(TrainingDiverged, match="the batch itself holds NaN") as info:
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), iter(batches), mse, None, quiet(steps=5, eval_every=None))
    assert info.value.step == 3


def test_an_update_that_overflows_is_undone_and_named():
    """A finite loss and gradient, but lr * gradient beyond float32: the update's inf never stays in the weights."""
    model = nn.Linear(4, 1)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingDiverged, match=r"the update \(the weights it gave overflowed") as info:
        fit(model, torch.optim.SGD(model.parameters(), lr=1e38), iter(stream()), lambda m, b: 1e5 * mse(m, b), None,
            quiet(steps=5, eval_every=None))
    assert info.value.history.steps_done == 0 and info.value.step == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, start[k]), k  # the weights before the update, bit for bit


def test_an_overflowing_update_is_skipped_in_skip_mode():
    model = nn.Linear(4, 1)
    h = fit(model, torch.optim.SGD(model.parameters(), lr=1e38), iter(stream()), lambda m, b: 1e5 * mse(m, b), None,
            quiet(steps=3, eval_every=None, on_nonfinite="skip"))
    assert h.skipped_step == [1, 2, 3] and all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("make", [
    lambda m: (torch.optim.SGD(m.parameters(), lr=float("nan")), None),
    lambda m: (torch.optim.SGD(m.parameters(), lr=float("inf")), None),
    lambda m: (lambda o: (o, torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0 if s < 3 else float("nan"))))(
        torch.optim.SGD(m.parameters(), lr=0.01)),
    lambda m: (lambda o: (o, torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0 / (3 - s) if s != 3 else math.inf)))(
        torch.optim.Adam(m.parameters(), lr=0.01)),
], ids=["sgd-nan", "sgd-inf", "schedule-nan", "schedule-inf"])
def test_a_non_finite_learning_rate_never_reaches_the_weights(make):
    model = nn.Linear(4, 1)
    opt, scheduler = make(model)
    with pytest.raises(TrainingDiverged, match=r"the learning rate of optimizer 0, group 0 .*finite learning rate") as info:
        fit(model, opt, iter(stream()), mse, None, quiet(steps=6, eval_every=None), scheduler=scheduler)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert "lower the learning rate" not in str(info.value)


def test_weights_that_were_already_broken_are_named():
    model = nn.Linear(4, 1)
    with torch.no_grad():
        model.weight[0, 1] = float("nan")  # e.g. loaded from a bad file
    with pytest.raises(TrainingDiverged, match=r"weights are already not finite \(weight"):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.01), iter(stream()), mse, None,
            quiet(steps=5, eval_every=None))


def test_skip_mode_skips_and_counts_the_steps():
    model = nn.Linear(4, 1)
    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.05), iter(stream()), nan_grad_of_bias_at({3, 7}), None,
            quiet(steps=10, eval_every=None, on_nonfinite="skip"))
    assert h.skipped_step == [3, 7] and h.num_skipped == 2 and all("bias" in r for r in h.skipped_reason)
    assert h.step == [1, 2, 4, 5, 6, 8, 9, 10] and h.steps_done == 10
    assert all(torch.isfinite(p).all() for p in model.parameters())
    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.05), iter(stream()), mse, None,
            quiet(steps=2, eval_every=None), history=h)
    assert h.step[-2:] == [11, 12]


def test_skip_mode_gives_up_after_too_many_skips_in_a_row():
    model = nn.Linear(4, 1)
    with pytest.raises(TrainingDiverged, match="4 steps in a row were skipped") as info:
        fit(model, torch.optim.SGD(model.parameters(), lr=0.05), iter(stream()), nan_grad_of_bias_at(set(range(3, 99))),
            None, quiet(steps=20, eval_every=None, on_nonfinite="skip", max_skips_in_a_row=3))
    assert 'on_nonfinite="skip"' not in str(info.value)  # already set
    assert info.value.history.skipped_step == [3, 4, 5, 6]


def test_nan_in_a_sparse_gradient_is_caught_before_sparse_adam_steps():
    from rnnlib.optim import SparseAdam, split_sparse_dense

    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 3, sparse=True), nn.Flatten(), nn.Linear(6, 1))
    sparse, dense = split_sparse_dense(model)
    opts = [SparseAdam(sparse, lr=0.1), torch.optim.Adam(dense, lr=0.1)]
    x, y = torch.randint(0, 20, (8, 2)), torch.randn(8, 1)

    def loss_fn(m, batch):
        emb = m[0](batch[0])  # (8, 2, 3)
        good = ((m[2](emb.flatten(1)) - batch[1]) ** 2).mean()
        return torch.where(torch.tensor(True), good, torch.sqrt(-(emb.abs() + 1)).sum())

    before = weights(model)
    with pytest.raises(TrainingDiverged, match=r"the gradient of 0\.weight"):
        fit(model, opts, [(x, y)] * 3, loss_fn, None, quiet(steps=3, eval_every=None, clip_norm=1.0))
    for k, v in weights(model).items():
        assert torch.equal(v, before[k]), k
    assert all(len(o.state) == 0 for o in opts)  # no optimizer took a step


def test_an_exploding_lstm_is_reported_once_and_recorded(capsys):
    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.out = nn.LSTM(5, 16, batch_first=True), nn.Linear(16, 5)

        def forward(self, x, state=None):
            y, state = self.rnn(nn.functional.one_hot(x, 5).float(), state)
            return self.out(y), state

    from rnnlib.text import random_batches

    torch.manual_seed(0)
    model = TinyLM()
    ids = torch.randint(0, 5, (2000,))
    h = fit(model, torch.optim.SGD(model.parameters(), lr=1e6), random_batches(ids, 8, 20), LMLoss(), None,
            quiet(steps=30, eval_every=None))
    out = capsys.readouterr().out
    assert max(h.train_loss) > 1e4 * min(h.train_loss)  # it did explode, and stayed finite
    assert out.count("Warning:") == 1 and "times its lowest" in out
    assert len(h.warnings) == 1 and "diverging" in h.warnings[0]


def test_a_healthy_run_reports_nothing(capsys):
    model = nn.Linear(4, 1)
    X, y = data()
    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.05), iter(stream()), mse,
            lambda m: float(mse(m, (X, y))), quiet(steps=300, eval_every=50))
    assert h.val_loss[-1] < 1e-3 * h.val_loss[0]  # converged over three orders of magnitude, no false alarm
    assert h.warnings == [] and "Warning" not in capsys.readouterr().out


def test_any_error_leaves_the_history_on_the_exception():
    model = nn.Linear(4, 1)

    def failing_validation(m):
        if failing_validation.calls == 1:
            raise RuntimeError("validation data went missing")
        failing_validation.calls += 1
        return 1.0

    failing_validation.calls = 0
    with pytest.raises(RuntimeError, match="went missing") as info:
        fit(model, torch.optim.SGD(model.parameters(), lr=0.05), iter(stream()), mse, failing_validation,
            quiet(steps=20, eval_every=5))
    assert info.value.history.steps_done == 5


# ------------------------------------------------------------------------------------ mixed precision (AMP)
def amp_on_cpu(monkeypatch):
    """fit's AMP path runs on CUDA only; a CPU GradScaler exercises the same code here."""
    made = []

    def scaler(config, device):
        made.append(torch.amp.GradScaler("cpu", init_scale=2.0 ** 10) if config.amp else None)
        return made[-1]

    monkeypatch.setattr(train_module, "_grad_scaler", scaler)
    return made


def test_amp_overflow_is_skipped_by_the_scaler_not_raised(monkeypatch):
    made = amp_on_cpu(monkeypatch)
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.05), iter(stream()), nan_grad_of_bias_at({2, 3}), None,
            quiet(steps=8, eval_every=None, amp=True))
    assert h.skipped_step == [2, 3] and h.step == [1, 4, 5, 6, 7, 8]
    assert made[0].get_scale() == 2.0 ** 8  # halved once per overflow, as GradScaler does
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_amp_that_never_recovers_is_reported(monkeypatch):
    amp_on_cpu(monkeypatch)
    model = nn.Linear(4, 1)
    with pytest.raises(TrainingDiverged, match="3 steps in a row") as info:
        fit(model, torch.optim.SGD(model.parameters(), lr=0.05), iter(stream()), nan_grad_of_bias_at(set(range(1, 99))),
            None, quiet(steps=10, eval_every=None, amp=True, max_skips_in_a_row=2))
    assert 'on_nonfinite="skip"' not in str(info.value)


def test_train_step_with_a_scaler_unscales_before_the_norm_and_clipping():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 1), nn.Linear(4, 1)
    b.load_state_dict(a.state_dict())
    batch = stream()[0]
    plain = train_step(a, torch.optim.SGD(a.parameters(), lr=0.1), batch, mse, quiet(clip_norm=0.5))
    scaled = train_step(b, torch.optim.SGD(b.parameters(), lr=0.1), batch, lambda m, bt: mse(m, bt).float(),
                        quiet(clip_norm=0.5), scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))
    assert isinstance(plain, StepResult) and plain.applied and scaled.applied
    assert scaled.grad_norm == pytest.approx(plain.grad_norm, rel=1e-2)  # float16 forward, true-size gradient
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-2, atol=1e-3)


# ------------------------------------------------------------------------------- best weights across calls
def scripted_validation(scores, snapshots):
    it = iter(scores)

    def val_fn(m):
        snapshots.append(weights(m))
        return next(it)

    return val_fn


def test_early_stopping_in_a_continued_call_restores_the_best_weights_of_the_earlier_call():
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    snapshots = []
    val_fn = scripted_validation([5.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0], snapshots)
    h = fit(model, opt, iter(stream()), mse, val_fn, quiet(steps=10, eval_every=5, patience=3))
    assert h.best_step == 5 and not h.stopped_early  # evaluations at 0, 5, 10
    h = fit(model, opt, iter(stream()), mse, val_fn, quiet(steps=50, eval_every=5, patience=3), history=h)
    assert h.stopped_early and h.val_step == [0, 5, 10, 15, 20] and h.best_step == 5
    for k, v in weights(model).items():
        assert torch.equal(v, snapshots[1][k]), k  # the weights of step 5, from the first call


def test_early_stopping_after_resuming_from_a_checkpoint_restores_the_best_weights(tmp_path):
    model = nn.Linear(4, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    snapshots = []
    val_fn = scripted_validation([5.0, 1.0, 2.0, 3.0, 4.0, 5.0], snapshots)

    def interrupt_at_12(m, batch):
        if interrupt_at_12.n == 12:
            raise KeyboardInterrupt
        interrupt_at_12.n += 1
        return mse(m, batch)

    interrupt_at_12.n = 0
    h = fit(model, opt, iter(stream()), interrupt_at_12, val_fn, quiet(steps=50, eval_every=5, patience=3))
    assert h.interrupted and h.steps_done == 12 and h.best_step == 5
    save_checkpoint(tmp_path / "run.pt", model, opt, history=h)

    fresh = nn.Linear(4, 1)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.01)
    h2 = load_checkpoint(tmp_path / "run.pt", fresh, fresh_opt)["history"]
    h2 = fit(fresh, fresh_opt, iter(stream()), mse, val_fn, quiet(steps=50, eval_every=5, patience=3), history=h2)
    assert h2.stopped_early and h2.val_step == [0, 5, 10, 15, 20]
    for k, v in weights(fresh).items():
        assert torch.equal(v, snapshots[1][k]), k


def test_a_history_without_best_weights_says_so_instead_of_restoring_wrong_ones(capsys):
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    val_fn = scripted_validation([5.0, 1.0, 2.0, 3.0, 4.0], [])
    h = fit(model, opt, iter(stream()), mse, val_fn, quiet(steps=5, eval_every=5, restore_best=False))
    assert h.best_state is None
    h = fit(model, opt, iter(stream()), mse, val_fn, quiet(steps=50, eval_every=5, patience=2), history=h)
    assert h.stopped_early and any("were not kept" in w for w in h.warnings)


# ---------------------------------------------------------------------------- interrupts (real SIGINTs)
def sigint():
    os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_inside_the_batch_generator_loses_no_batch_and_the_run_continues(capsys):
    def batches(log):
        for k, batch in enumerate(stream()):
            if k == 4:
                sigint()  # the learner presses Ctrl-C while the generator is computing batch 5
            log.append(k)
            yield batch

    torch.manual_seed(0)
    straight = nn.Linear(4, 1)
    start = weights(straight)
    fit(straight, torch.optim.Adam(straight.parameters(), lr=0.01), iter(stream()), mse, None,
        quiet(steps=12, eval_every=None))

    model = nn.Linear(4, 1)
    model.load_state_dict(start)
    opt, log = torch.optim.Adam(model.parameters(), lr=0.01), []
    gen = batches(log)
    h = fit(model, opt, gen, mse, None, quiet(steps=12, eval_every=None))
    assert h.interrupted and h.steps_done == 5 == len(log)  # batch 5 was fetched, used and recorded
    h = fit(model, opt, gen, mse, None, quiet(steps=7, eval_every=None), history=h)
    assert not h.interrupted and h.step == list(range(1, 13)) and log == list(range(12))
    for k, v in weights(model).items():
        assert torch.equal(v, straight.state_dict()[k]), k


def test_a_generator_killed_by_an_exception_is_named_on_resume():
    def batches():
        for k, batch in enumerate(stream()):
            if k == 3:
                raise KeyboardInterrupt  # raised by code inside the generator: the generator is finished
            yield batch

    model = nn.Linear(4, 1)
    gen = batches()
    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.01), gen, mse, None, quiet(steps=10, eval_every=None))
    assert h.interrupted and h.steps_done == 3
    with pytest.raises(ValueError, match="generator is finished.*cannot continue"):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.01), gen, mse, None, quiet(steps=5, eval_every=None),
            history=h)


class SignallingSGD(torch.optim.SGD):
    """An optimizer that presses Ctrl-C right after its own update, before the next optimizer's."""

    def __init__(self, params, at_step, **kw):
        super().__init__(params, **kw)
        self.at_step, self.calls = at_step, 0

    def step(self, closure=None):
        out = super().step(closure)
        self.calls += 1
        if self.calls == self.at_step:
            sigint()
        return out


def test_ctrl_c_between_two_optimizers_leaves_them_and_the_history_in_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 1))
    first = SignallingSGD(model[0].parameters(), at_step=4, lr=0.01, momentum=0.9)
    second = torch.optim.Adam(model[1].parameters(), lr=0.01)
    h = fit(model, [first, second], iter(stream()), mse, None, quiet(steps=10, eval_every=None))
    assert h.interrupted and h.steps_done == 4
    assert first.calls == 4 and int(second.state[model[1].weight]["step"]) == 4
    h = fit(model, [first, second], iter(stream()), mse, None, quiet(steps=3, eval_every=None), history=h)
    assert h.step == list(range(1, 8)) and int(second.state[model[1].weight]["step"]) == first.calls == 7


def test_ctrl_c_during_a_checkpoint_save_finishes_the_save_first(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    real_save = torch.save
    saves = []

    def save_then_press_ctrl_c(obj, f, *a, **k):
        saves.append(f)
        if len(saves) == 2:
            sigint()
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save_then_press_ctrl_c)
    model = nn.Linear(4, 1)
    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.01), iter(stream()), mse,
            scripted_validation([3.0, 2.0, 1.0, 0.5], []), quiet(steps=20, eval_every=5, checkpoint_path=str(path)))
    assert h.interrupted and h.val_step == [0, 5] and h.steps_done == 5
    assert load_checkpoint(path, nn.Linear(4, 1))["history"].best_step == 5  # the second save completed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_an_interrupt_that_breaks_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    real_save = torch.save
    saves = []

    def broken_save(obj, f, *a, **k):
        saves.append(f)
        if len(saves) == 2:
            with open(f, "wb") as fh:
                fh.write(b"PK\x03\x04 half a file")
            raise KeyboardInterrupt
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", broken_save)
    model = nn.Linear(4, 1)
    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.01), iter(stream()), mse,
            scripted_validation([3.0, 2.0, 1.0], []), quiet(steps=20, eval_every=5, checkpoint_path=str(path)))
    assert h.interrupted
    assert load_checkpoint(path, nn.Linear(4, 1))["history"].best_step == 0  # the first save, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]  # no temporary file left


def test_evaluate_restores_the_mode_and_returns_a_float():
    model = nn.Sequential(nn.Linear(4, 1), nn.Dropout(0.5))
    X, y = data()
    seen = []
    value = evaluate(model, lambda m: (seen.append(m.training), mse(m, (X, y)))[1])
    assert seen == [False] and model.training and isinstance(value, float)
    assert torch.is_grad_enabled()  # gradients are back on after evaluate


@pytest.mark.parametrize("loss_fn, message", [
    (lambda m, b: (m(b[0]).squeeze(-1) - b[1]) ** 2, r"one-element tensor .*shape \(16,\)"),
    (lambda m, b: mse(m, b).item(), "one-element tensor .*got float"),
    (lambda m, b: mse(m, b).detach(), "does not depend on any trainable parameter"),
])
def test_a_loss_fn_that_returns_the_wrong_thing_is_named(loss_fn, message):
    model = nn.Linear(4, 1)
    with pytest.raises(ValueError, match=message) as info:
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), iter(stream()), loss_fn, None,
            quiet(steps=2, eval_every=None))
    assert info.value.history.steps_done == 0


def test_a_history_that_is_not_a_history_is_refused():
    model = nn.Linear(4, 1)
    with pytest.raises(TypeError, match="History.from_dict"):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), iter(stream()), mse, None,
            quiet(steps=2, eval_every=None), history={"step": [1]})
