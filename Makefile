# Two commands do all the set-up (see README.md):
#   make reproduce   run every notebook (smoke profile, embedded dataset, offline)
#   make test        lint (ruff), unit tests + nbval on the committed notebooks
# (make full runs them in the full profile, loading the trained networks shipped in artifacts/;
#  make full RETRAIN=1 trains every network here instead)
# (make solutions PROFILE=full runs the exercises' worked solutions, notebooks/solutions/;
#  make book builds the course site from the committed notebooks into build/book/_build/html)
# Both create or refresh the virtual environment in .venv when pyproject.toml or constraints.txt changed
# (the exact versions, constraints.txt); VENV="$CONDA_PREFIX" uses an activated Conda environment instead.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= smoke
DATASET ?= glyphs
DEVICE ?= auto
RETRAIN ?= 0
ifneq ($(filter-out 0 1,$(RETRAIN))$(words $(RETRAIN)),1)
$(error RETRAIN=$(RETRAIN) is not accepted: RETRAIN must be 1 (train every network here) or 0 (load the shipped ones))
endif
RETRAIN_FLAG := $(if $(filter 1,$(RETRAIN)),--retrain)

.PHONY: reproduce full solutions test unit lint venv book clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys, pip; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { \
	  echo "$(VENV) is not a Python 3.11 environment with pip ($$($(PY) --version 2>&1)); remove it (rm -rf $(VENV))" \
	       "and run make again with a Python 3.11: make PYTHON=python3.11 ..."; exit 1; }
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,notebooks]"
	@touch $(STAMP)

venv: $(STAMP)

reproduce: $(STAMP)
	$(PY) -m metagan_lib.reproduce --profile $(PROFILE) --dataset $(DATASET) --device $(DEVICE) $(RETRAIN_FLAG)

full: $(STAMP)
	$(PY) -m metagan_lib.reproduce --profile full --dataset $(DATASET) --device $(DEVICE) $(RETRAIN_FLAG)

solutions: $(STAMP)
	$(PY) -m metagan_lib.reproduce --profile $(PROFILE) --dataset $(DATASET) --device $(DEVICE) --solutions $(RETRAIN_FLAG)

lint: $(STAMP)
	$(VENV)/bin/ruff check metagan_lib tests tools conftest.py
	$(VENV)/bin/ruff format --check metagan_lib tests tools conftest.py

test: lint
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env \
		--nbval-sanitize-with notebooks/nbval_sanitize.cfg -p no:cacheprovider

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --config book/_config.yml --toc book/_toc.yml --path-output build/book -W

unit: $(STAMP)
	$(PY) -m pytest tests -p no:cacheprovider

clean:
	rm -rf runs results/smoke .pytest_cache
