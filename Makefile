# liver-agent: `make run` sets up and starts the agent on its defaults; `make test` sets up and tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# podman, runc, debootstrap: the container image test (tests/integration/test_container.py);
# postgresql: the storage and queue tests on a throwaway server (tests/pg.py)
APT_PACKAGES := dcmtk dicom3tools orthanc orthanc-dicomweb chromium podman runc debootstrap postgresql

.PHONY: setup run test test-fast lint typecheck pytest system-packages demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/liver-agent serve

system-packages:
	@./deploy/install-system-packages.sh $(APT_PACKAGES)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest

test: system-packages lint typecheck pytest

# The edit-test loop: lint, types, and every test that is neither slow (> ~5 s) nor integration
# (real DCMTK / Orthanc / agent processes). `make test` stays the full run (CI).
test-fast: lint typecheck
	$(BIN)/pytest -m "not slow and not integration"

# Orthanc + the agent on loopback with two phantom studies (README: Demo); Ctrl-C stops both.
demo: setup
	@./deploy/install-system-packages.sh orthanc orthanc-dicomweb
	$(BIN)/liver-agent demo

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
