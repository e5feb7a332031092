# The two commands of the README:
#   make reproduce   set up .venv, materialise the pinned corpus, run the whole DVC pipeline
#   make test        pytest, including a tiny end-to-end DVC pipeline run
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup corpus corpus-new reproduce readme-results test bench clean-venv

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# data/raw is pinned by data.dvc: synthesise it when absent, check it against the pin either way.
corpus: setup
	@if [ ! -f data/raw/records.csv ]; then \
	  $(BIN)/timesnet-gen synth --params params.yaml --out data/raw --verify data.dvc; \
	else \
	  $(BIN)/python -c 'from timesnet_gen.corpus.pin import verify; verify("data/raw", "data.dvc")' \
	    && echo "data/raw matches data.dvc"; \
	fi
	$(BIN)/dvc commit -q -f data.dvc

# After editing params.yaml data.synth: re-synthesise and re-pin data.dvc (commit it afterwards).
corpus-new: setup
	$(BIN)/timesnet-gen synth --params params.yaml --out data/raw
	$(BIN)/dvc add -q data/raw
	@echo "data.dvc re-pinned: git add data.dvc params.yaml && git commit"

reproduce: corpus
	$(BIN)/dvc repro
	$(MAKE) readme-results

# Copy the pipeline's figures/results.md into README.md's results block.
readme-results:
	$(BIN)/timesnet-gen report --out figures --readme README.md

test: setup
	$(BIN)/pytest

bench: setup
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)

# Earthquake HVSR of the 26 AFAD records of the 2020 Samos earthquake (../shared/data): f0 and
# A0 per station against the header VS30 -> figures/samos_f0_vs_vs30.png; the whole survey
# (records.csv, summary.md, a figure per station ...) -> SAMOS_HVSR_OUT.
SAMOS_ASC ?= ../shared/data/afad_asc/samos_2020
ifndef SAMOS_HVSR_OUT
SAMOS_HVSR_OUT := $(shell mktemp -u -d)/samos_hvsr
endif
.PHONY: samos-hvsr
samos-hvsr: setup
	$(BIN)/timesnet-gen hvsr $(SAMOS_ASC) --out $(SAMOS_HVSR_OUT) \
	  --title "Samos 2020-10-30 Mw 6.6" --vs30-figure figures/samos_f0_vs_vs30.png
	@echo "survey tables and per-station figures: $(SAMOS_HVSR_OUT)"
