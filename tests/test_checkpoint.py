"""Checkpoints: what save accepts, load loads; bad files are named; loading is all or nothing; a failed save
keeps the previous file."""
import dataclasses
import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rnnlib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rnnlib.text import Vocab
from rnnlib.train import History


def model_and_optimizer(hidden=3, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, hidden), nn.Linear(hidden, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()  # so the optimizer has state (moments, step counts)
    return model, opt


def same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@dataclasses.dataclass
class Settings:
    lr: float = 0.1


def test_course_types_and_plain_values_round_trip(tmp_path):
    model, opt = model_and_optimizer()
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    vocab = Vocab.from_text("hello world", specials=["<pad>"])
    extra = {"vocab": vocab, "step": 3, "note": "x", "nested": {"ids": [1, 2, (3, 4)], "t": torch.arange(3)},
             "none": None, "dtype": torch.float64, "flags": [True, False], "rate": 0.5, 7: "int key",
             "generator": torch.Generator().manual_seed(1).get_state(), "settings": dataclasses.asdict(Settings())}
    h = History(step=[1], train_loss=[0.5], best_state={"w": torch.ones(2)})
    save_checkpoint(tmp_path / "c.pt", model, opt, sched, history=h, extra=extra)
    other, other_opt = model_and_optimizer(seed=1)
    other_sched = torch.optim.lr_scheduler.CosineAnnealingLR(other_opt, T_max=10)
    out = load_checkpoint(tmp_path / "c.pt", other, other_opt, other_sched)
    assert same(model, other) and other_sched.state_dict() == sched.state_dict()
    loaded = out["extra"]
    assert isinstance(loaded["vocab"], Vocab) and loaded["vocab"].itos == vocab.itos
    assert loaded["vocab"].encode("hello").tolist() == vocab.encode("hello").tolist()
    assert loaded["nested"]["ids"] == [1, 2, (3, 4)] and torch.equal(loaded["nested"]["t"], torch.arange(3))
    assert loaded["settings"] == {"lr": 0.1} and loaded[7] == "int key" and loaded["dtype"] is torch.float64
    assert out["history"].train_loss == [0.5] and torch.equal(out["history"].best_state["w"], torch.ones(2))


@pytest.mark.parametrize("value, named, hint", [
    (np.arange(3), "numpy.ndarray", "torch.as_tensor"),
    (np.float64(0.5), "numpy.float64", ".item()"),
    (Settings(), "Settings", "dataclasses.asdict"),
    (torch.Generator(), "Generator", "get_state()"),
    (lambda x: x, "function", "settings that rebuild it"),
    (frozenset({1}), "frozenset", "list(value)"),
    (Path("a/b"), "Path", "str(value)"),
    (nn.Linear(2, 2), "Linear", "state_dict()"),
])
def test_what_load_would_refuse_is_refused_at_save_time_and_nothing_is_written(tmp_path, value, named, hint):
    model, opt = model_and_optimizer()
    path = tmp_path / "c.pt"
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, model, opt, extra={"ok": 1, "deep": {"list": [0, value]}})
    message = str(info.value)
    assert "extra['deep']['list'][1]" in message and named in message and hint in message, message
    assert "Nothing was written" in message and not path.exists()


def test_an_unsaveable_scheduler_state_is_named_too(tmp_path):
    model, opt = model_and_optimizer()

    class Warmup:  # a callable object: LambdaLR saves its __dict__, which here holds a NumPy number
        def __init__(self):
            self.scale = np.float32(2.0)

        def __call__(self, step):
            return 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, Warmup())
    with pytest.raises(CheckpointError, match=r"checkpoint\['scheduler'\].*numpy.float32"):
        save_checkpoint(tmp_path / "c.pt", model, opt, sched)


def write_checkpoint(path):
    model, opt = model_and_optimizer()
    save_checkpoint(path, model, opt, history=History(step=[1, 2]))
    return path


@pytest.mark.parametrize("kind, expected", [
    ("empty", "is empty (0 bytes)"),
    ("truncated", "is truncated or damaged"),
    ("text", "is not a checkpoint: it is not a file written by torch.save"),
    ("state_dict", "is a plain state_dict"),
    ("other_dict", "holds the keys 'weights', 'epoch', but no 'model'"),
    ("pickled_object", "holds a test_checkpoint.Settings"),
    ("folder", "is a folder"),
    ("list", "holds a list"),
])
def test_bad_files_are_named_with_what_is_wrong(tmp_path, kind, expected):
    path = tmp_path / "bad.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = write_checkpoint(tmp_path / "good.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("these are my notes, not weights\n")
    elif kind == "state_dict":
        torch.save(nn.Linear(4, 3).state_dict(), path)
    elif kind == "other_dict":
        torch.save({"weights": [1.0], "epoch": 3}, path)
    elif kind == "pickled_object":
        torch.save({"model": Settings()}, path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "list":
        torch.save([torch.ones(2)], path)
    model, opt = model_and_optimizer()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, model, opt)
    assert str(path) in str(info.value) and expected in str(info.value), str(info.value)
    assert "weights_only=False" not in str(info.value) or kind == "pickled_object"
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_missing_file_is_a_file_not_found_error(tmp_path):
    model, _ = model_and_optimizer()
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt", model)


def test_a_different_model_is_refused_before_anything_changes(tmp_path):
    path = write_checkpoint(tmp_path / "c.pt")
    model, opt = model_and_optimizer(hidden=5, seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with pytest.raises(CheckpointError, match=r"different model .*0\.weight: \(3, 4\) in the file, \(5, 4\)"):
        load_checkpoint(path, model, opt)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_mismatched_optimizer_leaves_the_model_untouched(tmp_path):
    path = write_checkpoint(tmp_path / "c.pt")
    model, _ = model_and_optimizer(seed=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wrong = torch.optim.Adam(list(model.parameters())[:2], lr=0.01)  # one group of 2 params, not 4
    with pytest.raises(CheckpointError, match=r"parameter groups of sizes \[4\], but the given one has \[2\]"):
        load_checkpoint(path, model, wrong)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    wrong_shapes = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 1))
    swapped = torch.optim.Adam(list(wrong_shapes.parameters())[::-1], lr=0.01)  # same count, other order
    with pytest.raises(CheckpointError, match="exp_avg of parameter 0 has shape"):
        load_checkpoint(path, wrong_shapes, swapped)


def test_a_failure_while_applying_puts_every_object_back(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    model, opt = model_and_optimizer()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3)
    save_checkpoint(path, model, opt, sched)
    other, other_opt = model_and_optimizer(seed=7)
    other_sched = torch.optim.lr_scheduler.StepLR(other_opt, step_size=3)
    weights = {k: v.clone() for k, v in other.state_dict().items()}
    opt_state = other_opt.state_dict()
    exp_avg = opt_state["state"][0]["exp_avg"].clone()

    def refuse(self, state):
        raise RuntimeError("scheduler refuses")

    monkeypatch.setattr(torch.optim.lr_scheduler.StepLR, "load_state_dict", refuse)
    with pytest.raises(CheckpointError, match="nothing was changed"):
        load_checkpoint(path, other, other_opt, other_sched)
    assert all(torch.equal(v, weights[k]) for k, v in other.state_dict().items())
    assert torch.equal(other_opt.state_dict()["state"][0]["exp_avg"], exp_avg)


def test_a_full_disk_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path / "c.pt")
    good = path.read_bytes()

    def disk_full(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 part")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    model, opt = model_and_optimizer()
    with pytest.raises(OSError) as info:
        save_checkpoint(path, model, opt)
    assert info.value.errno == errno.ENOSPC and f"the previous file at {path} is unchanged" in str(info.value)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["c.pt"]

    def writer_fails(obj, f, *a, **k):  # torch's zip writer reports a failed write as a RuntimeError
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", writer_fails)
    with pytest.raises(CheckpointError, match="is unchanged"):
        save_checkpoint(path, model, opt)
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_a_folder_in_the_way_is_named(tmp_path):
    model, _ = model_and_optimizer()
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        save_checkpoint(tmp_path, model)


def test_checkpoints_get_the_usual_permissions(tmp_path):
    old = os.umask(0o002)
    try:
        path = write_checkpoint(tmp_path / "shared.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o664


def unprivileged():
    """Run a subprocess that file permissions apply to (root without its override capabilities), or None."""
    if os.geteuid() != 0:
        return []
    from shutil import which

    if which("setpriv") is None:
        return None
    probe = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "true"], capture_output=True)
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if probe.returncode == 0 else None


def test_saving_into_a_read_only_folder_says_so_and_keeps_the_old_file(tmp_path):
    prefix = unprivileged()
    if prefix is None:
        pytest.skip("running as root without setpriv: file permissions cannot be tested")
    folder = tmp_path / "locked"
    folder.mkdir()
    path = write_checkpoint(folder / "c.pt")
    good = path.read_bytes()
    folder.chmod(0o555)
    code = ("import torch; from torch import nn; from rnnlib.checkpoint import save_checkpoint\n"
            f"save_checkpoint({str(path)!r}, nn.Linear(2, 2))")
    try:
        run = subprocess.run(prefix + [sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    finally:
        folder.chmod(0o755)
    assert run.returncode != 0
    assert "PermissionError" in run.stderr and f"could not write {path}" in run.stderr
    assert "the previous file" in run.stderr and "is unchanged" in run.stderr
    assert path.read_bytes() == good and sorted(p.name for p in folder.iterdir()) == ["c.pt"]


@pytest.mark.parametrize("kind", ["state_dict", "text", "truncated"])
def test_a_file_that_is_not_a_checkpoint_is_never_replaced(tmp_path, kind):
    path = tmp_path / "model.pt"
    if kind == "state_dict":  # e.g. the learner's own weights, saved under the name fit was given
        torch.save(nn.Linear(4, 3).state_dict(), path)
    elif kind == "text":
        path.write_text("notes")
    else:
        data = write_checkpoint(tmp_path / "good.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    before = path.read_bytes()
    model, opt = model_and_optimizer()
    with pytest.raises(CheckpointError, match="is not a checkpoint written by save_checkpoint .* not replaced"):
        save_checkpoint(path, model, opt)
    assert path.read_bytes() == before
    write_checkpoint(tmp_path / "good.pt")  # an earlier checkpoint is replaced, as it should be


def test_dict_keys_load_back_or_are_refused(tmp_path):
    model, _ = model_and_optimizer()
    save_checkpoint(tmp_path / "c.pt", model, extra={"by_pair": {(1, "a"): 2.0, None: 1, 3.5: "x"}})
    assert load_checkpoint(tmp_path / "c.pt", model)["extra"]["by_pair"] == {(1, "a"): 2.0, None: 1, 3.5: "x"}
    with pytest.raises(CheckpointError, match=r"extra\['bad'\], key \(1, numpy.int64|extra\['bad'\], key \(1, np.int64"):
        save_checkpoint(tmp_path / "d.pt", model, extra={"bad": {(1, np.int64(2)): 0}})
