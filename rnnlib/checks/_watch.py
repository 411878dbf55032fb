"""Run the learner's code while recording what it calls: fused PyTorch operators, ``torch.nn`` recurrent
and attention modules, rnnlib's own functions, calls that cut the autograd graph, and calls of given objects.

Three hooks are active inside :func:`watching`, because no single one sees everything:

* a ``TorchFunctionMode`` sees every PyTorch function called from Python, whatever name it was reached
  by: ``torch.lstm_cell``, ``torch._VF.gru``, ``torch.ops.aten.rnn_tanh``, ``functional_call`` of an
  ``nn.LSTMCell`` (it calls ``_VF.lstm_cell``), ``F.scaled_dot_product_attention``; also ``Tensor.detach``,
  ``.data``, ``.numpy``, ``.tolist``, ``.item``, ``torch.tensor`` and the tensor factories;
* a ``TorchDispatchMode`` sees the ATen operators that actually run, also when the Python layer is
  bypassed (``torch._C.DisableTorchFunction``). In torch 2.13 on the CPU the fused cells are
  CompositeImplicitAutograd and reach it decomposed, recognizable by ``aten::unsafe_split`` (how
  ``lstm_cell`` and ``gru_cell`` cut their gates); ``nn.LSTM`` runs ``aten::mkldnn_rnn_layer``;
  ``scaled_dot_product_attention`` runs ``aten::_safe_softmax``; on a GPU ``aten::_thnn_fused_lstm_cell``,
  ``aten::_cudnn_rnn`` and ``aten::_scaled_dot_product_*_attention`` show up;
* a profile function (``sys.setprofile``) sees Python functions: rnnlib's and the reference solutions'
  (by the file their code comes from, so a copy made with ``types.FunctionType(f.__code__, ...)`` is still
  recognized, while source text copied into a notebook cell is the learner's own code), the ``forward``
  of ``torch.nn`` recurrent and attention modules, calls of counted objects, and builtins called by name
  (``torch.lstm_cell`` even with torch functions disabled).

Code inside ``allow``-ed objects (the modules a checker hands to the learner, e.g. the cell a loop must
call) and inside rnnlib's own functions is not looked into: what it calls is its own business; a call
of rnnlib's code is recorded once, by the name of the outermost function.

What cannot be seen: code that removes these hooks on purpose (``sys.setprofile(None)`` or leaving the
modes inside the learner's function), TorchScript or C++ extensions that call a fused operator whose CPU
decomposition looks like ordinary code (``rnn_tanh``), and threads that were already running before the
check started (on Python 3.11; from 3.12 the profile function is set in every thread). Threads started by
the learner's code during the check are watched like the main thread.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["FUSED", "Watch", "watching", "is_learner_code", "site"]

# Operator (torch function, builtin or ATen operator, without "aten::" and overload) -> (family, what it is).
FUSED = {
    "lstm_cell": ("cell", "torch.lstm_cell, the fused LSTM step behind nn.LSTMCell"),
    "_thnn_fused_lstm_cell": ("cell", "aten::_thnn_fused_lstm_cell, nn.LSTMCell's fused GPU kernel"),
    "gru_cell": ("cell", "torch.gru_cell, the fused GRU step behind nn.GRUCell"),
    "_thnn_fused_gru_cell": ("cell", "aten::_thnn_fused_gru_cell, nn.GRUCell's fused GPU kernel"),
    "rnn_tanh_cell": ("cell", "torch.rnn_tanh_cell, the fused step behind nn.RNNCell"),
    "rnn_relu_cell": ("cell", "torch.rnn_relu_cell, the fused step behind nn.RNNCell"),
    "unsafe_split": ("cell", "a fused LSTM or GRU step (aten::unsafe_split, how torch.lstm_cell and "
                             "torch.gru_cell cut their gates)"),
    "unsafe_chunk": ("cell", "a fused LSTM or GRU step (aten::unsafe_chunk)"),
    "lstm": ("layer", "torch.lstm, the fused LSTM layer behind nn.LSTM"),
    "gru": ("layer", "torch.gru, the fused GRU layer behind nn.GRU"),
    "rnn_tanh": ("layer", "torch.rnn_tanh, the fused RNN layer behind nn.RNN"),
    "rnn_relu": ("layer", "torch.rnn_relu, the fused RNN layer behind nn.RNN"),
    "mkldnn_rnn_layer": ("layer", "aten::mkldnn_rnn_layer, the oneDNN kernel behind nn.LSTM"),
    "_cudnn_rnn": ("layer", "aten::_cudnn_rnn, the cuDNN kernel behind nn.LSTM, nn.GRU and nn.RNN"),
    "miopen_rnn": ("layer", "aten::miopen_rnn, the MIOpen kernel behind nn.LSTM, nn.GRU and nn.RNN"),
    "scaled_dot_product_attention": ("attention", "F.scaled_dot_product_attention, PyTorch's fused attention"),
    "_safe_softmax": ("attention", "aten::_safe_softmax, the softmax inside F.scaled_dot_product_attention"),
    "_scaled_dot_product_attention_math": ("attention", "aten::_scaled_dot_product_attention_math"),
    "_scaled_dot_product_flash_attention": ("attention", "aten::_scaled_dot_product_flash_attention"),
    "_scaled_dot_product_flash_attention_for_cpu": ("attention", "aten::_scaled_dot_product_flash_attention_for_cpu"),
    "_scaled_dot_product_efficient_attention": ("attention", "aten::_scaled_dot_product_efficient_attention"),
    "_scaled_dot_product_cudnn_attention": ("attention", "aten::_scaled_dot_product_cudnn_attention"),
    "multi_head_attention_forward": ("attention", "F.multi_head_attention_forward, behind nn.MultiheadAttention"),
    "quantized_lstm": ("layer", "torch.quantized_lstm, a quantized fused LSTM layer"),
    "quantized_gru": ("layer", "torch.quantized_gru, a quantized fused GRU layer"),
    "quantized_lstm_cell": ("cell", "torch.quantized_lstm_cell, a quantized fused LSTM step"),
    "quantized_gru_cell": ("cell", "torch.quantized_gru_cell, a quantized fused GRU step"),
    "quantized_rnn_tanh_cell": ("cell", "torch.quantized_rnn_tanh_cell, a quantized fused RNN step"),
    "quantized_rnn_relu_cell": ("cell", "torch.quantized_rnn_relu_cell, a quantized fused RNN step"),
    "_native_multi_head_attention": ("attention", "aten::_native_multi_head_attention"),
}
def _module_forwards() -> dict:
    """The code of the ``forward`` of each recurrent and attention module of torch.nn, and of torch.ao's
    quantizable (written in Python from nn.Linear) and quantized ones -> its family."""
    from torch.ao.nn import quantizable, quantized

    bases = [(nn.RNNBase, "layer"), (nn.RNNCellBase, "cell"), (nn.MultiheadAttention, "attention"),
             (quantized.dynamic.modules.rnn.RNNBase, "layer"), (quantized.dynamic.modules.rnn.RNNCellBase, "cell"),
             (quantizable.LSTMCell, "cell"), (quantizable.LSTM, "layer"), (quantizable.MultiheadAttention, "attention")]
    bases += [(getattr(quantizable.modules.rnn, name), "layer") for name in ("_LSTMLayer", "_LSTMSingleLayer")
              if hasattr(quantizable.modules.rnn, name)]
    return {cls.forward.__code__: family for base, family in bases
            for cls in [base, *base.__subclasses__()] if "forward" in vars(cls)}


_FORWARDS = _module_forwards()
_OP_CALLS = {torch._ops.OpOverload.__call__.__code__, torch._ops.OpOverloadPacket.__call__.__code__}  # torch.ops.*
# Calls that give a tensor autograd cannot follow back (torch.tensor/as_tensor only when built from values).
CUTS = {"detach": ".detach()", "detach_": ".detach_()", "data": ".data", "numpy": ".numpy()",
        "tolist": ".tolist()", "item": ".item()", "tensor": "torch.tensor(...)", "as_tensor": "torch.as_tensor(...)",
        "from_numpy": "torch.from_numpy(...)", "_set_grad_enabled": "torch.no_grad()"}
FACTORIES = {"zeros", "ones", "empty", "full", "rand", "randn", "randint", "tensor", "as_tensor", "eye",
             "arange", "linspace", "from_numpy", "Tensor", "FloatTensor"}
CASTS = {"float", "double", "half", "bfloat16", "to", "type"}  # recorded when they change a tensor's dtype

_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))
_STDLIB_DIR = os.path.dirname(os.path.abspath(os.__file__))
_RNNLIB_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CHECKS_DIR = os.path.dirname(os.path.abspath(__file__))
_NOT_A_REFERENCE = {os.path.join(_RNNLIB_DIR, "config.py"), os.path.join(_RNNLIB_DIR, "__init__.py")}
_KIND_CACHE: dict[str, str] = {}


def _kind(filename: str) -> str:
    """"reference" (rnnlib or its solutions), "ours" (the checkers), "library" (torch, stdlib, packages) or
    "learner" (anything else: a notebook cell, a test file, code made with exec)."""
    kind = _KIND_CACHE.get(filename)
    if kind is None:
        path = os.path.abspath(filename) if not filename.startswith("<") else filename
        if path.startswith(_CHECKS_DIR):
            kind = "ours"
        elif path.startswith(_RNNLIB_DIR + os.sep):
            kind = "library" if path in _NOT_A_REFERENCE else "reference"
        elif (path.startswith((_TORCH_DIR, _STDLIB_DIR)) or "site-packages" in path or "dist-packages" in path
              or path.startswith("<frozen")):
            kind = "library"
        else:
            kind = "learner"
        _KIND_CACHE[filename] = kind
    return kind


def _module_name(filename: str) -> str:
    """rnnlib's module that a file holds: .../rnnlib/solutions/exercise_7_2.py -> rnnlib.solutions.exercise_7_2."""
    relative = os.path.relpath(os.path.abspath(filename), os.path.dirname(_RNNLIB_DIR))
    return os.path.splitext(relative)[0].replace(os.sep, ".")


def is_learner_code(filename: str) -> bool:
    return _kind(filename) == "learner"


def site(frame) -> str:
    """Where the nearest learner's line up the stack from ``frame`` is, e.g. " (in forward, line 12)"."""
    while frame is not None and _kind(frame.f_code.co_filename) != "learner":
        frame = frame.f_back
    if frame is None:
        return ""
    name = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
    return f" (in {name}, line {frame.f_lineno})"


@dataclass
class Watch:
    """What one run of the learner's code called (outside allowed objects and rnnlib's own code).

    ``fused``: operator -> where it was first called from; ``modules``: ``torch.nn`` module class name ->
    (family, where, qualified name); ``reference``: rnnlib functions that ran, outermost only (qualified names); ``cuts``:
    calls that cut the autograd graph made by the learner's own lines (text, where); ``factories``: tensors
    the learner's lines created with a factory (name, where, dtype, device, ndim); ``calls``: how often each
    counted object was called (by ``id``).
    """

    fused: dict = field(default_factory=dict)
    modules: dict = field(default_factory=dict)  # class name -> (family, where, qualified name)
    reference: list = field(default_factory=list)
    cuts: list = field(default_factory=list)
    factories: list = field(default_factory=list)
    calls: Counter = field(default_factory=Counter)
    _allow: set = field(default_factory=set)
    _count: dict = field(default_factory=dict)  # id(object) -> object, or code object -> function
    _shield: list = field(default_factory=list)  # frames inside which nothing is recorded
    _depth: Counter = field(default_factory=Counter)

    # ---- what a checker asks ----
    tampered: bool = False  # the learner's code removed or replaced the profile function

    def count(self, obj: Any) -> int:
        return self.calls[id(obj)]

    def families(self) -> list[tuple[str, str, str]]:
        """Every forbidden-kind call seen: (family, description, where); modules first."""
        found = [(family, path, where) for name, (family, where, path) in self.modules.items()]
        found += [(FUSED[op][0], FUSED[op][1], where) for op, where in self.fused.items()]
        return found

    # ---- recording ----
    def _record_op(self, name: str, frame) -> None:
        if name in FUSED and name not in self.fused:
            self.fused[name] = site(frame)

    def _record_cut(self, text: str, frame) -> None:
        where = site(frame)
        if (text, where) not in self.cuts:
            self.cuts.append((text, where))

    def _profile(self, frame, event, arg):
        try:
            if event == "return":
                if self._shield and self._shield[-1] is frame:
                    self._shield.pop()
                key = self._counted_key(frame)
                if key is not None and self._depth[key] > 0:
                    self._depth[key] -= 1
                return
            if self._shield:
                if event == "call" and self._count:  # the reference calling a counted cell still calls it
                    self._count_call(frame)
                return
            if event == "call":
                self._on_call(frame)
            elif event == "c_call":
                name = getattr(arg, "__name__", "")
                if name in FUSED:
                    self._record_op(name, frame)
                elif name == "from_numpy" and _kind(frame.f_code.co_filename) == "learner":
                    self._record_cut(CUTS[name], frame)
        except Exception:  # a recorder must never break the learner's code
            pass

    def _counted_key(self, frame):
        code = frame.f_code
        if code in self._count:
            return code
        if code.co_name == "forward" and self._count:
            obj = frame.f_locals.get("self")
            if id(obj) in self._count:
                return id(obj)
        return None

    def _count_call(self, frame) -> None:
        key = self._counted_key(frame)
        if key is not None:
            if self._depth[key] == 0:
                self.calls[key] += 1
            self._depth[key] += 1

    def _on_call(self, frame) -> None:
        code = frame.f_code
        self._count_call(frame)
        if code.co_name == "forward" and self._allow and id(frame.f_locals.get("self")) in self._allow:
            self._shield.append(frame)
            return
        if code in _OP_CALLS:  # torch.ops.aten.<name>(...), seen here even with torch functions disabled
            op = frame.f_locals.get("self")
            self._record_op(getattr(op, "_opname", None) or str(getattr(op, "_qualified_op_name", "")).split("::")[-1],
                            frame)
            return
        family = _FORWARDS.get(code)
        if family is not None:
            cls = type(frame.f_locals.get("self"))
            path = (f"torch.nn.{cls.__name__}" if cls.__module__.startswith("torch.nn.")
                    else f"{cls.__module__}.{cls.__qualname__}")
            self.modules.setdefault(cls.__name__, (family, site(frame), path))
            return
        if _kind(code.co_filename) == "reference":
            self.reference.append(f"{_module_name(code.co_filename)}.{getattr(code, 'co_qualname', code.co_name)}")
            self._shield.append(frame)


class _Functions(TorchFunctionMode):
    def __init__(self, watch: Watch):
        super().__init__()
        self.watch = watch

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        watch = self.watch
        name = ""
        try:  # fused operators count outside allowed and rnnlib code; cuts and factories on the learner's lines
            name = getattr(func, "__name__", "").split(".")[0]
            if name == "__get__":  # a property such as Tensor.data
                name = getattr(getattr(func, "__self__", None), "__name__", "")
            caller = sys._getframe(1)
            if name in FUSED:
                if not watch._shield:
                    watch._record_op(name, caller)
            elif name == "_set_grad_enabled":  # torch.no_grad() enters through torch's own code
                if args and args[0] is False and not watch._shield:
                    watch._record_cut(CUTS[name], caller)
            elif name in CUTS and _kind(caller.f_code.co_filename) == "learner":
                data = args[0] if args else kwargs.get("data")
                if name not in ("tensor", "as_tensor") or not isinstance(data, (bool, int, float)):
                    watch._record_cut(CUTS[name], caller)
        except Exception:
            name = ""
        out = func(*args, **kwargs)
        made = None  # a new tensor whose dtype and device the learner's line chose
        if name in FACTORIES and isinstance(out, Tensor) and not isinstance(kwargs.get("device"), torch.device):
            made = f"torch.{name}(...)"  # no device=, or a fixed one such as device="cpu"
        elif name == "cpu" or (name == "to" and any(isinstance(a, str) for a in args[1:])):
            made = f".{name}(...)"
        elif (name in CASTS and isinstance(out, Tensor) and args and isinstance(args[0], Tensor)
              and out.dtype != args[0].dtype):
            made = f".{name}(...)"
        if made is not None:
            caller = sys._getframe(1)
            if _kind(caller.f_code.co_filename) == "learner":
                watch.factories.append((made, site(caller), out.dtype, out.device, out.dim()))
        return out


class _Operators(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:  # else torch wraps __torch_dispatch__ so that its first call imports
        return False                       # torch._dynamo, seconds of work that a checker does not need

    def __init__(self, watch: Watch):
        super().__init__()
        self.watch = watch

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.watch._shield:
            name = func._schema.name.split("::")[-1]
            if name in FUSED:
                self.watch._record_op(name, sys._getframe(1))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def watching(allow: Iterable[Any] = (), count: Iterable[Any] = ()) -> Iterator[Watch]:
    """Record what the code run inside the block calls (see the module docstring).

    ``allow``: module instances the learner is given; what happens inside their ``forward`` is not recorded.
    ``count``: module instances (their ``forward``) or functions whose calls are counted, outermost only:
    ``watch.count(obj)``.
    """
    watch = Watch()
    watch._allow = {id(obj) for obj in allow}
    for obj in count:
        watch._count[getattr(obj, "__code__", None) or id(obj)] = obj
    previous = sys.getprofile()
    previous_threads = threading.getprofile()
    # Threads started inside the block get the profile function too (and, where Python can, threads that
    # already run), so a fused cell called from a worker thread is seen as a builtin call.
    set_all = getattr(threading, "setprofile_all_threads", None)  # Python 3.12+
    functions, operators = _Functions(watch), _Operators(watch)
    try:
        with functions, operators:
            sys.setprofile(watch._profile)
            threading.setprofile(watch._profile)
            if set_all is not None:
                set_all(watch._profile)
            try:
                yield watch
            finally:
                watch.tampered = sys.getprofile() != watch._profile
                if set_all is not None:
                    set_all(None)
                threading.setprofile(previous_threads)
                sys.setprofile(previous)
    finally:
        watch.calls = Counter({(k if isinstance(k, int) else id(watch._count[k])): v
                               for k, v in watch.calls.items()})
