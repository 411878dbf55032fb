"""How much of a CPU training step goes to the C allocator: glibc's default against tuned thresholds, side by side.

On Linux, glibc's ``malloc`` serves a large block (above its *mmap threshold*, at most 32 MB by
default) with a fresh ``mmap`` and gives it back to the kernel with ``munmap`` when it is freed. A
training step allocates and frees the same large activation and gradient buffers every time, so every
step maps them again and touches every page of them for the first time: one *page fault* per 4 KB page,
each a trip into the kernel that zeroes the page. Raising the mmap threshold (and the *trim threshold*,
which decides when freed memory at the top of the heap goes back to the kernel) keeps those blocks in
the process between steps. The arithmetic is the same and so are the results; only the time changes.

``import rnnlib`` raises both thresholds (:mod:`rnnlib.allocator`) unless ``RNNLIB_MALLOC_TUNING=0``.
This script times the same training steps in child processes that differ only in that variable. The
two settings take turns (round robin, so that a change in machine load hits both alike); each child
reports the median time of its steps after a warm-up, and its minor page faults per step. Nothing is
asserted: the ratio depends on the machine, its kernel and its load.

    .venv/bin/python bench/bench_allocator.py            # about a minute on 2 cores
    .venv/bin/python bench/bench_allocator.py --quick    # a few steps, seconds

The cost of the tuning is memory: the process keeps up to the trim threshold of freed memory instead
of returning it at once. Other allocators (jemalloc, tcmalloc, loaded with ``LD_PRELOAD``) avoid the
same cost in their own way; on macOS and Windows rnnlib leaves the allocator alone.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time


# name: (what it is, threads)
WORKLOADS = {
    "lm": ("character LM step: LSTM H=256, batch 64 x 100 characters, 2 threads", 2),
    "adding": ("adding-problem step: LSTM H=64, batch 64 x 200 steps, 1 thread", 1),
}


def child(workload: str, steps: int, warmup: int) -> dict:
    """Time ``steps`` training steps (forward, backward, Adam) of one workload in this process."""
    import resource

    import torch
    import torch.nn.functional as F

    import rnnlib
    from rnnlib.models import CharLM, SequenceRegressor

    expected = "tuned" if os.environ["RNNLIB_MALLOC_TUNING"] == "1" else "not tuned"
    if not rnnlib.allocator.status().startswith(expected):
        raise SystemExit(f"expected the allocator {expected}, got: {rnnlib.allocator.status()}")

    torch.set_num_threads(WORKLOADS[workload][1])
    torch.manual_seed(0)
    if workload == "lm":
        model = CharLM(65, hidden_size=256, cell="lstm", impl="torch")
        X, Y = torch.randint(0, 65, (64, 100)), torch.randint(0, 65, (64, 100))

        def loss_fn():
            logits, _ = model(X)
            return F.cross_entropy(logits.reshape(-1, 65), Y.reshape(-1))
    else:
        model = SequenceRegressor(input_size=2, hidden_size=64, cell="lstm")
        X, y = torch.rand(64, 200, 2), torch.rand(64)

        def loss_fn():
            return F.mse_loss(model(X).squeeze(-1), y)

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for k in range(warmup + steps):
        if k == warmup:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if k >= warmup:
            times.append(time.perf_counter() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"ms": 1000 * statistics.median(times), "faults": faults / steps}


def run_child(workload: str, tuned: bool, steps: int, warmup: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["RNNLIB_MALLOC_TUNING"] = "1" if tuned else "0"
    out = subprocess.run([sys.executable, __file__, "--child", workload, "--steps", str(steps),
                          "--warmup", str(warmup)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15, help="timed steps per child process")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=3, help="child processes per setting and workload")
    parser.add_argument("--quick", action="store_true", help="3 steps, 1 round: checks that it runs")
    parser.add_argument("--child", choices=sorted(WORKLOADS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.warmup)))
        return
    if args.quick:
        args.steps, args.warmup, args.rounds = 3, 1, 1
    from rnnlib import allocator

    libc = " ".join(platform.libc_ver()) or "unknown"
    print(f"C library: {libc}; tuned = mmap threshold {allocator.MMAP_THRESHOLD:,} bytes, "
          f"trim threshold {allocator.TRIM_THRESHOLD:,} bytes")
    if platform.system() != "Linux" or not libc.startswith("glibc"):
        print("Not glibc on Linux: rnnlib leaves the allocator alone here, so the two columns measure the same thing.")
    print(f"median ms per training step over {args.rounds} child process(es) of {args.steps} steps each "
          "(page faults per step in brackets)\n")
    print(f"{'workload':72s} {'default':>16s} {'tuned':>16s} {'default / tuned':>16s}")
    for workload, (label, _) in WORKLOADS.items():
        got = {False: [], True: []}
        for _ in range(args.rounds):
            for tuned in (False, True):
                got[tuned].append(run_child(workload, tuned, args.steps, args.warmup))
        ms = {t: statistics.median(r["ms"] for r in runs) for t, runs in got.items()}
        faults = {t: statistics.median(r["faults"] for r in runs) for t, runs in got.items()}
        cols = [f"{ms[t]:7.1f} ({faults[t]:6.0f})" for t in (False, True)]
        print(f"{label:72s} {cols[0]:>16s} {cols[1]:>16s} {ms[False] / ms[True]:15.2f}x")


if __name__ == "__main__":
    main()
