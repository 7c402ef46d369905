# convtrain: `make test` and `make train` each work on a fresh clone: they create .venv and install
# the project first. Point at local data with CONVTRAIN_DATA_ROOT (e.g. ../shared/data); without it
# the data root comes from the config (default ./data, downloaded when missing).

VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install test test-fast train bench bench-conv bench-speed docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The test command (README, docs/getting-started.md and .ci/run use exactly this). Two pytest-xdist workers, each taking
# whole test files (module fixtures such as the DDP runs are built once): a third of the suite's
# time is spent waiting (signal tests' pauses, subprocesses importing torch), which the other
# worker fills. On our 2-core machine: 442 s instead of 520 s one at a time (380 s in CI).
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile

# The quick loop while editing: everything but the tests marked slow (real trainings, DDP, kill tests).
test-fast: install
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

# The article's setup: its CNN, Adam 1e-3, batch 64, 10 epochs (~3 minutes on 2 CPU cores).
train: install
	$(PY) -m convtrain train --config configs/mnist.yaml

# Benchmarks (not tests): results go in docs/results.md. `make bench` takes ~15 minutes on 2 CPU cores.
bench: bench-conv bench-speed

bench-conv: install
	$(PY) bench/conv_speed.py

bench-speed: install
	$(PY) bench/speed.py

# The documentation site: regenerate its two generated pages (the config reference from the schema, the
# command-line reference from the app; a test checks both), then build docs/ into site/ (MkDocs, Material;
# offline). `$(VENV)/bin/mkdocs serve` shows it while you edit.
docs: install
	$(PY) tools/update_docs.py
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build site *.egg-info
