# GFM for QGIS. A newcomer needs two targets: `make demo` and `make test`.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
QGIS_PY := /usr/bin/python3
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test test-backend test-plugin test-plugin-qgis-sid test-slow lint bench plugin \
	job-params clean

setup: $(STAMP) qgis-check

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# QGIS is only needed for the plugin tests; the backend never runs inside QGIS.
qgis-check:
	@bash .ci/ensure-qgis

demo: $(STAMP)
	$(VENV)/bin/gfm demo --out demo-out

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: setup lint test-backend test-plugin test-plugin-qgis-sid

test-backend: $(STAMP)
	$(VPY) -m pytest tests/backend -q

test-plugin: setup
	@if $(QGIS_PY) -c 'import qgis.core, pytest' 2>/dev/null; then \
		QT_QPA_PLATFORM=offscreen $(QGIS_PY) -m pytest tests/plugin -q; \
	else echo "SKIP plugin tests: QGIS's Python ($(QGIS_PY)) cannot import qgis and pytest"; fi

# The plugin tests again on QGIS 3.44 (Debian unstable, in a chroot beside the clone, built on
# first use in about 90 s); the installer's tests run on 3.22 only, to keep `make test` short.
test-plugin-qgis-sid: $(STAMP)
	@bash .ci/qgis-sid -q --deselect tests/plugin/test_installer.py

test-slow: $(STAMP)
	$(VPY) -m pytest tests/backend -q -m slow

bench: $(STAMP)
	$(VENV)/bin/gfm bench classify --out bench-out

plugin:
	$(PY) scripts/build_plugin.py

# The plugin's Processing parameters come from the backend's job declarations.
job-params: $(STAMP)
	$(VPY) scripts/write_job_params.py

clean:
	rm -rf demo-out bench-out dist build
