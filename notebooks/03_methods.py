# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,language_info,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
#   language_info:
#     codemirror_mode:
#       name: ipython
#       version: 3
#     file_extension: .py
#     mimetype: text/x-python
#     name: python
#     nbconvert_exporter: python
#     pygments_lexer: ipython3
#     version: 3.11.7
# ---

# %% [markdown]
# # 3. Training methods, local Lipschitzness and generalization (Section 5, Tables 2 and 3)
#
# The paper trains one architecture with several methods and measures each the same way:
#
# * **natural** training; **GR**, gradient regularization (finite differences); **LLR**, local linearity
#   regularization; **AT**, adversarial training on PGD points; **TRADES** ($\beta$ = 1, 3, 6); **RST**, robust
#   self-training's loss $\mathrm{CE}(x) + \lambda\,\mathrm{CE}(\mathrm{PGD}(x))$ ($\lambda$ = 0.5, 1, 2);
# * clean and adversarial accuracy (PGD, multi-targeted) on train and test;
# * the **empirical local Lipschitz constant** $\max_{\|x'-x\|_\infty \le \epsilon}
#   \|f(x) - f(x')\|_1 / \|x - x'\|_\infty$, averaged over train and over test;
# * standard and adversarial **generalization gaps** (train minus test accuracy).
#
# Its findings: the methods that are more robust are also smoother (lower local Lipschitz constant), and
# they all generalize worse in the adversarial sense: the robustness they reach on the training set does
# not carry to the test set. The Section 4 classifier is added as one more row.
#
# **Presets.** `quick` trains on a 2,000-image subset for 2 epochs with Adam and evaluates on 100 points per
# split: minutes on 2 CPU cores, enough to see the ordering, not the paper's numbers. `paper` uses the
# reference settings (full splits, SGD, 160 epochs on MNIST): a GPU job. Runs are saved under `runs_dir`;
# a rerun reuses every finished run and evaluation.

# %% tags=["parameters"]
# parameters (papermill overrides these)
dataset = "mnist"
data_dir = None
preset = "quick"          # quick | paper
eps = None                # None: the paper's radius; every run trains, validates and is evaluated at this eps
methods = "paper"         # paper (all ten rows), or a list such as natural,at,trades:beta6,rst:lam0.5
model = None              # None: the paper's architecture (cnn001 on MNIST)
epochs = None             # None: the preset's
n_train = None            # None: the preset's
n_test = None
n_eval = None
include_theory = True     # add the Section 4 classifier as a row
device = "auto"
runs_dir = "../results/runs"
figures_dir = "../figures"
formats = "png,pdf"
interactive = True

# %%
from pathlib import Path

from IPython.display import Markdown, display

from rll_core.data import load_train_test
from rll_core.paper import EPS, dataset_key
from rll_core.plotting import check_formats, plot_gaps, plot_lipschitz_vs_accuracy, save_figure
from rll_core.progress import set_progress
from rll_core.runs import PRESETS, export_table, grid_digest, parse_methods, run_grid, theory_row
from rll_core.storage import output_tag

set_progress("widget" if interactive else "text")
check_formats(formats)
grid = parse_methods(methods)
figures = Path(figures_dir)
eps_run = EPS[dataset_key(dataset)] if eps is None else float(eps)
# output names say what sets this job apart from the preset's default (nothing is overwritten by a subset)
tag = output_tag(eps=eps, n=n_train, e=epochs, m=grid_digest(grid) if methods != "paper" else None)
print(f"{dataset}, eps {eps_run:g}, preset {preset} ({PRESETS[preset]}), {len(grid)} runs: {[m for m, _ in grid]}")

# %% [markdown]
# ## Train and evaluate every method
#
# One progress bar over the grid; each run is resumable from its folder.

# %%
rows = run_grid(runs_dir, dataset=dataset, methods=grid, preset=preset, eps=eps_run, model=model, epochs=epochs,
                n_train=n_train, n_test=n_test, n_eval=n_eval, data_dir=data_dir, device=device, progress=True)
if include_theory:
    p = PRESETS[preset]
    train, test = load_train_test(dataset, data_dir, n_train or p["n_train"], n_test or p["n_test"])
    rows.append(theory_row(train, test, eps_run, n_eval=n_eval or p["n_eval"]))
print(f"{len(rows)} rows")

# %% [markdown]
# ## Tables 2 / 3
#
# Accuracies in [0, 1]; Lipschitz constants in logit units per unit of $\ell_\infty$ input change.
# `test_lipschitz` is rll's estimate (projected *ascent*: a lower bound on the true local constant);
# `test_lipschitz_reference` is the same models measured with the paper's published procedure, which steps
# downhill from a point next to $x$ (fixed step 0.003) and so reports far smaller values: compare the
# paper's Lipschitz column with that one, never with rll's.

# %%
stem = figures / f"table_methods_{dataset}_{preset}{tag}"
written = export_table(rows, stem)
display(Markdown(written[1].read_text()))
print("saved:", ", ".join(str(p) for p in written))

# %% [markdown]
# ## Smoothness against robustness, and the generalization gaps

# %%
fig_lip = plot_lipschitz_vs_accuracy(rows)
fig_gap = plot_gaps(rows)
save_figure(fig_lip, figures / f"fig_lipschitz_vs_pgd_{dataset}_{preset}{tag}", formats)
save_figure(fig_gap, figures / f"fig_gaps_{dataset}_{preset}{tag}", formats)
display(fig_lip, fig_gap)

# %% [markdown]
# ## Explore
#
# Any two columns against each other (live kernel only).

# %%
if interactive:
    from rll_core.widgets import methods_explorer

    display(methods_explorer(rows))
