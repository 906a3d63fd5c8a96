# Two commands do everything: `make tutorial` and `make test` (see README.md).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mtlutils-installed
OUT ?= runs/latest
MODE ?= default

.PHONY: help install tutorial quick test lab lint format bench clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' Makefile | sed -E 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name mtlutils --display-name "Python (mtlutils)" >/dev/null
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project (once)

tutorial: install  ## run every notebook (MODE=default|quick|full) into $(OUT); resumes, FRESH=1 reruns all
	$(PY) -m mtlutils run $(if $(filter quick,$(MODE)),--quick,)$(if $(filter full,$(MODE)),--full,) $(if $(FRESH),--fresh,) --out $(OUT)

quick: install  ## the tutorial in quick mode
	$(MAKE) tutorial MODE=quick

test: install  ## unit tests + every notebook in quick mode
	MTLUTILS_QUIET=1 $(PY) -m pytest -ra

lab: install  ## JupyterLab with the project's kernel
	$(VENV)/bin/jupyter lab notebooks/

lint:  ## ruff check and format check
	$(VENV)/bin/ruff check mtlutils tests bench notebooks
	$(VENV)/bin/ruff format --check mtlutils tests bench

format:  ## ruff format and fix
	$(VENV)/bin/ruff format mtlutils tests bench
	$(VENV)/bin/ruff check --fix mtlutils tests bench

bench: install  ## speed benchmarks; each prints a JSON line last
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

clean:  ## remove runs and caches of tools (never data/ or user files)
	rm -rf runs .pytest_cache .ruff_cache
