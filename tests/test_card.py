"""The robustness card: every model format read to the same network, bad files refused in one line before any
attack, the card's numbers equal to evaluate and local_lipschitz called directly, resumable, never replaced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import rll_core.measure as measure
from rll_core.card import (
    ModelLoadError,
    Normalized,
    card_rows,
    check_fits,
    load_model,
    make_card,
    model_digest,
    robustness_card,
    write_card,
)
from rll_core.data import load_train_test
from rll_core.evaluation import evaluate
from rll_core.lipschitz import local_lipschitz
from rll_core.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn001", in_channels=1, num_classes=10, image_size=28).eval()


def _plain(k: int = 10, c: int = 1, s: int = 28) -> nn.Module:
    """A network as a plain PyTorch script would write it (scriptable, no rll layers)."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * s * s, 32), nn.ReLU(), nn.Linear(32, k)).eval()


def _same(a: nn.Module, b: nn.Module) -> bool:
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_every_model_format_loads_to_the_same_network(tmp_path, monkeypatch):
    net = _cnn()
    sd = net.state_dict()
    kw = dict(architecture="cnn001", input_shape=(1, 28, 28), num_classes=10)
    layouts = {"plain.pt": sd, "under_key.pt": {"state_dict": sd, "epoch": 3},
               "ddp.pt": {"model_state_dict": {f"module.{k}": v for k, v in sd.items()}}}
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
        loaded, source = load_model(tmp_path / name, **kw)
        assert _same(loaded, net) and source["format"] == "state_dict", name
    plain = _plain()
    torch.jit.save(torch.jit.script(plain), tmp_path / "scripted.pt")
    loaded, source = load_model(tmp_path / "scripted.pt")
    assert _same(loaded, plain) and source["format"] == "torchscript"
    # a factory in a module of your own, with a state dict
    (tmp_path / "mynets.py").write_text("import torch\nfrom torch import nn\n\ndef make():\n"
                                        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save({"state_dict": plain.state_dict()}, tmp_path / "w.pt")
    loaded, source = load_model("mynets:make", weights=tmp_path / "w.pt")
    assert _same(loaded, plain) and source == {"format": "factory", "factory": "mynets:make", "weights": str(tmp_path / "w.pt")}
    # a normalisation layer in front, RobustBench style
    mean, std = torch.tensor([0.13]), torch.tensor([0.31])
    torch.save({"mean": mean, "std": std, **{f"model.{k}": v for k, v in sd.items()}}, tmp_path / "norm.pt")
    loaded, _ = load_model(tmp_path / "norm.pt", **kw)
    assert isinstance(loaded, Normalized) and _same(loaded, Normalized(net, mean, std))
    assert model_digest(loaded) != model_digest(net) and model_digest(_cnn()) == model_digest(net)


def test_a_run_folder_loads_as_load_run_gives_it(tmp_path):
    from rll_core.runs import load_run, train_run

    train_run(tmp_path / "run", dataset="mnist", method="natural", epochs=1, n_train=64, n_test=16, n_val=8,
              batch_size=32, progress=False)
    loaded, source = load_model(tmp_path / "run")
    ref, _, _ = load_run(tmp_path / "run", device="cpu")
    assert _same(loaded, ref) and source["format"] == "run" and source["architecture"] == "cnn001"


def test_bad_model_files_are_refused_in_one_line(tmp_path):
    kw = dict(input_shape=(1, 28, 28), num_classes=10)
    (tmp_path / "notes.pt").write_text("not a model")
    torch.save(_cnn().state_dict(), tmp_path / "sd.pt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "empty.pt")
    cases = [(tmp_path / "none.pt", {}, "not found"), (tmp_path / "notes.pt", {}, "neither TorchScript nor"),
             (tmp_path / "sd.pt", {}, "needs an architecture (one of cnn001"),
             (tmp_path / "sd.pt", {"architecture": "wrn-16-4"}, "does not fit wrn-16-4: missing"),
             (tmp_path / "sd.pt", {"architecture": "resnet9"}, "unknown architecture 'resnet9'"),
             (tmp_path / "empty.pt", {"architecture": "cnn001"}, "no tensors found (keys: epoch, lr)"),
             (tmp_path, {}, "without settings.json is not a run folder"),
             ("no_such_module:make", {}, "cannot be imported")]
    for spec, extra, message in cases:
        with pytest.raises(ModelLoadError) as e:
            load_model(spec, **{**kw, **extra})
        assert message in str(e.value) and "\n" not in str(e.value), (spec, str(e.value))
    _, test = load_train_test("mnist", n_train=50, n_test=10)
    with pytest.raises(ModelLoadError, match=r"does not take mnist's inputs of shape \(1, 28, 28\): .*mat1"):
        check_fits(_plain(c=3, s=32), test)
    with pytest.raises(ModelLoadError, match="has 5 outputs but mnist has labels up to 9"):
        check_fits(_plain(k=5), test)
    assert check_fits(_plain(), test) == 10


def test_a_card_equals_evaluate_and_local_lipschitz_called_directly(tmp_path, monkeypatch):
    """End to end on a small real subset: 300 MNIST training images, the first 8 test points."""
    net = _plain()
    kw = dict(n_eval=8, n_train=300, attacks=("pgd", "multitarget"), out_dir=tmp_path / "cards",
              cache_dir=tmp_path / "cache", progress=False, precision="fp32")
    card = robustness_card(net, "mnist", **kw)
    a, lip = card["stages"]["attacks"], card["stages"]["lipschitz"]
    train, test = load_train_test("mnist", n_train=300)
    sub = test.subset(8, seed=None)
    x = torch.from_numpy(sub.float_images())
    direct = evaluate(net, x, sub.labels, eps=0.1, attacks=("pgd", "multitarget"), seed=0, progress=False,
                      precision="fp32")
    assert (a["n"], a["clean"], a["pgd"], a["multitarget"]) == (8, direct.clean_accuracy,
                                                                 direct.adversarial_accuracy["pgd"],
                                                                 direct.adversarial_accuracy["multitarget"])
    assert a["worst"] == float((direct.correct["pgd"] & direct.correct["multitarget"]).mean())  # per-point minimum
    for proc in ("ascent", "reference"):
        v = local_lipschitz(net, x, eps=0.1, procedure=proc, precision="fp32", generator=torch.Generator().manual_seed(0))
        assert lip[proc] == pytest.approx(float(v.mean()), rel=1e-6)
        # the standard error of the mean, written out: sample standard deviation (n - 1) over sqrt(n)
        assert lip[f"{proc}_se"] == pytest.approx(float(np.std(v.numpy(), ddof=1)) / np.sqrt(8), rel=1e-6)
    assert card["settings"]["eps"] == 0.1 and card["settings"]["n_train"] == 300  # MNIST's paper eps
    assert card["stages"]["separation"]["table1"]["n_train"] == 300
    folder = Path(card["folder"])
    assert folder.name.startswith(f"card-mnist-{model_digest(net)}-")
    files = write_card(card, train, sub, ("png", "pdf"))
    names = {f.name for f in files}
    assert {"card.json", "card_summary.md", "card_summary.tex", "fig_card_robustness_vs_eps.pdf",
            "fig_card_least_smooth.png", "card.md"} - names == {"card.json"} and (folder / "card.json").exists()
    stored = json.loads((folder / "card.json").read_text())
    assert set(stored["stages"]) == {"attacks", "lipschitz", "separation", "curve", "checks", "certified"}
    cert = stored["stages"]["certified"]  # the certificates of the checks' points: certified <= PGD, bound >= ascent
    assert cert["n"] == 8 and cert["certified"] <= a["pgd"] and cert["lipschitz_bound"] >= cert["attained"]
    assert cert["curve"][0] == a["clean"] and cert["curve"] == sorted(cert["curve"], reverse=True)
    # the attack checks ran on the card's points with its seed and precision, and say so in its summary
    from rll_core.indicators import attack_indicators, indicator_summary

    checks = stored["stages"]["checks"]["indicators"]
    assert checks == json.loads(json.dumps(attack_indicators(net, x, sub.labels, eps=0.1, n=8, seed=0, precision="fp32",
                                                             curve=stored["stages"]["curve"])))
    assert {"attack checks (did an attack fail?)": indicator_summary(checks)}.items() <= {
        r["quantity"]: r["value"] for r in card_rows(stored)}.items()
    assert "fig_card_attack_checks.png" in names
    inputs = np.load(folder / "lipschitz.npz")["ascent_inputs"]
    assert inputs.shape == x.shape and float(np.abs(inputs - x.numpy()).max()) <= 0.1 + 1e-6

    def no_work(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(measure, "evaluate", no_work)  # the one room that attacks and estimates
    monkeypatch.setattr(measure, "local_lipschitz", no_work)
    again = robustness_card(net, "mnist", **kw)  # read back, stage by stage
    assert again["stages"] == stored["stages"] and again["folder"] == card["folder"]
    from rll_core.certify import METHOD

    older = {**stored, "stages": {**stored["stages"], "certified": {**cert, "certify": "revision 1", "n": -1}}}
    (folder / "card.json").write_text(json.dumps(older))  # certificates of an earlier revision: made again
    remade = robustness_card(net, "mnist", **kw)["stages"]["certified"]
    assert remade["certify"] == METHOD and remade["n"] == 8 and remade == stored["stages"]["certified"]
    with pytest.raises(AssertionError, match="measured again"):  # another eps: another card, not this one
        robustness_card(net, "mnist", **{**kw, "eps": 0.05})
    assert len(list((tmp_path / "cards").iterdir())) == 2
    with pytest.raises(ValueError, match="attacks must be some of"):
        robustness_card(net, "mnist", **{**kw, "attacks": ("fgsm",)})
    # the card's files come from the data it was measured on: the whole split (not its 300-image subset) or other
    # test points are refused before anything is written
    whole, _ = load_train_test("mnist")
    for wrong_train, wrong_sub in ((whole, sub), (train, test.subset(8, seed=3))):
        with pytest.raises(ValueError, match="is not the .* this card was measured on") as e:
            write_card(card, wrong_train, wrong_sub, ("png",))
        assert "\n" not in str(e.value)


def test_make_card_checks_everything_before_any_work(tmp_path, monkeypatch):
    """The one pipeline of `rll card` and notebook 05: more points than the test split is refused before a default
    model is trained; unreadable weight files in one line; a factory beside the user found without PYTHONPATH."""
    import rll_core.card.pipeline as pipeline

    def no_training(*a, **k):
        raise AssertionError("a default model was trained")

    monkeypatch.setattr(pipeline, "default_model", no_training)
    kw = dict(out_dir=tmp_path / "cards", cache_dir=tmp_path / "cache", progress=False, formats="png")
    with pytest.raises(ValueError, match="n_eval 20000 is more than the 10000 test points of mnist"):
        make_card(None, "mnist", n_eval=20000, **kw)
    for bad, message in ((dict(n_autoattack=-1), "n_autoattack must be an integer >= 0"),
                         (dict(eps=0.0), r"eps must be a finite number in \(0, 1\]"),
                         (dict(formats="png,gif"), "gif"), (dict(precision="fp16"), "precision")):
        with pytest.raises(ValueError, match=message):
            make_card(None, "mnist", **{**kw, **bad})
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "cut.pt").write_bytes((lambda b: b[: len(b) // 2])(_saved(tmp_path)))
    (tmp_path / "text.pt").write_text("weights")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "besideme.py").write_text("from torch import nn\n"
                                          "def make():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n")
    for weights, message in (("empty.pt", "the file is empty"), ("cut.pt", "or truncated"), ("text.pt", "or truncated")):
        for spec, extra in (("besideme:make", {"weights": tmp_path / weights}),
                            (tmp_path / weights, {"architecture": "cnn001"})):
            with pytest.raises(ModelLoadError) as e:
                make_card(spec, "mnist", n_eval=4, **extra, **kw)
            assert message in str(e.value) and "\n" not in str(e.value), (spec, weights, str(e.value))
    net, source = load_model("besideme:make")  # the current folder, as `python -c` sees it; sys.path left as found
    assert source["factory"] == "besideme:make" and str(tmp_path) not in sys.path


def _saved(tmp_path: Path) -> bytes:
    torch.save(_cnn().state_dict(), tmp_path / "whole.pt")
    return (tmp_path / "whole.pt").read_bytes()


def test_rll_card_on_an_npz_of_your_own_with_a_torchscript_model(own_npz, tmp_path):
    torch.jit.save(torch.jit.script(_plain()), tmp_path / "net.pt")
    cmd = [sys.executable, "-m", "rll_core.cli", "card", str(tmp_path / "net.pt"), "--dataset", str(own_npz),
           "--n-eval", "6", "--n-autoattack", "0", "--out", str(tmp_path / "cards"), "--formats", "png",
           "--cache-dir", str(tmp_path / "cache"),
           "--no-progress", "--precision", "fp32"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| PGD-10 accuracy |" in done.stdout and "wrote" in done.stdout
    (md,) = (tmp_path / "cards").glob("card-*/card.md")  # named by its file; eps against r; which Lipschitz to quote
    head = md.read_text().splitlines()[0]
    assert head.startswith("# Robustness card: ") and "model net.pt (" in head
    assert " r of the training data (r = " in md.read_text() and "quote rll's ascent" in md.read_text()
    bad = subprocess.run([*cmd[:4], str(tmp_path / "missing.pt"), *cmd[5:]], capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "not found" in bad.stderr


@pytest.mark.slow
def test_the_card_notebook_on_an_npz_of_your_own(own_npz, tmp_path):
    papermill = pytest.importorskip("papermill")
    torch.jit.save(torch.jit.script(_plain()), tmp_path / "net.pt")
    out = tmp_path / "05.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "05_your_model.ipynb"), str(out), kernel_name="python3",
                               parameters={"interactive": False, "model": str(tmp_path / "net.pt"),
                                           "dataset": str(own_npz), "n_eval": 6, "n_autoattack": 2,
                                           "cards_dir": str(tmp_path / "cards"), "cache_dir": str(tmp_path / "cache"),
                                           "formats": "png"},
                               cwd=str(ROOT / "notebooks"), progress_bar=False)
    text = json.dumps(json.loads(out.read_text()))
    assert "AutoAttack (standard) accuracy" in text and "wrote 13 files" in text  # 3 tables, 5 figures, 4 captions, card.md
    # headless, the table is text too (papermill --log-output prints an output's plain text)
    plain = [o["data"]["text/plain"] for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", [])
             if "text/markdown" in o.get("data", {})]
    assert plain and all("".join(p).startswith("Robustness card") and "| PGD-10 accuracy |" in "".join(p) for p in plain)


def test_an_interrupted_card_keeps_every_finished_attack(tmp_path, monkeypatch):
    """Ctrl-C during the multi-targeted attack: PGD's verdicts are kept in card.json and verdicts-pgd.npz, and the
    rerun attacks with the multi-targeted attack only; the card equals one made in one go."""
    import rll_core.card.make as make

    net = _plain()
    kw = dict(n_eval=6, n_train=300, attacks=("pgd", "multitarget"), cache_dir=tmp_path / "cache", progress=False,
              precision="fp32")
    whole = robustness_card(net, "mnist", out_dir=tmp_path / "a", **kw)
    real, asked = make.measure_points, []

    def interrupted(model, x, y, **k):
        asked.append(tuple(k["attacks"]))
        if k["attacks"] == ["multitarget"]:
            raise KeyboardInterrupt
        return real(model, x, y, **k)

    monkeypatch.setattr(make, "measure_points", interrupted)
    with pytest.raises(KeyboardInterrupt):
        robustness_card(net, "mnist", out_dir=tmp_path / "b", **kw)
    (folder,) = (tmp_path / "b").iterdir()
    kept = json.loads((folder / "card.json").read_text())
    assert set(kept["parts"]) == {"clean", "pgd"} and "attacks" not in kept["stages"]
    assert (folder / "verdicts-pgd.npz").exists()
    asked.clear()
    monkeypatch.setattr(make, "measure_points", lambda model, x, y, **k: asked.append(tuple(k.get("attacks", ()))) or
                        real(model, x, y, **k))
    again = robustness_card(net, "mnist", out_dir=tmp_path / "b", **kw)
    assert asked[0] == ("multitarget",)  # the rerun starts at the attack that did not finish
    assert again["stages"]["attacks"] == whole["stages"]["attacks"]
    assert {k: v.tolist() for k, v in np.load(folder / "verdicts.npz").items()} == {
        k: v.tolist() for k, v in np.load(Path(whole["folder"]) / "verdicts.npz").items()}
