# Set-up is part of every target: `make demo` and `make test` work on a fresh
# Debian machine (QGIS from Debian, everything else pinned in .venv).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_PACKAGES := qgis python3-qgis python3-venv python3-pip
export QT_QPA_PLATFORM ?= offscreen

.PHONY: demo test system venv on-path package bench clean

demo: on-path
	$(PY) -m backend demo --out demo_output

# QGIS, qgis_process and torch.distributed leave folders in TMPDIR at every run: give
# the run its own, removed afterwards (pytest's tmp_path folders stay in the usual place)
test: on-path
	@base=$${TMPDIR:-/tmp}; run_tmp=$$(mktemp -d "$$base/sarflood-tests.XXXXXX"); \
	TMPDIR=$$run_tmp PYTEST_DEBUG_TEMPROOT=$$base $(PY) -m pytest; rc=$$?; \
	rm -rf "$$run_tmp"; exit $$rc

# make bench BENCH_ARGS="--size 4096 --size 16384" for the README's figures
BENCH_ARGS ?= --size 4096
bench: on-path
	$(PY) -m backend bench $(BENCH_ARGS)

# Debian packages: installed only when one is missing, so re-runs cost nothing.
system:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $$missing; \
	fi

venv: on-path

# --system-site-packages: the venv must see Debian's qgis and PyQt5.
$(STAMP): requirements.txt constraints.txt | system
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements.txt -c constraints.txt
	touch $@

# The repository on the venv's import path (a .pth file, rewritten every time: it costs
# nothing), so that `.venv/bin/python -m backend` and `-m training` work from any folder.
on-path: $(STAMP)
	@$(PY) -c 'import os, sysconfig; open(os.path.join(sysconfig.get_paths()["purelib"], "sarflood-repo.pth"), "w").write(os.getcwd() + "\n")'

# The installable plugin zip: the folder QGIS expects (sarflood/), from the last commit
# (git archive), so that a zip with a version number holds what that commit holds and no
# edit in progress: no tests, no training, no venv, and not requirements.txt (the development
# pins, torch and pytest included: the plugin installs its own, RUNTIME_REQUIREMENTS in
# plugin/backend_env.py). Uncommitted changes to its files are named, not packed.
PACKAGE_PATHS := __init__.py metadata.txt README.md LICENSE plugin backend resources
PACKAGE_ZIP ?= dist/sarflood.zip
package:
	@mkdir -p $(dir $(PACKAGE_ZIP))
	git archive --format=zip --prefix=sarflood/ -o $(PACKAGE_ZIP).tmp HEAD -- $(PACKAGE_PATHS)
	@mv $(PACKAGE_ZIP).tmp $(PACKAGE_ZIP)
	@left="$$(git status --porcelain --untracked-files=all -- $(PACKAGE_PATHS) | cut -c4- | tr '\n' ' ')"; \
	[ -z "$$left" ] || echo "note: uncommitted changes left out of $(PACKAGE_ZIP) (it holds HEAD): $$left"
	@echo "$(PACKAGE_ZIP): install it with Plugins > Manage and Install Plugins > Install from ZIP"

clean:
	rm -rf demo_output build dist .pytest_cache
