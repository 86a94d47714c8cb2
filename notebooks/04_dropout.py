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
#
# Headless: `papermill --log-output notebooks/04_dropout.ipynb out.ipynb -p interactive False` prints one line
# per trained run, then Table 4 and the files written. Every parameter is checked before any work.

# %% tags=["parameters"]
# parameters (papermill overrides these)
dataset = "mnist"         # a paper dataset, or path/to/yours.npz
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
precision = "auto"        # auto: bf16 gradient steps where the CPU/GPU computes bf16 natively (verdicts fp32) | fp32 | bf16
runs_dir = None           # None: the project's results/runs
figures_dir = None        # None: the project's figures/
formats = "png,pdf"
interactive = True

# %%
from rll_core.notebook import notebook_setup

P = notebook_setup("04_dropout", globals())  # every parameter checked here, before any work

# %%
from IPython.display import Markdown, display

from rll_core.data import load_train_test
from rll_core.grids import grid_digest, grid_settings, method_spec, parse_methods, run_grid
from rll_core.paper import table4
from rll_core.plotting import plot_dropout_comparison, save_figure
from rll_core.precision import precision_record, resolve_precision
from rll_core.storage import array_digest, check_outputs, output_tag, record_outputs
from rll_core.tables import export_table

G = grid_settings(P.dataset, preset=P.preset, eps=P.eps, model=P.model, epochs=P.epochs, n_train=P.n_train,
                  n_test=P.n_test, n_eval=P.n_eval)  # the eps, sizes and data every run of the grid gets
t4 = table4(G["reference"])  # the paper's Table 4 rate, and its augmentation on both sides (CIFAR-10)
rate = P.dropout if P.dropout is not None else t4["dropout"]
tag = output_tag(eps=P.eps, n=P.n_train, test=P.n_test, eval=P.n_eval, e=P.epochs, model=P.model, drop=P.dropout,
                 prec=None if P.precision == "auto" else P.precision,
                 m=grid_digest(P.methods) if grid_digest(P.methods) != grid_digest(parse_methods("natural,at,trades:beta6"))
                 else None)
outputs = f"dropout_{G['dataset']}_{P.preset}{tag}"
train, test = load_train_test(G["data"], P.data_dir, G["n_train"], G["n_test"], G["seed"])
settings = {**G, "methods": [method_spec(m, h) for m, h in P.methods], "dropout": rate, "augment": t4["augment"],
            "data_digest": array_digest(train.images, train.labels, test.images, test.labels),
            **precision_record(resolve_precision(P.precision, P.device))}
check_outputs(P.figures_dir, outputs, settings)
common = dict(dataset=P.dataset, methods=P.methods, preset=P.preset, eps=P.eps, model=P.model, augment=t4["augment"],
              epochs=P.epochs, n_train=P.n_train, n_test=P.n_test, n_eval=P.n_eval, data_dir=P.data_dir,
              device=P.device, precision=P.precision, progress=True)
print(f"{G['dataset']}, preset {P.preset}, methods {[m for m, _ in P.methods]}, dropout {rate} against none")

# %%
without = run_grid(P.runs_dir, dropout=0.0, **common)
with_dropout = run_grid(P.runs_dir, dropout=rate, **common)
table = [{**r, "label": r["label"] + suffix} for pair in zip(without, with_dropout, strict=False)
         for r, suffix in zip(pair, (" no dropout", " + dropout"), strict=False)]

# %% [markdown]
# ## Table 4

# %%
stem = P.figures_dir / f"table_dropout_{G['dataset']}_{P.preset}{tag}"
what = f"dropout rate {rate:g}" if rate is not None else f"{G['model']}'s own dropout"
written = export_table(table, stem, title=f"Table 4 ({P.preset} preset): {what} against none")
display(Markdown(written[1].read_text()))
print("saved:", ", ".join(str(p) for p in written))

# %%
fig = plot_dropout_comparison(without, with_dropout)
written += save_figure(fig, P.figures_dir / f"fig_dropout_{G['dataset']}_{P.preset}{tag}", P.formats)
record_outputs(P.figures_dir, outputs, settings, written)
display(fig)

# %% [markdown]
# ## Explore
#
# Any two columns of Table 4 against each other (live kernel only).
# If the controls show "model not found" or do not respond (the notebook was reopened or the kernel
# restarted), run this cell again.

# %%
if P.interactive:
    from rll_core.widgets import methods_explorer

    display(methods_explorer(table))
