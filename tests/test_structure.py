"""The package's shape (public face, true __all__, short functions) and the paths no other test covered."""

from __future__ import annotations

import ast
import importlib
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rll_core
from rll_core.attacks import pgd, predict
from rll_core.data import load_restricted_imagenet
from rll_core.methods import AT, TRADES, Natural
from rll_core.runs import evaluate_run, train_run
from rll_core.separation import measure_separation
from rll_core.training import RunMismatch, train
from tests.conftest import brute_nearest_other

PACKAGE = pathlib.Path(rll_core.__file__).parent
#: every module, dotted below rll_core (``separation.search``); a subpackage's ``__init__`` is the package
MODULES = sorted(".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
                 for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def _source(module: str) -> str:
    path = PACKAGE.joinpath(*module.split("."))
    return (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text()


def test_the_public_face_is_importable_from_rll_core_and_cheap():
    for name in rll_core.__all__:
        assert getattr(rll_core, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rll_core.nope  # noqa: B018
    code = "import sys, rll_core; print(sorted(m for m in ('torch', 'numba') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # importing the package loads neither torch nor numba


@pytest.mark.parametrize("module", MODULES)
def test_every_all_is_true(module):
    mod = importlib.import_module(f"rll_core.{module}")
    names = getattr(mod, "__all__", None)
    if names is None:
        assert module.rpartition(".")[2].startswith("_") or module == "cli", f"{module} has no __all__"
        return
    for name in names:
        assert hasattr(mod, name), f"{module}.__all__ lists {name}, which it does not define"
    tree = ast.parse(_source(module))
    public = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")}
    assert public <= set(names), f"{module} defines public {sorted(public - set(names))} outside __all__"


def test_no_function_over_sixty_lines_but_the_numba_kernels():
    long = []
    for module in MODULES:
        for node in ast.walk(ast.parse(_source(module))):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 60:
                if not any("njit" in ast.unparse(d) for d in node.decorator_list):
                    long.append(f"{module}.{node.name}")
    assert long == []


def test_no_private_imports_across_modules():
    for module in MODULES:
        tree = ast.parse(_source(module))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level >= 1 and node.module not in ("_kernels", "_triton"):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                assert not private, f"{module} imports {private} from {node.module}"


# ----------------------------------------------------------------------------------------------
# attacks and losses: assertions that can fail


def test_targeted_pgd_reaches_the_target_of_a_linear_classifier():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 3))  # z_c = 10 x_c: class c wins where pixel c is brightest
    with torch.no_grad():
        model[1].weight.copy_(10 * torch.eye(3))
        model[1].bias.zero_()
    x = torch.rand(40, 1, 1, 3, generator=torch.Generator().manual_seed(0))
    target = (predict(model, x) + 1) % 3
    far = pgd(model, x, target, eps=1.0, step_size=0.1, steps=40, targeted=True, random_start=False)
    assert bool((predict(model, far) == target).all())
    # descending the cross-entropy of the target: it never ends above where it started
    ce = F.cross_entropy(model(x), target, reduction="none")
    near = pgd(model, x, target, eps=0.05, step_size=0.01, steps=5, targeted=True, random_start=False)
    assert bool((F.cross_entropy(model(near), target, reduction="none") <= ce + 1e-6).all())


def test_at_loss_is_the_cross_entropy_at_pgds_point_from_the_same_draws():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 10, (8,))
    torch.manual_seed(5)
    loss = AT(eps=0.1, steps=3)(model, x, y)
    g = torch.Generator().manual_seed(5)
    x_adv = pgd(model, x, y, eps=0.1, step_size=2 * 0.1 / 3, steps=3, generator=g)
    assert loss.item() == pytest.approx(F.cross_entropy(model(x_adv), y).item(), rel=1e-6)


def test_trades_loss_is_linear_in_beta_for_one_inner_search():
    """The inner search does not depend on beta, so CE + beta KL is affine in beta: a wrong scaling, or a
    search that used beta, breaks it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 10, (8,))
    values = {}
    for beta in (0.0, 3.0, 6.0):
        torch.manual_seed(1)
        values[beta] = TRADES(eps=0.1, beta=beta, steps=3)(model, x, y).item()
    assert values[0.0] == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)
    assert values[6.0] - values[0.0] == pytest.approx(2 * (values[3.0] - values[0.0]), rel=1e-5)
    assert values[6.0] > values[0.0]


# ----------------------------------------------------------------------------------------------
# the loop


def _data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _conv(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_train_takes_a_plain_loss_function_and_leaves_the_global_rng_alone():
    def smooth_ce(model, x, y):
        return F.cross_entropy(model(x), y, label_smoothing=0.1)

    model, data = _conv(), _data()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    res = train(model, data, smooth_ce, epochs=1, batch_size=8, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    assert res.settings["method"] == "smooth_ce"
    with pytest.raises(ValueError, match="loss callable"):
        train(_conv(), _data(), "natural", epochs=1, progress=False)  # type: ignore[arg-type]


def test_channels_last_gives_the_same_weights_and_bf16_stays_close():
    x, y = _data(64)
    plain, nhwc, bf16 = _conv(), _conv(), _conv()
    kw = dict(epochs=1, batch_size=16, optimizer="adam", lr=1e-2, progress=False, device="cpu")
    train(plain, (x, y), Natural(), **kw)
    train(nhwc, (x, y), Natural(), channels_last=True, **kw)
    r = train(bf16, (x, y), Natural(), amp=True, **kw)
    assert r.settings["amp"] is True
    for (k, a), b, c in zip(plain.state_dict().items(), nhwc.state_dict().values(), bf16.state_dict().values(),
                            strict=True):
        assert torch.allclose(a, b, atol=1e-5), k
        assert torch.allclose(a, c, atol=0.05), k  # bf16 rounds; 4 Adam steps stay near the float32 ones
        assert not torch.equal(a, c), k  # and it did run in bf16


# ----------------------------------------------------------------------------------------------
# runs


def test_best_checkpoint_and_the_data_digest_refusal(tmp_path, own_npz):
    kw = dict(dataset=str(own_npz), epochs=2, batch_size=16, optimizer="adam", lr=1e-3, n_val=8, device="cpu",
              progress=False)
    for m in ("natural", "at"):
        train_run(tmp_path / "runs" / m, method=m, hyper={"steps": 1} if m == "at" else None, **kw)
    best = evaluate_run(tmp_path / "runs" / "at", checkpoint="best", n_eval=8, attacks=("pgd",), device="cpu",
                        progress=False)
    hist = json.loads((tmp_path / "runs" / "at" / "history.json").read_text())["history"]
    assert best["epoch"] == max(hist, key=lambda h: h["val_pgd_accuracy"])["epoch"]  # first of the best
    nat = evaluate_run(tmp_path / "runs" / "natural", n_eval=8, attacks=("pgd",), device="cpu", progress=False)
    assert (best["method"], nat["method"]) == ("at", "natural")
    assert best["hyper"]["steps"] == 1 and "step_size" in best["hyper"]  # every field of the method, steps included
    # the data changed under the run: evaluation is refused
    z = dict(np.load(own_npz))
    z["images"] = z["images"][::-1].copy()
    np.savez(own_npz, **z)
    with pytest.raises(RunMismatch, match="differs from the data"):
        evaluate_run(tmp_path / "runs" / "natural", n_eval=4, attacks=("pgd",), device="cpu", progress=False)


# ----------------------------------------------------------------------------------------------
# data and separation


def test_restricted_imagenet_merges_folders_at_64_px(tmp_path):
    from PIL import Image

    root = tmp_path / "train"
    for i in range(1000):
        (root / f"n{i:08d}").mkdir(parents=True)
    for i, color in ((151, 10), (268, 20), (281, 30), (30, 40), (0, 50), (999, 60)):  # dog, dog, cat, frog, -, -
        Image.new("RGB", (120, 90), (color, 0, 0)).save(root / f"n{i:08d}" / "a.JPEG")
    ds = load_restricted_imagenet(tmp_path, "train")
    assert ds.images.shape == (4, 3, 64, 64) and ds.classes[:3] == ("dog", "cat", "frog")
    assert ds.labels.tolist() == [2, 0, 0, 1]  # folder order: 30 (frog), 151, 268 (dog), 281 (cat)
    assert ds.images[:, 0, 32, 32].tolist() == [40, 10, 20, 30]


def test_measure_separation_without_a_test_set(fmnist):
    train_set = fmnist[0].subset(600, seed=3)
    res = measure_separation(train_set, None, device="cpu")
    assert res.test_train is None and res.report.test_train is None and res.report.n_test == 0
    d, _ = brute_nearest_other(train_set.flat(), train_set.labels, train_set.flat(), train_set.labels)
    assert res.report.train_train.min == pytest.approx(d.min() / 255)


def test_a_plot_keeps_a_figure_the_caller_passed_open():
    import matplotlib.pyplot as plt

    from rll_core.plotting import plot_gaps

    fig, ax = plt.subplots()
    rows = [{"label": "a", "gap_standard": 0.1, "gap_adversarial": 0.2}]
    assert plot_gaps(rows, ax=ax) is fig
    assert fig.number in plt.get_fignums()
    own = plot_gaps(rows)
    assert own.number not in plt.get_fignums()  # its own figure is closed, returned for saving
    plt.close(fig)


def test_a_grid_runs_on_an_npz_of_your_own(tmp_path, own_npz):
    from rll_core.grids import run_grid

    rows = run_grid(tmp_path / "runs", dataset=str(own_npz), methods=[("natural", {})], epochs=1, n_eval=8,
                    device="cpu", progress=False)
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("own-cnn001-natural-eps0.1-n2000-e1-s0-quick")
    assert rows[0]["dataset"] == str(own_npz.resolve()) and rows[0]["test_n"] == 8
