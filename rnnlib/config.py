"""Run-time settings shared by every notebook: quick/full mode, seeding and the device.

Quick mode (small data, few steps) is for tests; full mode (the default) is for readers.
One switch selects it: the environment variable ``RNNLIB_QUICK=1``. The device is CUDA,
then Apple's MPS, then the CPU, unless ``RNNLIB_DEVICE`` (or an argument) says otherwise.
"""
from __future__ import annotations

import os
import random
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def is_quick() -> bool:
    """True when ``RNNLIB_QUICK`` is set to 1 (quick mode, used by the tests)."""
    value = os.environ.get("RNNLIB_QUICK", "0").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"RNNLIB_QUICK must be 0 or 1, got {value!r}")


def mode() -> str:
    """``"quick"`` or ``"full"``."""
    return "quick" if is_quick() else "full"


def pick(quick: T, full: T) -> T:
    """Return ``quick`` in quick mode and ``full`` otherwise.

    >>> steps = pick(quick=50, full=2000)
    """
    return quick if is_quick() else full


def set_seed(seed: int = 0) -> None:
    """Seed Python's, NumPy's and PyTorch's generators (all devices)."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """The device to train on: ``prefer``, else ``RNNLIB_DEVICE``, else CUDA, MPS, CPU.

    Asking for a device that is not available raises a ``ValueError`` that says which ones are.
    """
    name = prefer or os.environ.get("RNNLIB_DEVICE") or None
    available = ["cpu"]
    if torch.cuda.is_available():
        available.insert(0, "cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        available.insert(-1, "mps")
    if name is None:
        return torch.device(available[0])
    device = torch.device(name)
    if device.type not in available:
        raise ValueError(
            f"device {name!r} is not available here; available: {', '.join(available)}. "
            "Unset RNNLIB_DEVICE or pass one of those."
        )
    return device
