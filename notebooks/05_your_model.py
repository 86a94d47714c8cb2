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
# # 5. Your model, your data: a robustness card
#
# The paper asks four things of every model: how accurate it is, how robust (PGD, and here also the
# multi-targeted attack and AutoAttack), how locally Lipschitz, and how that compares with what the data's
# separation allows. This notebook asks them of a classifier of your own, on a dataset of your own or a paper
# dataset: a run folder of `rll train`, a TorchScript file, a state dict with an architecture from the
# registry (or a `package.module:factory` with a state dict). Checkpoints saved under `state_dict` /
# `model_state_dict`, with DDP's `module.` prefixes, or with a normalisation layer in front are read; a file
# that cannot be is refused in one line that says what was found, before any attack runs.
#
# The card: clean, PGD-10, multi-targeted and AutoAttack accuracy with n and 95 % intervals; the local
# Lipschitz constant (rll's ascent and the reference procedure) with standard errors, and per point the input
# that attains it (the least smooth points shown); robust accuracy against ε beside the data's r and the
# Section 4 classifier's certified curve; robust accuracy by distance to the nearest other-class training
# point; the data's Table 1 row and closest pairs. Every stage is stored in the card's folder (named by the
# model's digest and the settings) as it finishes: a rerun reads it back, an interrupted one resumes.
#
# With `model = None` the card is made for the AT model of notebook 3's `quick` preset on `dataset` (trained
# here if it is not in `runs_dir` yet; about 10 s on a CPU).
#
# Headless: `papermill --log-output notebooks/05_your_model.ipynb out.ipynb -p interactive False -p model
# my_net.pt -p dataset mine.npz` prints each stage as it runs and the card's table. The same from the command
# line: `rll card my_net.pt --dataset mine.npz`. Every parameter is checked before any work.

# %% tags=["parameters"]
# parameters (papermill overrides these)
dataset = "fashion_mnist"  # a paper dataset, or path/to/yours.npz
data_dir = None
model = None               # a run folder, a TorchScript or state-dict file, package.module:factory; None: see above
architecture = None        # the registry architecture of a state dict (cnn001, cnn002, wrn-16-4, ...)
weights = None             # a state-dict file for a factory
eps = None                 # None: the paper's radius for the data's shape
n_eval = 500               # the first n_eval test points
n_autoattack = 100         # AutoAttack on the first this many of them; 0 for none
device = "auto"
precision = "auto"         # auto: bf16 gradient steps where the CPU/GPU computes bf16 natively (verdicts fp32) | fp32 | bf16
seed = 0
cards_dir = None           # None: the project's results/cards
runs_dir = None            # None: the project results/runs (where the default model is trained)
cache_dir = None           # None: the project's results/cache (the separation search's, shared with notebook 1)
formats = "png,pdf"
interactive = True

# %%
from rll_core.notebook import notebook_setup, show_markdown

P = notebook_setup("05_your_model", globals())  # every parameter checked here, before any work

# %% [markdown]
# ## The card
#
# `make_card` reads the data once, checks every setting, loads the model (or trains the default one), measures
# and writes the card's files from that same data. Each stage prints as it starts, or says it was read from the
# card's `card.json`.

# %%
from IPython.display import Image, display

from rll_core.card import make_card

card, files = make_card(P.model, P.dataset, architecture=P.architecture, weights=P.weights, eps=P.eps,
                        n_eval=P.n_eval, n_autoattack=P.n_autoattack, data_dir=P.data_dir, out_dir=P.cards_dir,
                        cache_dir=P.cache_dir, runs_dir=P.runs_dir, formats=P.formats, device=P.device,
                        precision=P.precision, seed=P.seed)
print(f"model: {card['source']}")
show_markdown(next(f for f in files if f.name == "card_summary.md").read_text())
for f in files:
    if f.suffix == ".png":
        display(Image(filename=str(f)))
print(f"wrote {len(files)} files into {card['folder']}")

# %% [markdown]
# ## Explore
#
# Slide ε over the card's radii: your model's PGD-10 accuracy and the Section 4 classifier's certified accuracy
# there (live kernel only; the slider reads the card, it recomputes nothing). If the controls show "model not found"
# or do not respond (the notebook was reopened or the kernel restarted), run the whole notebook again
# (Run > Run All Cells); this cell alone says so in one line.

# %%
from rll_core.notebook import explorer_ready

if explorer_ready(globals(), "card"):
    from rll_core.card import model_name
    from rll_core.widgets import astuteness_explorer

    curve = card["stages"]["curve"]
    display(astuteness_explorer(curve["eps"], {"your model, PGD-10": curve["accuracy"],
                                               "Section 4, certified": curve["certified"]},
                                r=card["stages"]["separation"]["r"], title=f"model {model_name(card)}",
                                ylabel="robust test accuracy"))
