"""The book as one PDF (`make pdf-quick`: Jupyter Book's LaTeX builder with xelatex, from the quick build's
execution cache), read back with poppler's pdftotext, pdfimages, pdffonts and pdftoppm.

Every chapter and exercise title is in it (read from the notebooks' H1s, so a new notebook is covered
without editing this file), with its figures, equations and the bibliography; no reference is left
unresolved ("??"); widgets and HTML-only outputs appear as a sentence or a table, never as an object's
repr; and a rendered page has content. Skipped, with the reason, only where TeX cannot be installed
(`make tex` needs root for apt-get).
"""
from __future__ import annotations

import re
import shutil
import subprocess

import nbformat
import numpy as np
import pytest
from bs4 import BeautifulSoup
from PIL import Image

from conftest import BUILD, _clean_env

TOOLS = ["xelatex", "latexmk", "rsvg-convert", "pdftotext", "pdfimages", "pdffonts", "pdftoppm"]
PDF = BUILD / "_build" / "latex" / "book.pdf"
# What a widget or an HTML-only output looks like when its plain-text repr reaches the page.
REPRS = ["HBox(children=", "VBox(children=", "IntProgress(", "FloatProgress(", "Styler at 0x", "object at 0x",
         "<IPython.core.display", "?it/s"]  # the last: a tqdm bar's first frame, its widget's text repr


def _normalized(text: str) -> str:
    """Letters and digits only, lower case: immune to line breaks, hyphenation and ligatures."""
    text = text.replace("\ufb01", "fi").replace("\ufb02", "fl").replace("\ufb00", "ff")
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _run(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="session")
def quick_pdf(quick_book):
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"TeX tools missing ({', '.join(missing)}) and `make tex` could not install them (apt-get "
                    "needs root): the PDF test is skipped. Install them with `make tex` as root.")
    PDF.unlink(missing_ok=True)
    result = subprocess.run(["make", "pdf-quick"], cwd=quick_book.source, capture_output=True, text=True,
                            env=_clean_env(), timeout=1800)
    if result.returncode != 0 or not PDF.is_file():
        raise AssertionError(f"make pdf-quick failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}")
    return PDF


@pytest.fixture(scope="session")
def pdf_text(quick_pdf) -> str:
    # -raw keeps the order in which LaTeX wrote the text: the default layout mode can move a wrapped
    # bibliography line ahead of the line it continues, splitting a title that is on the page whole.
    return _run("pdftotext", "-raw", "-enc", "UTF-8", str(quick_pdf), "-")


def _titles(book) -> dict[str, str]:
    """docname -> the H1 of each chapter and exercise notebook in the table of contents."""
    titles = {}
    for page in book.pages:
        if page.is_notebook:
            nb = nbformat.read(page.source, as_version=4)
            first = next(c.source for c in nb.cells if c.cell_type == "markdown")
            titles[page.docname] = re.match(r"#\s+(.+)", first.strip()).group(1).strip()
    return titles


def test_every_chapter_and_exercise_title_is_in_the_pdf(quick_book, pdf_text):
    titles = _titles(quick_book)
    assert any(t.startswith("Exercise") for t in titles.values()) and any(t.startswith("7.1") for t in titles.values())
    text = _normalized(pdf_text)
    missing = [f"{doc}: {title!r}" for doc, title in titles.items() if _normalized(title) not in text]
    assert not missing, "titles not found in the PDF:\n" + "\n".join(missing)


def test_no_unresolved_references(pdf_text):
    lines = [line.strip() for line in pdf_text.splitlines() if "??" in line]
    assert not lines, "unresolved references ('??') in the PDF:\n" + "\n".join(lines[:20])


def test_no_widget_or_object_repr(pdf_text):
    found = {r: pdf_text.count(r) for r in REPRS if r in pdf_text}
    assert not found, f"raw reprs of widgets or HTML-only outputs in the PDF (book/_ext/print_outputs.py): {found}"


def test_progress_bars_are_sentences_and_html_tables_are_tables(quick_book, pdf_text):
    """The positive side of the check above: the replacements are there (so that check saw real pages)."""
    views = sum((quick_book.html / p.html).read_text(encoding="utf-8").count("application/vnd.jupyter.widget-view+json")
                for p in quick_book.pages)
    assert views > 0, "the quick build has no widget outputs to check"
    assert pdf_text.count("Progress bar at the end of the run") >= 1
    tex = (PDF.parent / "book.tex").read_text(encoding="utf-8")
    assert tex.count("Progress bar at the end of the run") + tex.count("An interactive explorer") >= views // 2


def _html_figures(book) -> int:
    count = 0
    for page in book.pages:
        soup = BeautifulSoup((book.html / page.html).read_text(encoding="utf-8"), "html.parser")
        count += sum(1 for img in soup.select(".cell_output img") if img.get("src", "").endswith(".png"))
    return count


def _pdf_images(pdf) -> list[int]:
    """Page number of every raster image in the PDF (soft masks not counted)."""
    rows = _run("pdfimages", "-list", str(pdf)).splitlines()[2:]
    return [int(r.split()[0]) for r in rows if r.split()[2] == "image"]


def test_every_notebook_figure_is_in_the_pdf(quick_book, quick_pdf):
    expected, found = _html_figures(quick_book), len(_pdf_images(quick_pdf))
    assert expected >= 10, f"the quick HTML build has only {expected} figures"
    assert found >= expected, f"the PDF has {found} images, the HTML book {expected} notebook figures"


def test_svg_figures_are_converted_not_dropped(quick_book, quick_pdf):
    svgs = sorted(p.name for p in (quick_book.source / "book" / "figures").glob("*.svg"))
    tex = (quick_pdf.parent / "book.tex").read_text(encoding="utf-8")
    included = re.findall(r"\\sphinxincludegraphics(?:\[[^\]]*\])?\{\{([^}]+)\}", tex)
    missing = [svg for svg in svgs if not any(inc.startswith(svg.removesuffix(".svg")) for inc in included)]
    assert not missing, f"SVG figures not in the PDF: {missing} (included: {included})"


def test_equations_are_typeset(quick_pdf):
    tex = (quick_pdf.parent / "book.tex").read_text(encoding="utf-8")
    assert tex.count("\\begin{equation") + tex.count("\\[") >= 20 and tex.count("\\(") >= 100
    fonts = _run("pdffonts", str(quick_pdf)).lower()
    assert re.search(r"latinmodernmath|lmmath|cmmi|lmmi", fonts), f"no math font in the PDF:\n{fonts[:2000]}"


def test_bibliography_is_in_the_pdf(quick_book, pdf_text):
    bib = (quick_book.source / "book" / "references.bib").read_text(encoding="utf-8")
    titles = re.findall(r"^\s*title\s*=\s*[{\"](.+?)[}\"],?\s*$", bib, flags=re.M)
    assert len(titles) >= 10
    text = _normalized(pdf_text)
    missing = [t for t in titles if _normalized(t) not in text]
    assert not missing, f"references not in the PDF's bibliography: {missing}"


def test_a_page_with_figures_renders_with_content(quick_pdf, tmp_path):
    pages = _pdf_images(quick_pdf)
    busiest = max(set(pages), key=pages.count)
    subprocess.run(["pdftoppm", "-r", "50", "-f", str(busiest), "-l", str(busiest), "-png", str(quick_pdf),
                    str(tmp_path / "page")], check=True)
    shot = next(tmp_path.glob("page*.png"))
    keep = BUILD / "screenshots" / "pdf-page.png"
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep)
    gray = np.asarray(Image.open(shot).convert("L")).astype(float) / 255
    ink = (gray < 0.9).mean()
    assert 0.03 < ink < 0.9, f"page {busiest}: {ink:.1%} of the pixels are not white"
    assert gray.std() > 0.1, f"page {busiest}: almost uniform (std {gray.std():.3f})"

