"""The bibliography parses, has no duplicate keys, and every citation in the book resolves.

The book build (-W) would also fail on these, but only after several minutes of
set-up; this test names the broken entry in a second.
"""
import json
import re
from pathlib import Path

import pytest

pybtex = pytest.importorskip("pybtex.database")

ROOT = Path(__file__).resolve().parents[1]
BIB = ROOT / "book" / "references.bib"


def _keys_in_file():
    return re.findall(r"^@\w+\{([^,\s]+),", BIB.read_text(encoding="utf-8"), flags=re.M)


def test_bibliography_parses_and_keys_are_unique():
    data = pybtex.parse_file(str(BIB))  # raises with the line number on a syntax error
    keys = _keys_in_file()
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    assert set(keys) == set(data.entries)


def _sources():
    for path in list(ROOT.glob("book/**/*.md")) + list(ROOT.glob("chapters/**/*.ipynb")):
        if "_build" in path.parts or ".ipynb_checkpoints" in path.parts:
            continue
        if path.suffix == ".ipynb":
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
            text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        else:
            text = path.read_text(encoding="utf-8")
        yield path, text


def test_every_citation_is_in_the_bibliography():
    keys = set(_keys_in_file())
    missing = []
    for path, text in _sources():
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", text):
            for key in group.split(","):
                if key.strip() and key.strip() not in keys:
                    missing.append(f"{path.relative_to(ROOT)}: {key.strip()}")
    assert not missing, missing
