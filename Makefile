# Two commands for a newcomer:  `make book` builds the HTML book, `make test` runs every test.
# Both first create what they need: a virtual environment in .venv/ and the data cache.
# CI runs `make test` with RNNLIB_DATA_DIR pointing at a local copy of the data (see .ci/run).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JB     := $(VENV)/bin/jupyter-book
NBMAKE := --nbmake --nbmake-kernel=python3 --nbmake-timeout=600 -p no:cacheprovider

.PHONY: help venv data test test-unit test-notebooks test-book book book-quick nb clean

help:
	@echo "make book        build the HTML book in full mode (executes every notebook; cached between runs)"
	@echo "make test        unit tests, every notebook in quick mode, the quick book build and its checks"
	@echo "make book-quick  build the book in quick mode (minutes; numbers are not meaningful)"
	@echo "make nb NB=chapters/7-1-foundations.ipynb   execute one notebook in quick mode, as the tests do"
	@echo "make data        download and verify the data sets into the cache (or check RNNLIB_DATA_DIR)"
	@echo "make clean       remove build outputs (keeps .venv and the data cache)"

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

venv: $(STAMP)

data: $(STAMP)
	$(PY) -m rnnlib.data

test: data
	$(MAKE) test-unit test-notebooks test-book

test-unit: $(STAMP)
	$(PY) -m pytest tests -q -p no:cacheprovider

test-notebooks: $(STAMP)
	RNNLIB_QUICK=1 RNNLIB_OFFLINE=1 $(PY) -m pytest $(NBMAKE) chapters -q

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

_book: $(STAMP)
	RNNLIB_QUICK=$(QUICK) RNNLIB_RESULTS_DIR=$(CURDIR)/_build/$(MODE)/results \
	  $(JB) build . --path-output _build/$(MODE) -W -n --keep-going

test-book: book-quick

clean:
	rm -rf _build .pytest_cache
