"""rnnlib: the small library behind the course book *Recurrent Neural Networks with PyTorch*.

One concept per module: ``cells`` and ``layers`` (RNN, LSTM, GRU from scratch, state-dict compatible
with ``torch.nn``), ``models``, ``attention``, ``bptt`` (backpropagation through time by hand),
``gradflow``, ``optim`` (SparseAdam), ``scan`` (linear recurrences, parallel scans) and ``minrnn`` (minGRU,
minLSTM), ``data``, ``text``, ``synthetic``, ``tasks``, ``train`` (``fit``, ``train_step``, ``evaluate``),
``checkpoint``, ``lr``, ``transfer``, ``memory``, ``plots``, ``diagrams``, ``results``; imported on
demand (``import rnnlib.<name>``): ``profiling``, ``widgets``, ``distributed``, ``exercises``, ``checks``
(exercise checkers) and ``solutions``.

On import, ``allocator.tune_on_import()`` raises glibc's malloc thresholds so that large CPU buffers are
reused between training steps instead of being mapped again each time (see :mod:`rnnlib.allocator`;
``RNNLIB_MALLOC_TUNING=0`` turns this off)."""
from . import allocator

allocator.tune_on_import()

from . import (attention, bptt, cells, config, data, diagrams, gradflow, layers, models, optim, plots, results,
               synthetic, text, train)
from . import checkpoint, lr, memory, minrnn, scan, tasks, transfer
from .cells import GRUCell, LSTMCell, RNNCell
from .config import get_device, is_quick, mode, pick, set_seed
from .layers import GRU, LSTM, RNN
from .minrnn import MinGRU, MinLSTM

__version__ = "0.1.0"

__all__ = [
    "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
    "get_device", "is_quick", "mode", "pick", "set_seed",
    "attention", "bptt", "cells", "config", "data", "diagrams", "gradflow", "layers", "models", "optim",
    "plots", "results", "synthetic", "text", "train",
    "MinGRU", "MinLSTM", "minrnn", "scan", "checkpoint", "lr", "memory", "tasks", "transfer", "allocator",
]
