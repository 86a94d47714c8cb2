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
# # 4. Generalization gaps, and dropout narrowing them (Section 5, Tables 2 and 4)
#
# Section 5 ends on two findings. (1) The methods that make a network locally Lipschitz (AT, TRADES, RST, GR,
# LLR) generalize poorly: train accuracy well above test accuracy, and train *adversarial* accuracy further
# above test adversarial accuracy. (2) Dropout narrows those gaps while it improves test accuracy, test
# adversarial accuracy and local Lipschitzness (Table 4). This notebook trains the same methods without and with
# dropout, shows them side by side, and decides each claim by an interval.
#
# **Seeds.** Every model is trained once per seed in `seeds` (a seed draws the training subset, the initial
# weights, the epoch order, the dropout masks and the evaluated test points), and every claim is decided over
# the seeds: the mean of the per-seed estimates with a t interval over them, which covers the seed and the
# evaluated points together (one seed's interval covers the points only; docs/results.md says why and how
# the sizes were chosen). The runs go side by side in `workers` processes of one torch thread each.
#
# **Which preset.** The gaps appear where models fit their training set, as the paper's do after 160 epochs on
# the full splits. `quick` and `long` stop long before (a few epochs, train accuracy 0.9): their gaps are
# inside the noise. `gaps` is the regime where they show on a CPU: a small seeded training subset trained for
# many epochs (see `rll_core.grids.PRESETS`), evaluated with PGD on 500 of its own images and 500 test images
# (`make run PRESET=gaps`).
#
# Dropout placement: on the wide ResNets (CIFAR-10, SVHN) between the two convolutions of each block
# (0.2 / 0.5, the paper's Table 4 rates; CIFAR-10's Table 4 augments both sides, as the reference does); on
# MNIST's cnn001 its own two dropout layers (0.25 after the convolutions, 0.5 before the last layer)
# against none (MNIST is not in the paper's Table 4: an extension). Runs with the default dropout are shared with
# notebook 3 at the same preset (same folders), so they are not trained twice.
#
# Headless: `papermill --log-output notebooks/04_dropout.ipynb out.ipynb -p interactive False -p preset gaps`
# prints one line per trained run, then Table 4, the claims and the files written. Every parameter is checked
# before any work.

# %% tags=["parameters"]
# parameters (papermill overrides these)
dataset = "mnist"         # a paper dataset, or path/to/yours.npz
data_dir = None
preset = "gaps"           # gaps (models that fit their training set, as the paper's) | quick | long | paper
eps = None                # None: the paper's radius for the dataset (training, validation and evaluation)
methods = "natural,at,trades:beta6,rst:lam2"  # Table 4 rows of the paper (SVHN: also TRADES beta 3)
model = None
dropout = None            # None: the paper's Table 4 rate (cnn001 on MNIST: its own two dropout layers)
epochs = None
n_train = None
n_test = None
n_eval = None
seeds = "0,1,2"           # training seeds: each its own training subset, initial weights, evaluated points
workers = None            # runs side by side, one torch thread each; None: one per core (one on a GPU)
device = "auto"
precision = "auto"        # auto: bf16 gradient steps where the CPU/GPU computes bf16 natively (verdicts fp32) | fp32 | bf16
runs_dir = None           # None: the project's results/runs
figures_dir = None        # None: the project's figures/
formats = "png,pdf"
interactive = True

# %%
from rll_core.notebook import notebook_setup, show_figure, show_markdown

P = notebook_setup("04_dropout", globals())  # every parameter checked here, before any work

# %%
from IPython.display import display

from rll_core.data import load_train_test
from rll_core.findings import export_findings, gap_findings
from rll_core.grids import FINDINGS_SEEDS, grid_digest, grid_settings, method_spec, parse_methods, run_grids
from rll_core.paper import table4
from rll_core.plotting import context_line, plot_dropout_comparison, plot_train_vs_test, save_figure
from rll_core.precision import precision_record, resolve_precision
from rll_core.storage import array_digest, check_outputs, output_tag, record_outputs
from rll_core.tables import export_table, pool_seeds

G = grid_settings(P.dataset, preset=P.preset, eps=P.eps, model=P.model, epochs=P.epochs, n_train=P.n_train,
                  n_test=P.n_test, n_eval=P.n_eval)  # the eps, sizes and data every run of the grid gets
t4 = table4(G["reference"])  # the paper's Table 4 rate, and its augmentation on both sides (CIFAR-10)
rate = P.dropout if P.dropout is not None else t4["dropout"]
tag = output_tag(eps=P.eps, n=P.n_train, test=P.n_test, eval=P.n_eval, e=P.epochs, model=P.model, drop=P.dropout,
                 prec=None if P.precision == "auto" else P.precision,
                 seeds=None if tuple(P.seeds) == FINDINGS_SEEDS else "-".join(map(str, P.seeds)),
                 m=None if grid_digest(P.methods) == grid_digest(parse_methods("natural,at,trades:beta6,rst:lam2"))
                 else grid_digest(P.methods))
outputs = f"dropout_{G['dataset']}_{P.preset}{tag}"
train, test = load_train_test(G["data"], P.data_dir, G["n_train"], G["n_test"], G["seed"])
settings = {**G, "methods": [method_spec(m, h) for m, h in P.methods], "seeds": P.seeds, "dropout": rate,
            "augment": t4["augment"],
            "data_digest": array_digest(train.images, train.labels, test.images, test.labels),
            **precision_record(resolve_precision(P.precision, P.device))}
check_outputs(P.figures_dir, outputs, settings)
common = dict(dataset=P.dataset, methods=P.methods, preset=P.preset, eps=P.eps, model=P.model, epochs=P.epochs,
              n_train=P.n_train, n_test=P.n_test, n_eval=P.n_eval, seeds=P.seeds, data_dir=P.data_dir,
              device=P.device, precision=P.precision, progress=True, workers=P.workers)
print(f"{G['dataset']}, preset {P.preset}, methods {[m for m, _ in P.methods]}, seeds {P.seeds}, dropout {rate} "
      "against none")

# %%
# both grids in one: every run goes to the same workers, the longest first
without, with_dropout = run_grids(P.runs_dir, [{"dropout": 0.0, "augment": t4["augment"]},
                                               {"dropout": rate, "augment": t4["augment"]}], **common)
# one row per method: the mean over the seeds with its t interval, and every seed's own value for the figures
pooled_without, pooled_with = pool_seeds(without), pool_seeds(with_dropout)
table = [{**r, "label": r["label"] + suffix} for pair in zip(pooled_without, pooled_with, strict=False)
         for r, suffix in zip(pair, (" no dropout", " + dropout"), strict=False)]

# %% [markdown]
# ## Table 4

# %%
stem = P.figures_dir / f"table_dropout_{G['dataset']}_{P.preset}{tag}"
what = f"dropout rate {rate:g}" if rate is not None else f"{G['model']}'s own dropout"
written = export_table(table, stem, title=f"Table 4 ({P.preset} preset): {what} against none")
show_markdown(written[1].read_text())
print("saved:", ", ".join(str(p) for p in written))

# %%
fig = plot_dropout_comparison(pooled_without, pooled_with)
written += save_figure(fig, P.figures_dir / f"fig_dropout_{G['dataset']}_{P.preset}{tag}", P.formats)
show_figure(fig)

# %% [markdown]
# ## The two findings, claim by claim
#
# Each claim is decided by its 95 % interval. Per seed: Newcombe's for a single gap (as the tables), a paired
# bootstrap over the evaluated points for a comparison of two gaps or two models (the same points, resampled
# together). Over the seeds: the mean of the per-seed estimates with a t interval over them; the table also
# gives each seed's estimate and how many seeds' own intervals hold.
# *holds*: the interval lies above 0; *reversed*: below; *not separated*: it contains 0. In the figure the
# diagonal is "no gap": a model's height above it is its adversarial gap, and the arrow goes from the model
# without dropout to the one with it.

# %%
findings = gap_findings(without, P.runs_dir, with_dropout)
written += export_findings(findings, P.figures_dir / f"findings_{G['dataset']}_{P.preset}{tag}",
                           caption=f"Section 5's findings ({P.preset} preset): {context_line(table)}")
show_markdown(written[-2].read_text())
fig_tt = plot_train_vs_test(pooled_without, pooled_with)
written += save_figure(fig_tt, P.figures_dir / f"fig_train_vs_test_{G['dataset']}_{P.preset}{tag}", P.formats)
record_outputs(P.figures_dir, outputs, settings, written)
show_figure(fig_tt)

# %% [markdown]
# ## Explore
#
# Any two columns of Table 4 against each other (live kernel only).
# If the controls show "model not found" or do not respond (the notebook was reopened or the kernel
# restarted), run the whole notebook again (Run > Run All Cells); this cell alone says so in one line.

# %%
from rll_core.notebook import explorer_ready

if explorer_ready(globals(), "table"):
    from rll_core.widgets import methods_explorer

    display(methods_explorer(table))
