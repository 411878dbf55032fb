"""rnnlib.profiling: operator tables and counts from torch.profiler, and the allocation tracker."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnlib.layers import LSTM
from rnnlib.profiling import AllocationTracker, count_ops, op_table, profile_step, self_time_share, span_ms

MB = 1_000_000


def test_tracker_sees_peak_and_net_of_known_allocations():
    with AllocationTracker() as mem:
        a = torch.empty(MB // 4)            # 1 MB
        b = torch.empty(2 * MB // 4)        # 2 MB: 3 MB live
        del a                               # 2 MB live
        c = torch.empty(MB // 4)            # 3 MB live again, never more
    assert mem.peak == 3 * MB
    assert mem.net == 3 * MB
    assert mem.allocations == 3
    del b, c


def test_tracker_ignores_frees_of_memory_allocated_before_the_block():
    before = torch.empty(4 * MB // 4)
    with AllocationTracker() as mem:
        del before                          # not the block's memory: no credit for freeing it
        x = torch.empty(MB // 4)
    assert (mem.peak, mem.net) == (MB, MB)
    del x


def test_tracker_counts_what_the_backward_pass_allocates():
    w = torch.randn(1000, 1000, requires_grad=True)
    x = torch.randn(10, 1000)
    with AllocationTracker() as mem:
        (x @ w).sum().backward()
    # The gradient of w (4 MB) is allocated during backward and still live at the end.
    assert mem.net >= w.numel() * 4
    assert mem.peak >= mem.net


def test_tracker_repeats_exactly_and_rejects_other_devices():
    model = nn.LSTM(8, 16)
    x = torch.randn(20, 4, 8)

    def step():
        model.zero_grad(set_to_none=True)
        model(x)[0].sum().backward()

    step()
    peaks = []
    for _ in range(2):
        with AllocationTracker() as mem:
            step()
        peaks.append(mem.peak)
    assert peaks[0] == peaks[1] > 0
    with pytest.raises(ValueError, match="cpu"):
        AllocationTracker("meta")


def test_operator_counts_grow_with_the_python_loop_but_not_with_the_fused_layer():
    def counts(layer_cls):
        result = {}
        for T in (4, 8, 16):
            torch.manual_seed(0)
            layer = layer_cls(3, 5)
            x = torch.randn(T, 2, 3)
            result[T] = count_ops(profile_step(lambda: layer(x)[0].sum().backward(), warmup=1))
        return result

    ours, fused = counts(LSTM), counts(nn.LSTM)
    per_step = (ours[8] - ours[4]) / 4
    assert per_step > 5
    assert ours[16] - ours[8] == 8 * per_step          # exactly linear in T
    assert fused[4] == fused[8] == fused[16]


def test_op_table_shares_add_up_and_name_the_operators():
    a, b = torch.randn(200, 200), torch.randn(200, 200)
    prof = profile_step(lambda: torch.tanh(a @ b).sum(), warmup=1)
    table = op_table(prof, top=50)
    assert {"calls", "self CPU (ms)", "self CPU (%)", "CPU total (ms)"} <= set(table.columns)
    assert "aten::mm" in table.index and table.loc["aten::mm", "calls"] == 1
    assert table["self CPU (%)"].sum() == pytest.approx(100, abs=1e-6)
    assert 0 < self_time_share(prof, ["aten::mm"]) < 1
    assert self_time_share(prof, ["no such operator"]) == 0
    assert len(op_table(prof, top=2)) == 2
    self_ms = table["self CPU (ms)"].sum()
    assert 0 < self_ms <= span_ms(prof) * 1.001  # the step's span holds every operator's self time


def test_backward_rows_are_named_for_what_they_are():
    w = torch.randn(50, 50, requires_grad=True)
    prof = profile_step(lambda: torch.tanh(w @ w).sum().backward(), warmup=1)
    names = list(op_table(prof, top=100).index)
    assert "backward: TanhBackward0" in names
    assert not any(n.startswith("autograd::engine::evaluate_function") for n in names)
    with pytest.raises(ValueError, match="warmup"):
        profile_step(lambda: None, warmup=-1)
