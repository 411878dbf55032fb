"""Reference solutions of the exercise notebooks, out of sight until a learner asks for one.

Nothing imports these modules unless asked. In an exercise notebook, each place to fill in is followed by
a cell like::

    # from rnnlib.solutions.exercise_7_2 import LSTMCell as MyLSTMCell   # uncomment to use the reference
    if solutions.requested():
        from rnnlib.solutions.exercise_7_2 import LSTMCell as MyLSTMCell
    check_lstm_cell(MyLSTMCell)

so the learner's own code is checked unless they uncomment the import, or unless the environment variable
``RNNLIB_SOLUTIONS=1`` is set: the tests run every exercise once as the learner receives it and once with
the reference solutions filled in this way. ``show("7.2", "LSTMCell")`` displays one reference answer.
In the built book, each solution is a collapsed block that includes the same source.
"""
from __future__ import annotations

import importlib
import inspect
import os
from types import ModuleType
from typing import Optional

EXERCISES = {
    "7.1": "exercise_7_1",  # forecasting: time split, normalization, windows, naive baseline, RNN forecaster
    "7.2": "exercise_7_2",  # LSTM cell and the loop over time
    "7.3": "exercise_7_3",  # GRU cell
    "7.4": "exercise_7_4",  # reversal within length, bidirectional encoding
    "7.5": "exercise_7_5",  # masked softmax, additive and scaled dot-product scores
    "7.6": "exercise_7_6",  # log-space scan, minGRU layer
}


def requested() -> bool:
    """True when ``RNNLIB_SOLUTIONS`` is 1: use the reference solutions instead of the learner's code."""
    value = os.environ.get("RNNLIB_SOLUTIONS", "0").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"", "0", "false", "no", "off"}:
        return False
    raise ValueError(f"RNNLIB_SOLUTIONS must be 0 or 1, got {value!r}")


def module(exercise: str) -> ModuleType:
    """The solution module of ``exercise`` ("7.1" ... "7.6")."""
    if exercise not in EXERCISES:
        raise ValueError(f"exercise must be one of {', '.join(EXERCISES)}, got {exercise!r}")
    return importlib.import_module(f"{__name__}.{EXERCISES[exercise]}")


def source(exercise: str, name: Optional[str] = None) -> str:
    """The source code of one reference answer (a function or class), or of the whole solution module."""
    mod = module(exercise)
    if name is None:
        return inspect.getsource(mod)
    if not hasattr(mod, name):
        names = [n for n, v in vars(mod).items()
                 if not n.startswith("_") and getattr(v, "__module__", "") == mod.__name__]
        raise ValueError(f"the solution of exercise {exercise} has no {name!r}; it has: {', '.join(names)}")
    return inspect.getsource(getattr(mod, name))


def show(exercise: str, name: Optional[str] = None):
    """Display a reference answer in a notebook (syntax-highlighted); plain text outside IPython."""
    text = source(exercise, name)
    try:
        from IPython.display import Code
    except ImportError:
        return text
    return Code(text, language="python")
