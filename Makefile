# Two commands for a newcomer:  `make book` builds the HTML book, `make test` runs every test.
# Both first create what they need: a virtual environment in .venv/ and the data cache.
# CI runs `make test` with RNNLIB_DATA_DIR pointing at a local copy of the data (see .ci/run).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JB     := $(VENV)/bin/jupyter-book
NBMAKE := --nbmake --nbmake-kernel=python3 --nbmake-timeout=600 -p no:cacheprovider

.PHONY: help venv data test test-unit test-notebooks test-book book book-quick pdf pdf-quick nb clean assets browser tex

help:
	@echo "make book        build the HTML book in full mode (executes every notebook; cached between runs)"
	@echo "make test        unit tests, every notebook in quick mode, the quick book build and its checks"
	@echo "make book-quick  build the book in quick mode (minutes; numbers are not meaningful)"
	@echo "make pdf         the book as one PDF, from the execution cache of make book (installs TeX if it can)"
	@echo "make pdf-quick   the quick-mode PDF, from the cache of make book-quick (what the tests check)"
	@echo "make nb NB=chapters/7-1-foundations.ipynb   execute one notebook in quick mode, as the tests do"
	@echo "make data        download and verify the data sets into the cache (or check RNNLIB_DATA_DIR)"
	@echo "make test-book   the quick book build, then its checks: HTML, browser, accessibility, cache, Colab path, PDF"
	@echo "make assets      fetch MathJax, require.js and the widget manager (npm registry) into $(ASSETS)"
	@echo "make browser     install Debian's chromium for the browser tests, if missing (needs root)"
	@echo "make tex         install the Debian TeX packages that make pdf needs, if missing (needs root)"
	@echo "make clean       remove build outputs (keeps .venv and the data cache)"

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "make needs Python 3.11 or newer for the pinned environment (found " + sys.version.split()[0] + " at " + sys.executable + "); install it, or run: make PYTHON=/path/to/python3.11 test")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

venv: $(STAMP)

data: $(STAMP)
	$(PY) -c "import sys, rnnlib.data; sys.exit(rnnlib.data.main())"

test: data
	$(MAKE) test-unit test-notebooks test-book

# tests/reader/ needs the built book: test-book runs it right after building.
test-unit: $(STAMP)
	$(PY) -m pytest tests -q -p no:cacheprovider --ignore=tests/reader --ignore=tests/test_exercises.py

# Every notebook in quick mode (nbmake), then each exercise again with its reference solutions filled
# in, checking that every checker says "not yet implemented" as received and "passed" with solutions.
test-notebooks: $(STAMP)
	RNNLIB_QUICK=1 RNNLIB_OFFLINE=1 $(PY) -m pytest $(NBMAKE) chapters -q
	RNNLIB_QUICK=1 RNNLIB_OFFLINE=1 $(PY) -m pytest tests/test_exercises.py -q -p no:cacheprovider

nb: $(STAMP)
	@test -n "$(NB)" || (echo "usage: make nb NB=chapters/<notebook>.ipynb" && exit 2)
	RNNLIB_QUICK=1 $(PY) -m pytest $(NBMAKE) "$(NB)" -v

# The book. Each mode has its own output folder and execution cache, so a quick build never
# serves its numbers to a full one.
book: data
	$(MAKE) _book MODE=full QUICK=0
	@echo "The book is at $(CURDIR)/_build/full/_build/html/index.html"

book-quick: data
	$(MAKE) _book MODE=quick QUICK=1
	@echo "The book is at $(CURDIR)/_build/quick/_build/html/index.html"

_book: $(STAMP) assets
	RNNLIB_QUICK=$(QUICK) RNNLIB_RESULTS_DIR=$(CURDIR)/_build/$(MODE)/results \
	  $(JB) build . --path-output _build/$(MODE) -W -n --keep-going

# The book as one PDF: Jupyter Book's LaTeX builder (xelatex, _config.yml), reading the executed notebooks
# from the same cache as the HTML build of the same mode, so a PDF after `make book` executes nothing.
pdf: data tex
	$(MAKE) _pdf MODE=full QUICK=0
	@echo "The PDF is at $(CURDIR)/_build/full/_build/latex/book.pdf"

pdf-quick: data tex
	$(MAKE) _pdf MODE=quick QUICK=1
	@echo "The PDF is at $(CURDIR)/_build/quick/_build/latex/book.pdf"

_pdf: $(STAMP) assets
	@for tool in $(TEX_TOOLS); do command -v $$tool >/dev/null 2>&1 || \
	  { echo "make pdf needs $$tool; install the Debian packages: apt-get install $(TEX_PACKAGES)"; exit 1; }; done
	RNNLIB_QUICK=$(QUICK) RNNLIB_RESULTS_DIR=$(CURDIR)/_build/$(MODE)/results \
	  $(JB) build . --builder pdflatex --path-output _build/$(MODE) -W -n --keep-going

# The book as a reader gets it (tests/reader): static checks of the HTML, headless chromium on every
# page (and axe-core's accessibility rules, light and dark), the execution cache, a notebook re-run in
# one kernel, the Colab install path in a fresh venv, and the quick-mode PDF (tests/reader/test_pdf.py).
# They run right after the quick build they check, so they never see a stale or missing build.
test-book: book-quick browser tex
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 RNNLIB_QUICK=1 RNNLIB_OFFLINE=1 \
	  $(PY) -m pytest tests/reader -q -p no:cacheprovider --durations=5

# Offline-complete HTML: the JavaScript the pages need, from the npm registry, pinned by version and
# sha512 (book/_ext/fetch_assets.py), into a git-ignored folder that _config.yml serves from the book.
ASSETS := _build/assets
assets: $(ASSETS)/VERSIONS.json

$(ASSETS)/VERSIONS.json: book/_ext/fetch_assets.py | $(STAMP)
	$(PY) book/_ext/fetch_assets.py $(ASSETS)
	@touch $@

# Debian's chromium for tests/reader/test_browser.py (Playwright drives it; it never downloads a
# browser). Installing needs root (as in CI) or passwordless sudo; otherwise those tests are skipped.
SUDO := $(shell [ "$$(id -u)" = 0 ] && echo "" || (sudo -n true 2>/dev/null && echo "sudo -n" || echo "none"))
browser:
	@if command -v chromium >/dev/null 2>&1; then \
	  echo "chromium: $$(command -v chromium)"; \
	elif [ "$(SUDO)" = none ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "chromium is missing and cannot be installed here (apt-get install chromium needs root): the browser tests will be skipped"; \
	else \
	  echo "installing Debian's chromium for the browser tests"; \
	  ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null) \
	    || echo "could not install chromium: the browser tests will be skipped"; \
	fi

# TeX for `make pdf` and its test: xelatex with its fonts, latexmk, rsvg-convert (SVG figures to PDF) and
# poppler's pdftotext/pdfimages/pdftoppm (the test reads the PDF with them). Installed like chromium.
TEX_PACKAGES := latexmk texlive-xetex texlive-latex-extra texlive-fonts-recommended texlive-plain-generic \
  lmodern fonts-freefont-otf librsvg2-bin poppler-utils
TEX_TOOLS := xelatex latexmk rsvg-convert pdftotext pdfimages pdffonts pdftoppm
# LaTeX packages the book's class and Sphinx load, one from each Debian package above that has no program
TEX_FILES := fncychap.sty pgfplots.sty ucharclasses.sty lmodern.sty
tex:
	@missing=""; for tool in $(TEX_TOOLS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if command -v kpsewhich >/dev/null 2>&1; then for file in $(TEX_FILES); do \
	  [ -n "$$(kpsewhich $$file)" ] || missing="$$missing $$file"; done; fi; \
	fc-list 2>/dev/null | grep -q FreeSerif || missing="$$missing FreeSerif"; \
	if [ -z "$$missing" ]; then \
	  echo "TeX for make pdf: $$(command -v xelatex)"; \
	elif [ "$(SUDO)" = none ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "missing:$$missing; they cannot be installed here (apt-get needs root): make pdf will stop and the PDF test will be skipped. Install: apt-get install $(TEX_PACKAGES)"; \
	else \
	  echo "installing the TeX packages for make pdf (missing:$$missing; a few minutes)"; \
	  ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(TEX_PACKAGES) >/dev/null) \
	    || echo "could not install the TeX packages: make pdf will stop and the PDF test will be skipped"; \
	fi

clean:
	rm -rf _build .pytest_cache
