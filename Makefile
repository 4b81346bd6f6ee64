# The README's commands. Each target creates the virtual environment first if needed.
#   make course   set up, then execute every notebook in order and print a summary
#   make test     set up, then run the unit tests, the doctests and nbval over the generated notebooks
#   make lab      set up, then open JupyterLab on the student copies (solutions removed; your edits are kept)
#   make teacher  set up, then open JupyterLab on the teacher notebooks (with solutions)
# Everything goes through one command line, `galmeta` (installed into .venv/bin).
# Options: GALMETA_MODE=ci|laptop|full (course default: laptop; test: ci),
#          SNAPSHOT=path/to/table.csv.gz imports another galaxy table first and makes it the course's table
#          (without it the course uses the table embedded in the package),
#          NOTEBOOKS="01 02" runs a subset with `make course`.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.galmeta-installed
SNAPSHOT ?=
NOTEBOOKS ?=
export GALMETA_DATA ?= $(CURDIR)/data
export PYTHONHASHSEED := 0

.PHONY: setup course test lab teacher import student clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[course,test]"
	touch $(STAMP)

setup: $(STAMP)

import: setup
	@if [ -n "$(SNAPSHOT)" ]; then $(BIN)/galmeta data import --use "$(SNAPSHOT)"; fi

course: import
	$(BIN)/galmeta course run $(NOTEBOOKS)

test: import
	rm -rf build/nbval  # a renamed or removed notebook must not leave a stale copy that nbval would run
	GALMETA_MODE=ci $(BIN)/galmeta course generate --out build/nbval
	GALMETA_MODE=ci GALMETA_PROGRESS=0 $(BIN)/python -m pytest -p no:cacheprovider --durations=10 \
		--doctest-modules galmeta tests build/nbval --nbval-lax --nbval-current-env

lab: student
	$(BIN)/jupyter lab build/student

teacher: setup
	$(BIN)/galmeta course generate --out build/teacher
	$(BIN)/jupyter lab build/teacher

student: setup
	$(BIN)/galmeta student

clean:
	rm -rf build notebooks/*.ipynb
