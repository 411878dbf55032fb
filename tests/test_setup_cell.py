"""Every notebook starts with the same setup cell, and it installs from the repository _config.yml names.

The setup cell is what makes a notebook work on Colab (it installs rnnlib there and nothing locally);
the Colab launch buttons come from _config.yml's `repository:`. Both must name the same repository and
branch, so a fork that changes one and not the other fails here, not on a reader's Colab.
(tests/reader/test_colab_setup.py runs the cell for real in a fresh environment.)
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())

SETUP_CELL = '''\
# Setup: install rnnlib where it is missing (e.g. on Colab), keeping the installed torch. Locally: nothing to do.
import importlib, importlib.util, os, subprocess, sys
if importlib.util.find_spec("rnnlib") is None:
    source = os.environ.get("RNNLIB_INSTALL_SOURCE", "git+{url}@{branch}")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", source], check=True)
    importlib.invalidate_caches()'''


def notebooks() -> list[Path]:
    return sorted(p for p in (ROOT / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def first_code_cell(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.relative_to(ROOT)} has no code cell"
    return code[0]


def expected_setup_cell() -> str:
    repo = CONFIG["repository"]
    return SETUP_CELL.format(url=repo["url"].removesuffix(".git"), branch=repo["branch"])


def test_there_are_notebooks_to_check():
    assert (ROOT / "chapters" / "0-getting-started.ipynb") in notebooks()


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: str(p.relative_to(ROOT / "chapters")))
def test_first_code_cell_is_the_setup_cell(path):
    source = first_code_cell(path)
    urls = re.findall(r"git\+(\S+?)@([\w./-]+)\"", source)
    repo = CONFIG["repository"]
    assert urls == [(repo["url"].removesuffix(".git"), repo["branch"])], (
        f"{path.relative_to(ROOT)}: the setup cell installs from {urls}, but _config.yml's repository is "
        f"{repo['url']} (branch {repo['branch']}); keep them in step"
    )
    assert source.rstrip() == expected_setup_cell(), (
        f"{path.relative_to(ROOT)}: the first code cell is not the canonical setup cell; copy it from "
        f"chapters/0-getting-started.ipynb:\n{expected_setup_cell()}"
    )

