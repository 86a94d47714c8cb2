"""The time budget of a `make run`: where its minutes go, read back from what the job recorded.

No new measurement: papermill stores every executed cell's wall time in ``results/notebooks/*.ipynb``,
every run's ``history.json`` its epochs' seconds and every evaluation its own (``seconds``).  This prints
the notebooks' times and largest cells, then one row per run of a preset (training and evaluation), the
table behind the presets' sizes (``rll_core.grids.PRESETS``).

    python benchmarks/budget.py                       # after make run (quick preset)
    python benchmarks/budget.py --preset long --notebooks results/long-notebooks
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def notebook_rows(folder: Path, top: int) -> list[tuple[str, float, list[tuple[float, str]]]]:
    """``(notebook, seconds, [(cell seconds, first line)...])`` of every executed notebook in ``folder``."""
    rows = []
    for path in sorted(folder.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        total = float(nb["metadata"].get("papermill", {}).get("duration") or 0.0)
        cells = []
        for c in nb["cells"]:
            dur = c.get("metadata", {}).get("papermill", {}).get("duration")
            if dur:
                src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                cells.append((float(dur), src.strip().splitlines()[0][:50] if src.strip() else ""))
        rows.append((path.stem, total, sorted(cells, reverse=True)[:top]))
    return rows


def run_rows(runs: Path, preset: str) -> list[dict[str, Any]]:
    """Training and evaluation seconds of every run folder of ``preset`` under ``runs``."""
    rows = []
    for folder in sorted(p for p in runs.glob("*") if p.is_dir() and preset in p.name.split("-")):
        hist = folder / "history.json"
        if not hist.exists():
            continue
        epochs = json.loads(hist.read_text())["history"]
        evals = [json.loads(p.read_text()) for p in sorted(folder.glob("eval-*.json"))]
        rows.append({"run": folder.name, "epochs": len(epochs), "train_s": sum(e["seconds"] for e in epochs),
                     "evals": [(e["evaluation"]["n_eval"], _attacks(e["evaluation"]), e.get("seconds")) for e in evals]})
    return rows


def _attacks(ev: dict[str, Any]) -> str:
    """``pgd+multitarget (test only)``-style: an evaluation's attacks and where they ran."""
    only = set(ev.get("test_only", ()))
    names = [a + (" (test only)" if a in only else "") for a in sorted(ev["attacks"])]
    return "+".join(names) + (f" on {'/'.join(ev['splits'])}" if "splits" in ev else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notebooks", type=Path, default=ROOT / "results" / "notebooks")
    ap.add_argument("--runs", type=Path, default=ROOT / "results" / "runs")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--top", type=int, default=3, help="largest cells shown per notebook")
    a = ap.parse_args(argv)
    nbs = notebook_rows(a.notebooks, a.top)
    if not nbs:
        print(f"no executed notebooks under {a.notebooks}: run make run first", file=sys.stderr)
        return 2
    total = sum(t for _, t, _ in nbs)
    print("| notebook | seconds | share | largest cells (seconds) |\n|---|---|---|---|")
    for name, t, cells in nbs:
        big = "; ".join(f"{s:.0f}: `{line}`" for s, line in cells)
        print(f"| {name} | {t:.0f} | {t / max(total, 1e-9):.0%} | {big} |")
    print(f"| all | {total:.0f} ({total / 60:.1f} min) | | |\n")
    runs = run_rows(a.runs, a.preset)
    print(f"| run ({a.preset}) | epochs | training s | evaluations: n, attacks, s |\n|---|---|---|---|")
    for r in runs:
        ev = "; ".join(f"n={n} {at}: {'?' if s is None else f'{s:.0f}'}" for n, at, s in r["evals"])
        print(f"| {r['run']} | {r['epochs']} | {r['train_s']:.0f} | {ev} |")
    train = sum(r["train_s"] for r in runs)
    ev_s = sum(s for r in runs for *_, s in r["evals"] if s is not None)
    print(f"| all {len(runs)} runs | | {train:.0f} | {ev_s:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
