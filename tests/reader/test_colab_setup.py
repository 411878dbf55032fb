"""The Colab path, simulated: a fresh environment with torch but no rnnlib runs a notebook's setup cell.

What it does (about 1-2 minutes, most of it pip):
1. creates a virtual environment with `python -m venv` and installs torch==2.13.0 (the CPU wheel here),
   ipykernel and ipywidgets into it, as Colab has torch, a kernel and widgets but not rnnlib;
2. registers that environment as a Jupyter kernel in a temporary JUPYTER_PATH;
3. runs chapter 7.1's first code cell (the setup cell) in that kernel, in an empty
   working folder, with RNNLIB_INSTALL_SOURCE pointing at a copy of this checkout instead of the
   repository URL (a copy, because pip builds a local folder in place and would leave build/ behind);
4. checks that rnnlib is now installed in that environment and that torch was not reinstalled,
   upgraded or touched (same version, same RECORD file), nor any other package changed;
5. runs the rest of the notebook in the same kernel, in quick mode, and checks that it ran without error.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from fixture_book import ROOT

pytestmark = pytest.mark.slow

NOTEBOOK = ROOT / "chapters" / "7-1-foundations.ipynb"
TORCH = "torch==2.13.0"  # the CPU wheel on this machine; an unpinned torch could pull a multi-GB CUDA build
PACKAGE_FILES = ("pyproject.toml", "README.md", "LICENSE", "LICENSE.txt", "rnnlib")


def _run(*args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _packages(python: Path) -> dict[str, str]:
    out = _run(python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check").stdout
    return {p["name"].lower(): p["version"] for p in json.loads(out)}


def _torch_fingerprint(python: Path) -> dict:
    code = (
        "import importlib.metadata as m, hashlib, json, os, torch\n"
        "d = m.distribution('torch')\n"
        "record = d.read_text('RECORD') or ''\n"
        "print(json.dumps({'version': d.version, 'record_sha256': hashlib.sha256(record.encode()).hexdigest(),\n"
        "  'files': len(record.splitlines()), 'init_mtime': os.stat(torch.__file__).st_mtime_ns,\n"
        "  'location': os.path.dirname(torch.__file__)}))"
    )
    return json.loads(_run(python, "-c", code, cwd=python.parent).stdout)


def _copy_checkout(dest: Path) -> Path:
    """The files pip needs to build rnnlib, as a clone of the repository would have them."""
    dest.mkdir(parents=True)
    for name in PACKAGE_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.is_file():
            shutil.copy2(src, dest / name)
    return dest


def _setup_cell_index(nb) -> int:
    return next(k for k, c in enumerate(nb.cells) if c.cell_type == "code")


@pytest.mark.skipif(not NOTEBOOK.is_file(), reason=f"{NOTEBOOK.name} not found")
def test_setup_cell_installs_rnnlib_keeps_torch_and_the_notebook_runs(tmp_path, monkeypatch):
    clock = [time.perf_counter()]

    def lap(what: str) -> None:  # phase times, printed for `pytest -s` / -rA (no assertion on them)
        clock.append(time.perf_counter())
        print(f"colab simulation: {what}: {clock[-1] - clock[-2]:.0f} s")

    venv = tmp_path / "colab-venv"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check", TORCH, "ipykernel",
         "ipywidgets")
    lap("fresh venv with torch and ipykernel")
    probe = _run(python, "-c", "import importlib.util as u; print(u.find_spec('rnnlib') is None)", cwd=tmp_path)
    assert probe.stdout.strip() == "True", "rnnlib is importable before the setup cell ran: not a fresh environment"
    packages_before = _packages(python)
    torch_before = _torch_fingerprint(python)
    assert torch_before["location"].startswith(str(venv)), torch_before

    kernels = tmp_path / "jupyter" / "kernels" / "colab-sim"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab (simulated)", "language": "python",
    }))
    workdir = tmp_path / "content"  # like Colab's /content: no rnnlib folder to import from by accident
    workdir.mkdir()
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("RNNLIB_INSTALL_SOURCE", str(_copy_checkout(tmp_path / "checkout")))
    monkeypatch.setenv("RNNLIB_QUICK", "1")
    for name in ("MPLBACKEND", "PYTHONPATH", "RNNLIB_RESULTS_DIR", "VIRTUAL_ENV"):
        monkeypatch.delenv(name, raising=False)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, kernel_name="colab-sim", timeout=900, resources={"metadata": {"path": str(workdir)}})
    setup = _setup_cell_index(nb)
    with client.setup_kernel():
        client.execute_cell(nb.cells[setup], setup)
        lap("setup cell (pip install rnnlib)")

        where = _run(python, "-c", "import rnnlib; print(rnnlib.__file__)", cwd=workdir).stdout.strip()
        assert where.startswith(str(venv)), f"rnnlib was not installed into the environment (found at {where})"
        packages_after = _packages(python)
        assert "rnnlib" in packages_after
        changed = {name: (version, packages_after.get(name)) for name, version in packages_before.items()
                   if packages_after.get(name) != version}
        assert not changed, f"the setup cell changed preinstalled packages (before, after): {changed}"
        assert _torch_fingerprint(python) == torch_before, "the setup cell reinstalled or modified torch"

        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code" and index != setup:
                client.execute_cell(cell, index)  # raises CellExecutionError, with the traceback, on error
        lap("rest of the notebook, quick mode")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
