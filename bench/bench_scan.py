"""Speed of the ways to evaluate a linear recurrence, and of minGRU layers against GRU/LSTM, side by side.

Two tables, each timed with the candidates interleaved (round robin, so that a change in machine load
hits all alike) and reported as the median of ``--repeats`` forward + backward passes after a warm-up:

1. the recurrence h_t = a_t h_{t-1} + b_t alone (coefficients computed from given gate logits, as minGRU
   computes them), for ``rnnlib.scan``'s loop, recursive doubling, tree scan and chunked log-space scan, at
   several state sizes and lengths; the ratio printed is each method's time over the loop's;
2. one recurrent layer (``--hidden`` units, batch ``--batch``): ``MinGRU`` with each evaluation against
   ``nn.GRU``, ``nn.LSTM`` and ``rnnlib.GRU``; the ratio printed is each layer's time over the fastest
   minGRU's.

Nothing is asserted: timings depend on the machine and on what else runs on it. Chapter 7.6 explains
the pattern: where each step holds little arithmetic, launch costs dominate and the scans' O(log T)
depth wins; where it holds a lot, the loop's smaller work wins on a CPU.

    .venv/bin/python bench/bench_scan.py               # a few minutes on 2 cores
    .venv/bin/python bench/bench_scan.py --quick       # tiny sizes, seconds
    .venv/bin/python bench/bench_scan.py --threads 1   # steadier when other processes share the cores
    .venv/bin/python bench/bench_scan.py --device cuda # on a GPU, where depth is what counts
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import rnnlib
from rnnlib.minrnn import LOG_SCAN_CHUNK, MinGRU, g
from rnnlib.scan import linear_recurrence, log_scan, scan_doubling, scan_tree


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved_medians(fns: dict[str, Callable[[], None]], repeats: int, device: torch.device) -> dict[str, float]:
    """Seconds per call of each function: median of ``repeats`` calls, taken in turns, after one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if r:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def recurrence_table(args: argparse.Namespace, device: torch.device) -> None:
    print("1. The recurrence alone, forward + backward: ms, and (time / loop)")
    methods = {
        "loop": lambda k, c: linear_recurrence(torch.sigmoid(-k), torch.sigmoid(k) * g(c), dim=0),
        "doubling": lambda k, c: scan_doubling(torch.sigmoid(-k), torch.sigmoid(k) * g(c), dim=0),
        "tree": lambda k, c: scan_tree(torch.sigmoid(-k), torch.sigmoid(k) * g(c), dim=0),
        "log": lambda k, c: log_scan(-F.softplus(k), -F.softplus(-k) + torch.log(g(c)), dim=0,
                                     chunk_size=LOG_SCAN_CHUNK),
    }
    print(f"{'state (B x H)':>14} {'T':>6} " + " ".join(f"{name:>18}" for name in methods))
    for B, H in args.states:
        for T in args.lengths:
            gen = torch.Generator().manual_seed(T)
            k = torch.randn(T, B, H, generator=gen).to(device)
            c = torch.randn(T, B, H, generator=gen).to(device)

            def run(method, k=k, c=c):
                kk, cc = k.clone().requires_grad_(), c.clone().requires_grad_()
                method(kk, cc).sum().backward()

            ms = {name: 1000 * s for name, s in
                  interleaved_medians({n: (lambda m=m: run(m)) for n, m in methods.items()}, args.repeats, device).items()}
            cells = " ".join(f"{ms[n]:9.2f} ({ms[n] / ms['loop']:5.2f}x)" for n in methods)
            print(f"{f'{B} x {H}':>14} {T:>6} {cells}")


def layer_table(args: argparse.Namespace, device: torch.device) -> None:
    H, B = args.hidden, args.batch
    print(f"\n2. One layer, forward + backward (batch {B}, {H} units): ms, and (time / fastest minGRU)")
    makers = {
        "minGRU log": lambda: MinGRU(H, H, batch_first=True, scan="log"),
        "minGRU tree": lambda: MinGRU(H, H, batch_first=True, scan="tree"),
        "minGRU loop": lambda: MinGRU(H, H, batch_first=True, scan="loop"),
        "nn.GRU": lambda: nn.GRU(H, H, batch_first=True),
        "nn.LSTM": lambda: nn.LSTM(H, H, batch_first=True),
        "rnnlib.GRU": lambda: rnnlib.GRU(H, H, batch_first=True),
    }
    print(f"{'T':>6} " + " ".join(f"{name:>19}" for name in makers))
    for T in args.lengths:
        torch.manual_seed(0)
        layers = {name: make().to(device) for name, make in makers.items()}
        x = torch.randn(B, T, H, generator=torch.Generator().manual_seed(T)).to(device)

        def run(layer):
            layer(x)[0].sum().backward()
            layer.zero_grad(set_to_none=True)

        ms = {name: 1000 * s for name, s in
              interleaved_medians({n: (lambda l=l: run(l)) for n, l in layers.items()}, args.repeats, device).items()}
        fastest = min(v for n, v in ms.items() if n.startswith("minGRU"))
        print(f"{T:>6} " + " ".join(f"{ms[n]:10.1f} ({ms[n] / fastest:5.2f}x)" for n in makers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's)")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: rnnlib.get_device())")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = rnnlib.get_device(args.device)
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.lengths = [64, 256] if args.quick else [64, 256, 1024, 4096]
    args.states = [(1, 16), (8, 64)] if args.quick else [(1, 16), (8, 64), (8, 256), (32, 256)]
    if args.quick:
        args.hidden, args.batch = 32, 4
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; median of "
          f"{args.repeats} after a warm-up; log-space scan in chunks of {LOG_SCAN_CHUNK}\n")
    recurrence_table(args, device)
    layer_table(args, device)


if __name__ == "__main__":
    main()
