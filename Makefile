# Two entry points, both self-installing on a fresh clone:
#   make repro   – create .venv if missing, then `dvc repro` the default pipeline
#   make test    – create .venv if missing, then run the fast test suite
# torch is installed first, pinned, so nothing pulls a multi-GB CUDA build.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: repro test test-all bench clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

bench: $(STAMP)
	for b in $(filter-out benchmarks/stage_times.py,$(wildcard benchmarks/*.py)); do $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
