# Trunkline — the fixed entry points (other tooling depends on these names):
#   make venv        .venv with the pinned Python toolchain and the trunkline CLI
#   make testbed     Docker engine, systemd base images, LiveKit programs (.artifacts/)
#   make lint        ansible-lint (production), yamllint, ruff
#   make collection  dist/: the trunkline wheel and the trunkline.voice collection tarball
#   make sanity      ansible-test sanity on the built collection
#   make test        venv + testbed + collection, then lint, pytest and every molecule scenario
#   make lab         a local lab host with trunkline.voice.site applied; make lab-down
#   make cluster-upgrade  the staging cluster (molecule/cluster), then trunkline.voice.upgrade
#                    under a stream of calls: every call must survive (several minutes)
#   make cluster-bench  the staging cluster, then simultaneous calls with two SIP nodes
#                    versus one: the highest clean level of each and their ratio
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Scenarios in the order they run; each is named by what it proves.
SCENARIOS ?= redis artifacts preflight default cxml sip_container egress e2e cluster

.PHONY: help venv testbed lint docs collection test pytest molecule lab lab-down clean cluster-upgrade cluster-bench

help:
	@sed -n 's/^#   //p' $(MAKEFILE_LIST)

venv: $(VENV)/.trunkline-stamp

$(VENV)/.trunkline-stamp: pyproject.toml requirements.txt constraints.txt tests/support/pyproject.toml \
    roles/livekit_agents/files/constraints.txt scripts/testbed/venv.sh
	@scripts/testbed/venv.sh "$(PYTHON)" "$(VENV)"
	@touch $@

testbed:
	@scripts/testbed/testbed.sh

lint: venv
	@echo "==> lint: yamllint"; $(BIN)/yamllint -s .
	@echo "==> lint: ruff"; $(BIN)/ruff check . && $(BIN)/ruff format --check .
	@echo "==> lint: ansible-lint (production profile, offline)"; PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ansible-lint -q
	@echo "==> lint: generated docs"; $(BIN)/python scripts/gendocs.py --check

docs: venv
	@$(BIN)/python scripts/gendocs.py

collection: venv
	@scripts/collection.sh

sanity: venv
	@scripts/testbed/sanity.sh

test: venv testbed collection
	@$(BIN)/python scripts/run-tests.py $(SCENARIOS)

pytest: venv
	@scripts/testbed/netns.sh $(BIN)/pytest

molecule: venv collection
	@for s in $(SCENARIOS); do PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/molecule test -s $$s; done

# The staging cluster built from nothing, one opt-in test of it, then destroyed:
# $(call cluster_run,ENV=VALUE,PYTEST_K)
define cluster_run
	@export PATH="$(CURDIR)/$(BIN):$$PATH"; rc=0; \
	  molecule destroy -s cluster && molecule converge -s cluster && \
	  $(1) PYTEST_ADDOPTS="-s -k $(2)" molecule verify -s cluster || rc=$$?; \
	  molecule destroy -s cluster; exit $$rc
endef

cluster-upgrade: venv testbed collection
	$(call cluster_run,TRUNKLINE_CLUSTER_UPGRADE=$$(date +%s),rolling_upgrade)

cluster-bench: venv testbed collection
	$(call cluster_run,TRUNKLINE_CLUSTER_BENCH=1,capacity)

lab: venv collection
	@scripts/testbed/testbed.sh --lab
	@PATH="$(CURDIR)/$(BIN):$$PATH" scripts/lab.sh up

lab-down: venv
	@PATH="$(CURDIR)/$(BIN):$$PATH" scripts/lab.sh down

clean: lab-down
	rm -rf $(VENV) .pytest_cache .ruff_cache dist
