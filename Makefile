# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: run serve ui test lint unit integration bench lock clean clean-runs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# An editable install leaves the project's own modules uncompiled: where PYTHONDONTWRITEBYTECODE
# is set, every command, and every Ray worker it starts, would compile them again (50 ms each).
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	$(BIN)/python -m compileall -q sweeps training
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/sweeps run $(ARGS)

# Serve the champion that `make run` registered (ARGS: overrides or options, e.g. ARGS='--port 8001').
serve: $(VENV)/.installed
	$(BIN)/sweeps serve $(ARGS)

# Browse the runs `make run` logged (./mlflow.db) at http://127.0.0.1:5000.
ui: $(VENV)/.installed
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: $(VENV)/.installed-dev
	$(BIN)/pytest tests/unit -q

integration: $(VENV)/.installed-dev
	$(BIN)/pytest tests/integration -q

test: lint
	$(BIN)/pytest -q

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/sweep_bench.py

# Re-pin every dependency at the versions installed in .venv.
lock: $(VENV)/.installed-dev
	$(BIN)/python -m pip freeze --exclude-editable --disable-pip-version-check | grep -v '^-e ' > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# What runs leave in this folder: the MLflow store and artifacts, sweep state and reports.
clean-runs:
	rm -rf mlflow.db mlflow.db-wal mlflow.db-shm mlartifacts mlruns sweeps-state reports dataset_card.json
