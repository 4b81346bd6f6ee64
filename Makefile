# The README's commands. Each target creates the virtual environment first if needed.
#   make course   set up, then execute every notebook in order and print a summary
#   make test     set up, then run the unit tests and nbval over the generated notebooks
#   make lab      set up, then open JupyterLab on the notebooks
# Options: GALMETA_MODE=ci|laptop|full (course default: laptop; test: ci),
#          SNAPSHOT=path/to/table.csv.gz imports an offline snapshot first,
#          NOTEBOOKS="01 02" runs a subset with `make course`.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.galmeta-installed
SNAPSHOT ?=
NOTEBOOKS ?=
export GALMETA_DATA ?= $(CURDIR)/data
export MPLBACKEND ?= Agg
export PYTHONHASHSEED := 0

.PHONY: setup course test lab import student clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[course,test]"
	touch $(STAMP)

setup: $(STAMP)

import: setup
	@if [ -n "$(SNAPSHOT)" ]; then $(BIN)/galmeta data import "$(SNAPSHOT)"; fi

course: import
	$(BIN)/galmeta course run $(NOTEBOOKS)

test: import
	GALMETA_MODE=ci $(BIN)/python -m galmeta.course generate --out build/nbval
	GALMETA_MODE=ci $(BIN)/python -m pytest -p no:cacheprovider --durations=10 tests build/nbval \
		--nbval-lax --nbval-current-env

lab: setup
	$(BIN)/python -m galmeta.course generate --out notebooks
	$(BIN)/jupyter lab notebooks

student: setup
	$(BIN)/galmeta student

clean:
	rm -rf build notebooks/*.ipynb
