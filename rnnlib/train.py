"""A model-agnostic training loop with the habits recurrent models need.

:func:`fit` takes a model, an optimizer, a stream of batches and a loss function, and gives back a
:class:`History`. Along the way it clips gradients (by global norm or by value), steps a learning-rate
scheduler, evaluates on validation data, stops early when validation loss stops improving, saves
checkpoints, shows a progress bar and a live loss plot, and survives an interrupt (Ctrl-C / the stop
button) with the model and history intact.

Character language models get two helpers: :class:`LMLoss` (next-character cross-entropy, optionally
carrying the hidden state across sequential batches and detaching it, i.e. truncated BPTT) and
:func:`evaluate_lm` (validation loss in nats per character over a whole text).
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TrainConfig:
    """Settings of one call to :func:`fit`."""

    steps: int = 1000                   # optimizer steps to take in this call
    eval_every: int | None = 100        # validate every this many steps (and at the start and the end)
    clip_norm: float | None = None      # rescale gradients so their global L2 norm is at most this
    clip_value: float | None = None     # clamp every gradient entry to [-clip_value, clip_value]
    patience: int | None = None         # early stopping: evaluations without improvement before stopping
    min_delta: float = 0.0              # an improvement must lower validation loss by more than this
    restore_best: bool = True           # after early stopping, load the weights of the best evaluation
    time_limit: float | None = None     # seconds; stop when exceeded (results then depend on machine speed)
    checkpoint_path: str | None = None  # save a checkpoint here whenever validation loss improves
    amp: bool = False                   # float16 autocast + gradient scaling (CUDA only; ignored elsewhere)
    progress: bool = True               # show a tqdm progress bar
    live_plot: bool = False             # redraw a loss plot in the notebook at each evaluation
    desc: str = "training"              # label of the progress bar and the plot
    loss_label: str = "loss"            # y-axis label of the live plot, with its unit, e.g. "loss (nats/char)"

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        for name in ("eval_every", "patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive int or None, got {value}")
        for name in ("clip_norm", "clip_value", "time_limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, got {value}")
        if self.patience is not None and self.eval_every is None:
            raise ValueError("early stopping (patience) needs validation: set eval_every")


@dataclass
class History:
    """What happened during training; plain lists, so it saves into a checkpoint and plots directly."""

    step: list = field(default_factory=list)        # optimizer step (1-based) of each entry below
    train_loss: list = field(default_factory=list)
    grad_norm: list = field(default_factory=list)   # global gradient norm before clipping
    lr: list = field(default_factory=list)
    val_step: list = field(default_factory=list)    # step at which each validation loss was measured
    val_loss: list = field(default_factory=list)
    elapsed: float = 0.0                            # seconds spent in training steps and evaluations
    train_seconds: float = 0.0                      # seconds spent in training steps only
    best_val_loss: float = math.inf
    best_step: int = 0
    stopped_early: bool = False
    interrupted: bool = False                       # the latest call to fit was stopped by an interrupt

    @property
    def steps_done(self) -> int:
        return self.step[-1] if self.step else 0

    @property
    def seconds_per_step(self) -> float:
        """Wall time of one training step (forward, backward, optimizer), evaluations excluded."""
        return (self.train_seconds or self.elapsed) / max(1, len(self.step))

    def val_loss_at_time(self, seconds: float) -> float:
        """The validation loss after ``seconds`` of training, read off the validation curve.

        Training time is counted as the run's measured time per step times the step (evaluations
        excluded, so a slow validation pass does not count against a model), and the loss is interpolated
        linearly between the two evaluations around it. This is how runs that took different times per
        step are compared at one wall-clock budget: give each ``min`` of their ``train_seconds``.
        """
        if not self.val_loss:
            raise ValueError("this history has no validation losses: train with eval_every set to record them")
        times = [s * self.seconds_per_step for s in self.val_step]
        if not times[0] <= seconds <= times[-1] * (1 + 1e-9):
            raise ValueError(f"{seconds:.3g} s is outside this run's validation curve, which covers "
                             f"{times[0]:.3g} to {times[-1]:.3g} s of training; pick a time within it")
        for k in range(1, len(times)):
            if seconds <= times[k]:
                t0, t1, l0, l1 = times[k - 1], times[k], self.val_loss[k - 1], self.val_loss[k]
                return float(l0 if t1 == t0 else l0 + (l1 - l0) * (seconds - t0) / (t1 - t0))
        return float(self.val_loss[-1])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "History":
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def detach_state(state):
    """Detach a hidden state (a tensor, or a tuple/list of tensors such as LSTM's ``(h, c)``) from the graph."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _grad_norm(params: list[torch.Tensor]) -> float:
    """Global L2 norm of all gradients (sparse ones, e.g. from ``nn.Embedding(sparse=True)``, included)."""
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norms = [torch.linalg.vector_norm(g.coalesce().values() if g.is_sparse else g) for g in grads]
    return float(torch.linalg.vector_norm(torch.stack(norms)))


def _clip_by_norm(params: list[torch.Tensor], norm: float, max_norm: float) -> None:
    """Scale all gradients by ``min(1, max_norm / norm)``, as ``torch.nn.utils.clip_grad_norm_`` does,
    but for sparse gradients too."""
    coef = min(1.0, max_norm / (norm + 1e-6))
    for p in params:
        if p.grad is not None:
            p.grad.mul_(coef)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | list[torch.optim.Optimizer],
    batches: Iterable | Callable[[], Iterable],
    loss_fn: Callable[[nn.Module, object], torch.Tensor],
    val_fn: Callable[[nn.Module], float] | None = None,
    config: TrainConfig | None = None,
    scheduler=None,
    history: History | None = None,
) -> History:
    """Train ``model`` for ``config.steps`` optimizer steps and return the :class:`History`.

    Args:
        optimizer: one optimizer, or a list of them for different parameters (e.g. ``SparseAdam`` for a
            sparse embedding and ``Adam`` for the rest); each is stepped after every backward pass.
        batches: an iterable of batches, or a function returning one (called again whenever the
            previous one is exhausted: one call per epoch). Tensors in a batch are moved to the model's device.
        loss_fn: ``loss_fn(model, batch)`` returns a scalar loss. If it has an ``on_epoch_start()``
            method, that is called whenever a new pass over ``batches`` begins (see :class:`LMLoss`).
        val_fn: ``val_fn(model)`` returns the validation loss (called in eval mode, without gradients).
        scheduler: stepped after every optimizer step, or, for ``ReduceLROnPlateau``, after every
            evaluation with the validation loss.
        history: pass the History of an earlier call (or of a checkpoint) to continue counting from it.
    """
    config = config or TrainConfig()
    history = history if history is not None else History()
    history.interrupted = False  # describes this call; a continued run starts uninterrupted
    optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    if config.eval_every is not None and val_fn is None:
        raise ValueError("config.eval_every is set but no val_fn was given; pass val_fn or set eval_every=None")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    device = params[0].device
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    from tqdm.auto import tqdm

    from .plots import LivePlot

    live = LivePlot(title=config.desc, ylabel=config.loss_label) if config.live_plot else None
    bar = tqdm(total=config.steps, desc=config.desc, disable=not config.progress, mininterval=1.0)
    start_step = history.steps_done
    evals_without_improvement = 0
    best_state = None
    iterator = None
    t0 = time.perf_counter()
    elapsed0 = history.elapsed

    def evaluate(step: int) -> float:
        nonlocal evals_without_improvement, best_state
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                value = float(val_fn(model))
        finally:  # an interrupt during validation must not leave the model in eval mode
            model.train(was_training)
        history.val_step.append(step)
        history.val_loss.append(value)
        if value < history.best_val_loss - config.min_delta:
            history.best_val_loss, history.best_step = value, step
            evals_without_improvement = 0
            if config.patience is not None and config.restore_best:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if config.checkpoint_path:
                save_checkpoint(config.checkpoint_path, model, optimizer, scheduler, history)
        else:
            evals_without_improvement += 1
        if plateau:
            scheduler.step(value)
        if live is not None:
            live.update(history)
        return value

    def next_batch():
        nonlocal iterator
        for _ in range(2):
            if iterator is None:
                iterator = iter(batches() if callable(batches) else batches)
                if hasattr(loss_fn, "on_epoch_start"):
                    loss_fn.on_epoch_start()
            try:
                return next(iterator)
            except StopIteration:
                if not callable(batches):
                    raise ValueError(
                        "the batch iterable ran out before config.steps steps; pass a function that "
                        "returns a fresh iterable (one epoch) so fit can start another pass"
                    ) from None
                iterator = None
        raise ValueError("batches() returned an empty iterable")

    model.train()
    try:
        if val_fn is not None and config.eval_every is not None and not history.val_step:
            evaluate(start_step)
        for step in range(start_step + 1, start_step + config.steps + 1):
            batch = _to_device(next_batch(), device)
            t_step = time.perf_counter()
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                loss = loss_fn(model, batch)
            if not torch.isfinite(loss.detach()):
                raise FloatingPointError(
                    f"the loss became {float(loss.detach())} at step {step}; lower the learning rate or clip gradients "
                    "(TrainConfig(clip_norm=1.0))"
                )
            if scaler is not None:
                scaler.scale(loss).backward()
                for opt in optimizers:
                    scaler.unscale_(opt)
            else:
                loss.backward()
            norm = _grad_norm(params)
            if config.clip_value is not None:
                if any(p.grad is not None and p.grad.is_sparse for p in params):
                    raise ValueError("clip_value does not support sparse gradients; use clip_norm")
                torch.nn.utils.clip_grad_value_(params, config.clip_value)
            if config.clip_norm is not None:
                _clip_by_norm(params, _grad_norm(params) if config.clip_value is not None else norm, config.clip_norm)
            for opt in optimizers:
                if scaler is not None:
                    scaler.step(opt)
                else:
                    opt.step()
            if scaler is not None:
                scaler.update()
            if scheduler is not None and not plateau:
                scheduler.step()
            history.step.append(step)
            history.train_loss.append(float(loss.detach()))
            history.grad_norm.append(norm)
            history.lr.append(optimizers[0].param_groups[0]["lr"])
            history.train_seconds += time.perf_counter() - t_step
            history.elapsed = elapsed0 + time.perf_counter() - t0
            bar.update(1)
            last = step == start_step + config.steps
            out_of_time = config.time_limit is not None and time.perf_counter() - t0 > config.time_limit
            if val_fn is not None and config.eval_every is not None and (step % config.eval_every == 0 or last or out_of_time):
                evaluate(step)
                bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}", val=f"{history.val_loss[-1]:.3f}")
                if config.patience is not None and evals_without_improvement >= config.patience:
                    history.stopped_early = True
                    break
            if out_of_time:
                break
    except KeyboardInterrupt:
        history.interrupted = True
        print(
            f"Training interrupted after step {history.steps_done}. The model keeps its latest weights and "
            "the returned History holds everything recorded so far; call fit again with history=... to continue."
        )
    finally:
        history.elapsed = elapsed0 + time.perf_counter() - t0
        bar.close()
    if history.stopped_early and best_state is not None:
        model.load_state_dict(best_state)
    return history


class LMLoss:
    """Next-token cross-entropy for models called as ``logits, state = model(X, state)``.

    With ``carry_state=True`` the final state of one batch is detached and fed as the initial state of
    the next (use with :func:`rnnlib.text.sequential_batches`): the model sees an unbroken text while
    gradients flow back at most one batch (truncated BPTT). The state is reset at each new epoch.
    """

    def __init__(self, carry_state: bool = False):
        self.carry_state = carry_state
        self.state = None

    def on_epoch_start(self) -> None:
        self.state = None

    def __call__(self, model: nn.Module, batch) -> torch.Tensor:
        X, Y = batch
        logits, state = model(X, self.state if self.carry_state else None)
        if self.carry_state:
            self.state = detach_state(state)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), Y.reshape(-1))


@torch.no_grad()
def evaluate_lm(model: nn.Module, ids: torch.Tensor, batch_size: int = 16, seq_len: int = 256,
                max_batches: int | None = None) -> float:
    """Mean next-token cross-entropy (nats per token) over ``ids``, reading it as ``batch_size`` streams
    with the state carried across batches, so each prediction has its full left context.

    Short texts get fewer streams and shorter batches; the last few tokens that do not fill a whole
    batch (fewer than ``batch_size * seq_len``) are not scored.
    """
    from .text import sequential_batches

    batch_size = max(1, min(batch_size, (len(ids) - 1) // 2))
    seq_len = max(1, min(seq_len, (len(ids) - 1) // batch_size))

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count, state = 0.0, 0, None
    for k, (X, Y) in enumerate(sequential_batches(ids, batch_size, seq_len)):
        if max_batches is not None and k >= max_batches:
            break
        logits, state = model(X.to(device), state)
        total += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), Y.to(device).reshape(-1), reduction="sum"))
        count += Y.numel()
    model.train(was_training)
    return total / count


def _state_of(obj):
    """``state_dict()`` of an optimizer/scheduler, a list of them, or None."""
    if obj is None:
        return None
    if isinstance(obj, (list, tuple)):
        return [o.state_dict() for o in obj]
    return obj.state_dict()


def save_checkpoint(path, model: nn.Module, optimizer=None, scheduler=None, history: History | None = None,
                    extra: dict | None = None) -> None:
    """Save everything needed to resume exactly: weights, optimizer and scheduler state, history, RNG state.

    Written to a temporary file and renamed, so an interrupted save never leaves a broken checkpoint.
    ``extra`` may hold tensors and plain Python values (e.g. a batch generator's ``get_state()``).
    """
    payload = {
        "model": model.state_dict(),
        "optimizer": _state_of(optimizer),
        "scheduler": _state_of(scheduler),
        "history": history.to_dict() if history is not None else None,
        "torch_rng": torch.get_rng_state(),
        "extra": extra or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".part")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_checkpoint(path, model: nn.Module, optimizer=None, scheduler=None, restore_rng: bool = True) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects.

    Uses ``torch.load(..., weights_only=True)``: only tensors and plain containers are read, never code.
    Returns ``{"history": History | None, "extra": dict}``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    payload = torch.load(path, map_location=next(model.parameters()).device, weights_only=True)
    model.load_state_dict(payload["model"])
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is None:
            continue
        state = payload[name]
        if state is None:
            raise ValueError(f"{path} holds no {name} state")
        objs = list(obj) if isinstance(obj, (list, tuple)) else [obj]
        states = state if isinstance(state, list) else [state]
        if len(objs) != len(states):
            raise ValueError(f"{path} holds the state of {len(states)} {name}(s), but {len(objs)} were given")
        for o, st in zip(objs, states):
            o.load_state_dict(st)
    if restore_rng:
        torch.set_rng_state(payload["torch_rng"].cpu())
    history = History.from_dict(payload["history"]) if payload["history"] is not None else None
    return {"history": history, "extra": payload["extra"]}
