# Two commands do all the set-up on a fresh Linux machine with Python 3.11:
#   make repro   - create .venv if missing, then run the whole DVC pipeline on the default data
#   make test    - create .venv if missing, then run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The face mirror beside the checkout (CI and these machines have one); otherwise images are downloaded.
LEAM_FACES_MIRROR ?= $(firstword $(wildcard $(abspath ../shared/faces)))
export LEAM_FACES_MIRROR
export PATH := $(abspath $(BIN)):$(PATH)
# torch/BLAS threads = the cores this machine gives us, not a constant (align's worker processes run dlib,
# which is single-threaded). Override with OMP_NUM_THREADS=... make repro.
export OMP_NUM_THREADS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: repro test venv browser benchmarks plots clean-venv

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

repro: venv
	$(BIN)/dvc repro

# Headless Chromium + its driver for the report browser tests (Debian packages; needs root, as here and in
# CI). Where they cannot be installed the browser tests skip and say why.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "warning: could not install chromium + chromium-driver; the browser tests will skip"; fi

# The suite in parallel: pytest-xdist with one worker more than cores (on 2 cores 3 workers took 9.6 minutes,
# 2 workers 10.1, serial 12.9), so one worker's waits (a dvc subprocess, the browser, the disk) leave no core
# idle; PYTEST_WORKERS=0 make test runs it serially. A module's tests stay on one worker (--dist loadfile), so a
# module fixture such as the scratch repository is built once.
PYTEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 2) + 1 )))
test: venv browser
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=25

benchmarks: venv
	for script in benchmarks/[a-z]*.py; do $(BIN)/python -m benchmarks.$$(basename $$script .py) || exit 1; done

# Offline `dvc plots show`: Vega inlined into a local template (fetched once with npm pack).
plots: venv
	test -f .cache/plots/template.html || $(BIN)/python tools/plots_template.py
	$(BIN)/dvc plots show --html-template .cache/plots/template.html -o reports/_plots

clean-venv:
	rm -rf $(VENV)
