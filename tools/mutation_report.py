"""The mutation score per module from mutmut's results (``make mutation`` runs mutmut, then this).

Reads ``mutants/rll_core/*.py.meta`` (mutmut 3's per-file results: exit code 1 = killed, 0 = survived, 33 = no
test covers it, 36 = timed out) and ``tools/mutation_equivalent.txt`` (one surviving mutant per line, then its
reason: mutants that change no behaviour a caller can see).  Prints a Markdown table per module: mutants,
killed, equivalent, survived (not listed as equivalent), not covered, and the score
``killed / (mutants - equivalent)``; then every unlisted survivor, so none goes unexamined.  Exit status 1 when
an unlisted survivor remains.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def equivalents(path: Path) -> dict[str, str]:
    """``{mutant name: reason}`` from the listing (blank lines and ``#`` comments skipped)."""
    out = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.partition(" ")
            out[name] = reason.strip()
    return out


def main() -> int:
    listed = equivalents(ROOT / "tools" / "mutation_equivalent.txt")
    metas = sorted((ROOT / "mutants" / "rll_core").glob("*.py.meta"))
    if not metas:
        print("no mutmut results under mutants/: run `make mutation` first", file=sys.stderr)
        return 2
    print("| module | mutants | killed | equivalent | survived | not covered | score |")
    print("|---|---|---|---|---|---|---|")
    unlisted: list[str] = []
    totals = [0, 0, 0, 0, 0]
    for meta in metas:
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        killed = sum(c not in (0, 33, None) for c in codes.values())
        survived = [k for k, c in codes.items() if c == 0]
        equiv = [k for k in survived if k in listed]
        uncovered = sum(c == 33 for c in codes.values())
        unlisted += [k for k in survived if k not in listed]
        row = [len(codes), killed, len(equiv), len(survived) - len(equiv), uncovered]
        totals = [a + b for a, b in zip(totals, row, strict=True)]
        score = killed / max(1, len(codes) - len(equiv))
        print(f"| {meta.name.removesuffix('.meta')} | " + " | ".join(map(str, row)) + f" | {score:.1%} |")
    score = totals[1] / max(1, totals[0] - totals[2])
    print("| all | " + " | ".join(map(str, totals)) + f" | {score:.1%} |")
    stale = sorted(set(listed) - {k for m in metas for k in json.loads(m.read_text())["exit_code_by_key"]})
    if stale:
        print(f"\n{len(stale)} listed equivalents no longer exist (the code moved): {', '.join(stale[:5])} ...")
    if unlisted:
        print(f"\n{len(unlisted)} survivors not listed as equivalent (`mutmut show <name>`):")
        print("\n".join(unlisted))
    return 1 if unlisted else 0


if __name__ == "__main__":
    raise SystemExit(main())
