# kolora: `make run` (whole pipeline locally, smoke profile) and `make test` set up everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.kolora-installed
PROFILE ?= smoke
PYTEST_ARGS ?=

.PHONY: help install run test lint format render helm-render lint-workflows bench lock clean smoke-kind images push smoke-containers

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv with every stage's dependencies (one environment holds them all)

run: $(STAMP)  ## run the whole pipeline locally (PROFILE=smoke), outputs in runs/<run-id>/
	$(PY) -m kolora_core.cli run --profile $(PROFILE)

test: $(STAMP)  ## the test suite (what CI runs)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff lint + format check, and the rendered workflows are up to date
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m workflows.render --check
	$(PY) -m workflows.helm --check

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

render: $(STAMP)  ## regenerate workflows/dist/*.yaml from the hera definitions
	$(PY) -m workflows.render

helm-render: $(STAMP)  ## regenerate the Helm chart's generated files (Argo templates, values block, schema, appVersion)
	$(PY) -m workflows.helm

smoke-kind:  ## kind + Argo + SeaweedFS + the Helm chart, one smoke run checked in the store (needs docker, kind, kubectl, helm)
	helm/kind-smoke.sh

lint-workflows: render  ## argo lint --offline on the rendered workflows, when the argo CLI is installed
	@if command -v argo >/dev/null; then \
	  argo lint --offline workflows/dist/kolora-pipeline.yaml workflows/dist/kolora-run.yaml workflows/dist/kolora-nightly.yaml && \
	  argo lint --offline workflows/dist/kolora-pipeline-cpu.yaml; else echo "argo CLI not installed: skipped (CRD schema validation runs in make test)"; fi

bench: $(STAMP)  ## CPU benchmarks of this machine (GPU numbers: docs/benchmarks.md)
	$(PY) bench/filter_bench.py

lock: $(STAMP)  ## rewrite constraints.txt from the installed environment
	{ head -2 constraints.txt; $(PIP) freeze --exclude-editable | grep -v '^kolora'; } > constraints.txt.new && mv constraints.txt.new constraints.txt

images:  ## build the container images kolora-<image>:<version> (docker; buildah/podman where no Docker engine runs)
	images/build.sh build

push:  ## build and push the images: make push REGISTRY=ghcr.io/you
	images/build.sh push

smoke-containers: $(STAMP)  ## build the images, run the smoke profile through them (podman/docker), check runs/latest (slow)
	PY=$(PY) images/smoke.sh

clean:  ## remove local runs, the embedded store (runs/.store: published releases too) and caches (keeps .venv)
	rm -rf runs .pytest_cache .ruff_cache
