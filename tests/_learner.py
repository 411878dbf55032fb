"""What a learner's code looks like to the checkers: written in a notebook cell, not imported from rnnlib."""
from __future__ import annotations

import inspect
import sys


def copy_of(obj):
    """``obj`` (a reference-solution function or class) as a learner who copied its source into a notebook
    cell would have it: the whole solution module executed in a fresh namespace, under a cell's file name."""
    module = sys.modules[obj.__module__]
    namespace = {"__name__": "__main__"}
    exec(compile(inspect.getsource(module), "<ipython-input-1>", "exec"), namespace)
    return namespace[obj.__name__]
