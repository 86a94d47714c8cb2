# One entry point. `make run` sets up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
# the main job's parameters (papermill -p overrides), e.g. `make run RUN_ARGS="-p n_train 10000"`
RUN_ARGS ?=

.PHONY: setup data run test typecheck bench bench-eval bench-train lab clean

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU build of torch from the local wheel first, so nothing pulls a CUDA build from the index
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[notebooks,dev]"
	touch $@

# Fashion-MNIST (all 70,000 images) from Debian's package: the embedded default dataset.
data:
	@if [ -f "$(FMNIST_DIR)/train-images-idx3-ubyte.gz" ] || [ -n "$$RLL_DATA_DIR" ]; then :; \
	elif command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "installing Debian's dataset-fashion-mnist into $(FMNIST_DIR)"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	else echo "Fashion-MNIST not found in $(FMNIST_DIR): set RLL_DATA_DIR to a folder with its IDX files" >&2; exit 1; fi

# Table 1 and Figure 2 for full Fashion-MNIST, written under figures/.
run: setup
	mkdir -p results/notebooks
	$(BIN)/papermill notebooks/01_separation.ipynb results/notebooks/01_separation.ipynb --cwd notebooks $(RUN_ARGS)
	@echo "figures and table written under figures/"

test: setup
	$(BIN)/python -m pytest -q

typecheck: setup
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/separation.py

bench-eval: setup
	$(BIN)/python benchmarks/evaluation.py

bench-train: setup
	$(BIN)/python benchmarks/training.py

lab: setup
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) results .pytest_cache
