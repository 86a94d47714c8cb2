"""Write notebooks/01_separation.ipynb (kept as a script so the notebook's source is reviewable)."""

from pathlib import Path

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell


def params(src: str) -> nbf.NotebookNode:
    c = code(src)
    c.metadata["tags"] = ["parameters"]
    return c


sep = nbf.v4.new_notebook()
sep.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
sep.cells = [
    md("""# 1. Real image datasets are r-separated (Table 1, Figure 2)

Yang et al., *A Closer Look at Accuracy vs. Robustness* (NeurIPS 2020), Section 3.

A labelled dataset is **r-separated** in a norm if any two points of *different* classes are at distance
at least $2r$. The paper measures, in $\\ell_\\infty$ on the $[0,1]$ pixel scale:

* **train-train**: for every training point, the distance to the nearest training point of another class;
  the minimum over the training set is $2r$.
* **test-train**: for every test point, the distance to the nearest training point of another class.

and compares both with $2\\epsilon$, where $\\epsilon$ is the usual adversarial radius (0.1 for MNIST-like
data, 0.031 for CIFAR-10 / SVHN). If $r \\ge \\epsilon$, Theorem 4.2 says a classifier with perfect robust
accuracy at radius $\\epsilon$ exists: the accuracy-robustness trade-off is not forced by the data.

All computation lives in `rll_core.separation` (exact search, uint8 pixels, cached on disk); this notebook
only drives it and draws the results. Run headless with
`papermill notebooks/01_separation.ipynb out.ipynb -p n_train 5000`."""),
    params("""# parameters (papermill overrides these)
dataset = "fashion_mnist"   # mnist | fashion_mnist | cifar10 | svhn | restricted_imagenet
data_dir = None             # None: $RLL_DATA_DIR, else (Fashion-MNIST) Debian's dataset-fashion-mnist
n_train = None              # None: the whole training split; an int: a seeded random subset
n_test = None
subset_seed = 0
eps = None                  # None: the paper's eps for the dataset
device = "auto"             # auto | cpu | cuda
backend = "auto"            # auto | numba | torch | triton
cache_dir = "../results/cache"
figures_dir = "../figures"
formats = "png,pdf"          # comma-separated: png, pdf, svg
widgets = True              # build the interactive explorer at the end"""),
    code("""import time
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from rll_core.data import DEFAULT_EPS, load_train_test
from rll_core.plotting import export_separation, plot_separation_histograms
from rll_core.separation import measure_separation, resolve_device

figures = Path(figures_dir)
figures.mkdir(parents=True, exist_ok=True)
train, test = load_train_test(dataset, data_dir, n_train, n_test, seed=subset_seed)
eps_used = DEFAULT_EPS[train.name] if eps is None else float(eps)
dev = resolve_device(device)
print(f"{train.name}: {len(train)} train / {len(test)} test images of shape {train.shape}; "
      f"eps = {eps_used}; device = {dev}")"""),
    md("""## Nearest other-class distances

Exact search over all pairs (train-train is $n^2$ pairs). Results are cached under `cache_dir`,
keyed by a digest of the data, so a rerun is instant and an interrupted run resumes."""),
    code("""t0 = time.perf_counter()
result = measure_separation(train, test, eps_used, device=dev, backend=backend, cache_dir=cache_dir,
                            progress=True)
print(f"done in {time.perf_counter() - t0:.1f} s")
rep = result.report"""),
    md("""## Table 1

`train_train_min` is $2r$; the data is r-separated with $r \\ge \\epsilon$ when it is at least $2\\epsilon$.
`frac_test_within_2eps` is the fraction of test points closer than $2\\epsilon$ to a training point of
another class."""),
    code("""fig = plot_separation_histograms(result, title=f"{train.name}: nearest other-class distance")
plt.close(fig)  # shown below, under Figure 2
written = export_separation(result, figures, formats, fig=fig)
display(Markdown(written["tables"][1].read_text()))
verdict = "is" if rep.r_separation >= rep.eps else "is NOT"
print(f"r = {rep.r_separation:.4f}: the {train.name} training set {verdict} r-separated at eps = {rep.eps}")
print("train-train percentiles:", {k: round(v, 4) for k, v in rep.train_train.percentiles.items()})
if rep.test_train is not None:
    print("test-train percentiles: ", {k: round(v, 4) for k, v in rep.test_train.percentiles.items()})"""),
    md("""## Figure 2

Histograms of the nearest other-class distances, with $2\\epsilon$ dashed (saved above with the table as
`fig2_separation_<dataset>.<fmt>`). Both distributions sit well to the right of $2\\epsilon$ for real
datasets."""),
    code("""display(fig)
print("saved:", ", ".join(str(p) for p in written["figures"]))"""),
    md("""## Explore

Pick a dataset (those whose files are found), a split and $\\epsilon$ to see how many points fall within
$2\\epsilon$ of another class. Another dataset is measured with this notebook's subset sizes, and cached.
(Widgets need a live kernel in JupyterLab; headless runs just build them.)"""),
    code("""if widgets:
    import ipywidgets as W

    from rll_core.data import DATASETS, DataError, load_dataset
    from rll_core.plotting import histogram_edges

    def loadable(name):
        try:
            load_dataset(name, data_dir if name == train.name else None, split="train")
            return True
        except (DataError, ValueError):
            return False

    results = {train.name: result}

    def result_for(name):
        if name not in results:
            tr, te = load_train_test(name, None, n_train, n_test, seed=subset_seed)
            results[name] = measure_separation(tr, te, device=dev, backend=backend, cache_dir=cache_dir)
        return results[name]

    out = W.Output()
    data_pick = W.Dropdown(options=[n for n in DATASETS if n == train.name or loadable(n)], value=train.name,
                           description="dataset")
    eps_slider = W.FloatSlider(value=eps_used, min=0.0, max=0.5, step=0.001, readout_format=".3f",
                               description="eps")
    split_pick = W.ToggleButtons(options=["train-train", "test-train"], description="split")

    def redraw(*_):
        res = result_for(data_pick.value)
        nn = res.train_train if split_pick.value == "train-train" or res.test_train is None else res.test_train
        d = nn.dist
        with out:
            out.clear_output(wait=True)
            f, ax = plt.subplots(figsize=(5, 3))
            ax.hist(d, bins=histogram_edges(max(d.max(), 2 * eps_slider.value), 50, nn.scale), color="tab:blue")
            ax.axvline(2 * eps_slider.value, color="tab:red", linestyle="--")
            ax.set_xlabel("distance to nearest other-class training point")
            ax.set_title(f"{data_pick.value} {split_pick.value}: "
                         f"{(d < 2 * eps_slider.value).mean():.2%} within 2 eps")
            plt.show(f)

    for w in (data_pick, eps_slider, split_pick):
        w.observe(redraw, "value")
    redraw()
    display(W.VBox([W.HBox([data_pick, split_pick]), eps_slider, out]))"""),
]

out = Path(__file__).resolve().parents[1] / "notebooks" / "01_separation.ipynb"
nbf.write(sep, out)
print("wrote", out)
