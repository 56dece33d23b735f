# Quick start: `make demo` (main job on built-in images), `make test` (the test suite).
# Both create and reuse a local virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision are pinned here (not in pyproject) so that this machine's local wheels are used.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test clean-venv

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test,peers,methods]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/perturb demo --out results/demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
