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
# split: the whole default job (four notebooks) in about 15 minutes on 2 CPU cores, enough to see the
# paper's orderings with 95 % intervals that separate, not its numbers. `long` trains on 10,000 images for
# 3 epochs and evaluates on 500 points (about 75 minutes there). `paper` uses the reference settings (full
# splits, SGD, 160 epochs on MNIST): a GPU job. Multi-targeted accuracy (9 targets, most of an
# evaluation's cost) is measured on the test points only, since no table shows it on train. Runs are
# saved under `runs_dir`; a rerun reuses every finished run and evaluation.
#
# **Seeds.** `seeds` trains every method once per seed (its own training subset, initial weights and evaluated
# points; one run folder each). With several, Tables 2/3 and the two summary figures give each method's mean over
# the seeds with a t interval over them (it covers the seed and the points together); the figures of single
# models (robustness curves, attack checks, robustness per point) show the first seed's models.
#
# **Precision.** `precision="auto"` takes the gradient passes (attack steps, the Lipschitz ascent's steps,
# training steps) in bf16 where the CPU (AVX-512 BF16, AMX) or GPU (compute capability 8.0 and up) computes it
# natively, fp32 elsewhere; every verdict (correct, robust) and every Lipschitz ratio reported is an fp32
# forward. A bf16 run has a folder of its own (`-bf16`) and its evaluations say so; `"fp32"` gives the fp32
# path on any machine.
#
# Headless: `papermill --log-output notebooks/03_methods.ipynb out.ipynb -p interactive False` prints one line
# per trained run (epochs, test accuracy, PGD accuracy with its interval, Lipschitz, seconds), then the
# tables and the files written. Every parameter is checked before any work; a bad one stops the notebook with
# one line naming it.

# %% tags=["parameters"]
# parameters (papermill overrides these)
dataset = "mnist"         # a paper dataset, or path/to/yours.npz
data_dir = None
preset = "quick"          # quick | long | paper
eps = None                # None: the paper's radius; every run trains, validates and is evaluated at this eps
methods = "paper"         # paper (all ten rows), or a list such as natural,at,trades:beta6,rst:lam0.5
model = None              # None: the paper's architecture (cnn001 on MNIST)
epochs = None             # None: the preset's
n_train = None            # None: the preset's
n_test = None
n_eval = None
include_theory = True     # add the Section 4 classifier as a row
autoattack_methods = "at"  # AutoAttack for these rows, e.g. natural,at,trades:beta6 ("" for none): costly on a CPU
n_autoattack = 25         # ... on the first n_autoattack test points (about 3 s per robust point here)
n_checks = 50             # the attack-failure indicators on the first n_checks test points of every row (0: none)
n_certify = 25            # certified accuracy and the Lipschitz bound on the first n_certify test points (0: none)
seeds = "0"               # training seeds, a run folder each; several: Tables 2/3 give the mean over the seeds (t interval)
device = "auto"
workers = None            # runs side by side, one torch thread each; None: one per core (one on a GPU)
precision = "auto"        # auto: bf16 gradient steps where the CPU/GPU computes bf16 natively (verdicts fp32) | fp32 | bf16
runs_dir = None           # None: the project's results/runs
figures_dir = None        # None: the project's figures/
formats = "png,pdf"
interactive = True

# %%
from rll_core.notebook import notebook_setup, show_figure, show_markdown

P = notebook_setup("03_methods", globals())  # every parameter checked here, before any work

# %%
from IPython.display import display

from rll_core.data import load_train_test
from rll_core.grids import PAPER_METHODS, grid_digest, grid_settings, method_spec, preset_evaluation, run_grid
from rll_core.plotting import context_line, plot_gaps, plot_lipschitz_vs_accuracy, plot_robustness_curves, save_figure
from rll_core.precision import precision_record, resolve_precision
from rll_core.section4 import theory_curve, theory_row
from rll_core.storage import array_digest, check_outputs, output_tag, record_outputs
from rll_core.tables import export_table, pool_seeds

G = grid_settings(P.dataset, preset=P.preset, eps=P.eps, model=P.model, epochs=P.epochs, n_train=P.n_train,
                  n_test=P.n_test, n_eval=P.n_eval, seed=P.seeds[0])  # the eps, sizes and data every run gets
train, test = load_train_test(G["data"], P.data_dir, G["n_train"], G["n_test"], G["seed"])
# output names say what sets this job apart from the preset's default; a record beside them refuses to let
# another setting's result replace them
tag = output_tag(eps=P.eps, n=P.n_train, test=P.n_test, eval=P.n_eval, e=P.epochs, model=P.model,
                 prec=None if P.precision == "auto" else P.precision,
                 m=grid_digest(P.methods) if grid_digest(P.methods) != grid_digest(PAPER_METHODS) else None,
                 seeds=None if P.seeds == [0] else "-".join(map(str, P.seeds)))
outputs = f"methods_{G['dataset']}_{P.preset}{tag}"
aa_keys = [method_spec(m, h) for m, h in P.autoattack_methods]
settings = {**G, "methods": [method_spec(m, h) for m, h in P.methods], "include_theory": P.include_theory,
            "autoattack_methods": aa_keys, "n_autoattack": P.n_autoattack, "n_checks": P.n_checks,
            "n_certify": P.n_certify,
            "data_digest": array_digest(train.images, train.labels, test.images, test.labels),
            **precision_record(resolve_precision(P.precision, P.device)),
            **({} if P.seeds == [0] else {"seeds": P.seeds})}
check_outputs(P.figures_dir, outputs, settings)
print(f"{G['dataset']}, eps {G['eps']:g}, preset {P.preset} ({G['n_train'] or 'all'} training images, {G['epochs']} "
      f"epochs, n = {G['n_eval']}), {len(P.methods)} runs: {[m for m, _ in P.methods]}")

# %% [markdown]
# ## Train and evaluate every method
#
# One progress bar over the grid; each run is resumable from its folder.

# %%
rows = run_grid(P.runs_dir, dataset=P.dataset, methods=P.methods, preset=P.preset, eps=P.eps, model=P.model,
                epochs=P.epochs, n_train=P.n_train, n_test=P.n_test, n_eval=P.n_eval, data_dir=P.data_dir,
                device=P.device, precision=P.precision, progress=True, workers=P.workers, seeds=P.seeds)
if P.include_theory:  # says whether it measures (minutes) or reads the stored row
    rows.append(theory_row(train, test, G["eps"], n_eval=G["n_eval"], store=P.runs_dir))
# the figures of single models (curves, checks, per point) show the first seed's; the tables pool every seed
first = [r for r in rows if r.get("method") == "theory" or r.get("seed") == P.seeds[0]]
print(f"{len(rows)} rows ({len(P.seeds)} seed{'s' if len(P.seeds) > 1 else ''})")

# %% [markdown]
# ## Beyond the evaluation
#
# Four measurements of the finished runs follow: AutoAttack on a few rows, each run's robustness curve, the
# attack checks and the certified bracket. They run side by side, one job per run and measurement in `workers`
# processes of one torch thread each (`rll_core.followup`), and each is stored in its run folder, so a rerun
# reads them back. The sections below show them.

# %%
from rll_core.followup import follow_up

n_curve = G["n_eval"]
theory = theory_curve(train, test, n_eval=n_curve, also=[G["eps"]])  # radii from 0 to 1.2 r, r of this training set
trained = [r for r in rows if r.get("method") != "theory"]
# the curves of every run the checks read (monotone in eps), else of the first seed's, which the figure draws
measured = follow_up(P.runs_dir, [r["run"] for r in trained], radii=theory["eps"], n_curve=n_curve,
                     autoattack=[r["run"] for r in trained if r.get("key") in aa_keys], n_autoattack=P.n_autoattack,
                     n_checks=P.n_checks, n_certify=P.n_certify,
                     curves=[r["run"] for r in first if r.get("method") != "theory"],
                     data_dir=P.data_dir, device=P.device, precision=P.precision, workers=P.workers)
curves = {r["run"]: dict(measured[r["run"]]["curve"], label=r["label"]) for r in trained if "curve" in measured[r["run"]]}

# %% [markdown]
# ## AutoAttack
#
# The paper predates AutoAttack (Croce & Hein 2020), which the field now reports beside PGD. Its standard
# version (APGD-CE, APGD-T, FAB-T, Square; 100 iterations / 5,000 queries each, torchattacks' attacks at
# the reference's settings) costs seconds per robust point on a CPU, so it runs on the first `n_autoattack`
# test points of the `autoattack_methods` rows only; its column says `-` for the others, and its n is in
# the caption.

# %%
for r in [r for r in trained if "autoattack" in measured[r["run"]]]:
    aa = measured[r["run"]]["autoattack"]
    r |= {"test_autoattack_accuracy": aa["test_autoattack_accuracy"], "test_autoattack_n": aa["test_n"]}
    print(f"{r['label']}: AutoAttack {aa['test_autoattack_accuracy']:.2f} on {aa['test_n']} test points "
          f"(PGD on all {r['test_n']}: {r['test_pgd_accuracy']:.2f})")

# %% [markdown]
# ## Did any attack fail?
#
# Gradient regularization and LLR smooth the loss around the training points, which can hide adversarial
# examples from a gradient attack instead of removing them. On the first `n_checks` test points of every row,
# `rll_core.indicators` checks the evaluation itself (Carlini et al. 2019; Pintor et al. 2022): PGD at
# $\epsilon$ = 0.5 must leave (almost) no point robust; a PGD with 10 times the steps and restarts, and Square,
# a gradient-free attack, must not break more points than PGD-10's interval; few points may have an input gradient of exactly 0; and
# accuracy must not rise with $\epsilon$ along the robustness curve below. The table's `attack checks` column
# says `ok` or names the checks that warn; the figure shows every value.

# %%
from rll_core.indicators import indicator_summary
from rll_core.plotting import plot_indicators

if P.n_checks:
    for r in trained:
        r["indicators"] = measured[r["run"]]["checks"]
        print(f"{r['label']}: {indicator_summary(r['indicators'])}")
    fig_checks = plot_indicators(first)
    written_checks = save_figure(fig_checks, P.figures_dir / f"fig_attack_checks_{G['dataset']}_{P.preset}{tag}",
                                 P.formats)
    show_figure(fig_checks)

# %% [markdown]
# ## Certified beside empirical
#
# The ascent's Lipschitz value is attained in the ball (a lower bound of the local constant) and PGD's accuracy
# can only over-state robustness. `rll_core.certify` bounds both from the other side by bound propagation on the
# first `n_certify` test points: a Lipschitz *upper* bound and *certified* accuracy, so that
# ascent ≤ true ≤ bound and certified ≤ true ≤ attacked, as notebook 02 shows for the Section 4 classifier.
# For networks not trained to be certified the bracket is wide: the table says how wide at $\epsilon$, the
# figures how it narrows as the radius shrinks (from a fiftieth of $\epsilon$ up to it, on the same points; the
# ascent's value there never falls as the radius grows, `rll_core.measure.lipschitz_curve`).

# %%
from rll_core.stats import readable

if P.n_certify:
    for r in trained:
        b = measured[r["run"]]["bracket"]
        r |= {k: b[k] for k in ("test_certified_accuracy", "test_certified_n", "test_lipschitz_bound",
                                "test_lipschitz_bound_se", "bracket_ratio")}
        print(f"{r['label']}: certified {b['test_certified_accuracy']:.2f} (PGD {r['test_pgd_accuracy']:.2f} on all "
              f"{r['test_n']}); "
              f"Lipschitz {readable(b['test_lipschitz_attained'])} (ascent) <= true <= "
              f"{readable(b['test_lipschitz_bound'])} (bound), median ratio {readable(b['bracket_ratio'])}, on "
              f"{b['test_certified_n']} points")
    from rll_core.plotting import plot_accuracy_brackets, plot_lipschitz_brackets

    brackets = [dict(measured[r["run"]]["bracket_curve"], label=r["label"]) for r in first if r.get("method") != "theory"]
    for c in brackets:
        print(f"{c['label']}: from ε = {c['eps'][0]:g} to {c['eps'][-1]:g}, certified {c['certified'][0]:.2f} -> "
              f"{c['certified'][-1]:.2f}, PGD {c['pgd'][0]:.2f} -> {c['pgd'][-1]:.2f}, "
              f"bound / attained {readable(c['bracket_ratio'][0])} -> {readable(c['bracket_ratio'][-1])}")
    settings_only = context_line([{k: v for k, v in r.items() if k not in ("test_n", "n")} for r in first])
    fig_acc_br = plot_accuracy_brackets(brackets, caption=settings_only)
    fig_lip_br = plot_lipschitz_brackets(brackets, caption=settings_only)
    stem_br = f"{G['dataset']}_{P.preset}{tag}"
    written_brackets = (save_figure(fig_acc_br, P.figures_dir / f"fig_accuracy_bracket_{stem_br}", P.formats)
                        + save_figure(fig_lip_br, P.figures_dir / f"fig_lipschitz_bracket_{stem_br}", P.formats))
    show_figure(fig_acc_br, fig_lip_br)

# %% [markdown]
# ## Tables 2 / 3
#
# Accuracies in [0, 1]; Lipschitz constants in logit units per unit of $\ell_\infty$ input change.
# `test_lipschitz` is rll's estimate (projected *ascent*: a lower bound on the true local constant);
# `test_lipschitz_reference` is the same models measured with the paper's published procedure, which steps
# downhill from a point next to $x$ (fixed step 0.003) and so reports far smaller values: compare the
# paper's Lipschitz column with that one, never with rll's.

# %%
stem = P.figures_dir / f"table_methods_{G['dataset']}_{P.preset}{tag}"
pooled = pool_seeds(rows)  # one row per method: the mean over the seeds, a t interval over them (one seed: as it is)
written = export_table(pooled, stem, title=f"Tables 2/3 ({P.preset} preset)")
if P.n_checks:
    written += written_checks
if P.n_certify:
    written += written_brackets
show_markdown(written[1].read_text())
print("saved:", ", ".join(str(p) for p in written))

# %% [markdown]
# ## Smoothness against robustness, and the generalization gaps

# %%
fig_lip = plot_lipschitz_vs_accuracy(pooled)
fig_gap = plot_gaps(pooled)
written += save_figure(fig_lip, P.figures_dir / f"fig_lipschitz_vs_pgd_{G['dataset']}_{P.preset}{tag}", P.formats)
written += save_figure(fig_gap, P.figures_dir / f"fig_gaps_{G['dataset']}_{P.preset}{tag}", P.formats)
show_figure(fig_lip, fig_gap)

# %% [markdown]
# ## Robust accuracy against the radius
#
# Every trained model attacked with PGD-10 at radii from 0 to beyond the data's $r$ (on the first
# `n_eval` test points, with 95 % Wilson bands), and the Section 4 classifier's *certified* accuracy on the
# same points. Separation allows accuracy 1 on the training data up to $r$; the gap between that and what
# training reaches, already at the training radius, is the paper's point.

# %%
fig_eps = plot_robustness_curves([curves[r["run"]] for r in first if r.get("run") in curves] + [theory], r=theory["r"],
                                 eps_mark=G["eps"], caption=context_line(first) + f"; r of the {len(train):,} training images")
written += save_figure(fig_eps, P.figures_dir / f"fig_robustness_vs_eps_{G['dataset']}_{P.preset}{tag}", P.formats)
show_figure(fig_eps)

# %% [markdown]
# ## Robustness per point against separation
#
# Each evaluated test point's PGD verdict against its distance to the nearest other-class point of the
# training set the model saw (exact), binned; the Section 4 classifier's certified verdict on the same
# points. Does a model fail where the data is least separated, or everywhere? The per-point arrays are
# saved in each run folder (`points-*.npz`).

# %%
from rll_core.audit import point_robustness
from rll_core.plotting import plot_accuracy_by_distance
from rll_core.stats import accuracy_by_distance, distance_bins

per_point = {r["run"]: point_robustness(P.runs_dir / r["run"], n_eval=n_curve, device=P.device,
                                      precision=P.precision, evaluation=preset_evaluation(P.preset))
             for r in first if r.get("method") != "theory"}
dist_all = next(iter(per_point.values()))["distance"]
edges = distance_bins(dist_all, 4)  # up to 4 bins with equal numbers of points
show = [r for r in first if r.get("key") in ("natural", "at", "trades:beta6", "rst:lam2")]
by_dist = [{**accuracy_by_distance(per_point[r["run"]]["distance"], per_point[r["run"]]["robust"], edges),
            "method": r["method"], "label": r["label"]} for r in show]
by_dist.append({**accuracy_by_distance(dist_all, theory["radius"] > G["eps"], edges), "method": "theory",
                "label": f"Section 4 classifier, certified at ε = {G['eps']:g}"})
fig_pp = plot_accuracy_by_distance(by_dist, edges, caption=context_line(first) + f"; 2ε = {2 * G['eps']:g}")
written += save_figure(fig_pp, P.figures_dir / f"fig_robustness_by_distance_{G['dataset']}_{P.preset}{tag}", P.formats)
record_outputs(P.figures_dir, outputs, settings, written)
show_figure(fig_pp)

# %% [markdown]
# ## Explore
#
# Any two columns against each other (live kernel only).
# If the controls show "model not found" or do not respond (the notebook was reopened or the kernel
# restarted), run the whole notebook again (Run > Run All Cells); this cell alone says so in one line.

# %%
from rll_core.notebook import explorer_ready

if explorer_ready(globals(), "pooled"):
    from rll_core.widgets import methods_explorer

    display(methods_explorer(pooled))
