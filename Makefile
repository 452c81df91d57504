# The two commands of the quick start: `make demo` and `make test`. Both make .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint bench clean

# setup.py compiles the hot modules (mypyc) when it can: rebuilt when one changes.
$(STAMP): pyproject.toml setup.py engine/detection/ensemble.py engine/detection/detect.py engine/detection/replay.py engine/signal_fast.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "SigOps needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@$(PY) -c 'import engine, engine.detection as d; yes = lambda b: "yes" if b else "no (the Python source)"; \
		print("sigops: compiled: detector", yes(d.COMPILED), "| episodes", yes(d.COMPILED_EPISODES), "| replay", yes(d.COMPILED_REPLAY), "| validation", yes(engine.COMPILED_VALIDATION))'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sigops demo

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy bot engine storage

test: lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) data build .pytest_cache .mypy_cache .ruff_cache engine/*.so engine/*.build engine/detection/*.so engine/detection/*.build
