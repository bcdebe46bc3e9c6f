# MIG Lab — `make help` lists the targets.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
PYTEST := $(VENV)/bin/pytest
# Fast suite: everything not marked slow, in under ~15 minutes on 2 CPU cores.
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup snapshot test test-slow test-reliability test-all lint format smoke bench gpu-check clean reproduce-table9 mirg reproduce-mirg-tables migician reproduce-migician-tables

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2}'

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

setup: $(VENV)/bin/activate ## Create .venv and install the project with the pinned CPU constraints
	$(PIP) install --quiet --upgrade "pip>=24"
	$(PIP) install --quiet -c constraints.txt -e ".[dev]"
	@$(PY) -c "import torch, torchvision, transformers; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| transformers', transformers.__version__)"

test: ## Fast test suite (not slow)
	$(PYTEST) -m "not slow" -q $(PYTEST_ARGS)

test-slow: ## Slow tests only (minutes-long CPU training runs)
	$(PYTEST) -m slow -q $(PYTEST_ARGS)

test-reliability: ## The reliability suite (~10 min): 100,000 fuzzed model outputs, kill -9 of runs and of checkpoint writes, bad inputs, concurrent runs
	$(PYTEST) -m reliability -q $(PYTEST_ARGS)

test-all: ## Every test
	$(PYTEST) -q $(PYTEST_ARGS)

lint: ## ruff check
	$(VENV)/bin/ruff check .

format: ## ruff format + import sort
	$(VENV)/bin/ruff check --fix --select I .
	$(VENV)/bin/ruff format .

smoke: ## The end-to-end slice on the embedded default
	$(PY) run.py experiment=smoke

mirg: ## MIRG-RL end to end: trajectory SFT + image-aware GRPO, ten-task table beside the paper's Table 1
	$(PY) run.py experiment=mirg_rl_full

reproduce-mirg-tables: ## mirg_rl Tables 1-3 on the embedded default (they share mirg's stages)
	$(PY) run.py experiment=mirg_table1 && $(PY) run.py experiment=mirg_table2 && $(PY) run.py experiment=mirg_table3

migician: ## Migician end to end: stage 1 -> stage 2 -> merge -> ten-task table beside the paper's Table 1
	$(PY) run.py experiment=migician

reproduce-migician-tables: ## migician Tables 1, 5, 6, 7, 9, 10 on the embedded default (shared stages run once)
	for t in 1 5 7 10 6 9; do $(PY) run.py experiment=migician_table$$t || exit 1; done

reproduce-table9: ## coldstart_rl Table 9 (ablations) end to end on the embedded default, beside the paper's
	$(PY) run.py experiment=coldstart_table9

gpu-check: ## On a GPU machine only: FSDP SFT + GRPO on a random 2B-size Qwen2-VL in bf16-mixed, exports reloaded
	PY=$(PY) bash scripts/gpu_check.sh

bench: ## Benchmarks (ratios against peers measured in the same run; installs the bench extra: TRL, matplotlib)
	$(PIP) install --quiet -c constraints.txt -e ".[bench]"
	$(PY) -m benchmarks

clean: ## Remove outputs (stage cache included)
	rm -rf outputs multirun wandb

snapshot: ## Rewrite tests/snapshots/experiments.json (every experiment's plan) on purpose; review its diff
	$(PY) -m tests.experiment_snapshot --write
