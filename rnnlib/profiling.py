"""Where the time and the memory of a training step go, read from ``torch.profiler``.

``torch.profiler`` records every operator PyTorch runs (``aten::addmm``, ``aten::sigmoid``, ...), in the
forward pass, in the backward pass (under rows named ``autograd::engine::evaluate_function: ...Backward0``)
and in the optimizer (``Optimizer.step#Adam.step``), with the time spent in each. This module turns one
profiled step into what a reader needs:

* :func:`profile_step` runs a step a few times to warm up, then once under the profiler;
* :func:`op_table` lists the operators by *self* time: time inside the operator itself, excluding the
  operators it called (its *total* time includes them), with the number of calls;
* :func:`span_ms` is the wall-clock length of the profiled step. The self times of all operators add up
  to less: the rest is time outside every operator, such as Python running the code between the calls;
* :func:`count_ops` counts operator calls: a number that does not depend on the machine, so it shows
  structure (a Python loop over time steps issues a fixed set of operators per step) where times are noisy;
* :class:`AllocationTracker` reads the allocator's events (``profile_memory=True``) and reports the peak
  and net bytes allocated inside a ``with`` block.

The profiler adds a little time to every operator call, so a step made of many small operators looks
slower under it than it is: take times from separate, unprofiled runs, and read the table for shares.

Reference: PyTorch documentation, "PyTorch Profiler" (``torch.profiler``).
"""
from __future__ import annotations

import os
from typing import Callable, Iterable

import pandas as pd
import torch

__all__ = ["AllocationTracker", "count_ops", "op_table", "profile_step", "self_time_share", "span_ms"]


def _quiet_profiler() -> None:
    """Keep the profiler's C++ libraries from writing log lines into notebook cells.

    Kineto (the profiler's back end) prints a line when a profile starts and stops unless
    ``KINETO_LOG_LEVEL`` is raised before its first use; the CPU allocator warns once (then every
    1000th time) when a block allocated before profiling is freed during it. The first is silenced by
    the variable (a reader's own setting wins), the second by triggering it once with the process's
    standard error pointed at the null device.
    """
    global _QUIET
    if _QUIET:
        return
    _QUIET = True
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from torch.profiler import ProfilerActivity, profile

    block = torch.empty(1024)
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True):
                del block
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_QUIET = False


def profile_step(step: Callable[[], object], warmup: int = 1) -> "torch.profiler.profile":
    """Run ``step()`` ``warmup`` times, then once under ``torch.profiler``; return the finished profiler.

    The warm-up runs allocate the optimizer's state and let libraries choose their kernels, so the
    profiled run is a typical step. Read it with :func:`op_table`, :func:`count_ops`, or the profiler's
    own ``key_averages().table(...)``.
    """
    from torch.profiler import ProfilerActivity, profile

    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
    _quiet_profiler()
    for _ in range(warmup):
        step()
    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    return prof


def op_table(prof, top: int = 10) -> pd.DataFrame:
    """The ``top`` rows of the profile by self CPU time: calls, self time (ms and % of the step), total time.

    Rows are operators (``aten::...``), backward nodes (the profiler's
    ``autograd::engine::evaluate_function: XBackward0``, shortened here to ``backward: XBackward0``) and
    marked regions (``Optimizer.step#...``). The percentages are shares of the time spent inside all
    operators (the sum of the self times); a total time includes the operators a row called.
    """
    averages = list(prof.key_averages())
    all_self = sum(a.self_cpu_time_total for a in averages) or 1.0
    rows = [{"operator": a.key.replace(_BACKWARD_PREFIX, "backward: "), "calls": a.count, "self CPU (ms)": a.self_cpu_time_total / 1000,
             "self CPU (%)": 100 * a.self_cpu_time_total / all_self, "CPU total (ms)": a.cpu_time_total / 1000}
            for a in averages]
    table = pd.DataFrame(rows).sort_values("self CPU (ms)", ascending=False).head(top)
    return table.set_index("operator")


_BACKWARD_PREFIX = "autograd::engine::evaluate_function: "


def span_ms(prof) -> float:
    """Wall-clock milliseconds from the start of the first recorded event to the end of the last."""
    events = prof.events()
    if not events:
        return 0.0
    return (max(e.time_range.end for e in events) - min(e.time_range.start for e in events)) / 1000


def count_ops(prof, prefix: str = "aten::") -> int:
    """Number of recorded calls of operators whose name starts with ``prefix`` (nested calls included)."""
    return sum(1 for event in prof.events() if event.name.startswith(prefix))


def self_time_share(prof, names: Iterable[str]) -> float:
    """Share (0 to 1) of the time inside operators (the sum of all self times) spent in those named in ``names``."""
    names = set(names)
    averages = list(prof.key_averages())
    total = sum(a.self_cpu_time_total for a in averages)
    if total == 0:
        return 0.0
    return sum(a.self_cpu_time_total for a in averages if a.key in names) / total


class AllocationTracker:
    """Peak and net bytes that PyTorch's allocator hands out while a ``with`` block runs.

    >>> with AllocationTracker() as mem:
    ...     loss = model(x).sum()
    ...     loss.backward()
    >>> mem.peak, mem.net        # bytes

    Only memory allocated inside the block counts: ``peak`` is the most of it live at any moment,
    ``net`` what is still live at the end, ``allocations`` the number of blocks allocated. Memory freed
    inside the block but allocated before it (the previous step's gradients, say) is not subtracted, so
    the numbers do not depend on what ran before. ``device``: ``"cpu"`` (default) or ``"cuda"``;
    allocations on other devices are ignored. The block runs under
    ``torch.profiler.profile(profile_memory=True)``, which records every allocation and free with its
    address and size; it slows the block down, so time the same code separately.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device).type
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"AllocationTracker measures 'cpu' or 'cuda' memory, got {device!r}")
        self.peak = 0
        self.net = 0
        self.allocations = 0
        self._profiler = None

    def __enter__(self) -> "AllocationTracker":
        from torch.profiler import ProfilerActivity, profile

        _quiet_profiler()
        activities = [ProfilerActivity.CPU]
        if self.device == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self._profiler = profile(activities=activities, profile_memory=True)
        self._profiler.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        profiler, self._profiler = self._profiler, None
        profiler.__exit__(*exc)
        if exc[0] is None:
            self._read(profiler.profiler.kineto_results.experimental_event_tree())

    def _read(self, roots) -> None:
        from torch._C._profiler import _EventType

        events, stack = [], list(roots)
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            if node.tag == _EventType.Allocation and node.extra_fields.device.type == self.device:
                events.append((node.start_time_ns, node.extra_fields.alloc_size, node.extra_fields.ptr))
        live: dict[int, int] = {}  # address -> bytes, for the blocks allocated inside the `with` block
        level = peak = count = 0
        for _, size, ptr in sorted(events, key=lambda e: e[0]):  # in time order (a stable sort)
            if size > 0:
                live[ptr] = size
                level += size
                count += 1
                peak = max(peak, level)
            elif ptr in live:
                level -= live.pop(ptr)
        self.peak, self.net, self.allocations = peak, level, count
