"""Accessibility of the built book: axe-core (the engine behind Lighthouse's accessibility audit, bundled in
the `axe-playwright-python` package) on every page of the quick build, in the theme's light and dark
modes, in the same headless Debian Chromium as test_browser.py.

- No critical or serious violation on any page.
- No moderate or minor one either, except the few in THEME_VIOLATIONS, which come from the theme and
  cannot be fixed from the book (each with its reason; a listed rule that no longer occurs fails the
  test, so the list cannot go stale).
- Every page has its own favicon and requests nothing that is missing.
- In dark mode the page really is dark, a screenshot of a chapter page has content, and the figures
  keep their opaque white background (rnnlib.plots draws them so), so they read on the dark page.

The book's own fixes are in book/_ext/accessible_pages.py.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from urllib.parse import urljoin

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

SCHEMES = ["light", "dark"]
BLOCKING = {"critical", "serious"}
# Light mode runs every rule. Dark mode changes only colours (the same HTML with data-theme="dark"), so it
# runs the rules about colour, and leaves out the syntax-highlighted code: its colours are the theme's
# pygments style a11y-high-contrast-dark, made to meet WCAG contrast, and its thousands of coloured
# spans take two thirds of the time of the contrast check on a chapter page.
DARK_RULES = ["color-contrast", "link-in-text-block"]
DARK_CONTEXT = {"exclude": [[".highlight"]]}
WAIT_MS = 15_000
# Rules that fail because of the theme (sphinx-book-theme 1.3.0 on pydata-sphinx-theme 0.17.1), not the
# book; rule id -> why it cannot be fixed here. Empty when there are none.
THEME_VIOLATIONS: dict[str, str] = {}
# The moderate rules the issue found in the first audit; each must stay fixed.
FIXED_RULES = ["region", "empty-table-header", "aria-required-children", "scrollable-region-focusable"]
DARK_PAGE = "chapters/7-1-foundations"


@dataclass
class AxeReport:
    docname: str
    scheme: str
    theme: str = ""                      # data-theme the page ended up in
    violations: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)   # requests answered with an error status
    favicons: list[str] = field(default_factory=list)  # <link rel="icon"> hrefs


def _audit(context, base: str, page_info, scheme: str, screenshot_to=None) -> AxeReport:
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    report = AxeReport(page_info.docname, scheme)
    page = context.new_page()
    page.on("response", lambda r: r.status >= 400 and report.missing.append(f"HTTP {r.status}: {r.url}"))
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base) else route.abort())
    try:
        page.emulate_media(color_scheme=scheme)
        page.goto(urljoin(base, page_info.html), wait_until="load")
        try:  # axe reads the page as a reader gets it: math typeset, widgets drawn
            page.wait_for_function("() => !document.querySelector('article .math') || "
                                   "(window.MathJax && MathJax.startup && MathJax.startup.promise)", timeout=WAIT_MS)
            page.evaluate("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
            views = page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
            page.wait_for_function("n => document.querySelectorAll('.widget-subarea').length >= n", arg=views,
                                   timeout=WAIT_MS)
        except PlaywrightTimeout:
            pass  # test_browser.py reports pages that do not finish rendering
        report.theme = page.evaluate("() => document.documentElement.dataset.theme")
        report.favicons = page.eval_on_selector_all('link[rel~="icon"]', "els => els.map(e => e.href)")
        # preload: false: axe's own fetch of the stylesheets resolves the theme's `@import "../basic.css"`
        # against the page instead of the stylesheet and requests a missing /basic.css (the browser does
        # not; test_browser.py fails on any missing file). It only serves the css-orientation-lock rule.
        options = {"resultTypes": ["violations"], "preload": False}
        context = None
        if scheme == "dark":
            options["runOnly"] = {"type": "rule", "values": DARK_RULES}
            context = DARK_CONTEXT
        report.violations = Axe().run(page, context=context, options=options).response["violations"]
        if screenshot_to is not None:
            screenshot_to.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot_to))
    finally:
        page.close()
    return report


@pytest.fixture(scope="session")
def axe_reports(quick_book, browser_context, serve) -> dict[str, list[AxeReport]]:
    """scheme -> one report per page of the quick build (each page loaded once per scheme)."""
    base = serve(quick_book.html)
    shots = quick_book.screenshots / "dark"
    return {scheme: [_audit(browser_context, base, p, scheme,
                            shots / f"{p.docname.replace('/', '__')}.png" if scheme == "dark" else None)
                     for p in quick_book.pages]
            for scheme in SCHEMES}


def _describe(v: dict) -> str:
    targets = [" ".join(n["target"]) if isinstance(n["target"], list) else str(n["target"]) for n in v["nodes"][:3]]
    return f"{v['id']} ({v['impact']}, {len(v['nodes'])} elements, e.g. {targets}): {v['help']}"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_pages_render_in_the_requested_colour_scheme(axe_reports, scheme):
    wrong = [f"{r.docname}: data-theme={r.theme!r}" for r in axe_reports[scheme] if r.theme != scheme]
    assert not wrong, f"pages not in {scheme} mode (html_context default_mode: auto follows the system):\n" + "\n".join(wrong)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_no_critical_or_serious_violation(axe_reports, scheme):
    problems = [f"{r.docname}: {_describe(v)}" for r in axe_reports[scheme] for v in r.violations
                if v["impact"] in BLOCKING]
    assert not problems, f"axe-core, {scheme} mode:\n" + "\n".join(problems)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_no_other_violation_but_the_themes(axe_reports, scheme):
    problems = [f"{r.docname}: {_describe(v)}" for r in axe_reports[scheme] for v in r.violations
                if v["impact"] not in BLOCKING and v["id"] not in THEME_VIOLATIONS]
    assert not problems, (f"axe-core, {scheme} mode (fix them in book/_ext/accessible_pages.py, or, if the "
                          f"theme causes them, list them in THEME_VIOLATIONS with the reason):\n" + "\n".join(problems))


def test_the_theme_exceptions_still_occur(axe_reports):
    seen = {v["id"] for reports in axe_reports.values() for r in reports for v in r.violations}
    stale = sorted(set(THEME_VIOLATIONS) - seen)
    assert not stale, f"THEME_VIOLATIONS lists rules that no page violates any more; remove them: {stale}"


def test_the_rules_of_the_first_audit_stay_fixed(axe_reports):
    found = [f"{scheme} {r.docname}: {_describe(v)}" for scheme, reports in axe_reports.items() for r in reports
             for v in r.violations if v["id"] in FIXED_RULES]
    assert not found, "\n".join(found)


def test_every_page_has_a_favicon_and_requests_nothing_missing(axe_reports):
    problems = []
    for r in axe_reports["light"]:
        if len(r.favicons) != 1 or not r.favicons[0].endswith(".svg"):
            problems.append(f"{r.docname}: favicon links {r.favicons}")
        if r.missing:
            problems.append(f"{r.docname}: {sorted(set(r.missing))}")
    assert not problems, "\n".join(problems)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return (0.2126 * rgb[..., 0] + 0.7152 * rgb[..., 1] + 0.0722 * rgb[..., 2]) / 255


def test_dark_mode_screenshot_is_dark_and_has_content(quick_book, axe_reports):
    shot = quick_book.screenshots / "dark" / f"{DARK_PAGE.replace('/', '__')}.png"
    assert shot.is_file(), f"no dark-mode screenshot of {DARK_PAGE}"
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    lum = _luminance(rgb)
    background = np.median(lum)
    assert background < 0.25, f"{shot.name}: the page background has luminance {background:.2f}, not dark"
    content = np.abs(lum - background) > 0.15
    assert content.mean() > 0.02, f"{shot.name}: only {content.mean():.1%} of the pixels differ from the background"
    assert lum.std() > 0.05, f"{shot.name}: almost uniform (std {lum.std():.3f})"


def test_figures_keep_an_opaque_white_background(quick_book):
    """A PNG with a transparent background would put black axis labels on the dark page."""
    from bs4 import BeautifulSoup

    checked, problems = 0, []
    for page in quick_book.pages:
        soup = BeautifulSoup((quick_book.html / page.html).read_text(encoding="utf-8"), "html.parser")
        for img in soup.select(".cell_output img"):
            src = img.get("src", "")
            if not src.endswith(".png"):
                continue
            image = Image.open(io.BytesIO(((quick_book.html / page.html).parent / src).resolve().read_bytes()))
            rgba = np.asarray(image.convert("RGBA"))
            checked += 1
            if rgba[..., 3].min() < 255:
                problems.append(f"{page.docname}: {src} has transparent pixels")
            elif _luminance(rgba[0, 0, :3].astype(float)) < 0.9:
                problems.append(f"{page.docname}: {src} has a dark background")
    assert checked >= 10, f"only {checked} figure PNGs found in the quick build"
    assert not problems, "\n".join(problems)


def test_the_audit_reports_what_it_should(browser_context, serve, tmp_path):
    """The checks above can fail: on a page with known faults the same audit reports each of them."""
    from conftest import Page

    page_dir = tmp_path / "faulty"
    page_dir.mkdir()
    (page_dir / "faulty.html").write_text(
        '<!DOCTYPE html><html lang="en"><head><title>Faulty</title></head><body><main><h1>Faulty page</h1>'
        '<img src="missing.png"><table><tr><th></th><th>loss</th></tr><tr><td>a</td><td>1</td></tr></table>'
        '<p style="color:#777;background:#888">low contrast</p></main></body></html>')
    report = _audit(browser_context, serve(page_dir), Page("faulty", page_dir / "faulty.html"), "light")
    found = {v["id"] for v in report.violations}
    assert {"image-alt", "empty-table-header", "color-contrast"} <= found, found
    dark = _audit(browser_context, serve(page_dir), Page("faulty", page_dir / "faulty.html"), "dark")
    assert "color-contrast" in {v["id"] for v in dark.violations}
