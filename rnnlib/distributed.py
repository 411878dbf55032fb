r"""Data-parallel training of the character language model with ``torch.distributed``, launched by torchrun.

    torchrun --standalone --nproc_per_node=2 -m rnnlib.distributed --steps 300   # 2 processes
    python -m rnnlib.distributed --steps 300                                      # the same, 1 process

Data parallelism with ``DistributedDataParallel`` (DDP; Li et al. 2020). :math:`N` processes (*ranks*)
each hold a full copy of the model. Every step the global mini-batch of :math:`B` sequences is cut into
:math:`N` shards of :math:`B/N` rows; rank :math:`r` computes the mean loss :math:`L_r` over its shard and
calls ``backward``, during which DDP averages the gradients of all ranks (an all-reduce, run bucket by
bucket while the rest of the backward pass continues):

.. math::  g = \frac{1}{N} \sum_{r=1}^{N} \nabla_\theta L_r
             = \nabla_\theta \frac{1}{B T} \sum_{b=1}^{B} \sum_{t=1}^{T} \ell_{b,t}
   \quad\text{(shards of equal size)},

the gradient one process would compute on the whole global batch. Every rank then applies the same
optimizer step to the same weights, so the replicas stay identical without ever exchanging weights
(DDP broadcasts rank 0's initial weights once, when it wraps the model). ``tests/test_distributed.py``
checks this in float64: two processes end with the parameters of one process on the combined batch.

Backends: ``nccl`` on CUDA GPUs (one GPU per rank, ``cuda:LOCAL_RANK``) when the machine has at least as
many GPUs as processes, ``gloo`` on the CPU otherwise (for example two processes on a one-GPU machine), or
as ``--backend`` asks; rank 0 prints which backend and device it used. torchrun starts
the processes and gives each ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
without them (plain ``python -m``) the script trains in one process with no process group.

Batches: every rank draws the same global batch of random windows from an identically seeded generator
and keeps its own rows. That is simple and exact for random windows of one long text; a dataset of
separate examples would give each rank a disjoint share with ``torch.utils.data.DistributedSampler``.
Only rank 0 prints, evaluates and saves.

When something goes wrong, every rank stops together, with a non-zero exit and nothing saved:

* every argument (and that rank 0 can write the ``--save`` file) is checked before training starts;
* every step, each rank's loss is checked and the verdicts are combined with an all-reduce, before the
  backward pass: one rank's non-finite loss stops all of them (a NaN would otherwise reach every
  replica through the averaged gradients); the averaged gradient norm, the same on every rank, is
  checked before the optimizer step;
* the process group has a timeout (``--timeout``, 5 minutes by default, instead of torch's 30): a rank
  that is stuck or gone makes the others fail after that long with a message, not wait. It must exceed
  the longest time one rank works alone (rank 0's validation and save at the end).

References: S. Li et al., "PyTorch distributed: experiences on accelerating data parallel training",
VLDB 2020. PyTorch documentation: ``DistributedDataParallel``, ``torchrun``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import atomic_save
from .config import set_seed
from .models import CharLM
from .text import Vocab, random_batches, train_val_split
from .train import count_parameters, evaluate_lm

__all__ = ["Options", "parse_args", "check_options", "shard", "pick_backend", "train", "main"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class Options:
    """Settings of one training run (the command-line options of ``python -m rnnlib.distributed``)."""

    data: str = "shakespeare"   # "shakespeare" (rnnlib.data) or the path of a UTF-8 text file
    steps: int = 200            # optimizer steps
    batch_size: int = 32        # global batch: sequences per step summed over all processes
    seq_len: int = 64           # characters per sequence
    cell: str = "lstm"          # "rnn", "lstm" or "gru"
    hidden_size: int = 128
    embedding_dim: int = 32
    optimizer: str = "adam"     # "adam" or "sgd" (with momentum 0.9)
    lr: float = 2e-3
    clip_norm: float = 1.0      # clip the global gradient norm to this (0: no clipping)
    seed: int = 0
    dtype: str = "float32"      # "float32" or "float64"
    val_chars: int = 20_000     # characters of validation text scored at the end (0: skip)
    log_every: int = 50         # rank 0 prints the loss every this many steps
    save: str = ""              # rank 0 saves {"model", "options", "vocab", ...} here when done ("" = no)
    backend: str = ""           # "gloo" or "nccl"; "" = nccl if there is a GPU per process, gloo (CPU) otherwise
    timeout: float = 300.0      # seconds a rank waits for the others in a collective operation before failing


def parse_args(argv: list[str] | None = None) -> Options:
    """Command-line options into :class:`Options` (``--hidden-size 64`` sets ``hidden_size``)."""
    d = Options()
    parser = argparse.ArgumentParser(
        prog="torchrun --standalone --nproc_per_node=N -m rnnlib.distributed",
        description="Train the character language model with DistributedDataParallel (or in one process).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--data", default=d.data, help="'shakespeare' or the path of a UTF-8 text file")
    add("--steps", type=int, default=d.steps, help="optimizer steps")
    add("--batch-size", type=int, default=d.batch_size, help="global batch: sequences per step over all processes")
    add("--seq-len", type=int, default=d.seq_len, help="characters per sequence")
    add("--cell", choices=("rnn", "lstm", "gru"), default=d.cell, help="recurrent layer")
    add("--hidden-size", type=int, default=d.hidden_size, help="hidden units")
    add("--embedding-dim", type=int, default=d.embedding_dim, help="character embedding size")
    add("--optimizer", choices=("adam", "sgd"), default=d.optimizer, help="Adam, or SGD with momentum 0.9")
    add("--lr", type=float, default=d.lr, help="learning rate")
    add("--clip-norm", type=float, default=d.clip_norm, help="clip the global gradient norm (0: off)")
    add("--seed", type=int, default=d.seed, help="seed of the initial weights and of the batches")
    add("--dtype", choices=tuple(_DTYPES), default=d.dtype, help="parameter dtype")
    add("--val-chars", type=int, default=d.val_chars, help="validation characters scored at the end (0: skip)")
    add("--log-every", type=int, default=d.log_every, help="rank 0 prints the loss every this many steps")
    add("--save", default=d.save, help="rank 0 saves the weights and a summary here ('': do not save)")
    add("--backend", choices=("", "gloo", "nccl"), default=d.backend,
        help="'' picks nccl (cuda:LOCAL_RANK) if there is a GPU per process, gloo on the CPU otherwise")
    add("--timeout", type=float, default=d.timeout,
        help="seconds a process waits for the others before failing (a stuck or dead process)")
    opts = Options(**vars(parser.parse_args(argv)))
    problems = check_options(opts, world_size=int(os.environ.get("WORLD_SIZE", 1)))
    if problems:
        parser.error("; ".join(problems))
    return opts


def check_options(opts: Options, world_size: int = 1) -> list[str]:
    """What is wrong with ``opts`` for ``world_size`` processes, as messages (empty if nothing is)."""
    problems = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    for name in ("steps", "val_chars", "seed", "embedding_dim"):
        need(getattr(opts, name) >= 0, f"--{name.replace('_', '-')} must be >= 0, got {getattr(opts, name)}")
    for name in ("batch_size", "seq_len", "hidden_size", "log_every"):
        need(getattr(opts, name) >= 1, f"--{name.replace('_', '-')} must be >= 1, got {getattr(opts, name)}")
    need(math.isfinite(opts.lr) and opts.lr > 0, f"--lr must be a positive number, got {opts.lr}")
    need(math.isfinite(opts.clip_norm) and opts.clip_norm >= 0, f"--clip-norm must be >= 0 (0: off), got {opts.clip_norm}")
    need(math.isfinite(opts.timeout) and opts.timeout > 0, f"--timeout must be a positive number of seconds, got {opts.timeout}")
    need(opts.batch_size % world_size == 0,
         f"--batch-size {opts.batch_size} does not split evenly over {world_size} processes; choose a multiple of "
         "--nproc_per_node (unequal shards would weight rows unequally)")
    need(opts.data == "shakespeare" or Path(opts.data).is_file(),
         f"--data must be 'shakespeare' or the path of a text file; {opts.data} is not a file")
    return problems


def _save_problem(save: str) -> str:
    """Why rank 0 could not write ``save`` at the end ("" if it can): checked before training, not after."""
    if not save:
        return ""
    path = Path(save)
    if path.is_dir():
        return f"--save {save} is a folder; give the path of a file in it"
    if not path.parent.is_dir():
        return f"--save {save}: the folder {path.parent} does not exist; create it first"
    try:
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        return f"--save {save}: cannot write in {path.parent} ({exc.strerror or exc})"
    return ""


def shard(batch: tuple[Tensor, Tensor], rank: int, world_size: int) -> tuple[Tensor, Tensor]:
    """Rank ``rank``'s rows of a global batch ``(X, Y)`` of shape ``(B, T)``: a contiguous block of ``B / N``."""
    X, Y = batch
    if X.size(0) % world_size != 0:
        raise ValueError(
            f"the global batch of {X.size(0)} sequences does not split evenly over {world_size} processes; "
            "choose --batch-size as a multiple of --nproc_per_node (unequal shards would weight rows unequally)"
        )
    rows = X.size(0) // world_size
    block = slice(rank * rows, (rank + 1) * rows)
    return X[block], Y[block]


def _load_text(data: str) -> str:
    if data == "shakespeare":
        from .data import load_shakespeare

        return load_shakespeare()
    path = Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"--data must be 'shakespeare' or the path of a text file; {path} does not exist")
    return path.read_text(encoding="utf-8")


def train(opts: Options, rank: int = 0, world_size: int = 1, device: torch.device | None = None,
          verbose: bool = True) -> tuple[nn.Module, dict]:
    """Train on ``world_size`` processes (DDP when > 1: the process group must be initialised) or on one.

    Returns the trained model (unwrapped) and a summary dict with the losses logged, the validation
    loss (rank 0) and timings.
    """
    problems = check_options(opts, world_size)
    if problems:
        raise ValueError("; ".join(problems))
    device = device or torch.device("cpu")
    _agree(_save_problem(opts.save) if rank == 0 else "", world_size, device, "rank 0 cannot save (see its message)")
    dtype = _DTYPES[opts.dtype]
    text = _load_text(opts.data)
    vocab = Vocab.from_text(text)
    train_ids, val_ids = train_val_split(vocab.encode(text), val_fraction=0.1)

    set_seed(opts.seed)  # the same initial weights on every rank (DDP would also copy rank 0's)
    model = CharLM(len(vocab), hidden_size=opts.hidden_size, cell=opts.cell,
                   embedding_dim=opts.embedding_dim).to(device=device, dtype=dtype)
    net = model
    if world_size > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if opts.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=opts.lr, momentum=0.9)

    # Every rank draws the same global batch; each keeps its own block of rows.
    batches = random_batches(train_ids, opts.batch_size, opts.seq_len,
                             generator=torch.Generator().manual_seed(opts.seed))
    say = print if (verbose and rank == 0) else (lambda *a, **k: None)
    say(f"{world_size} process(es), backend {dist.get_backend() if world_size > 1 else 'none'}, device {device}, "
        f"{count_parameters(model):,} parameters, global batch {opts.batch_size} x {opts.seq_len}, "
        f"{opts.batch_size // world_size} sequences per process")
    logged = []
    start = time.perf_counter()
    for step in range(1, opts.steps + 1):
        X, Y = shard(next(batches), rank, world_size)
        X, Y = X.to(device), Y.to(device)
        optimizer.zero_grad(set_to_none=True)
        logits, _ = net(X)  # (B / N, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), Y.reshape(-1))  # mean over this shard
        _check_finite_everywhere(loss, step, rank, world_size)  # before DDP spreads a NaN to every rank
        loss.backward()  # DDP averages the gradients over all ranks here
        # The gradients are identical on every rank, so the norm, its check and the clipped ones are too.
        norm = nn.utils.clip_grad_norm_(model.parameters(), opts.clip_norm if opts.clip_norm > 0 else math.inf)
        if not math.isfinite(float(norm)):
            raise FloatingPointError(f"the gradient norm is {float(norm)} at step {step}; nothing was applied or "
                                     "saved. Lower --lr" + ("" if opts.clip_norm > 0 else " or set --clip-norm 1"))
        optimizer.step()
        if step % opts.log_every == 0 or step == opts.steps:
            value = loss.detach().clone()
            if world_size > 1:
                dist.all_reduce(value)  # every rank takes part; the mean is the loss of the global batch
                value /= world_size
            logged.append((step, float(value)))
            say(f"step {step:>5}  training loss {float(value):.4f}", flush=True)
    elapsed = time.perf_counter() - start
    summary = {"world_size": world_size, "steps": opts.steps, "seconds": elapsed,
               "ms_per_step": 1000 * elapsed / max(1, opts.steps), "logged": logged, "val_loss": None}
    say(f"{opts.steps} steps in {elapsed:.1f} s ({summary['ms_per_step']:.0f} ms per step)")
    if rank == 0 and opts.val_chars > 0:
        summary["val_loss"] = evaluate_lm(model, val_ids[: opts.val_chars].to(device))
        say(f"validation loss {summary['val_loss']:.4f} nats/char on {min(opts.val_chars, len(val_ids)):,} characters")
    if rank == 0 and opts.save:
        atomic_save({"model": model.state_dict(), "options": asdict(opts), "vocab": vocab.itos, "summary": summary},
                    Path(opts.save))
        say(f"saved to {opts.save}")
    return model, summary


def _agree(problem: str, world_size: int, device: torch.device, others_say: str) -> None:
    """Raise ``ValueError(problem)`` on this rank, and on every other rank too if any rank has a problem."""
    if world_size > 1:
        flag = torch.tensor([1.0 if problem else 0.0], device=device)
        dist.all_reduce(flag)
        if float(flag) > 0 and not problem:
            problem = others_say
    if problem:
        raise ValueError(problem)


def _check_finite_everywhere(loss: Tensor, step: int, rank: int, world_size: int) -> None:
    """Stop every rank if the loss is not finite on any of them (one all-reduce of one flag per rank)."""
    bad = torch.zeros(world_size, device=loss.device)
    bad[rank] = float(not torch.isfinite(loss.detach()))
    if world_size > 1:
        dist.all_reduce(bad)
    if bool(bad.any()):
        ranks = [r for r in range(world_size) if bad[r] > 0]
        where = f" on rank {', '.join(map(str, ranks))}" if world_size > 1 else ""
        raise FloatingPointError(f"the loss is not finite at step {step}{where}; every process stops, nothing is "
                                 "saved. Lower --lr, or check the data")


def pick_backend(requested: str, world_size: int, local_rank: int,
                 gpus: int | None = None) -> tuple[str, torch.device, str]:
    """The backend, this rank's device and a one-line reason, for ``world_size`` processes.

    ``nccl`` on ``cuda:LOCAL_RANK`` needs one GPU per process: it is chosen (with ``requested == ""``)
    only when ``torch.cuda.device_count()`` is at least the number of processes on this machine;
    otherwise ``gloo`` on the CPU (two processes on a one-GPU machine would otherwise ask for a
    ``cuda:1`` that does not exist). ``requested == "gloo"`` forces the CPU; ``"nccl"`` with too few
    GPUs is an error.
    """
    gpus = (torch.cuda.device_count() if torch.cuda.is_available() else 0) if gpus is None else gpus
    enough = gpus >= world_size
    if requested == "nccl" and not enough:
        raise SystemExit(f"--backend nccl needs one CUDA GPU per process: {world_size} processes on this machine, "
                         f"{gpus} GPU(s) found; use --backend gloo (CPU) or fewer processes")
    if requested == "gloo" or (requested == "" and not enough):
        why = ("--backend gloo" if requested == "gloo"
               else f"{gpus} CUDA GPU(s) for {world_size} processes on this machine")
        return "gloo", torch.device("cpu"), f"backend gloo on the CPU ({why})"
    return "nccl", torch.device("cuda", local_rank), (
        f"backend nccl on cuda:{local_rank} ({gpus} CUDA GPU(s) for {world_size} processes on this machine)")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)  # checks every argument: a bad one exits with status 2 and a message
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        try:
            train(opts)  # not started by torchrun: one process, no process group
        except (FloatingPointError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    # GPUs are per machine, so compare them with the processes on this machine (torchrun sets
    # LOCAL_WORLD_SIZE; on one machine it equals WORLD_SIZE).
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend, device, why = pick_backend(opts.backend, local_world_size, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if int(os.environ["RANK"]) == 0:
        print(f"using {why}", flush=True)
    # Reads RANK, WORLD_SIZE, MASTER_ADDR/PORT set by torchrun; the timeout bounds every collective operation.
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=opts.timeout))
    rank = dist.get_rank()
    try:
        train(opts, rank=rank, world_size=dist.get_world_size(), device=device)
        dist.barrier()  # let rank 0 finish evaluating and saving before the group goes away
    except (FloatingPointError, ValueError) as exc:
        print(f"rank {rank}: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except RuntimeError as exc:  # gloo and nccl report a timeout or a lost peer as a (Dist)RuntimeError
        if not isinstance(exc, dist.DistError) and "timed out" not in str(exc).lower():
            raise
        print(f"rank {rank}: error: waiting for the other processes failed ({str(exc).splitlines()[0][:200]}). "
              f"One of them is stuck (the wait is limited to --timeout {opts.timeout:g} s) or has stopped: see its "
              "messages above", file=sys.stderr, flush=True)
        return 1
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
