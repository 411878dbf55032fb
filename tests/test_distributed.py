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


# ------------------------------------------------------------------------------------ when things go wrong
SITECUSTOMIZE = '''
import os
if os.environ.get("FAULT") and os.environ.get("RANK") == os.environ.get("FAULT_RANK"):
    import time
    import torch.nn.functional as F

    original, calls = F.cross_entropy, [0]

    def faulty(*args, **kwargs):  # the training loss of this rank, broken at one step
        calls[0] += 1
        out = original(*args, **kwargs)
        if calls[0] == int(os.environ["FAULT_STEP"]):
            if os.environ["FAULT"] == "nan":
                return out * float("nan")
            time.sleep(600)  # "stall": this rank hangs
        return out

    F.cross_entropy = faulty
'''


def small_args(tmp_path, *extra):
    return ["--data", str(small_text(tmp_path / "text.txt")), "--steps", "4", "--batch-size", "4", "--seq-len", "8",
            "--cell", "gru", "--hidden-size", "8", "--embedding-dim", "4", "--val-chars", "0", "--log-every", "1",
            *extra]


def torchrun(tmp_path, args, fault=None, rank="1", step="2"):
    """Two processes under torchrun (gloo, CPU); ``fault`` ("nan" or "stall") breaks one rank's loss at a step."""
    (tmp_path / "inject").mkdir(exist_ok=True)
    (tmp_path / "inject" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(tmp_path / "inject"))
    if fault:
        env.update(FAULT=fault, FAULT_RANK=rank, FAULT_STEP=step)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "rnnlib.distributed", *args], capture_output=True, text=True, timeout=300, env=env)


def test_a_nan_loss_on_one_rank_stops_every_rank_and_saves_nothing(tmp_path):
    saved = tmp_path / "model.pt"
    run = torchrun(tmp_path, small_args(tmp_path, "--save", str(saved)), fault="nan", rank="1", step="2")
    assert run.returncode != 0
    for rank in (0, 1):  # rank 0's loss is finite, but it stops too: its weights would be next
        assert f"rank {rank}: error: the loss is not finite at step 2 on rank 1" in run.stderr, run.stderr
    assert "step     2" not in run.stdout and not saved.exists()


def test_a_stuck_rank_makes_the_others_fail_after_the_timeout(tmp_path):
    run = torchrun(tmp_path, small_args(tmp_path, "--timeout", "3"), fault="stall", rank="1", step="2")
    assert run.returncode != 0
    assert "rank 0: error: waiting for the other processes failed" in run.stderr, run.stderr
    assert "--timeout 3 s" in run.stderr


def test_an_unwritable_save_path_stops_every_rank_before_training(tmp_path):
    saved = tmp_path / "no-such-folder" / "model.pt"
    run = torchrun(tmp_path, small_args(tmp_path, "--save", str(saved)))
    assert run.returncode != 0
    assert f"rank 0: error: --save {saved}: the folder {saved.parent} does not exist" in run.stderr, run.stderr
    assert "rank 1: error: rank 0 cannot save" in run.stderr
    assert "training loss" not in run.stdout  # not a single step was taken


@pytest.mark.parametrize("args, message", [
    (["--log-every", "0"], "--log-every must be >= 1, got 0"),
    (["--steps", "-5"], "--steps must be >= 0, got -5"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--lr", "-1"], "--lr must be a positive number"),
    (["--clip-norm", "inf"], "--clip-norm must be >= 0"),
    (["--timeout", "0"], "--timeout must be a positive number"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--data", "no/such/file.txt"], "no/such/file.txt is not a file"),
])
def test_every_argument_is_checked_before_training(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(args)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_a_batch_that_does_not_split_over_the_processes_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit):
        parse_args(["--batch-size", "5"])
    assert "--batch-size 5 does not split evenly over 2 processes" in capsys.readouterr().err


def test_a_diverging_single_process_run_exits_non_zero_and_saves_nothing(tmp_path, monkeypatch, capsys):
    from rnnlib.distributed import main

    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    saved = tmp_path / "model.pt"
    # An update so large that the weights overflow: the next loss is NaN.
    code = main(small_args(tmp_path, "--lr", "1e38", "--optimizer", "sgd", "--clip-norm", "0", "--save", str(saved)))
    assert code == 1 and not saved.exists()
    err = capsys.readouterr().err
    assert "the loss is not finite at step" in err and "every process stops, nothing is saved" in err


def test_train_checks_the_save_folder_before_the_first_step(tmp_path, capsys):
    opts = parse_args(small_args(tmp_path, "--save", str(tmp_path)))
    with pytest.raises(ValueError, match="is a folder"):
        train(opts)
    assert "training loss" not in capsys.readouterr().out
