"""The GitHub workflows (.github/workflows/), which cannot run here: actionlint finds no problem in them,
every `run:` step is a command the README documents (or a target `make help` lists), and the book's
workflow caches and publishes the folders the Makefile really uses.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))


def load(path: Path) -> dict:
    # YAML 1.1 reads the key `on:` as True; BaseLoader keeps every key and value a string.
    return yaml.load(path.read_text(), Loader=yaml.BaseLoader)


def steps(workflow: dict):
    for job_name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, step


def readme_commands(text: str) -> set[str]:
    """Every command line in the README's shell code blocks (```bash), comments after '#' removed."""
    commands = set()
    for block in re.findall(r"^```(?:bash|sh|shell|console)\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            line = re.split(r"\s+#", line, maxsplit=1)[0].strip()
            if line and not line.startswith("#"):
                commands.add(" ".join(shlex.split(line)))
    return commands


def make_help_targets() -> set[str]:
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"^make ([\w-]+)", out, flags=re.M))


def run_lines(script: str) -> list[str]:
    lines = []
    for line in script.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            lines.append(" ".join(shlex.split(line)))
    return lines


def test_there_are_a_test_and_a_book_workflow():
    names = {p.stem for p in WORKFLOW_FILES}
    assert {"test", "book"} <= names, f"workflows found: {sorted(names)}"


def actionlint() -> str:
    found = Path(sys.executable).with_name("actionlint")
    path = str(found) if found.is_file() else shutil.which("actionlint")
    if path is None:
        pytest.fail("actionlint is missing from the environment: it is pinned in requirements.txt, "
                    "run `make venv` (or .venv/bin/pip install -r requirements.txt)", pytrace=False)
    return path


def test_actionlint_finds_nothing():
    result = subprocess.run([actionlint(), "-no-color", *map(str, WORKFLOW_FILES)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, f"actionlint:\n{result.stdout}{result.stderr}"


def test_actionlint_would_notice_a_broken_workflow(tmp_path):
    """The check above can fail: a misspelt key and an unknown expression are reported."""
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  t:\n    runs-on: ubuntu-latest\n    step:\n      - run: echo ${{ github.nope }}\n")
    result = subprocess.run([actionlint(), "-no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "step" in result.stdout


def test_readme_and_make_help_are_parsed():
    commands = readme_commands((ROOT / "README.md").read_text())
    assert {"make test", "make book"} <= commands
    assert {"test", "book", "pdf", "pdf-quick", "tex"} <= make_help_targets()


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_run_step_is_a_readme_command_or_a_documented_make_target(path):
    commands = readme_commands((ROOT / "README.md").read_text())
    targets = make_help_targets()
    wrong = []
    for job, step in steps(load(path)):
        if "run" not in step:
            continue
        for line in run_lines(step["run"]):
            words = line.split()
            documented_target = len(words) == 2 and words[0] == "make" and words[1] in targets
            if line not in commands and not documented_target:
                wrong.append(f"job {job}: {line!r}")
    assert not wrong, (f"{path.name}: run steps that are neither a command from the README nor a target "
                       f"that `make help` lists (document them, or use one that is):\n" + "\n".join(wrong))


def test_the_local_ci_entry_point_runs_the_same_command():
    assert "exec make test" in (ROOT / ".ci" / "run").read_text()
    assert any(step.get("run") == "make test" for _, step in steps(load(WORKFLOWS / "test.yml")))


def _book_build_command(mode: str, quick: str) -> str:
    """The command `make book` runs for a mode, as make would print it (nothing is executed)."""
    out = subprocess.run(["make", "-n", "-s", "_book", f"MODE={mode}", f"QUICK={quick}"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return out.replace("\\\n", " ")


def test_book_workflow_caches_the_folders_make_book_uses():
    command = _book_build_command("full", "0")
    output = re.search(r"--path-output (\S+)", command).group(1)
    results = Path(re.search(r"RNNLIB_RESULTS_DIR=(\S+)", command).group(1)).relative_to(ROOT)
    workflow = load(WORKFLOWS / "book.yml")
    caches = [step for _, step in steps(workflow) if step.get("uses", "").startswith("actions/cache@")]
    notebooks = [c for c in caches if ".jupyter_cache" in c["with"]["path"]]
    assert len(notebooks) == 1, "book.yml: one cache step for the executed notebooks"
    paths = set(notebooks[0]["with"]["path"].split())
    # Jupyter Book 1 keeps its execution cache in <path-output>/_build/.jupyter_cache
    assert paths == {f"{output}/_build/.jupyter_cache", str(results)}, paths
    key, restore = notebooks[0]["with"]["key"], notebooks[0]["with"].get("restore-keys", "")
    for pattern in ("'rnnlib/**'", "'requirements.txt'", "'pyproject.toml'", "'chapters/**/*.ipynb'"):
        assert pattern in key, f"book.yml: the notebook cache key does not hash {pattern}"
    # A fallback may drop the notebooks' hash (unchanged notebooks are then not re-run), never the
    # library's or the requirements': a change to either must re-execute everything.
    for line in filter(None, (s.strip() for s in restore.splitlines())):
        assert "'rnnlib/**'" in line and "'requirements.txt'" in line and "'pyproject.toml'" in line, line
    data = [c for c in caches if "rnnlib" in c["with"]["path"] and "jupyter" not in c["with"]["path"]]
    assert data and "rnnlib/data.py" in data[0]["with"]["key"], "book.yml: cache the data sets"


def test_book_workflow_publishes_what_make_book_builds_and_deploys_it_to_pages():
    output = re.search(r"--path-output (\S+)", _book_build_command("full", "0")).group(1)
    workflow = load(WORKFLOWS / "book.yml")
    uses = {step.get("uses", "").split("@")[0]: step for _, step in steps(workflow)}
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == f"{output}/_build/html"
    assert "actions/deploy-pages" in uses and "actions/configure-pages" in uses
    runs = [step["run"] for _, step in steps(workflow) if "run" in step]
    assert runs.index("make book") < runs.index("make pdf")
    deploy = workflow["jobs"]["deploy"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert workflow["on"]["push"]["branches"] == ["main"]


def test_test_workflow_runs_on_every_push_and_pull_request():
    triggers = load(WORKFLOWS / "test.yml")["on"]
    assert "push" in triggers and "pull_request" in triggers
    assert not (triggers.get("push") or {}).get("branches"), "test.yml: run on pushes to every branch"
