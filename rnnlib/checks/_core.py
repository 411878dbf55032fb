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

What the learner's code calls is recorded while it runs (:func:`run`, with the hooks of
:mod:`rnnlib.checks._watch`: a ``TorchFunctionMode``, a ``TorchDispatchMode`` and a profile function):

* ``forbid``: families of fused operators and ``torch.nn`` modules (``"cell"``: ``torch.lstm_cell``,
  ``nn.GRUCell``...; ``"layer"``: ``torch.lstm``, ``nn.GRU``...; ``"attention"``:
  ``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``), each with the hint that says what to
  write instead; a call of one fails the check with a message naming it and the learner's line;
* ``allow``: the modules the learner is given (the cell a loop must call); ``count``: objects whose calls
  are counted, so that a loop can be required to call the cell exactly once per time step;
* rnnlib's own code (everything under ``rnnlib/`` but the checkers and ``config``) and the reference
  solutions: a check whose code is, or calls, one of them ends with the status ``USES THE REFERENCE``
  instead of ``PASSED``, naming the function that ran;
* calls that cut the autograd graph (``.detach()``, ``.data``, ``.numpy()``, ``.tolist()``, ``.item()``,
  ``torch.tensor`` of values, ``torch.from_numpy``, ``torch.no_grad()``), named when gradients differ;
* tensors made by factories (``torch.zeros(B, H)``) on the learner's lines, named when a dtype or device
  does not follow the inputs.

Every check runs twice: in float32, then in float64 (the checker's own tensors are float64 while the
learner's code runs with PyTorch's default dtype, float32, as in a notebook), so a tensor made with a fixed
dtype shows. In the float64 pass each call is also run on a GPU when there is one (values compared), or
else on PyTorch's ``meta`` device, which has no values but refuses to mix devices as a GPU does: a tensor
made on the CPU whatever the input's device shows on a machine without a GPU.

The learner's printed output is captured (the result says how many lines and shows the first few), and a
check whose code takes more than :data:`SLOW_RATIO` times as long as the reference on the same input adds
a warning (the verdict does not change).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import html
import io
import itertools
import os
import re
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from torch import Tensor

from ._watch import Watch, watching

__all__ = ["CheckResult", "Mistake", "Watch", "GRADIENT_HINT", "activation_swaps", "swapped_acts", "checker", "call", "run", "fail", "todo",
           "diagnose", "close", "describe", "expect_tensor", "expect_shape", "compare_gradients", "ready", "TIME_LIMIT",
           "SLOW_RATIO"]

TIME_LIMIT = 10.0  # seconds for one call into the learner's code: far more than any correct answer needs
RTOL, ATOL = 1e-4, 1e-5  # float32 arithmetic in a different order differs by ~1e-7; every mistake by far more
SLOW_RATIO = 50.0  # warn when the learner's code takes this many times as long as the reference
TIMER = time.perf_counter  # the clock of that comparison (tests may replace it)
SHOWN_LINES = 3  # printed lines shown in a result

_STATUS = {  # status -> (symbol, label); the labels are what tests and readers look for
    "passed": ("✔", "PASSED"),
    "reference": ("↺", "USES THE REFERENCE"),
    "failed": ("✘", "FAILED"),
    "todo": ("…", "NOT YET IMPLEMENTED"),
    "error": ("✘", "ERROR"),
}
_COLOURS = {"passed": "#e6f4ea", "reference": "#e8f0fe", "failed": "#fce8e6", "todo": "#fef7e0",
            "error": "#fce8e6"}


@dataclass
class CheckResult:
    """The outcome of one check: truthy when it passed; shows itself as text (and HTML in a notebook).

    ``status`` is ``"passed"``, ``"reference"`` (right, but the code checked is, or calls, rnnlib's own
    implementation or a reference solution, so the learner's own code was not checked), ``"failed"``
    (wrong results), ``"error"`` (the code raised or did not finish) or ``"todo"`` (it still raises
    ``NotImplementedError``). ``notes`` are remarks that do not change the verdict (printed output, a
    slow implementation); ``details`` are lines of code or output.
    """

    check: str
    status: str
    message: str
    hint: str = ""
    details: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.status == "passed"

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def usable(self) -> bool:
        """The code checked computes the right thing (``passed``, or ``reference``): cells may use it."""
        return self.status in ("passed", "reference")

    def __repr__(self) -> str:
        symbol, label = _STATUS[self.status]
        lines = [f"{symbol} {self.check}: {label}", f"  {self.message}"]
        if self.hint:
            lines.append(f"  Hint: {self.hint}")
        lines += [f"  {n}" for n in self.notes]
        lines += [f"  {d}" for d in self.details]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        symbol, label = _STATUS[self.status]
        parts = [f"<b>{symbol} {html.escape(self.check)}: {label}</b>", html.escape(self.message)]
        if self.hint:
            parts.append(f"<i>Hint:</i> {html.escape(self.hint)}")
        parts += [html.escape(n) for n in self.notes]
        parts += [f"<code>{html.escape(d)}</code>" for d in self.details]
        body = "<br>".join(parts)
        return (f'<div style="background:{_COLOURS[self.status]};color:#202124;padding:0.5em 0.8em;'
                f'border-radius:4px;font-family:sans-serif;line-height:1.5">{body}</div>')


class _Verdict(Exception):
    """Raised inside a checker to stop at the first finding; :func:`checker` turns it into a result.
    ``about_dtype``: a finding of the float64 pass is introduced as such."""

    def __init__(self, status: str, message: str, hint: str = "", details: Sequence[str] = (),
                 about_dtype: bool = True):
        super().__init__(message)
        self.status, self.message, self.hint, self.details = status, message, hint, list(details)
        self.about_dtype = about_dtype


def fail(message: str, hint: str = "", details: Sequence[str] = (), about_dtype: bool = True) -> _Verdict:
    """A failed check: ``raise fail("what differs", "what to try")``."""
    return _Verdict("failed", message, hint, details, about_dtype)


def todo(what: str) -> _Verdict:
    return _Verdict("todo", f"Not yet implemented: fill in {what} (the places marked 'YOUR CODE HERE'), "
                            "then run this cell again.")


class _Session:
    """What one check collects across its calls: rnnlib functions that ran, printed lines, notes."""

    def __init__(self):
        self.dtype = torch.float32  # of the checker's own tensors in the current pass
        self.reference: list[str] = []
        self.printed: list[str] = []
        self.notes: list[str] = []
        self.timed = False


_SESSIONS: list[_Session] = []


def _session() -> _Session:
    return _SESSIONS[-1] if _SESSIONS else _Session()


def float64_pass() -> bool:
    """True during the second pass of a check, when the checker's tensors are float64."""
    return _session().dtype == torch.float64


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def checker(func: Callable[..., str]) -> Callable[..., CheckResult]:
    """Decorate a check: it returns a success message or raises :func:`fail`; the result is a CheckResult.

    The check runs twice, in float32 and then in float64 (tensors the checker makes with the default dtype
    are float64 in the second pass), with PyTorch's random state saved and restored, so running it does
    not change the random numbers the notebook draws afterwards. When the checked code is, or calls,
    rnnlib's own code, a check that would pass ends as ``"reference"`` instead.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs) -> CheckResult:
        name = func.__name__
        session = _Session()
        _SESSIONS.append(session)
        try:
            with torch.random.fork_rng(devices=[]):
                for dtype in (torch.float32, torch.float64):
                    session.dtype = dtype
                    with _default_dtype(dtype):
                        message = func(*args, **kwargs)
            if session.reference:
                result = CheckResult(name, "reference", _reference_message(session.reference),
                                     "To check your own code, write it in the notebook (do not import it from rnnlib "
                                     "or subclass rnnlib's classes) and run this cell again.")
            else:
                result = CheckResult(name, "passed", message)
        except _Verdict as verdict:
            if session.dtype == torch.float64 and verdict.status != "todo" and verdict.about_dtype:
                verdict.message = "With float64 inputs (every check runs a second time in float64): " + verdict.message
            result = CheckResult(name, verdict.status, verdict.message, verdict.hint, verdict.details)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a bug in the checker, not in the learner's code: still never crash
            result = CheckResult(name, "error", f"The checker itself failed with {type(exc).__name__}: {exc}. "
                                 "This is a bug in rnnlib.checks; please report it.")
        finally:
            _SESSIONS.pop()
        result.notes += session.notes
        if session.printed:
            n = len(session.printed)
            shown = min(n, SHOWN_LINES)
            result.notes.append(f"Your code printed {n} line{'s' * (n != 1)} while it was checked"
                                + (f" (the first {shown} below)." if n > shown else ":"))
            result.details += [line[:120] for line in session.printed[:shown]]
        return result

    return wrapper


def _reference_message(functions: Sequence[str]) -> str:
    names = list(dict.fromkeys(functions))
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (f"The results are right, but the code checked is, or calls, rnnlib's own implementation: {shown} ran. "
            "Your own code was not checked.")


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


@contextlib.contextmanager
def _learner_context(time_limit: float, printed: Optional[list]):
    """How the learner's code runs: PyTorch's default dtype float32 (as in a notebook, whatever the
    checker's pass), output captured (its lines appended to ``printed``), a time limit."""
    buffer = io.StringIO()
    try:
        with _default_dtype(torch.float32), contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            with _time_limit(time_limit):
                yield
    finally:
        if printed is not None:
            printed += buffer.getvalue().splitlines()


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


_DTYPE_ERROR = re.compile(r"dtype|scalar type|Double|Float|Half|BFloat16")
_DEVICE_ERROR = re.compile(r"same device|expected device|on device|different devices|two devices|device type|"
                           r"not at the same device", re.IGNORECASE)


def _made_tensors(watch: Optional[Watch], wrong: Callable[[torch.dtype, torch.device], bool]) -> str:
    """The factory calls on the learner's lines whose tensors have a wrong dtype or device, as a sentence."""
    if watch is None:
        return ""
    found = list(dict.fromkeys(f"{name}{where}" for name, where, dtype, device, ndim in watch.factories
                               if ndim > 0 and wrong(dtype, device)))
    if not found:
        return ""
    return " The tensor made by " + " and by ".join(found[:3]) + " does not follow the inputs."


def _exception_hint(exc: BaseException, watch: Optional[Watch] = None) -> str:
    text = str(exc)
    if "shapes cannot be multiplied" in text or "size of tensor a" in text or "must match the size" in text:
        return ("Two tensors on that line have shapes that do not fit together. Print their .shape; "
                "PyTorch stores a weight as (out_features, in_features), so x @ W.T (or F.linear(x, W, b)) "
                "maps (batch, in) to (batch, out).")
    if _DTYPE_ERROR.search(text) and not _DEVICE_ERROR.search(text):
        return ("A tensor you created has another dtype than the inputs." + _made_tensors(
                    watch, lambda dtype, device: dtype.is_floating_point and dtype != torch.float64 and float64_pass())
                + " Create new tensors from an input, e.g. x.new_zeros(batch, hidden), or pass "
                "dtype=x.dtype, device=x.device.")
    if isinstance(exc, TypeError) and _learner_frame(exc) is None and ("argument" in text or "positional" in text):
        return "Check the signature in the scaffold: the checker calls your code exactly as the notebook does."
    return "Read the line above and the message; print the shapes of the tensors involved."


def _verdict_for(exc: BaseException, what: str, time_limit: float, watch: Optional[Watch] = None) -> "_Verdict":
    if isinstance(exc, NotImplementedError):
        return todo(what)
    if isinstance(exc, _TimeLimit):
        return _Verdict("error", f"{what} did not finish within {time_limit:g} s on a tiny input.",
                        "Look for a loop that never ends (a while loop whose condition never changes, or a "
                        "loop over a list you keep appending to).")
    if isinstance(exc, RecursionError):
        return _Verdict("error", f"{what} raised RecursionError: a function calls itself without end.",
                        "Inside forward, call the layer you hold (self.cell(...)), not self(...).", _where(exc))
    return _Verdict("error", f"{what} raised {type(exc).__name__}: {str(exc).strip() or '(no message)'}",
                    _exception_hint(exc, watch), _where(exc))


def run(fn: Callable, *args, what: str, time_limit: Optional[float] = None, allow: Sequence = (),
        count: Sequence = (), forbid: Optional[dict] = None, reference: Optional[Callable[[], Any]] = None,
        cpu_args: Sequence[int] = (), judged: bool = True, **kwargs) -> tuple[Any, Watch]:
    """Call the learner's ``fn(*args, **kwargs)`` while recording what it calls; return (result, watch).

    Any exception, a timeout or ``NotImplementedError`` stops the check with a result that names ``what``
    was being run, the exception and the learner's line. ``forbid`` maps families of fused operators and
    modules (``"cell"``, ``"layer"``, ``"attention"``, see :data:`rnnlib.checks._watch.FUSED`) to the hint
    that says what to write instead; ``allow`` and ``count`` go to :func:`~rnnlib.checks._watch.watching`.
    rnnlib functions that ran are remembered for the verdict. ``reference`` (called without arguments)
    computes the same thing with rnnlib, for the speed comparison. In the float64 pass the result must be
    float64, and the call is repeated on another device (``cpu_args``: positions of arguments that stay on
    the CPU there, like ``lengths``). ``judged=False`` for given code (the scaffold's ``__init__``): rnnlib
    code it runs does not count. ``time_limit`` defaults to :data:`TIME_LIMIT` seconds.
    """
    time_limit = TIME_LIMIT if time_limit is None else time_limit
    if not callable(fn):
        raise _Verdict("error", f"{what}: expected a function or class, got {describe(fn)}.",
                       "Pass the function or class itself, e.g. check_x(my_function), without calling it.")
    session = _session()
    watch = None
    try:
        with _learner_context(time_limit, session.printed if session.dtype == torch.float32 else None):
            with watching(allow=allow, count=count) as watch:
                out = fn(*args, **kwargs)
    except _Verdict:
        raise
    except (Exception, _TimeLimit) as exc:
        raise _verdict_for(exc, what, time_limit, watch) from None
    if watch.tampered:
        raise fail(f"{what} switched off the profiler the checker uses to see what your code calls "
                   "(sys.setprofile), so it cannot be checked.", "Remove the calls of sys.setprofile or sys.settrace.")
    if judged:
        session.reference += [name for name in watch.reference if name not in session.reference]
    for family, description, where in watch.families():
        if forbid and family in forbid:
            raise fail(f"{what} is not written from scratch: it calls {description}{where}.", forbid[family])
    if float64_pass():
        wrong = [t for t in _tensors(out) if t.is_floating_point() and t.dtype != torch.float64]
        if wrong:
            raise fail(f"{what} returns {describe(wrong[0])} of dtype {wrong[0].dtype} for float64 inputs: some "
                       "tensor in your code has a fixed dtype." + _made_tensors(
                           watch, lambda dtype, device: dtype.is_floating_point and dtype != torch.float64),
                       "Make new tensors from an input, e.g. x.new_zeros(batch, hidden) or torch.zeros(..., "
                       "dtype=x.dtype, device=x.device), so that they follow its dtype and device.")
        if _accelerator() is not None or any(ndim > 0 for *_, ndim in watch.factories):
            _on_another_device(fn, args, kwargs, out, what, time_limit, cpu_args)
    elif reference is not None and not session.timed:
        session.timed = True
        _compare_speed(fn, args, kwargs, reference, time_limit)
    return out, watch


def call(fn: Callable, *args, what: str, **kwargs) -> Any:
    """:func:`run`, returning only the result."""
    return run(fn, *args, what=what, **kwargs)[0]


def _tensors(x: Any) -> list:
    if isinstance(x, Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _tensors(v)]
    return []


def _accelerator() -> Optional[torch.device]:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return None


def _move(x: Any, device: torch.device, dtype: Optional[torch.dtype]) -> Any:
    if isinstance(x, Tensor):
        moved = x.detach().to(device)
        return moved.to(dtype) if dtype is not None and moved.is_floating_point() else moved
    if isinstance(x, torch.nn.Module):
        return copy.deepcopy(x).to(device=device, dtype=dtype)
    if isinstance(x, (tuple, list)):
        return type(x)(_move(v, device, dtype) for v in x)
    return x


_META_READY = False


def _warm_up_meta() -> None:
    """Run common operators on the meta device once, outside any time limit: their meta kernels load
    lazily and the first use imports a large part of PyTorch (seconds)."""
    global _META_READY
    if not _META_READY:
        _META_READY = True
        a = torch.zeros(2, 3, device="meta")
        mask = torch.ones(2, 3, dtype=torch.bool, device="meta")
        for op in (lambda: torch.softmax(a, -1), lambda: a.masked_fill(mask, 0.0), lambda: torch.where(mask, a, a),
                   lambda: a @ a.T, lambda: torch.cat([a, a]), lambda: a[torch.arange(2)], lambda: torch.tanh(a)):
            try:
                op()
            except Exception:
                pass


def _on_another_device(fn, args, kwargs, out, what: str, time_limit: float, cpu_args: Sequence[int]) -> None:
    """Run ``fn`` again with its tensors and modules on a GPU (values compared with ``out``) or, without one,
    on the meta device (no values, but mixing devices raises as on a GPU). Without a GPU this runs only
    for code that made a tensor with a factory and no ``device=``: nothing else can depend on the device."""
    if not (_tensors(list(args) + list(kwargs.values())) or isinstance(fn, torch.nn.Module)
            or any(isinstance(a, torch.nn.Module) for a in args)):
        return
    device = _accelerator() or torch.device("meta")
    if device.type == "meta":
        _warm_up_meta()
    dtype = torch.float32 if device.type == "mps" else None  # MPS has no float64
    where = (f"on the {device.type.upper()} device" if device.type != "meta" else
             "on another device (simulated with PyTorch's meta device, as this machine has no GPU)")
    try:
        moved_fn = _move(fn, device, dtype) if isinstance(fn, torch.nn.Module) else fn
        moved_args = [a if k in cpu_args else _move(a, device, dtype) for k, a in enumerate(args)]
        moved_kwargs = {k: _move(v, device, dtype) for k, v in kwargs.items()}
    except Exception:  # an object that cannot be copied: nothing to learn here
        return
    hint = ("A tensor made with torch.zeros(...), torch.tensor(...) and the like, without device=, is created on the "
            "CPU whatever device the inputs are on. Create it from an input, e.g. x.new_zeros(batch, hidden), or "
            "pass device=x.device (and dtype=x.dtype).")
    watch = None
    try:
        with _learner_context(time_limit, None), watching() as watch:
            moved_out = moved_fn(*moved_args, **moved_kwargs)
    except (Exception, _TimeLimit) as exc:
        if isinstance(exc, Exception) and _DEVICE_ERROR.search(str(exc)):
            made = _made_tensors(watch, lambda dtype, dev: dev.type != device.type)
            raise fail(f"{what} works on the CPU but fails {where}: {str(exc).strip()}{made}", hint,
                       _where(exc), about_dtype=False) from None
        return  # e.g. .tolist() has no values to read on the meta device: nothing to conclude
    if not isinstance(out, torch.nn.Module):
        for got in _tensors(moved_out):
            if got.device.type != device.type:
                made = _made_tensors(watch, lambda dtype, dev: dev.type != device.type)
                raise fail(f"{what} returns a tensor on the {got.device.type.upper()} when its inputs are {where}."
                           + made, hint, about_dtype=False)
        if device.type != "meta" and not close(_move(moved_out, torch.device("cpu"), None), out, 1e-3, 1e-4):
            raise fail(f"{what} gives other values {where} than on the CPU.", hint, about_dtype=False)


def _best_time(fn: Callable[[], Any], time_limit: float, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        with _learner_context(time_limit, None):
            start = TIMER()
            fn()
            best = min(best, TIMER() - start)
    return best


def _compare_speed(fn, args, kwargs, reference: Callable[[], Any], time_limit: float) -> None:
    """Time ``fn`` (on copies of its arguments) and ``reference`` on the same input; note a large ratio."""
    try:
        fn_copy = copy.deepcopy(fn) if isinstance(fn, torch.nn.Module) else fn
        args_copy, kwargs_copy = copy.deepcopy(args), copy.deepcopy(kwargs)
        mine = _best_time(lambda: fn_copy(*args_copy, **kwargs_copy), time_limit)
        theirs = _best_time(reference, time_limit)
    except (Exception, _TimeLimit):
        return
    if mine > SLOW_RATIO * max(theirs, 1e-9):
        _session().notes.append(
            f"⚠ Your code took {mine / max(theirs, 1e-9):.0f}x as long as the reference on the same small input "
            f"({1000 * mine:.2f} ms against {1000 * theirs:.2f} ms), and training would be slowed as much. Look for "
            "Python loops over the batch or over single numbers, and for work repeated at every call.")


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
        return f"a tensor of shape {tuple(x.shape)}" if x.dim() else "a 0-d tensor (a single number)"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)}: (" + ", ".join(describe(v) for v in x) + ")"
    return f"a {type(x).__name__}"


def expect_tensor(x: Any, what: str, hint: str = "") -> Tensor:
    if not isinstance(x, Tensor):
        raise fail(f"{what} should be a tensor, got {describe(x)}.", hint)
    return x


def expect_shape(x: Any, shape: Sequence[int], what: str, hint: str = "") -> Tensor:
    x = expect_tensor(x, what, hint)
    if x.dim() == 0 and len(shape):
        raise fail(f"{what} is a 0-d tensor (a single number); expected shape {tuple(shape)}.",
                   hint or "Keep the batch dimension: do not sum, average or .squeeze() it away.")
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
    """True when every check passed (or uses the reference, which is right too); otherwise print which
    ones are missing (a notebook cell then skips).

    >>> if ready(cell_check, loop_check):
    ...     history = train(...)
    """
    missing = [r.check for r in results if not r.usable]
    if missing:
        print(f"Skipped: this cell runs once {', '.join(missing)} passed. Fill in the code above, or load "
              "the reference solution, and run the cells again.")
    sys.stdout.flush()
    return not missing


# ------------------------------------------------------------------------------------------------------
# Modules the learner completes: build them, give their parameters known random values
# ------------------------------------------------------------------------------------------------------
def build(cls: Callable, *args, what: str) -> torch.nn.Module:
    """Instantiate the learner's module class (its constructor may still raise NotImplementedError) and
    give it the dtype of the current pass, as ``model.double()`` would."""
    module = call(cls, *args, what=what, judged=False)
    if not isinstance(module, torch.nn.Module):
        raise fail(f"{what} should create an nn.Module, got {describe(module)}.",
                   "Keep the class line from the scaffold: class ...(nn.Module).")
    return module.to(torch.get_default_dtype())


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


GRADIENT_HINT = ("Keep every step a PyTorch operation on the tensors you are given: no .detach(), .data, .item(), "
                 ".tolist(), .numpy() or torch.no_grad(), and no new tensor built with torch.tensor(...) from "
                 "values computed from the inputs; autograd cannot follow any of these back.")


def _cuts(watch: Optional[Watch]) -> str:
    if watch is None or not watch.cuts:
        return ""
    calls = ", ".join(f"{text}{where}" for text, where in watch.cuts[:4])
    return f" Your code calls {calls}: each of these gives a tensor that autograd cannot follow back."


def compare_gradients(output: Any, leaves: Sequence[Tensor], ref_output: Any, ref_leaves: Sequence[Tensor],
                      names: Sequence[str], watch: Optional[Watch] = None, what: str = "the result",
                      output_names: Sequence[str] = ()) -> None:
    """Compare d(output)/d(leaves) with d(ref_output)/d(ref_leaves), for the same fixed random weighting of
    the outputs. Fails naming the first output that carries no gradient, or the first leaf (``names``)
    whose gradient is missing or differs, and the calls of the learner's code that cut the graph."""
    outs = [o for o in (output if isinstance(output, (tuple, list)) else [output]) if isinstance(o, Tensor)]
    ref_outs = [o for o in (ref_output if isinstance(ref_output, (tuple, list)) else [ref_output])]
    for k, (got, want) in enumerate(zip(outs, ref_outs)):
        if want.requires_grad and not got.requires_grad:
            label = output_names[k] if k < len(output_names) else what
            raise fail(f"The values are right, but {label} carries no gradient (its requires_grad is False): it is cut "
                       "off the graph, so training could not change anything that comes before it." + _cuts(watch),
                       GRADIENT_HINT)
    mine = gradients(output, leaves, torch.Generator().manual_seed(1))
    theirs = gradients(ref_output, ref_leaves, torch.Generator().manual_seed(1))
    for name, got, want in zip(names, mine, theirs):
        if want is None or (got is not None and close(got, want)):
            continue
        if got is None or not got.abs().sum():
            raise fail(f"The values are right, but no gradient reaches {name}: the path from {name} to {what} is cut, "
                       f"so training could not change {name}." + _cuts(watch), GRADIENT_HINT)
        raise fail(f"The values are right, but the gradient with respect to {name} differs from the reference's "
                   f"(largest difference {float((got - want).abs().max()):.3g})." + _cuts(watch), GRADIENT_HINT)


def activation_swaps(gates: str) -> list[str]:
    """Every non-empty set of ``gates`` (a string kept in the gates' order) whose activation a learner may
    have swapped between sigmoid and tanh: single gates first, all of them last."""
    return ["".join(s) for k in range(1, len(gates) + 1) for s in itertools.combinations(gates, k)]


def swapped_acts(wrong: str, gates: str, right: str) -> str:
    """``right`` (one letter per gate: ``s``/``S`` sigmoid, ``t`` tanh) with the gates in ``wrong``
    given the other activation, as the cells' ``_step(acts=...)`` reads it."""
    return "".join(("t" if a in "sS" else "s") if gate in wrong else a for gate, a in zip(gates, right))
