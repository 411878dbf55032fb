"""The quick/full switch, the device helper, and the closing results tables."""
import json

import pytest
import torch

from rnnlib import config
from rnnlib.results import Results


def test_quick_switch(monkeypatch):
    monkeypatch.setenv("RNNLIB_QUICK", "1")
    assert config.is_quick() and config.pick(1, 2) == 1 and config.mode() == "quick"
    monkeypatch.setenv("RNNLIB_QUICK", "0")
    assert not config.is_quick() and config.pick(1, 2) == 2
    monkeypatch.delenv("RNNLIB_QUICK")
    assert config.mode() == "full"
    monkeypatch.setenv("RNNLIB_QUICK", "maybe")
    with pytest.raises(ValueError, match="RNNLIB_QUICK"):
        config.is_quick()


def test_device_helper(monkeypatch):
    monkeypatch.delenv("RNNLIB_DEVICE", raising=False)
    assert config.get_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="available: .*cpu"):
            config.get_device("cuda")
        monkeypatch.setenv("RNNLIB_DEVICE", "cuda")
        with pytest.raises(ValueError, match="RNNLIB_DEVICE"):
            config.get_device()


def test_set_seed_reproduces():
    config.set_seed(7)
    a = torch.rand(3)
    config.set_seed(7)
    assert torch.equal(a, torch.rand(3))
    with pytest.raises(ValueError):
        config.set_seed(-1)


def test_results_enforce_bands_in_full_mode_only_unless_always(monkeypatch, tmp_path):
    monkeypatch.delenv("RNNLIB_RESULTS_DIR", raising=False)
    r = Results("7.9 Test")
    r.add("validation loss", 2.5, (0, 1.75), unit="nats/char")
    r.add("parity", 1e-16, (0, 1e-10), always=True)
    monkeypatch.setenv("RNNLIB_QUICK", "1")
    r.check()  # quick mode: the training figure is shown, not enforced
    assert "outside (quick mode)" in repr(r)
    monkeypatch.setenv("RNNLIB_QUICK", "0")
    with pytest.raises(AssertionError, match=r"validation loss = 2.5 nats/char, expected \[0, 1.75\]"):
        r.check()
    r.add("parity", 1e-3, (0, 1e-10), always=True)
    r.add("validation loss", 1.5, (0, 1.75))
    monkeypatch.setenv("RNNLIB_QUICK", "1")
    with pytest.raises(AssertionError, match="parity"):
        r.check()


def test_timing_entries_are_shown_but_never_enforced(monkeypatch):
    monkeypatch.delenv("RNNLIB_RESULTS_DIR", raising=False)
    monkeypatch.setenv("RNNLIB_QUICK", "0")
    r = Results("7.9 Test")
    r.add("fused / ours step time", 0.5, (1.5, 50), timing=True)
    r.check()  # a slow or busy machine must not fail the notebook
    assert "outside (timing, not enforced)" in repr(r)
    r.add("validation loss", 2.5, (0, 1.75))
    with pytest.raises(AssertionError) as err:
        r.check()
    assert "validation loss" in str(err.value) and "fused" not in str(err.value)
    with pytest.raises(ValueError, match="timing"):
        r.add("x", 1, (0, 2), always=True, timing=True)


def test_results_saved_as_json(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNLIB_RESULTS_DIR", str(tmp_path))
    r = Results("7.1 Foundations of RNNs")
    r.add("perplexity", 5.2, (1, 6))
    r.check()
    saved = json.loads((tmp_path / "7-1-foundations-of-rnns.json").read_text())
    assert saved["notebook"] == "7.1 Foundations of RNNs" and saved["entries"][0]["value"] == 5.2
    assert saved["entries"][0]["ok"] and saved["mode"] in ("quick", "full")
    assert "<table>" in r._repr_html_()
    with pytest.raises(ValueError, match="empty"):
        r.add("x", 1, (2, 1))
