r"""A model-agnostic training loop with the habits recurrent models need.

Two short functions do the work a reader should see. :func:`train_step` is one optimizer step on one
batch: zero the gradients, run the model and the loss :math:`L`, backpropagate, measure the global
gradient norm

.. math::  \|g\| = \Big(\sum_{p} \|\nabla_p L\|_2^2\Big)^{1/2} \quad\text{(over all parameters } p\text{)},

refuse the step if :math:`L` or :math:`\|g\|` is not finite (nothing non-finite ever reaches the weights),
clip (by norm, :math:`g \leftarrow g \min(1, c / \|g\|)`, or by value, each entry into :math:`[-c, c]`),
and step every optimizer. :func:`evaluate` is one validation pass, in eval mode and without gradients.

:func:`fit` is the loop around them. It takes a model, optimizer(s), a stream of batches and a loss
function, and gives back a :class:`History`. Along the way it steps a learning-rate scheduler, evaluates,
stops early when validation loss stops improving (and restores the best weights), saves checkpoints,
shows a progress bar and a live loss plot, and keeps everything when something goes wrong:

* a non-finite loss or gradient stops training with :class:`TrainingDiverged` (it carries the History as
  ``err.history`` and names the step, what went non-finite, and what to try), or, with
  ``TrainConfig(on_nonfinite="skip")``, skips the step and counts it; a training loss that grows by orders
  of magnitude over its running minimum is reported once and recorded in ``History.warnings``;
* an interrupt (Ctrl-C, the notebook's stop button) is held until the step in progress, its record and
  any checkpoint are complete, so the model, the optimizers and the History always agree and another
  call with ``history=`` continues the run (a second Ctrl-C stops at once);
* the best weights and their step live in the History (``best_state``, ``best_step``), so they survive an
  interrupt, a checkpoint and a later call, and early stopping restores them across calls.

Character language models get two helpers: :class:`LMLoss` (next-character cross-entropy, optionally
carrying the hidden state across sequential batches and detaching it, i.e. truncated BPTT) and
:func:`evaluate_lm` (validation loss in nats per character over a whole text). Checkpoints live in
:mod:`rnnlib.checkpoint` (:func:`~rnnlib.checkpoint.save_checkpoint` and :func:`~rnnlib.checkpoint.load_checkpoint` are importable from here too).
"""
from __future__ import annotations

import inspect
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: F401 (importable from here)

@dataclass
class TrainConfig:
    """Settings of one call to :func:`fit`."""

    steps: int = 1000                   # optimizer steps to take in this call
    eval_every: int | None = 100        # validate every this many steps (and at the start and the end)
    clip_norm: float | None = None      # rescale gradients so their global L2 norm is at most this
    clip_value: float | None = None     # clamp every gradient entry to [-clip_value, clip_value]
    patience: int | None = None         # early stopping: evaluations without improvement before stopping
    min_delta: float = 0.0              # an improvement must lower validation loss by more than this
    restore_best: bool = True           # keep the best weights in the History; early stopping loads them
    time_limit: float | None = None     # seconds; stop when exceeded (results then depend on machine speed)
    checkpoint_path: str | None = None  # save a checkpoint here whenever validation loss improves
    amp: bool = False                   # float16 autocast + gradient scaling (CUDA only; ignored elsewhere)
    on_nonfinite: str = "raise"         # non-finite loss or gradient: "raise" TrainingDiverged, or "skip" the step
    max_skips_in_a_row: int = 20        # more consecutive skipped steps than this raise TrainingDiverged
    warn_loss_growth: float | None = 100.0  # report a smoothed training loss this many times its minimum
    progress: bool = True               # show a tqdm progress bar
    live_plot: bool = False             # redraw a loss plot in the notebook at each evaluation
    desc: str = "training"              # label of the progress bar and the plot
    loss_label: str = "loss"            # y-axis label of the live plot, with its unit, e.g. "loss (nats/char)"

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        for name in ("eval_every", "patience", "max_skips_in_a_row"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive int or None, got {value}")
        for name in ("clip_norm", "clip_value", "time_limit"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value}")
        if self.warn_loss_growth is not None and not self.warn_loss_growth > 1:
            raise ValueError(f"warn_loss_growth must be a factor > 1 or None, got {self.warn_loss_growth}")
        if self.on_nonfinite not in ("raise", "skip"):
            raise ValueError(f'on_nonfinite must be "raise" or "skip", got {self.on_nonfinite!r}')
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
    stopped_early: bool = False                     # the latest call to fit stopped early
    interrupted: bool = False                       # the latest call to fit was stopped by an interrupt
    skipped_step: list = field(default_factory=list)    # steps whose update was not applied ...
    skipped_reason: list = field(default_factory=list)  # ... and what was not finite at each
    warnings: list = field(default_factory=list)    # what fit reported, e.g. a loss that grew 100-fold
    best_state: dict | None = field(default=None, compare=False, repr=False)  # weights at best_step (CPU)

    @property
    def steps_done(self) -> int:
        """The number of the last step taken or skipped; a continued run starts after it."""
        return max(self.step[-1:] + self.skipped_step[-1:] + [0])

    @property
    def num_skipped(self) -> int:
        return len(self.skipped_step)

    @property
    def evals_since_best(self) -> int:
        """The number of evaluations since the best one, which early stopping compares with ``patience`` (across calls)."""
        return sum(1 for s in self.val_step if s > self.best_step) if self.val_step else 0

    @property
    def seconds_per_step(self) -> float:
        """Wall time of one training step (forward, backward, optimizer), evaluations excluded."""
        return (self.train_seconds or self.elapsed) / max(1, len(self.step) + len(self.skipped_step))

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


class TrainingDiverged(FloatingPointError):
    """Training produced a non-finite loss or gradient; nothing of it reached the weights.

    ``history`` holds everything recorded so far, ``step`` the step that failed and ``what`` what was
    not finite (the loss, or the gradient of which parameter).
    """

    def __init__(self, message: str, history: "History", step: int, what: str):
        super().__init__(message)
        self.history, self.step, self.what = history, step, what


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


def _values(grad: torch.Tensor) -> torch.Tensor:
    return grad.coalesce().values() if grad.is_sparse else grad


def _grad_norm(params: list[torch.Tensor]) -> float:
    """Global L2 norm of all gradients (sparse ones, e.g. from ``nn.Embedding(sparse=True)``, included)."""
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norms = [torch.linalg.vector_norm(_values(g)) for g in grads]
    return float(torch.linalg.vector_norm(torch.stack(norms)))


def _clip_by_norm(params: list[torch.Tensor], norm: float, max_norm: float) -> None:
    """Scale all gradients by ``min(1, max_norm / norm)``, as ``torch.nn.utils.clip_grad_norm_`` does,
    but for sparse gradients too."""
    coef = min(1.0, max_norm / (norm + 1e-6))
    for p in params:
        if p.grad is not None:
            p.grad.mul_(coef)


def _clip(params: list[torch.Tensor], norm: float, config: TrainConfig) -> None:
    if config.clip_value is not None:
        if any(p.grad is not None and p.grad.is_sparse for p in params):
            raise ValueError("clip_value does not support sparse gradients; use clip_norm")
        torch.nn.utils.clip_grad_value_(params, config.clip_value)
        norm = _grad_norm(params)
    if config.clip_norm is not None:
        _clip_by_norm(params, norm, config.clip_norm)


def _nonfinite_gradients(model: nn.Module) -> str:
    """Which gradients are not finite, e.g. "the gradient of rnn.weight_hh_l0 (3 of 4096 entries NaN or inf)"."""
    found, largest = [], (0.0, "")
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        values = _values(p.grad.detach())
        bad = int((~torch.isfinite(values)).sum())
        if bad:
            found.append(f"{name} ({bad} of {values.numel()} entries NaN or inf)")
        elif values.numel():
            largest = max(largest, (float(values.abs().max()), name))
    if found:
        return "the gradient of " + ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    return (f"the gradient norm (it overflowed: the largest entry, {largest[0]:.3g} in {largest[1]}, is finite, "
            "but the sum of squares is not)")


def _nonfinite_learning_rate(optimizers) -> str | None:
    """ "the learning rate of optimizer 0, group 1 (nan)" for the first group whose lr is NaN or infinite."""
    for i, opt in enumerate(optimizers):
        for j, group in enumerate(opt.param_groups):
            lr = float(group.get("lr", 0.0))
            if not math.isfinite(lr):
                return f"the learning rate of optimizer {i}, group {j} ({lr}; set by the schedule or the optimizer)"
    return None


def _check_loss(loss) -> None:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        what = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return the loss as a one-element tensor (e.g. a mean), got {what}")
    if not loss.requires_grad:
        raise ValueError("the loss does not depend on any trainable parameter: was it computed under "
                         "torch.no_grad(), detached, or turned into a Python number?")


@dataclass
class StepResult:
    """What :func:`train_step` did: the loss, the gradient norm before clipping, and why it skipped, if it did."""

    loss: float
    grad_norm: float
    skipped: str | None = None  # what was not finite; None when the optimizers stepped

    @property
    def applied(self) -> bool:
        return self.skipped is None


def train_step(model: nn.Module, optimizers, batch, loss_fn: Callable, config: TrainConfig | None = None,
               scaler: torch.amp.GradScaler | None = None) -> StepResult:
    """One optimizer step: zero grads, forward and loss, backward, gradient norm, finite check, clip, step.

    Nothing reaches the weights unless the loss, the gradient norm and every learning rate are finite,
    and an update that leaves a weight infinite or NaN is undone from a copy taken before it. With a ``scaler``
    (mixed precision) the loss is scaled before ``backward`` and the gradients unscaled before the norm;
    on non-finite gradients the scaler skips the step and lowers its scale, as it is meant to.
    """
    config = config or TrainConfig()
    optimizers = optimizers if isinstance(optimizers, (list, tuple)) else [optimizers]
    params = [p for p in model.parameters() if p.requires_grad]
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    with torch.autocast(params[0].device.type, dtype=torch.float16, enabled=scaler is not None):
        loss = loss_fn(model, batch)                              # forward pass and loss L
    _check_loss(loss)
    value = float(loss.detach())
    if not math.isfinite(value):
        return StepResult(value, math.nan, skipped=f"the loss ({value})")
    if scaler is None:
        loss.backward()                                           # gradients dL/dparameter
    else:
        scaler.scale(loss).backward()                             # mixed precision: scaled loss, then
        for opt in optimizers:
            scaler.unscale_(opt)                                  # the true gradients
    norm = _grad_norm(params)                                     # ||g||, before clipping
    if not math.isfinite(norm):
        if scaler is not None:                                    # the scaler skips and lowers its scale
            for opt in optimizers:
                scaler.step(opt)
            scaler.update()
        return StepResult(value, norm, skipped=_nonfinite_gradients(model))
    _clip(params, norm, config)                                   # by value, then by norm
    bad_lr = _nonfinite_learning_rate(optimizers)                 # e.g. a schedule that returned NaN
    if bad_lr:
        return StepResult(value, norm, skipped=bad_lr)
    before = [p.detach().clone() for p in params]                 # to undo an update that overflows
    for opt in optimizers:
        scaler.step(opt) if scaler is not None else opt.step()   # the update
    if scaler is not None:
        scaler.update()
    if not bool(torch.stack([torch.isfinite(p.detach()).all() for p in params]).all()):  # one sync
        with torch.no_grad():
            for p, old in zip(params, before):
                p.copy_(old)                                      # the weights as they were
        return StepResult(value, norm, skipped="the update (the weights it gave overflowed, so the weights "
                                               "before it were put back)")
    return StepResult(value, norm)


def evaluate(model: nn.Module, val_fn: Callable[[nn.Module], float]) -> float:
    """``val_fn(model)`` in eval mode (no dropout) without gradients; the model's mode is restored after,
    even if an interrupt stops the evaluation."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return float(val_fn(model))
    finally:
        model.train(was_training)


class _HeldInterrupts:
    """Within the block, Ctrl-C (SIGINT) waits until the block ends, so that what it does is done whole.

    Only in the main thread and while SIGINT has a Python handler (a script, a notebook kernel); a second
    Ctrl-C within the block interrupts at once.
    """

    def __enter__(self):
        self.received, self.previous = False, None
        if threading.current_thread() is threading.main_thread():
            handler = signal.getsignal(signal.SIGINT)
            if callable(handler):
                self.previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def _hold(self, signum, frame):
        if self.received:
            raise KeyboardInterrupt
        self.received = True

    def __exit__(self, exc_type, exc, tb):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            if self.received and exc_type is None:
                self.previous(signal.SIGINT, None)  # the handler that was there: usually raises KeyboardInterrupt
        return False


class _Batches:
    """Batches from an iterable, or from a function called again for every epoch."""

    def __init__(self, batches, loss_fn):
        if not callable(batches) and inspect.isgenerator(batches) and \
                inspect.getgeneratorstate(batches) == inspect.GEN_CLOSED:
            raise ValueError(
                "the batch generator is finished: it ran out, or an exception stopped it inside, and a Python "
                "generator cannot continue after that. Pass a new one, or a function that returns a fresh "
                "iterable (one epoch) so fit can start passes itself"
            )
        self.batches, self.loss_fn, self.iterator = batches, loss_fn, None

    def next(self):
        for _ in range(2):
            if self.iterator is None:
                self.iterator = iter(self.batches() if callable(self.batches) else self.batches)
                if hasattr(self.loss_fn, "on_epoch_start"):
                    self.loss_fn.on_epoch_start()
            try:
                return next(self.iterator)
            except StopIteration:
                if not callable(self.batches):
                    raise ValueError(
                        "the batch iterable ran out before config.steps steps; pass a function that "
                        "returns a fresh iterable (one epoch) so fit can start another pass"
                    ) from None
                self.iterator = None
        raise ValueError("batches() returned an empty iterable")


def _has_nonfinite(batch) -> bool:
    if isinstance(batch, torch.Tensor):
        return batch.is_floating_point() and not bool(torch.isfinite(batch).all())
    if isinstance(batch, (tuple, list)):
        return any(_has_nonfinite(b) for b in batch)
    if isinstance(batch, dict):
        return any(_has_nonfinite(b) for b in batch.values())
    return False


class _Bookkeeper:
    """What fit does around each step and evaluation: the History, the best weights, checkpoints, warnings."""

    def __init__(self, model, optimizers, scheduler, config: TrainConfig, history: History, amp: bool):
        self.model, self.optimizers, self.scheduler, self.config, self.history = \
            model, optimizers, scheduler, config, history
        self.amp, self.skips_in_a_row, self.reported = amp, 0, set()
        self.plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        self.smoothed, self.lowest = None, math.inf  # of the training loss, for the growth warning
        for value in history.train_loss:
            self._watch(value)
        self.live = None
        if config.live_plot:
            from .plots import LivePlot

            self.live = LivePlot(title=config.desc, ylabel=config.loss_label)

    def warn(self, kind: str, message: str) -> None:
        """Print once per call and record in the History."""
        if kind not in self.reported:
            self.reported.add(kind)
            self.history.warnings.append(message)
            print(f"Warning: {message}")

    def _watch(self, value: float) -> bool:
        self.smoothed = value if self.smoothed is None else 0.9 * self.smoothed + 0.1 * value
        self.lowest = min(self.lowest, self.smoothed)
        factor = self.config.warn_loss_growth
        return (factor is not None and self.lowest > 0 and self.smoothed > factor * self.lowest
                and self.smoothed > self.history.train_loss[0])

    def record_step(self, step: int, result: StepResult, batch) -> None:
        h = self.history
        if result.applied:
            self.skips_in_a_row = 0
            h.step.append(step)
            h.train_loss.append(result.loss)
            h.grad_norm.append(result.grad_norm)
            h.lr.append(self.optimizers[0].param_groups[0]["lr"])
            if self._watch(result.loss):
                self.warn("growth", f"at step {step} the training loss (smoothed: {self.smoothed:.3g}) is "
                                    f"{self.smoothed / self.lowest:.0f} times its lowest ({self.lowest:.3g}): the run is "
                                    "diverging. Lower the learning rate" +
                          ("" if self.config.clip_norm else " or clip gradients (TrainConfig(clip_norm=1.0))"))
            return
        if not self.amp and self.config.on_nonfinite == "raise":
            raise self._diverged(step, result, batch, f"{result.skipped} is not finite at step {step}")
        self.skips_in_a_row += 1
        h.skipped_step.append(step)
        h.skipped_reason.append(result.skipped)
        if self.skips_in_a_row > self.config.max_skips_in_a_row:
            raise self._diverged(step, result, batch, f"{self.skips_in_a_row} steps in a row were skipped (up to "
                                                      f"step {step}; the last because {result.skipped} is not finite)")

    def _diverged(self, step: int, result: StepResult, batch, what: str) -> TrainingDiverged:
        tips = []
        if _has_nonfinite(batch):
            tips.append("the batch itself holds NaN or inf values: clean the data")
        broken = [name for name, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if broken:
            tips.append(f"the weights are already not finite ({', '.join(broken[:3])}): an earlier update "
                        "overflowed or they were loaded so; " +
                        ("load the best weights (model.load_state_dict(err.history.best_state))"
                         if self.history.best_state is not None else "load good weights (a checkpoint)"))
        lrs = ", ".join(f"{float(lr):g}" for lr in sorted({float(g["lr"]) for o in self.optimizers for g in o.param_groups}))
        if (result.skipped or "").startswith("the learning rate"):
            tips.append(f"give every optimizer a finite learning rate (now {lrs}): check its lr= and what the "
                        "scheduler computes (a LambdaLR function, a factor, a division by zero)")
        else:
            tips.append(f"lower the learning rate (now {lrs})")
        if self.config.clip_norm is None and self.config.clip_value is None:
            tips.append("clip gradients: TrainConfig(clip_norm=1.0)")
        if math.isfinite(result.loss) and not self.amp:
            tips.append("find the operation that made it: torch.autograd.set_detect_anomaly(True)")
        if self.config.on_nonfinite == "raise" and not self.amp:
            tips.append('skip such steps instead: TrainConfig(on_nonfinite="skip")')
        loss = f" (the loss was {result.loss:.4g})" if math.isfinite(result.loss) else ""
        message = (f"training diverged: {what}{loss}. That step was not applied: the model holds the weights after "
                   f"step {self.history.steps_done} and err.history everything recorded so far. To try: "
                   + "; ".join(tips) + ".")
        return TrainingDiverged(message, self.history, step, result.skipped)

    def record_evaluation(self, step: int, value: float) -> None:
        h, config = self.history, self.config
        h.val_step.append(step)
        h.val_loss.append(value)
        if not math.isfinite(value):
            self.warn("val", f"the validation loss is {value} at step {step}; it never counts as an improvement")
        if value < h.best_val_loss - config.min_delta:
            h.best_val_loss, h.best_step = value, step
            if config.restore_best:
                h.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            if config.checkpoint_path:
                save_checkpoint(config.checkpoint_path, self.model, self.optimizers, self.scheduler, h)
        if self.plateau:
            self.scheduler.step(value)
        if self.live is not None:
            self.live.update(h)

    def restore_best(self) -> None:
        h = self.history
        if h.best_state is not None:
            self.model.load_state_dict(h.best_state)
        else:
            self.warn("best", f"the best weights (step {h.best_step}) were not kept (restore_best was off when they "
                              "were reached), so the model keeps its latest weights")


def _grad_scaler(config: TrainConfig, device: torch.device) -> torch.amp.GradScaler | None:
    """Mixed precision's loss scaler: on CUDA when ``config.amp``; None (plain float32) elsewhere."""
    return torch.amp.GradScaler("cuda") if config.amp and device.type == "cuda" else None


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
    """Train ``model`` for ``config.steps`` optimizer steps (:func:`train_step`) and return the :class:`History`.

    Args:
        optimizer: one optimizer, or a list of them for different parameters (e.g. ``SparseAdam`` for a
            sparse embedding and ``Adam`` for the rest); each is stepped after every backward pass.
        batches: an iterable of batches, or a function returning one (called again whenever the
            previous one is exhausted: one call per epoch). Tensors in a batch are moved to the model's device.
        loss_fn: ``loss_fn(model, batch)`` returns a scalar loss. If it has an ``on_epoch_start()``
            method, that is called whenever a new pass over ``batches`` begins (see :class:`LMLoss`).
        val_fn: ``val_fn(model)`` returns the validation loss (called by :func:`evaluate`).
        scheduler: stepped after every step, or, for ``ReduceLROnPlateau``, after every evaluation with
            the validation loss.
        history: pass the History of an earlier call (or of a checkpoint) to continue counting from it;
            its best weights and early-stopping count carry over.

    Raises :class:`TrainingDiverged` on a non-finite loss or gradient (unless ``config.on_nonfinite`` is
    ``"skip"``); any error leaves the History at ``err.history``. An interrupt returns the History.
    """
    config = config or TrainConfig()
    history = history if history is not None else History()
    if not isinstance(history, History):
        raise TypeError(f"history must be a History (History.from_dict(d) turns a saved dict into one), "
                        f"got {type(history).__name__}")
    history.interrupted = history.stopped_early = False  # both describe the latest call
    optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    if config.eval_every is not None and val_fn is None:
        raise ValueError("config.eval_every is set but no val_fn was given; pass val_fn or set eval_every=None")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    device = params[0].device
    scaler = _grad_scaler(config, device)
    stream = _Batches(batches, loss_fn)
    books = _Bookkeeper(model, optimizers, scheduler, config, history, amp=scaler is not None)
    validating = val_fn is not None and config.eval_every is not None

    from tqdm.auto import tqdm

    bar = tqdm(total=config.steps, desc=config.desc, disable=not config.progress, mininterval=1.0)
    start, t0, elapsed0 = history.steps_done, time.perf_counter(), history.elapsed
    model.train()
    try:
        if validating and not history.val_step:
            value = evaluate(model, val_fn)
            with _HeldInterrupts():
                books.record_evaluation(start, value)
        for step in range(start + 1, start + config.steps + 1):
            with _HeldInterrupts():  # a step is taken and recorded whole, or not at all
                batch = _to_device(stream.next(), device)
                t_step = time.perf_counter()
                books.record_step(step, train_step(model, optimizers, batch, loss_fn, config, scaler), batch)
                if scheduler is not None and not books.plateau:
                    scheduler.step()
                history.train_seconds += time.perf_counter() - t_step
                history.elapsed = elapsed0 + time.perf_counter() - t0
            bar.update(1)
            out_of_time = config.time_limit is not None and time.perf_counter() - t0 > config.time_limit
            if validating and (step % config.eval_every == 0 or step == start + config.steps or out_of_time):
                value = evaluate(model, val_fn)  # may be interrupted: nothing is recorded until it returns
                with _HeldInterrupts():
                    books.record_evaluation(step, value)
                bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}" if history.train_loss else "-",
                                val=f"{value:.3f}")
                if config.patience is not None and history.evals_since_best >= config.patience:
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
    except Exception as err:  # nothing lost: the History travels with any error
        if not isinstance(err, TrainingDiverged):
            try:
                err.history = history
                err.add_note("fit: the History recorded so far is err.history")  # Python 3.11+
            except AttributeError:
                pass
        raise
    finally:
        history.elapsed = elapsed0 + time.perf_counter() - t0
        bar.close()
    if history.stopped_early and config.restore_best:
        books.restore_best()
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
        X, Y = batch  # (B, T) inputs and (B, T) targets: Y is X shifted left by one character
        logits, state = model(X, self.state if self.carry_state else None)  # (B, T, V)
        if self.carry_state:
            self.state = detach_state(state)  # carried into the next batch, but gradients stop here
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
    try:
        for k, (X, Y) in enumerate(sequential_batches(ids, batch_size, seq_len)):
            if max_batches is not None and k >= max_batches:
                break
            logits, state = model(X.to(device), state)
            total += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), Y.to(device).reshape(-1),
                                           reduction="sum"))
            count += Y.numel()
    finally:
        model.train(was_training)
    return total / count
