# Two entry points, both self-installing on a fresh clone (no venv needs to be active):
#   make repro   – create .venv if missing, then `dvc repro` the default pipeline
#   make test    – create .venv if missing, then run the fast test suite
# torch is installed first, pinned, so nothing pulls a multi-GB CUDA build.
#
# Variables:
#   make repro STAGES="prepare classifier"   only these stages (and what they need)
#   make repro SET="experiment=smoke"        a DVC experiment in a temp copy of the workspace:
#                                            `dvc exp run --temp -S experiment=smoke` (then `dvc exp show`)
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
STAGES  ?=
SET     ?=
# dvc.yaml's commands call `genlab`, and DVC runs them with the caller's PATH: put the venv first.
RUN     := PATH="$(CURDIR)/$(BIN):$$PATH"
DVC_CMD := $(if $(strip $(SET)),exp run --temp $(addprefix -S ,$(SET)),repro)

.PHONY: repro test test-all bench clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test,bench]'
	touch $(STAMP)

repro: $(STAMP)
	$(RUN) $(BIN)/dvc $(DVC_CMD) $(STAGES)

test: $(STAMP)
	$(RUN) $(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(RUN) $(BIN)/python -m pytest -q -m ''

bench: $(STAMP)
	for b in $(filter-out benchmarks/stage_times.py benchmarks/stage_profile.py,$(wildcard benchmarks/*.py)); do $(RUN) $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
