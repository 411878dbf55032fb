"""Instant feedback for the exercise notebooks: ``check_*`` functions that test a learner's code.

Each checker runs the learner's function or class on small random inputs of several shapes, in float32
and in float64 (and on a second device), compares values and gradients with rnnlib's reference
implementation while recording what the code calls, and returns a :class:`CheckResult`: truthy when the
code is right and the learner's own; ``USES THE REFERENCE`` when it is, or calls, rnnlib's implementation
or a reference solution; otherwise it names the first thing that differs (a shape, the gate order, a
missing bias, a state not carried over time, a cut gradient, a fused PyTorch operator where the exercise
asks for the equations, a fixed dtype or device...) and gives a hint, without showing the solution. A
checker never raises: exceptions, endless loops and ``NotImplementedError`` come back as results.
:func:`ready` lets a notebook cell run only once the checks it depends on have passed (or use the
reference).

One module per exercise: ``rnnlib.checks.forecasting`` (7.1), ``.lstm`` (7.2), ``.gru`` (7.3),
``.bidirectional`` (7.4), ``.attention`` (7.5), ``.scan`` (7.6); the shared machinery is in ``._core``, and
the recorder of what the learner's code calls in ``._watch``.
"""
from ._core import CheckResult, ready
from .attention import check_additive_scores, check_dot_scores, check_masked_softmax
from .bidirectional import check_bidirectional, check_reverse_padded
from .forecasting import (check_forecaster, check_make_windows, check_naive_forecast, check_normalize_splits,
                          check_split_by_time)
from .gru import check_gru_cell
from .lstm import check_lstm_cell, check_lstm_loop
from .scan import check_log_scan, check_min_gru

__all__ = [
    "CheckResult", "ready",
    "check_split_by_time", "check_normalize_splits", "check_make_windows", "check_naive_forecast", "check_forecaster",
    "check_lstm_cell", "check_lstm_loop",
    "check_gru_cell",
    "check_reverse_padded", "check_bidirectional",
    "check_masked_softmax", "check_additive_scores", "check_dot_scores",
    "check_log_scan", "check_min_gru",
]
