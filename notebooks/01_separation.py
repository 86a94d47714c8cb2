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
# # 1. Real image datasets are r-separated (Section 3, Table 1, Figure 2)
#
# Yang et al., *A Closer Look at Accuracy vs. Robustness* (NeurIPS 2020), Section 3.
#
# A labelled dataset is **r-separated** in a norm if any two points of *different* classes are at distance
# at least $2r$. The paper measures, in $\ell_\infty$ on the $[0,1]$ pixel scale:
#
# * **train-train**: for every training point, the distance to the nearest training point of another class;
#   the minimum over the training set is $2r$.
# * **test-train**: for every test point, the distance to the nearest training point of another class.
#
# and compares both with $2\epsilon$, where $\epsilon$ is the usual adversarial radius (0.1 for MNIST-like
# data, 0.031 for CIFAR-10 / SVHN). If $r \ge \epsilon$, Theorem 4.2 says a classifier with perfect robust
# accuracy at radius $\epsilon$ exists: the accuracy-robustness trade-off is not forced by the data.
#
# All computation lives in `rll_core.separation` (exact search, uint8 pixels, cached on disk); this notebook
# only drives it and draws the results. Headless, from the project folder (or anywhere: the outputs go to the
# project's `figures/` and `results/cache/` unless `figures_dir` / `cache_dir` say otherwise):
# `papermill --log-output notebooks/01_separation.ipynb out.ipynb -p dataset fashion_mnist -p interactive False`
# (`--log-output` prints each cell's lines as they come: the search's progress, Table 1, the files written).
# Every parameter is checked before any work; a bad one stops the notebook with one line naming it.

# %% tags=["parameters"]
# parameters (papermill overrides these)
dataset = "mnist"           # mnist | fashion_mnist | cifar10 | svhn | restricted_imagenet | path/to/yours.npz
data_dir = None             # None: $RLL_DATA_DIR, else the installed default (make data)
n_train = None              # None: the whole training split; an int: a seeded random subset
n_test = None
subset_seed = 0
eps = None                  # None: the paper's eps for the dataset
device = "auto"             # auto | cpu | cuda
backend = "auto"            # auto | numba | torch | triton
cache_dir = None            # None: the project's results/cache
figures_dir = None          # None: the project's figures/
formats = "png,pdf"         # comma-separated: png, pdf, svg
n_pairs = 16                # the closest cross-class pairs shown in the audit gallery
filter_distance = None      # None: no filter; a number: drop the pairs closer than it and save the rest
interactive = True          # the explorer at the end (False skips it)

# %%
from rll_core.notebook import notebook_setup, show_figure, show_markdown

P = notebook_setup("01_separation", globals())  # every parameter checked here, before any work

# %%
import time

from IPython.display import display

from rll_core.data import DATASETS, dataset_available, load_train_test
from rll_core.paper import display_name, eps_for
from rll_core.plotting import export_separation, plot_separation_histograms, separation_outputs, separation_tag
from rll_core.separation import measure_separation, separation_settings
from rll_core.storage import check_outputs, record_outputs

train, test = load_train_test(P.dataset, P.data_dir, P.n_train, P.n_test, seed=P.subset_seed)
eps_used = eps_for(train) if P.eps is None else P.eps
# outputs named by what sets them apart from the full-data default (a subset never overwrites it), and refused
# where they hold the result of other data or settings
tag = separation_tag(P.n_train, P.n_test, P.subset_seed, P.eps)
settings = separation_settings(train, test, P.eps)
audit_settings = {**settings, "n_pairs": P.n_pairs}
check_outputs(P.figures_dir, separation_outputs(train.name, tag), settings)
check_outputs(P.figures_dir, f"audit_{train.name}{tag}", audit_settings)
print(f"{train.name}: {len(train)} train / {len(test)} test images of shape {train.shape}; "
      f"eps = {eps_used}; device = {P.device}")

# %% [markdown]
# ## Nearest other-class distances
#
# Exact search over all pairs (train-train is $n^2$ pairs). Results are cached under `cache_dir`,
# keyed by a digest of the data, so a rerun is instant and an interrupted run resumes.

# %%
t0 = time.perf_counter()
result = measure_separation(train, test, eps_used, device=P.device, backend=P.backend, cache_dir=P.cache_dir,
                            progress=True)
print("read from the cache" if result.cached else "measured", f"in {time.perf_counter() - t0:.1f} s")
rep = result.report

# %% [markdown]
# ## Table 1
#
# The train-train minimum is $2r$; the data is r-separated with $r \ge \epsilon$ when it is at least $2\epsilon$.
# "test points within 2ε" is the fraction of test points closer than $2\epsilon$ to a training point of
# another class.

# %%
fig = plot_separation_histograms(result, title=f"{display_name(train.name)}: nearest other-class distance")
written = export_separation(result, P.figures_dir, P.formats, fig=fig, tag=tag, settings=settings)
show_markdown(written["tables"][1].read_text())
verdict = "is" if rep.r_separation >= rep.eps else "is NOT"
print(f"r = {rep.r_separation:.4f}: the {train.name} training set {verdict} r-separated at eps = {rep.eps}")
pct = [rep.train_train] + ([rep.test_train] if rep.test_train is not None else [])
show_markdown("| percentile | " + " | ".join(f"{p:g}" for p in rep.train_train.percentiles) + " |\n|---|"
              + "---|" * len(rep.train_train.percentiles) + "\n" + "\n".join(
                  f"| {name} | " + " | ".join(f"{v:.3f}" for v in s.percentiles.values()) + " |"
                  for name, s in zip(("train-train", "test-train"), pct, strict=False)))

# %% [markdown]
# ## Figure 2
#
# Histograms of the nearest other-class distances, with $2\epsilon$ dashed (saved with the table as
# `fig2_separation_<dataset>.<fmt>`). Both distributions sit well to the right of $2\epsilon$ for real
# datasets.

# %%
display(fig)
print("saved:", ", ".join(str(p) for p in written["figures"]))

# %% [markdown]
# ## Audit: where the data is least separated
#
# The closest cross-class pairs (train-train and test-train), straight from the search's own indices:
# near-duplicates with different labels, or genuinely ambiguous images. Then, for the points of each class,
# the class of their nearest other-class training point and the smallest such distance: the red cell is
# the pair of classes that bounds $r$.

# %%
from rll_core.audit import class_matrix, closest_pairs, filter_close_pairs
from rll_core.plotting import plot_class_matrix, plot_pair_gallery, save_figure

name = display_name(train.name)
audit_files = []
pairs_tt = closest_pairs(result.train_train, train.labels, train.labels, k=P.n_pairs, self_search=True)
fig_tt = plot_pair_gallery(pairs_tt, train, train, title=f"{name}: the {len(pairs_tt)} closest train-train pairs "
                           "of different classes (L-inf distance d)")
audit_files += save_figure(fig_tt, P.figures_dir / f"fig_audit_pairs_train_{train.name}{tag}", P.formats)
display(fig_tt)
if result.test_train is not None:
    pairs_te = closest_pairs(result.test_train, test.labels, train.labels, k=P.n_pairs, self_search=False)
    fig_te = plot_pair_gallery(pairs_te, test, train, title=f"{name}: the {len(pairs_te)} test points closest to a "
                               "training point of another class")
    audit_files += save_figure(fig_te, P.figures_dir / f"fig_audit_pairs_test_{train.name}{tag}", P.formats)
    display(fig_te)
cm = class_matrix(result.train_train, train.labels, train.labels, len(train.classes) or None)
fig_cm = plot_class_matrix(cm, train.classes, title=f"{name} training set: smallest distance between two classes")
audit_files += save_figure(fig_cm, P.figures_dir / f"fig_audit_classes_{train.name}{tag}", P.formats)
record_outputs(P.figures_dir, f"audit_{train.name}{tag}", audit_settings, audit_files)
show_figure(fig_cm)  # with its caption: what rows, columns, red and blank cells are

# %% [markdown]
# ### Filtering close pairs
#
# With `filter_distance` set, both points of every cross-class pair closer than it are dropped and the
# search repeated until the rest is separated at that distance (the paper removed duplicates from SVHN and
# Restricted ImageNet by hand). The kept set is saved as an `.npz` a training run can use
# (`rll train --dataset <file>`), with the dropped indices and the settings beside it.

# %%
if P.filter_distance is not None:
    from rll_core.audit import save_filtered

    filtered = filter_close_pairs(train, P.filter_distance, device=P.device, backend=P.backend, cache_dir=P.cache_dir,
                                  progress=True)
    path = save_filtered(filtered, P.cache_dir / f"{train.name}{tag}-filtered{P.filter_distance:g}.npz", test)
    print(f"dropped {len(filtered.dropped)} of {len(train)} training points in {filtered.rounds} round(s): "
          f"r {filtered.r_before:.4f} -> {filtered.r_after:.4f}; saved {path} (+ .json)")

# %% [markdown]
# ## Explore
#
# Move $\epsilon$, switch the split, or pick another installed dataset (measured with this notebook's subset
# sizes, and cached). Needs a live kernel.
# If the controls show "model not found" or do not respond (the notebook was reopened or the kernel
# restarted), run the whole notebook again (Run > Run All Cells); this cell alone says so in one line.

# %%
from rll_core.notebook import explorer_ready

if explorer_ready(globals(), "result", "eps_used"):
    from rll_core.widgets import separation_explorer

    def measure(name):
        tr, te = load_train_test(name, None, P.n_train, P.n_test, seed=P.subset_seed)
        return measure_separation(tr, te, device=P.device, backend=P.backend, cache_dir=P.cache_dir)

    display(separation_explorer(result, load=measure, datasets=[n for n in DATASETS if dataset_available(n)],
                                eps=eps_used))
