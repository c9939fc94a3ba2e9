# Set-up and everyday commands. Each target creates .venv and installs what it needs.
#   make demo    run every notebook headlessly on the embedded default data -> outputs/
#   make test    the test suite and the notebooks under nbval (ci profile)
#   make lab     JupyterLab on notebooks/ with working widgets
#   make bench   speed and memory benchmarks

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Without a GPU a CPU build of torch keeps set-up small (torch 2.13.0 is the one kept on the CI
# machines' disk); with a GPU pip's default build brings CUDA. Override: make demo TORCH=torch
TORCH ?= $(if $(shell command -v nvidia-smi 2>/dev/null),torch,torch==2.13.0)

.PHONY: install demo test test-fast lab bench browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python tools/run_notebooks.py

# The browser test drives Debian's chromium; install it when missing and we may (root + apt).
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium could not be installed: the browser test will be skipped"; fi

test: install browser
	$(BIN)/python -m pytest -n 2 tests
	IIVFORMER_PROFILE=ci $(BIN)/python -m pytest --nbval-lax notebooks/

test-fast: install
	$(BIN)/python -m pytest tests -x -q

lab: install
	$(BIN)/jupyter lab notebooks/

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) outputs .pytest_cache .hypothesis
