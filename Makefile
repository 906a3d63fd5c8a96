# Two commands do everything: `make tutorial` and `make test` (see README.md).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mtlutils-installed
OUT ?= runs/latest
MODE ?= default

.PHONY: install tutorial quick test lab lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name mtlutils --display-name "Python (mtlutils)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

tutorial: install  ## run every notebook (MODE=default|quick|full) into $(OUT)
	$(PY) -m mtlutils run $(if $(filter quick,$(MODE)),--quick,)$(if $(filter full,$(MODE)),--full,) --out $(OUT)

quick: install
	$(MAKE) tutorial MODE=quick

test: install  ## unit tests + every notebook in quick mode
	MTLUTILS_QUIET=1 $(PY) -m pytest -ra

lab: install  ## JupyterLab with the project's kernel
	$(VENV)/bin/jupyter lab notebooks/

lint:
	$(VENV)/bin/ruff check mtlutils tests bench notebooks
	$(VENV)/bin/ruff format --check mtlutils tests bench

format:
	$(VENV)/bin/ruff format mtlutils tests bench
	$(VENV)/bin/ruff check --fix mtlutils tests bench

bench: install  ## speed benchmarks; each prints a JSON line last
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

clean:
	rm -rf runs .pytest_cache .ruff_cache
