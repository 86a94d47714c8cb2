"""Digests of the package's outputs on a fixed small job, to show a refactoring changed no bit.

Run it before and after a change (``python tools/digests.py > before.json``; with ``PYTHONPATH=<other checkout>``
it measures that checkout's code) and compare the two files: the separation search (Fashion-MNIST subsets,
distances and indices), one seeded epoch of every training method (cnn001 on MNIST, the weights), and an
evaluation (PGD, multi-targeted and both local Lipschitz procedures, every per-example value); with ``--floors`` also
the floors above them on a tiny job (``evaluate_run``, ``robustness_curve``, the Section 4 row, a robustness card).  The same bits
are promised on one machine and build only: another CPU gives other (equally valid) numbers.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from rll_core.data import load_train_test
from rll_core.evaluation import evaluate
from rll_core.lipschitz import local_lipschitz
from rll_core.methods import make_method
from rll_core.models import build_model
from rll_core.separation import nearest_other_class
from rll_core.training import train


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _fp32(fn):
    """``fn`` with ``precision="fp32"`` where it takes one (the fp32 path is the one promised bit-identical; a
    checkout from before the precision policy has only that path)."""
    import functools
    import inspect

    return functools.partial(fn, precision="fp32") if "precision" in inspect.signature(fn).parameters else fn


def _weights(model: torch.nn.Module) -> str:
    return _digest(*[v.detach().cpu().numpy() for v in model.state_dict().values()])


def _numbers(obj: object,
             drop: tuple[str, ...] = ("seconds", "threads", "source", "data_dir", "dataset", "out_dir")) -> str:
    """A stored result's numbers and settings (JSON), less what names the machine's folders or times."""
    def clean(o: object) -> object:
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items() if k not in drop}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, np.ndarray):
            return _digest(o)
        return o
    return hashlib.sha256(json.dumps(clean(obj), sort_keys=True, default=str).encode()).hexdigest()[:16]


def floors(out: dict[str, str]) -> None:
    """The floors above the kernels on a tiny job: a run's evaluation and robustness curve, the Section 4 row and
    a robustness card (fp32, in a temporary folder)."""
    import tempfile

    from rll_core.card import robustness_card
    from rll_core.runs import evaluate_run, robustness_curve, train_run
    from rll_core.section4 import theory_row
    from rll_core.storage import load_npz

    data = Path(__file__).resolve().parents[1] / "data"
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        train_run(run, dataset="mnist", method="at", epochs=1, n_train=256, n_test=64, n_val=32, data_dir=data,
                  device="cpu", progress=False, precision="fp32")
        row = evaluate_run(run, n_eval=32, test_only=("multitarget",), device="cpu", progress=False, precision="fp32")
        kept = {k: v for k, v in row.items() if k not in ("evaluation", "settings")}
        out["evaluate_run"] = _numbers({k: v for k, v in kept.items() if not k.endswith("_se")})
        out["evaluate_run_se"] = _numbers({k: round(v, 6) for k, v in kept.items() if k.endswith("_se")})
        out["evaluate_run_npz"] = _numbers(dict(load_npz(run / row["eval_file"].replace(".json", ".npz"))))
        curve = robustness_curve(run, [0, 0.05, 0.1], n_eval=32, device="cpu", precision="fp32")
        out["robustness_curve"] = _numbers({k: curve[k] for k in ("eps", "accuracy", "n")})
        tr, ts = load_train_test("mnist", data, n_train=300, n_test=64, seed=0)
        trow = theory_row(tr, ts, 0.1, n_eval=8, progress=False)
        out["theory_row"] = _numbers({k: v for k, v in trow.items() if not k.endswith("_se")})
        out["theory_row_se"] = _numbers({k: round(v, 6) for k, v in trow.items() if k.endswith("_se")})
        from rll_core.runs import load_run

        model, _, _ = load_run(run, device="cpu")
        card = robustness_card(model, "mnist", n_eval=32, attacks=("pgd", "multitarget"), data_dir=data, n_train=500,
                               out_dir=Path(tmp) / "cards", cache_dir=Path(tmp) / "cache", device="cpu",
                               precision="fp32", progress=False)
        for stage, numbers in card["stages"].items():
            out[f"card_{stage}"] = _numbers({k: v for k, v in numbers.items() if not k.endswith("_se")})
        out["card_lipschitz_se"] = _numbers({k: v for k, v in card["stages"]["lipschitz"].items() if k.endswith("_se")})
        folder = Path(card["folder"])
        for f in ("verdicts.npz", "lipschitz.npz"):
            out[f"card_{f}"] = _numbers(dict(load_npz(folder / f)))


def main() -> int:
    torch.set_num_threads(2)
    out: dict[str, str] = {}
    ftr, fte = load_train_test("fashion_mnist", n_train=2000, n_test=500, seed=0)
    tt = nearest_other_class(ftr.flat(), ftr.labels)
    te = nearest_other_class(fte.flat(), fte.labels, ftr.flat(), ftr.labels)
    out["separation"] = _digest(tt.raw_distance, tt.index, te.raw_distance, te.index)
    # MNIST from this checkout's data/ (make data), whichever checkout's code runs
    tr, ts = load_train_test("mnist", Path(__file__).resolve().parents[1] / "data", n_train=256, n_test=64, seed=0)
    models = {}
    for name in ("natural", "gr", "llr", "at", "trades", "rst"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model("cnn001", in_channels=1, num_classes=10, image_size=28)
        hyper = {"steps": 2} if name != "natural" and name != "gr" else {}
        method = make_method(name, **({"eps": 0.1} if name not in ("natural", "gr") else {}), **hyper)
        _fp32(train)(model, (tr.images, tr.labels), method, epochs=1, batch_size=64, optimizer="adam", lr=1e-3, seed=0,
              val_data=(ts.images, ts.labels), n_val=32, val_eps=0.1, device="cpu", progress=False)
        out[f"train_{name}"] = _weights(model)
        models[name] = model
    x, y = torch.from_numpy(ts.float_images()), torch.from_numpy(ts.labels)
    r = _fp32(evaluate)(models["at"], x, y, eps=0.1, attacks=("pgd", "multitarget"), seed=0, progress=False)
    out["evaluate"] = _digest(*[r.correct[k] for k in sorted(r.correct)])
    for proc in ("ascent", "reference"):
        lip = _fp32(local_lipschitz)(models["at"], x, eps=0.1, procedure=proc, generator=torch.Generator().manual_seed(0))
        out[f"lipschitz_{proc}"] = _digest(lip.numpy())
    if "--floors" in sys.argv:
        floors(out)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
