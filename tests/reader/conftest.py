"""Shared pieces of the reader's-eye tests: the built book, its table of contents, a tiny fixture book
built with the same settings, a local web server and headless Chromium.

These tests need a built book, so `make test-book` runs them right after `make book-quick`
(`make test-unit` leaves this folder out). Run alone: `make book-quick`, then
`.venv/bin/python -m pytest tests/reader`.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from fixture_book import ROOT, exercise_notebook, write_fixture_book  # noqa: E402

# The build under test: `make book-quick`'s by default. To check another build, e.g. the full one:
# RNNLIB_BOOK_BUILD=_build/full (and RNNLIB_BOOK_TOC=<file> if it was built with `--toc <file>`).
BUILD = ROOT / os.environ.get("RNNLIB_BOOK_BUILD", "_build/quick")
TOC_FILE = os.environ.get("RNNLIB_BOOK_TOC", "_toc.yml")
QUICK_HTML = BUILD / "_build" / "html"
SCREENSHOTS = BUILD / "screenshots"
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")


@dataclass(frozen=True)
class Page:
    """One document of a book's table of contents."""

    docname: str  # e.g. "chapters/0-getting-started"
    source: Path  # the .ipynb / .md file

    @property
    def html(self) -> str:
        return self.docname + ".html"

    @property
    def is_notebook(self) -> bool:
        return self.source.suffix == ".ipynb"


def toc_pages(book_root: Path, toc_file: str | Path = "_toc.yml") -> list[Page]:
    """Every document the table of contents lists, root first, in reading order."""
    toc = yaml.safe_load((book_root / toc_file).read_text())
    docnames: list[str] = [toc["root"]]

    def walk(node) -> None:
        if isinstance(node, dict):
            if "file" in node:
                docnames.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)

    walk(toc)
    pages = []
    for name in docnames:
        name = name.removesuffix(".ipynb").removesuffix(".md")
        sources = [book_root / f"{name}{suffix}" for suffix in (".ipynb", ".md", ".rst")]
        found = [s for s in sources if s.is_file()]
        assert found, f"_toc.yml lists {name!r} but none of {[str(s) for s in sources]} exists"
        pages.append(Page(name, found[0]))
    return pages


def book_config(book_root: Path) -> dict:
    return yaml.safe_load((book_root / "_config.yml").read_text())


@dataclass
class BuiltBook:
    """A built book: where its sources and its HTML are, and what its toc lists."""

    name: str
    source: Path
    html: Path
    pages: list[Page]
    config: dict
    screenshots: Path
    results: Path  # where its notebooks' Results.check() wrote their tables (RNNLIB_RESULTS_DIR)


@pytest.fixture(scope="session")
def quick_book() -> BuiltBook:
    """The quick build that `make test` (via `make book-quick`) produces. Fails, not skips, if absent."""
    if not (QUICK_HTML / "index.html").is_file():
        pytest.fail(
            f"the quick build of the book is missing ({QUICK_HTML}); run `make book-quick` first "
            "(`make test` and `make test-book` do this before running these tests)",
            pytrace=False,
        )
    return BuiltBook("quick", ROOT, QUICK_HTML, toc_pages(ROOT, TOC_FILE), book_config(ROOT), SCREENSHOTS,
                     BUILD / "results")


def _clean_env(**extra: str) -> dict:
    env = dict(os.environ)
    # tests/conftest.py sets MPLBACKEND=Agg for the unit tests; a notebook kernel must keep its inline
    # backend or the book's figures would not be rendered.
    env.pop("MPLBACKEND", None)
    env.pop("RNNLIB_RESULTS_DIR", None)
    env.update(extra)
    return env


def build_book(source: Path, output: Path, env: dict) -> subprocess.CompletedProcess:
    """`jupyter-book build` with the Makefile's flags (warnings are errors)."""
    result = subprocess.run(
        [str(JUPYTER_BOOK), "build", str(source), "--path-output", str(output), "-W", "-n", "--keep-going"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0:
        raise AssertionError(f"building {source} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


@dataclass
class FixtureBuilds:
    """The fixture book after three builds, and which notebooks each build executed."""

    book: BuiltBook
    executed: list[list[str]]  # per build, the notebooks executed (from the notebooks' own log)
    changed_markdown: str      # text added to the chapter's markdown before the third build


@pytest.fixture(scope="session")
def fixture_builds(tmp_path_factory) -> FixtureBuilds:
    """Build the fixture book three times: fresh; again unchanged; then with the chapter's markdown
    edited (code unchanged) and the exercise's code edited. The notebooks log each execution."""
    if not (ROOT / "_build" / "assets" / "VERSIONS.json").is_file():
        pytest.fail("the book's offline JavaScript is missing; run `make assets` (part of `make book-quick`)",
                    pytrace=False)
    base = tmp_path_factory.mktemp("fixture-book")
    source, output, log = write_fixture_book(base / "src"), base / "out", base / "executions.log"
    log.touch()
    env = _clean_env(FIXTURE_EXEC_LOG=str(log), RNNLIB_RESULTS_DIR=str(base / "results"), RNNLIB_QUICK="1")
    executed = []

    def build() -> None:
        before = log.read_text().split()
        build_book(source, output, env)
        executed.append(log.read_text().split()[len(before):])

    build()
    build()
    chapter = source / "chapters" / "chapter.ipynb"
    nb = nbformat.read(chapter, as_version=4)
    added = "A sentence added between builds: the code is unchanged."
    nb.cells[0].source += "\n\n" + added
    nbformat.write(nb, chapter)
    nbformat.write(exercise_notebook(value="2"), source / "chapters" / "exercises" / "exercise.ipynb")
    build()
    book = BuiltBook("fixture", source, output / "_build" / "html", toc_pages(source), book_config(source),
                     SCREENSHOTS / "fixture-book", base / "results")
    return FixtureBuilds(book, executed, added)


@pytest.fixture(scope="session")
def fixture_book(fixture_builds) -> BuiltBook:
    return fixture_builds.book


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@functools.lru_cache(maxsize=None)
def _serve(directory: str) -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=directory))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.fixture(scope="session")
def serve():
    """serve(html_dir) -> base URL of a local web server for that folder (one per folder, per session)."""
    return lambda directory: _serve(str(directory))


def find_chromium() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory):
    """A headless Debian Chromium driven by Playwright, with a fresh profile. Skipped, with the reason,
    only when Chromium is not installed (`make browser` installs it)."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed and `make browser` could not install it "
                    "(it needs root for apt-get install chromium): browser tests skipped")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # use Debian's Chromium, never download one
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()
