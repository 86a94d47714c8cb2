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
# # 4. Dropout narrows the generalization gap (Section 5, Table 4)
#
# The paper adds dropout to the robust training methods and finds that it lowers the local Lipschitz
# constant and improves test robustness, i.e. it narrows the adversarial generalization gap of Tables 2-3.
# This notebook trains the same methods without and with dropout and shows them side by side.
#
# Dropout placement: on the wide ResNets (CIFAR-10, SVHN) between the two convolutions of each block
# (0.2 / 0.5, the paper's Table 4 rates; CIFAR-10's Table 4 augments both sides, as the reference does); on
# MNIST's cnn001 its own two dropout layers (0.25 after the convolutions, 0.5 before the last layer)
# against none (MNIST is not in the paper's Table 4: an extension). Runs with the default dropout are shared with notebook 3 (same
# folders), so they are not trained twice. Presets as in notebook 3.

# %% tags=["parameters"]
# parameters (papermill overrides these)
dataset = "mnist"
data_dir = None
preset = "quick"          # quick | long | paper
eps = None                # None: the paper's radius for the dataset (training, validation and evaluation)
methods = "natural,at,trades:beta6"
model = None
dropout = None            # None: the paper's Table 4 rate (cnn001 on MNIST: its own two dropout layers)
epochs = None
n_train = None
n_test = None
n_eval = None
device = "auto"
runs_dir = "../results/runs"
figures_dir = "../figures"
formats = "png,pdf"
interactive = True

# %%
from pathlib import Path

from IPython.display import Markdown, display

from rll_core.paper import table4
from rll_core.plotting import check_formats, plot_dropout_comparison, save_figure
from rll_core.progress import set_progress
from rll_core.runs import grid_digest, parse_methods, run_grid
from rll_core.storage import output_tag
from rll_core.tables import export_table

set_progress("text")  # plain bars: live in JupyterLab, clean in a saved or headless notebook
check_formats(formats)
grid = parse_methods(methods)
figures = Path(figures_dir)
tag = output_tag(eps=eps, n=n_train, e=epochs, drop=dropout,
                 m=grid_digest(grid) if methods != "natural,at,trades:beta6" else None)
t4 = table4(dataset)  # the paper's Table 4 rate, and its augmentation on both sides (CIFAR-10)
rate = dropout if dropout is not None else t4["dropout"]
common = dict(dataset=dataset, methods=grid, preset=preset, eps=eps, model=model, augment=t4["augment"],
              epochs=epochs, n_train=n_train, n_test=n_test, n_eval=n_eval, data_dir=data_dir, device=device,
              progress=True)
print(f"{dataset}, preset {preset}, methods {[m for m, _ in grid]}")

# %%
without = run_grid(runs_dir, dropout=0.0, **common)
with_dropout = run_grid(runs_dir, dropout=rate, **common)
table = [{**r, "label": r["label"] + suffix} for pair in zip(without, with_dropout, strict=False)
         for r, suffix in zip(pair, (" no dropout", " + dropout"), strict=False)]

# %% [markdown]
# ## Table 4

# %%
stem = figures / f"table_dropout_{dataset}_{preset}{tag}"
what = f"dropout rate {rate:g}" if rate is not None else f"{model or 'the architecture'}'s own dropout"
written = export_table(table, stem, title=f"Table 4 ({preset} preset): {what} against none")
display(Markdown(written[1].read_text()))
print("saved:", ", ".join(str(p) for p in written))

# %%
fig = plot_dropout_comparison(without, with_dropout)
save_figure(fig, figures / f"fig_dropout_{dataset}_{preset}{tag}", formats)
display(fig)

# %% [markdown]
# ## Explore
#
# Any two columns of Table 4 against each other (live kernel only).
# If the controls show "model not found" or do not respond (the notebook was reopened or the kernel
# restarted), run this cell again.

# %%
if interactive:
    from rll_core.widgets import methods_explorer

    display(methods_explorer(table))
