"""What every exercise checker shares: run the learner's code safely, compare it, explain what differs.

A checker is a function decorated with :func:`checker`. It calls the learner's code only through
:func:`call`, compares the results with rnnlib's reference on small random inputs, and stops at the
first thing that differs by raising :func:`fail`. The decorator turns that into a :class:`CheckResult`,
so a checker never raises: a learner's exception, an endless loop, a ``NotImplementedError`` left in
the scaffold, or a bug in the checker itself all come back as a result that says what happened.

How a wrong answer is diagnosed: by testing hypotheses. A :class:`Mistake` computes what the output
*would be* if the learner had made one typical mistake (gates in another order, a sigmoid where tanh
belongs, the state reset at every step...); :func:`diagnose` returns the first mistake whose output
matches the learner's. The message names it and the hint says what to change, without showing the
reference code.

Checkers leave no trace: PyTorch's random state is restored afterwards (the learner's results do not
depend on whether they ran a check), and the alarm used for the time limit is switched off.
"""
from __future__ import annotations

import contextlib
import functools
import html
import itertools
import os
import signal
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["CheckResult", "Mistake", "activation_swaps", "swapped_acts", "checker", "call", "fail", "todo", "diagnose", "close", "describe",
           "expect_tensor", "expect_shape", "ready", "TIME_LIMIT"]

TIME_LIMIT = 10.0  # seconds for one call into the learner's code: far more than any correct answer needs
RTOL, ATOL = 1e-4, 1e-5  # float32 arithmetic in a different order differs by ~1e-7; every mistake by far more

_STATUS = {  # status -> (symbol, label); the labels are what tests and readers look for
    "passed": ("✔", "PASSED"),
    "failed": ("✘", "FAILED"),
    "todo": ("…", "NOT YET IMPLEMENTED"),
    "error": ("✘", "ERROR"),
}
_COLOURS = {"passed": "#e6f4ea", "failed": "#fce8e6", "todo": "#fef7e0", "error": "#fce8e6"}


@dataclass
class CheckResult:
    """The outcome of one check: truthy when it passed; shows itself as text (and HTML in a notebook).

    ``status`` is ``"passed"``, ``"failed"`` (wrong results), ``"error"`` (the code raised or did not
    finish) or ``"todo"`` (it still raises ``NotImplementedError``).
    """

    check: str
    status: str
    message: str
    hint: str = ""
    details: list = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.status == "passed"

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __repr__(self) -> str:
        symbol, label = _STATUS[self.status]
        lines = [f"{symbol} {self.check}: {label}", f"  {self.message}"]
        if self.hint:
            lines.append(f"  Hint: {self.hint}")
        lines += [f"  {d}" for d in self.details]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        symbol, label = _STATUS[self.status]
        parts = [f"<b>{symbol} {html.escape(self.check)}: {label}</b>", html.escape(self.message)]
        if self.hint:
            parts.append(f"<i>Hint:</i> {html.escape(self.hint)}")
        parts += [f"<code>{html.escape(d)}</code>" for d in self.details]
        body = "<br>".join(parts)
        return (f'<div style="background:{_COLOURS[self.status]};color:#202124;padding:0.5em 0.8em;'
                f'border-radius:4px;font-family:sans-serif;line-height:1.5">{body}</div>')


class _Verdict(Exception):
    """Raised inside a checker to stop at the first finding; :func:`checker` turns it into a result."""

    def __init__(self, status: str, message: str, hint: str = "", details: Sequence[str] = ()):
        super().__init__(message)
        self.status, self.message, self.hint, self.details = status, message, hint, list(details)


def fail(message: str, hint: str = "", details: Sequence[str] = ()) -> _Verdict:
    """A failed check: ``raise fail("what differs", "what to try")``."""
    return _Verdict("failed", message, hint, details)


def todo(what: str) -> _Verdict:
    return _Verdict("todo", f"Not yet implemented: fill in {what} (the places marked 'YOUR CODE HERE'), "
                            "then run this cell again.")


def checker(func: Callable[..., str]) -> Callable[..., CheckResult]:
    """Decorate a check: it returns a success message or raises :func:`fail`; the result is a CheckResult.

    The check runs with PyTorch's random state saved and restored, so running it does not change the
    random numbers the notebook draws afterwards.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs) -> CheckResult:
        name = func.__name__
        try:
            with torch.random.fork_rng(devices=[]):
                message = func(*args, **kwargs)
            return CheckResult(name, "passed", message)
        except _Verdict as verdict:
            return CheckResult(name, verdict.status, verdict.message, verdict.hint, verdict.details)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a bug in the checker, not in the learner's code: still never crash
            return CheckResult(name, "error", f"The checker itself failed with {type(exc).__name__}: {exc}. "
                               "This is a bug in rnnlib.checks; please report it.")

    return wrapper


# ------------------------------------------------------------------------------------------------------
# Calling the learner's code
# ------------------------------------------------------------------------------------------------------
class _TimeLimit(BaseException):
    """Raised by the alarm; a BaseException so that a learner's ``except Exception`` cannot swallow it."""


_REPEAT = 0.1  # seconds between further alarms, for code that swallows the first one (a bare ``except:``)


@contextlib.contextmanager
def _time_limit(seconds: Optional[float]):
    """Interrupt the block after ``seconds``, and again every 0.1 s until it stops (Unix main thread only;
    elsewhere no limit). The timer and the previous handler are always restored on the way out."""
    usable = (seconds and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return
    armed = True

    def on_alarm(signum, frame):
        if armed:  # an alarm that arrives while we are already leaving must not interrupt the cleanup
            raise _TimeLimit()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds, _REPEAT)
    try:
        yield
    finally:
        armed = False  # on_alarm reads this variable (a closure), so it sees the change
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _library_dirs() -> tuple[str, ...]:
    import rnnlib

    dirs = [os.path.dirname(torch.__file__), os.path.dirname(os.__file__)]
    rnnlib_dir = os.path.dirname(rnnlib.__file__)
    dirs += [os.path.join(rnnlib_dir, name) for name in os.listdir(rnnlib_dir) if name != "solutions"]
    return tuple(os.path.abspath(d) for d in dirs)


def _learner_frame(exc: BaseException) -> Optional[traceback.FrameSummary]:
    """The deepest frame of the traceback that is the learner's code (not torch, the stdlib or rnnlib)."""
    skip = _library_dirs()
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not os.path.abspath(f.filename).startswith(skip) and "site-packages" not in f.filename]
    return frames[-1] if frames else None


def _where(exc: BaseException) -> list[str]:
    frame = _learner_frame(exc)
    if frame is None:
        return []
    line = (frame.line or "").strip()
    return [f"in {frame.name}, line {frame.lineno}" + (f": {line}" if line else "")]


def _exception_hint(exc: BaseException) -> str:
    text = str(exc)
    if "shapes cannot be multiplied" in text or "size of tensor a" in text or "must match the size" in text:
        return ("Two tensors on that line have shapes that do not fit together. Print their .shape; "
                "PyTorch stores a weight as (out_features, in_features), so x @ W.T (or F.linear(x, W, b)) "
                "maps (batch, in) to (batch, out).")
    if "dtype" in text or "scalar type" in text or "Double" in text or "Float" in text:
        return ("A tensor you created has another dtype (or device) than the inputs. Create new tensors "
                "from an input, e.g. x.new_zeros(batch, hidden) or torch.zeros(..., dtype=x.dtype).")
    if isinstance(exc, TypeError) and ("argument" in text or "positional" in text):
        return "Check the signature in the scaffold: the checker calls your code exactly as the notebook does."
    return "Read the line above and the message; print the shapes of the tensors involved."


def call(fn: Callable, *args, what: str, time_limit: Optional[float] = None, **kwargs) -> Any:
    """Call the learner's ``fn``; any exception, a timeout or ``NotImplementedError`` stops the check
    with a result that names ``what`` was being run, the exception and the learner's line.

    ``time_limit`` defaults to :data:`TIME_LIMIT` seconds (read at call time).
    """
    time_limit = TIME_LIMIT if time_limit is None else time_limit
    if not callable(fn):
        raise _Verdict("error", f"{what}: expected a function or class, got {describe(fn)}.",
                       "Pass the function or class itself, e.g. check_x(my_function), without calling it.")
    try:
        with _time_limit(time_limit):
            return fn(*args, **kwargs)
    except NotImplementedError:
        raise todo(what) from None
    except _TimeLimit:
        raise _Verdict("error", f"{what} did not finish within {time_limit:g} s on a tiny input.",
                       "Look for a loop that never ends (a while loop whose condition never changes, or a "
                       "loop over a list you keep appending to).") from None
    except _Verdict:
        raise
    except RecursionError as exc:
        raise _Verdict("error", f"{what} raised RecursionError: a function calls itself without end.",
                       "Inside forward, call the layer you hold (self.cell(...)), not self(...).",
                       _where(exc)) from None
    except Exception as exc:
        raise _Verdict("error", f"{what} raised {type(exc).__name__}: {str(exc).strip() or '(no message)'}",
                       _exception_hint(exc), _where(exc)) from None


# ------------------------------------------------------------------------------------------------------
# Comparing
# ------------------------------------------------------------------------------------------------------
def close(a: Any, b: Any, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """Same structure, shapes and values (within float32 rounding). Never raises."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(close(x, y, rtol, atol) for x, y in zip(a, b))
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        return False
    if a.shape != b.shape:
        return False
    try:
        return bool(torch.allclose(a.detach().double(), b.detach().double(), rtol=rtol, atol=atol))
    except RuntimeError:
        return False


def describe(x: Any) -> str:
    """A short description of a value for messages: its type, and shape for a tensor."""
    if isinstance(x, Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)}: (" + ", ".join(describe(v) for v in x) + ")"
    return f"a {type(x).__name__}"


def expect_tensor(x: Any, what: str, hint: str = "") -> Tensor:
    if not isinstance(x, Tensor):
        raise fail(f"{what} should be a tensor, got {describe(x)}.", hint)
    return x


def expect_shape(x: Any, shape: Sequence[int], what: str, hint: str = "") -> Tensor:
    x = expect_tensor(x, what, hint)
    if tuple(x.shape) != tuple(shape):
        raise fail(f"{what} has shape {tuple(x.shape)}; expected {tuple(shape)}.", hint)
    if not x.is_floating_point():
        raise fail(f"{what} has dtype {x.dtype}; expected floating point values.", hint)
    if not torch.isfinite(x).all():
        raise fail(f"{what} contains NaN or infinite values.", hint or "Look for a division by zero or log of 0.")
    return x


@dataclass
class Mistake:
    """A typical mistake: what it looks like (``compute`` returns the output it would produce),
    what to call it and what to try instead."""

    message: str
    hint: str
    compute: Callable[[], Any]


def diagnose(output: Any, mistakes: Iterable[Mistake], match: Callable[[Any, Any], bool] = close) -> Optional[Mistake]:
    """The first mistake whose output matches ``output``, or None."""
    for mistake in mistakes:
        try:
            expected = mistake.compute()
        except Exception:  # a hypothesis that cannot even be computed for these shapes does not match
            continue
        if match(output, expected):
            return mistake
    return None


def ready(*results: CheckResult) -> bool:
    """True when every check passed; otherwise print which ones are missing (a notebook cell then skips).

    >>> if ready(cell_check, loop_check):
    ...     history = train(...)
    """
    missing = [r.check for r in results if not r]
    if missing:
        print(f"Skipped: this cell runs once {', '.join(missing)} passed. Fill in the code above, or load "
              "the reference solution, and run the cells again.")
    sys.stdout.flush()
    return not missing


# ------------------------------------------------------------------------------------------------------
# Modules the learner completes: build them, give their parameters known random values
# ------------------------------------------------------------------------------------------------------
def build(cls: Callable, *args, what: str) -> torch.nn.Module:
    """Instantiate the learner's module class (its constructor may still raise NotImplementedError)."""
    module = call(cls, *args, what=what)
    if not isinstance(module, torch.nn.Module):
        raise fail(f"{what} should create an nn.Module, got {describe(module)}.",
                   "Keep the class line from the scaffold: class ...(nn.Module).")
    return module


def set_parameters(module: torch.nn.Module, shapes: dict, generator: torch.Generator, what: str,
                   scale: float = 0.8) -> dict:
    """Give the parameters named in ``shapes`` (dotted names) random values in (-scale, scale); return them.

    Fails with a clear message when the module does not have them: the checker needs the scaffold's names.
    """
    params = dict(module.named_parameters())
    values = {}
    for name, shape in shapes.items():
        if name not in params:
            raise fail(f"{what} has no parameter named {name!r} (it has: {', '.join(params) or 'none'}).",
                       "Keep the __init__ of the scaffold as it is; the checker loads weights into its parameters.")
        if tuple(params[name].shape) != tuple(shape):
            raise fail(f"{what}.{name} has shape {tuple(params[name].shape)}; expected {tuple(shape)}.",
                       "Keep the __init__ of the scaffold as it is.")
        value = (torch.rand(shape, generator=generator, dtype=params[name].dtype) * 2 - 1) * scale
        with torch.no_grad():
            params[name].copy_(value)
        values[name] = value
    return values


def gradients(output: Any, inputs: Sequence[Tensor], generator: torch.Generator) -> list:
    """d(sum of output * fixed random weights)/d(inputs); None where an input gets no gradient."""
    outs = [o for o in (output if isinstance(output, (tuple, list)) else [output]) if isinstance(o, Tensor)]
    loss = sum((o * torch.randn(o.shape, generator=generator, dtype=o.dtype)).sum() for o in outs
               if o.requires_grad)
    if not isinstance(loss, Tensor):
        return [None] * len(inputs)
    return list(torch.autograd.grad(loss, list(inputs), allow_unused=True))


GRADIENT_HINT = ("The values are right but gradients do not flow back as they should. Inside forward, do not use "
                 ".detach(), .data, .item(), .numpy() or torch.no_grad(), and do not build new tensors from "
                 "Python numbers computed from the inputs.")


def activation_swaps(gates: str) -> list[str]:
    """Every non-empty set of ``gates`` (a string kept in the gates' order) whose activation a learner may
    have swapped between sigmoid and tanh: single gates first, all of them last."""
    return ["".join(s) for k in range(1, len(gates) + 1) for s in itertools.combinations(gates, k)]


def swapped_acts(wrong: str, gates: str, right: str) -> str:
    """``right`` (one letter per gate: ``s``/``S`` sigmoid, ``t`` tanh) with the gates in ``wrong``
    given the other activation, as the cells' ``_step(acts=...)`` reads it."""
    return "".join(("t" if a in "sS" else "s") if gate in wrong else a for gate, a in zip(gates, right))
