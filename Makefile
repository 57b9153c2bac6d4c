# Scene Diffusion: the one developer entry point.
#
#   make venv    .venv (Python 3.11) with requirements-dev.txt; re-run when that file changes
#   make lint    ruff; mypy for the Blender side (.venv-lint, fake-bpy-module stubs);
#                mypy for backend/ and devtools/ (.venv, real torch and diffusers)
#   make test    lint, then tests/unit + tests/backend, then tests/blender in its own process, then
#                tests/install (Setup Backend for real: pip into the managed environment, a job through it)
#   make test-gui  the GUI tier (as root): real Blender 4.3 and 5.2 LTS binaries in a window under Xvfb,
#                each in a Debian root cached under .cache/gui-roots (devtools/gui_root.py)
#   make test-bpy  tests/blender on each older bpy the manifest allows (BPY_VERSIONS), each in its own
#                .venv-bpy-<version> without torch (its backend runs on .venv); make test runs it last
#   make demo    the offline demo (demo/run.py) on tiny models
#   make dist    dist/scene_diffusion-<version>.zip, built by Blender's own extension tool
#   make clean   build outputs and tool caches (keeps the virtual environments)

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
VENV_LINT := .venv-lint
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

VENV_STAMP := $(VENV)/.requirements-dev.stamp
VENV_LINT_STAMP := $(VENV_LINT)/.requirements-lint.stamp

# The extension root is itself a package (its modules use relative imports such as
# `from ..backend import protocol`), so mypy checks it through a link named after the
# extension id: .cache/mypy-path/scene_diffusion -> the repository root.
MYPY_PATH := .cache/mypy-path
BLENDER_SIDE := $(strip $(if $(wildcard __init__.py),-m scene_diffusion) \
	$(foreach d,contract addon operators panels,$(if $(wildcard $(d)/__init__.py),-p scene_diffusion.$(d))))

.PHONY: venv lint test test-gui demo dist clean distclean

venv: $(VENV_STAMP)

$(VENV_STAMP): requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements-dev.txt
	@touch $@

$(VENV_LINT_STAMP): requirements-lint.txt
	@test -x $(VENV_LINT)/bin/python || $(PYTHON) -m venv $(VENV_LINT)
	$(VENV_LINT)/bin/python -m pip install -r requirements-lint.txt
	@touch $@

# Every checker runs; the target fails if any of them did.
lint: $(VENV_STAMP) $(VENV_LINT_STAMP)
	@status=0; \
	echo "--- ruff"; \
	$(VENV)/bin/ruff check . || status=1; \
	echo "--- mypy (Blender side, fake-bpy-module):$(if $(BLENDER_SIDE),, nothing to check yet)"; \
	if [ -n "$(BLENDER_SIDE)" ]; then \
		mkdir -p $(MYPY_PATH) && ln -sfn ../.. $(MYPY_PATH)/scene_diffusion && \
		MYPYPATH=$(MYPY_PATH) $(VENV_LINT)/bin/mypy --cache-dir .mypy_cache/blender $(BLENDER_SIDE) || status=1; \
	fi; \
	echo "--- mypy (backend, devtools)"; \
	$(VENV)/bin/mypy --cache-dir .mypy_cache/backend -p contract -p backend -p devtools || status=1; \
	exit $$status

# pytest exit 5 means "no tests collected": fine for a folder that has none yet.
test: $(VENV_STAMP) lint
	@status=0; \
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests/unit tests/backend $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then status=$$rc; fi; \
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests/blender $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then status=$$rc; fi; \
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests/install -s $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then status=$$rc; fi; \
	$(MAKE) --no-print-directory test-bpy; rc=$$?; \
	if [ $$rc -ne 0 ]; then status=$$rc; fi; \
	exit $$status

test-gui: $(VENV_STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests/gui -s $(PYTEST_ARGS)

# tests/blender on bpy from PyPI, one environment per version (5.0.1 is the .venv run in `make test`).
# Every version runs; the target fails if any failed. The bpy process has no torch: the backend the
# tests start (and the tiny models it builds) run on the .venv's Python.
BPY_VERSIONS := 4.2.23 4.5.15
BPY_VENVS := $(foreach v,$(BPY_VERSIONS),.venv-bpy-$(v))
BPY_REQUIREMENTS := tests/blender/requirements.txt

.PHONY: test-bpy

.venv-bpy-%/.requirements-bpy.stamp: $(BPY_REQUIREMENTS)
	@test -x .venv-bpy-$*/bin/python || $(PYTHON) -m venv .venv-bpy-$*
	.venv-bpy-$*/bin/python -m pip install -r $(BPY_REQUIREMENTS) bpy==$*
	@touch $@

test-bpy: $(VENV_STAMP) $(foreach v,$(BPY_VENVS),$(v)/.requirements-bpy.stamp)
	@status=0; summary=""; \
	for v in $(BPY_VERSIONS); do \
		echo "--- tests/blender on bpy $$v"; start=$$(date +%s); \
		HF_HUB_OFFLINE=1 SCENE_DIFFUSION_TEST_BACKEND_PYTHON=$(abspath $(PY)) \
			.venv-bpy-$$v/bin/python -m pytest tests/blender $(PYTEST_ARGS); rc=$$?; \
		if [ $$rc -eq 0 ] || [ $$rc -eq 5 ]; then result=passed; else result="FAILED (exit $$rc)"; status=1; fi; \
		summary+="bpy $$v: tests/blender $$result in $$(( $$(date +%s) - start )) s"$$'\n'; \
	done; \
	printf "%s" "$$summary"; \
	exit $$status

demo: $(VENV_STAMP)
	HF_HUB_OFFLINE=1 $(PY) demo/run.py

dist: $(VENV_STAMP)
	$(PY) -m devtools.extension build --out-dir dist

clean:
	rm -rf dist .pytest_cache .mypy_cache .ruff_cache $(MYPY_PATH) demo_output
	find . \( -path ./$(VENV) -o -path ./$(VENV_LINT) -o -path './.venv-bpy-*' -o -path ./.git \) -prune -o \
		-type d -name __pycache__ -exec rm -rf {} +

# Also the virtual environments and the tiny-model cache.
distclean: clean
	@# The GUI roots may still have the checkout bind-mounted inside: unmount before deleting anything.
	test ! -d .cache/gui-roots || $(PYTHON) -m devtools.gui_root remove
	rm -rf $(VENV) $(VENV_LINT) .cache
	rm -rf $(BPY_VENVS)
