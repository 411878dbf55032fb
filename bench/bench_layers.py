"""Training-step speed of rnnlib's RNN/LSTM/GRU layers against torch.nn's, side by side.

A character-level language model: one-hot input over a vocabulary of 65 symbols, one recurrent layer,
a linear output layer and cross-entropy; one training step = forward, backward and an Adam step.
Both implementations start from the same weights and see the same batches; their steps are interleaved
so that a change in machine load hits both alike. Prints the median time per step and the ratio
rnnlib / torch.nn. The first steps (--warmup) are not timed: torch.nn.LSTM builds its oneDNN kernel
on its first call, which takes about a second. Nothing is asserted: timings depend on the machine and
on what else runs on it.

    .venv/bin/python bench/bench_layers.py            # hidden 256, batch 64, seq 100
    .venv/bin/python bench/bench_layers.py --quick    # tiny sizes, a few seconds
    .venv/bin/python bench/bench_layers.py --threads 1  # steadier when other processes share the cores
    .venv/bin/python bench/bench_layers.py --compile    # adds rnnlib's model under torch.compile

torch.compile is not part of rnnlib: measured on 2 CPU cores (torch 2.13, hidden 256, batch 64, seq 100),
compiling the LSTM step made a training step slower, not faster (1.49x torch.nn against 1.23x for the
plain loop), and compiling the whole model unrolled 100 steps into a graph that took over a minute to
build and still ran slower (1.7x against 1.32x in the same run). ``--compile`` repeats that measurement.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import rnnlib.layers as layers

KINDS = {"rnn": (layers.RNN, nn.RNN), "lstm": (layers.LSTM, nn.LSTM), "gru": (layers.GRU, nn.GRU)}
# The course's targets for rnnlib / torch.nn at the default sizes (printed beside the ratio, not asserted).
# nn.LSTM on the CPU runs one fused oneDNN kernel; the plain Python loop over a fused-gate cell cannot.
TARGETS = {"rnn": 1.2, "gru": 1.2, "lstm": 1.8}


class CharLM(nn.Module):
    """One-hot characters -> recurrent layer -> linear scores over the vocabulary."""

    def __init__(self, rnn: nn.Module, hidden_size: int, vocab_size: int) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)                      # (L, N, H)
        return self.head(out)                     # (L, N, V)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    start = time.perf_counter()
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def bench_kind(kind: str, args: argparse.Namespace) -> dict[str, float]:
    ours_cls, torch_cls = KINDS[kind]
    torch.manual_seed(0)
    reference = torch_cls(args.vocab, args.hidden)
    models = {"torch.nn": CharLM(reference, args.hidden, args.vocab)}
    ours = ours_cls(args.vocab, args.hidden)
    ours.load_state_dict(reference.state_dict())
    models["rnnlib"] = CharLM(ours, args.hidden, args.vocab)
    models["rnnlib"].head.load_state_dict(models["torch.nn"].head.state_dict())
    if args.compile:  # the first (untimed, --warmup) step pays for the compilation
        twin = ours_cls(args.vocab, args.hidden)
        twin.load_state_dict(reference.state_dict())
        compiled = CharLM(twin, args.hidden, args.vocab)
        compiled.head.load_state_dict(models["torch.nn"].head.state_dict())
        models["rnnlib, compiled"] = torch.compile(compiled)
    optimizers = {name: torch.optim.Adam(model.parameters(), lr=1e-3) for name, model in models.items()}

    generator = torch.Generator().manual_seed(1)
    times: dict[str, list[float]] = {name: [] for name in models}
    for repeat in range(args.warmup + args.repeats):
        ids = torch.randint(args.vocab, (args.seq + 1, args.batch), generator=generator)
        x = F.one_hot(ids[:-1], args.vocab).float()   # (L, N, V)
        y = ids[1:]                                    # (L, N)
        for name, model in models.items():             # interleaved: same load for both
            elapsed = train_step(model, optimizers[name], x, y)
            if repeat >= args.warmup:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=100)
    parser.add_argument("--vocab", type=int, default=65)
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per model (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--kinds", default="rnn,gru,lstm", help="comma-separated subset of rnn,gru,lstm")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--compile", action="store_true", help="also time rnnlib's model under torch.compile")
    args = parser.parse_args()
    if args.quick:
        args.hidden, args.batch, args.seq, args.repeats, args.warmup = 32, 8, 20, 3, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; hidden {args.hidden}, batch {args.batch}, "
          f"seq {args.seq}, vocab {args.vocab}; median of {args.repeats} steps after {args.warmup} warm-up")
    print(f"{'model':<6} {'implementation':<16} {'ms/step':>9} {'ratio':>7} {'target':>8}")
    for kind in args.kinds.split(","):
        medians = bench_kind(kind.strip(), args)
        base = medians["torch.nn"]
        for name, seconds in medians.items():
            target = f"<= {TARGETS[kind.strip()]}x" if name == "rnnlib" else ""
            print(f"{kind.upper():<6} {name:<16} {seconds * 1e3:9.1f} {seconds / base:6.2f}x {target:>8}")


if __name__ == "__main__":
    main()
