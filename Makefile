# Scene Diffusion: the one developer entry point.
#
#   make venv    .venv (Python 3.11) with requirements-dev.txt; re-run when that file changes
#   make lint    ruff; mypy for the Blender side (.venv-lint, fake-bpy-module stubs);
#                mypy for backend/ and devtools/ (.venv, real torch and diffusers)
#   make test    lint, then tests/unit + tests/backend, then tests/blender in its own process
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

.PHONY: venv lint test demo dist clean distclean

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
	exit $$status

demo: $(VENV_STAMP)
	HF_HUB_OFFLINE=1 $(PY) demo/run.py

dist: $(VENV_STAMP)
	$(PY) -m devtools.extension build --out-dir dist

clean:
	rm -rf dist .pytest_cache .mypy_cache .ruff_cache $(MYPY_PATH) demo_output
	find . \( -path ./$(VENV) -o -path ./$(VENV_LINT) -o -path ./.git \) -prune -o \
		-type d -name __pycache__ -exec rm -rf {} +

# Also the virtual environments and the tiny-model cache.
distclean: clean
	rm -rf $(VENV) $(VENV_LINT) .cache
