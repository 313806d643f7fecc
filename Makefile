# gept-infra: one entry point for setup, lint, tests and the demo.
# `make test` is what CI runs (.ci/run); `make demo` / `make demo-down` run the local host.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Molecule scenarios CI runs, longest first: each lane takes the next one when its last one ends.
SCENARIOS ?= live bookworm legacy default adopt
# How many scenarios run side by side (tests/support/scenarios.py).
SCENARIO_LANES ?= 2

.PHONY: help setup lint lint-ansible lint-yaml lint-python syntax unit molecule test demo demo-down clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: ## install controller prerequisites (apt, Docker engine, venv, base image, TimescaleDB package, demo vault)
	scripts/setup-controller.sh

lint: lint-yaml lint-ansible lint-python syntax ## every linter, zero findings

lint-yaml:
	yamllint --strict .

lint-ansible:
	ansible-lint --offline --strict

lint-python:
	ruff check .
	ruff format --check .

syntax: ## syntax-check the root playbooks with the default (production) inventory
	ansible-playbook site.yml --syntax-check
	ansible-playbook stop_legacy.yml --syntax-check
	@for p in playbooks/*.yml; do ansible-playbook "$$p" --syntax-check >/dev/null || exit 1; done

unit: ## controller-side tests only (unit, PostgreSQL, TimescaleDB full edition in a container, promtool, secret scan)
	pytest tests -m "not molecule"

molecule: ## molecule test for each scenario in SCENARIOS
	@for s in $(SCENARIOS); do echo "=== molecule test -s $$s ==="; molecule test -s "$$s" || exit 1; done

# Each stage's time is recorded (scripts/timed.sh) and printed as one table before pytest's
# summary line, so the cost of every addition to CI is visible.
STAGES_FILE := $(CURDIR)/.cache/ci-stages.tsv
export GEPT_STAGES_FILE := $(STAGES_FILE)

test: ## what CI runs: setup, lint, then one pytest session (controller tests, then Molecule scenarios)
	@mkdir -p $(dir $(STAGES_FILE)) && : > $(STAGES_FILE)
	@scripts/timed.sh setup $(MAKE) --no-print-directory setup
	@scripts/timed.sh lint $(MAKE) --no-print-directory lint
	GEPT_SCENARIOS="$(SCENARIOS)" GEPT_SCENARIO_LANES=$(SCENARIO_LANES) pytest tests

demo: setup ## boot the local demo host and run site.yml against it
	scripts/demo.sh up

demo-down: ## remove the demo host
	scripts/demo.sh down

clean: demo-down ## remove the demo and the venv
	rm -rf $(VENV)
