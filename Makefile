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

.PHONY: setup run test clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m nanogptoss.compare grid --out runs/compare

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) .pytest_cache _build
