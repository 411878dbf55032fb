"""rnnlib.allocator: glibc's thresholds raised on import, the switch that turns it off, and its effect."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from rnnlib import allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def run_python(code: str, tuning: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "RNNLIB_MALLOC_TUNING"}
    if tuning is not None:
        env["RNNLIB_MALLOC_TUNING"] = tuning
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.skipif(not GLIBC, reason="mallopt exists only in glibc")
def test_import_tunes_and_the_switch_turns_it_off():
    on = run_python("import rnnlib; print(rnnlib.allocator.status())", None)
    off = run_python("import rnnlib; print(rnnlib.allocator.status())", "0")
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    assert on.stdout.startswith("tuned: mmap threshold 268,435,456 bytes, trim threshold 1,073,741,824 bytes")
    assert off.stdout.strip() == "not tuned: RNNLIB_MALLOC_TUNING=0"


def test_a_bad_switch_value_names_the_variable():
    bad = run_python("import rnnlib", "maybe")
    assert bad.returncode != 0
    assert "RNNLIB_MALLOC_TUNING must be 0" in bad.stderr and "'maybe'" in bad.stderr


@pytest.mark.skipif(not GLIBC, reason="mallopt exists only in glibc")
def test_tuned_process_reuses_a_large_buffer_instead_of_faulting_it_in_again():
    # A 64 MB tensor is above glibc's largest automatic mmap threshold (32 MB): by default every
    # allocation is a fresh mapping whose 16,384 pages each fault when first written. Tuned, the
    # block is reused from the heap and is already mapped. Counted in page faults, not seconds.
    code = """
        import resource, torch, rnnlib
        n = 16 * 2**20                                    # 64 MB of float32
        for _ in range(3):                                # first touches and the heap's growth, in both settings
            torch.empty(n).fill_(1.0)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            torch.empty(n).fill_(1.0)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
    """
    default = run_python(code, "0")
    tuned = run_python(code, "1")
    assert default.returncode == 0 and tuned.returncode == 0, default.stderr + tuned.stderr
    per_alloc_default, per_alloc_tuned = float(default.stdout), float(tuned.stdout)
    assert per_alloc_default > 10_000                    # about one fault per 4 KB page
    assert per_alloc_tuned < 0.01 * per_alloc_default


@pytest.mark.parametrize("value", [0, -1, 2**31, True, 1.5, "1"])
def test_bad_thresholds_are_refused(value):
    with pytest.raises(ValueError, match="number of bytes"):
        allocator.tune_allocator(mmap_threshold=value)
    with pytest.raises(ValueError, match="trim_threshold"):
        allocator.tune_allocator(trim_threshold=value)


def test_not_glibc_changes_nothing_and_says_so(monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    called = []
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a, **k: called.append(a))
    assert allocator.tune_allocator() is False
    assert called == []
    assert allocator.status().startswith("not tuned: the C library is not glibc")


def test_refused_thresholds_are_reported(monkeypatch):
    monkeypatch.setattr(allocator, "_mallopt", lambda: (lambda param, value: 0))
    assert allocator.tune_allocator() is False
    assert allocator.status() == "not tuned: glibc refused the thresholds"
