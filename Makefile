# The README's two commands: `make report` and `make test`. Everything installs into .venv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# This machine's pip takes these two from local disk; elsewhere they come from PyPI.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: report test venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

report: $(VENV)/.installed
	$(VENV)/bin/convscope build reports.yml --site site

test: $(VENV)/.test-installed
	$(PY) -m pytest -q

clean:
	rm -rf site site_src/reports .convscope-cache
