# Fresh machine: `make run` (the main job) and `make test` (the tests) each set themselves up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0

# Offline helpers, used only where this workplace's shared folder exists; a user with
# internet needs none of them.
SHARED := $(wildcard ../shared)
ifneq ($(wildcard ../shared/tiktoken_cache),)
export TIKTOKEN_CACHE_DIR := $(abspath ../shared/tiktoken_cache)
endif
ifneq ($(wildcard ../shared/data),)
export NANOGPTOSS_DATA := $(abspath ../shared/data)
endif
ifneq ($(SHARED),)
export HF_HUB_OFFLINE := 1
endif

.PHONY: setup run test clean book-setup book nbval book-test colab-check teacher-check

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m nanogptoss compare grid --out runs/compare

test: setup
	$(PY) -m pytest -q tests

# The book: the Jupyter Book site, its notebooks under nbval, and the built site in a browser.
# A separate stamp, so the library's setup stays light; torch is pinned in the same pip
# command, so no book dependency can upgrade it.
$(VENV)/.installed-book: $(VENV)/.installed requirements-book.txt
	$(PY) -m pip install -q -r requirements-book.txt "$(TORCH_PIN)"
	touch $@

book-setup: $(VENV)/.installed-book

# warnings are errors; pages show the chapters' saved outputs (book/run_notebooks.py writes them)
book: book-setup
	$(VENV)/bin/jupyter-book build . -W

# every notebook runs; cells tagged `nbval-check-output` are compared with their saved outputs.
# Sizes follow the device: small on a CPU, full on a GPU (.github/workflows/gpu-notebooks.yml).
nbval: book-setup
	$(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env notebooks/

# headless Chromium over _build/html (make book first); screenshots in _build/screenshots/
book-test: book-setup
	$(PY) -m pytest -q -p no:cacheprovider book/tests

# The book where readers run it, each in a fresh virtual environment of its own (.ci/colab_check.sh):
# every chapter alone after `pip install .[book]` as on Colab, and the grader installed as
# book/instructor.md says, grading a right and a wrong submission of two chapters.
colab-check:
	PYTHON=$(PYTHON) TORCH_PIN="$(TORCH_PIN)" .ci/colab_check.sh colab

teacher-check:
	PYTHON=$(PYTHON) TORCH_PIN="$(TORCH_PIN)" .ci/colab_check.sh teacher

clean:
	rm -rf $(VENV) .pytest_cache _build
