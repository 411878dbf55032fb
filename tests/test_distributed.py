"""rnnlib.distributed: 2 processes under torchrun (gloo, CPU) train exactly as 1 process on the combined batch."""
from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
import torch

from rnnlib.distributed import parse_args, pick_backend, shard, train


def small_text(path):
    rng = random.Random(0)
    words = ["the", "king", "queen", "and", "of", "to", "my", "lord", "thou", "art"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(300)]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_shard_splits_the_global_batch_into_equal_blocks():
    X = torch.arange(24).view(6, 4)
    blocks = [shard((X, X + 100), r, 3) for r in range(3)]
    torch.testing.assert_close(torch.cat([b[0] for b in blocks]), X)
    torch.testing.assert_close(torch.cat([b[1] for b in blocks]), X + 100)
    with pytest.raises(ValueError, match="multiple of"):
        shard((X, X), 0, 4)


def test_parse_args_maps_options():
    opts = parse_args(["--hidden-size", "16", "--dtype", "float64", "--clip-norm", "0"])
    assert opts.hidden_size == 16 and opts.dtype == "float64" and opts.clip_norm == 0.0
    with pytest.raises(SystemExit):
        parse_args(["--dtype", "float16"])


def test_pick_backend_needs_a_gpu_per_process():
    # One GPU, two processes (e.g. Colab): gloo on the CPU, not nccl on a cuda:1 that does not exist.
    backend, device, _ = pick_backend("", world_size=2, local_rank=1, gpus=1)
    assert (backend, device) == ("gloo", torch.device("cpu"))
    backend, device, _ = pick_backend("", world_size=2, local_rank=1, gpus=2)
    assert (backend, device) == ("nccl", torch.device("cuda", 1))
    assert pick_backend("gloo", world_size=2, local_rank=0, gpus=4)[:2] == ("gloo", torch.device("cpu"))
    with pytest.raises(SystemExit, match="one CUDA GPU per process"):
        pick_backend("nccl", world_size=2, local_rank=0, gpus=1)


def test_two_processes_match_one_process_on_the_combined_batch(tmp_path):
    # SGD without clipping: the update is linear in the gradient, so averaging over ranks instead of
    # over the combined batch (or summing, or dropping a shard) would change the parameters.
    args = ["--data", str(small_text(tmp_path / "text.txt")), "--steps", "3", "--batch-size", "4",
            "--seq-len", "12", "--cell", "lstm", "--hidden-size", "8", "--embedding-dim", "4",
            "--optimizer", "sgd", "--lr", "0.5", "--clip-norm", "0", "--dtype", "float64",
            "--val-chars", "0", "--log-every", "1"]
    saved = tmp_path / "ddp.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "rnnlib.distributed", *args, "--save", str(saved)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 process(es), backend gloo" in run.stdout
    assert "using backend gloo on the CPU" in run.stdout
    ddp = torch.load(saved, weights_only=True)["model"]

    opts = parse_args(args)
    single, _ = train(opts, verbose=False)
    opts.steps = 0
    initial, _ = train(opts, verbose=False)
    for name, value in single.state_dict().items():
        assert ddp[name].dtype == torch.float64
        torch.testing.assert_close(ddp[name], value, rtol=0, atol=1e-12, msg=name)
    moved = max(float((single.state_dict()[k] - v).abs().max()) for k, v in initial.state_dict().items())
    assert moved > 1e-3  # training changed the weights, so the comparison above is not vacuous
