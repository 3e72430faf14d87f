# The two commands: `make search` (a small search on an embedded local Ray) and `make test`.
# Both build .venv from nothing. torch is installed first, from TORCH_SPEC, because an unpinned
# torch pulls a CUDA build; on a GPU machine use e.g. `make search TORCH_SPEC=torch`.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: search test lint format baseline clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

search: $(BIN)/.installed
	$(BIN)/python experiments/quickstart.py $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(ARGS)

baseline: $(BIN)/.installed
	$(BIN)/python experiments/seed_baseline.py $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
