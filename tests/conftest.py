"""Test-wide settings: quick mode, and no network (the data loader refuses to download)."""
import os

os.environ.setdefault("RNNLIB_QUICK", "1")
os.environ["RNNLIB_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
