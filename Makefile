# The README's two commands: `make report` and `make test`. Everything installs into .venv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# This machine's pip takes these two from local disk; elsewhere they come from PyPI.
TORCH := torch==2.14.1 torchvision==0.29.1

# The Fashion-MNIST model's data set comes from Debian's dataset-fashion-mnist package, installed when we may.
FASHION := /usr/share/datasets/fashion-mnist
APT_FASHION := apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)
# The browser tests (tests/test_browser.py) drive Debian's chromium through Playwright (Playwright's own browser
# download is never used); installed when we may, and without it those tests are skipped.
APT_CHROMIUM := apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)

.PHONY: report test venv clean fashion-mnist chromium browser-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

fashion-mnist:
	@[ -d $(FASHION) ] || sh -c '$(APT_FASHION)' >/dev/null 2>&1 || sudo -n sh -c '$(APT_FASHION)' >/dev/null 2>&1 || true

chromium:
	@[ -x /usr/bin/chromium ] || [ -x /usr/bin/chromium-browser ] || sh -c '$(APT_CHROMIUM)' >/dev/null 2>&1 || sudo -n sh -c '$(APT_CHROMIUM)' >/dev/null 2>&1 || true

# The default site leaves the data files out (--no-data: 37 MB instead of 88 MB); they stay in site_src/reports.
# Drop the flag to publish them too.
SITE_FLAGS := --site site --no-data

report: $(VENV)/.installed fashion-mnist
	@if [ -d $(FASHION) ]; then \
		$(VENV)/bin/convscope build reports.yml $(SITE_FLAGS); \
	else \
		echo "Fashion-MNIST is not installed, so the report leaves out the fashion-mnist models and"; \
		echo "EfficientNet-Lite0's data-set views (neighbours, embeddings, top patches) run on no data set."; \
		echo "To include them: sudo apt-get install dataset-fashion-mnist, then make report again."; \
		$(VENV)/bin/convscope build reports.yml $(SITE_FLAGS) --skip fashion-mnist,fashion-mnist-run,fashion-lite0; \
	fi

test: $(VENV)/.test-installed fashion-mnist chromium
	$(PY) -m pytest -q

# The browser tests against the default report's site as `make report` built it (instead of their small site).
browser-check: $(VENV)/.test-installed chromium
	CONVSCOPE_SITE=site $(PY) -m pytest -q tests/test_browser.py
	$(PY) scripts/site_weight.py site

clean:
	rm -rf site site_src/reports .convscope-cache
