"""Refresh the pictures the README and docs/ show (docs/img/) from one run's outputs, captions included.

    python tools/docs_images.py                   # from figures/ and results/cards/*/ (what make run / make card wrote)
    python tools/docs_images.py --check           # say what would change, change nothing (exit 1 if anything would)

Each ``docs/img/<name>.png`` is replaced by the figure of that name among the sources: the same file name, or
the name with an output tag (``<name>_<tag>.png``) where exactly one such file exists.  The caption under each
picture in README.md and docs/*.md (the italic line that follows the image line) is replaced by the figure's
``<stem>.caption.txt``, which ``save_figure`` writes beside it.  A picture with no source in this run is kept
and named, so a partial run (``make run`` without ``make card``) refreshes what it made and nothing else.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_IMAGE = re.compile(r"!\[[^\]]*\]\((?:docs/)?img/(?P<name>[^)\s]+\.png)\)")


def find_source(name: str, sources: list[Path]) -> Path | None:
    """The run's figure for ``docs/img/<name>``: the same name, else the one tagged ``<stem>_<tag>.png``."""
    stem = Path(name).stem
    for folder in sources:
        exact = folder / name
        if exact.exists():
            return exact
    tagged = sorted({p for folder in sources for p in folder.glob(f"{stem}_*.png")})
    return tagged[0] if len(tagged) == 1 else None


def refresh(img_dir: Path, pages: list[Path], sources: list[Path], check: bool = False) -> list[str]:
    """Copy every picture's source over it and put its caption under it in ``pages``; the changes, in words."""
    changes: list[str] = []
    captions: dict[str, str] = {}
    for picture in sorted(img_dir.glob("*.png")):
        src = find_source(picture.name, sources)
        if src is None:
            print(f"kept {picture.name}: no source in {', '.join(str(s) for s in sources)}")
            continue
        cap = src.with_suffix(".caption.txt")
        if cap.exists():
            captions[picture.name] = cap.read_text().strip()
        if src.read_bytes() != picture.read_bytes():
            changes.append(f"{picture.name} <- {src}")
            if not check:
                shutil.copyfile(src, picture)
    for page in pages:
        text = page.read_text()
        lines = text.split("\n")
        for i, line in enumerate(lines):
            m = _IMAGE.search(line)
            if not m or m["name"] not in captions:
                continue
            j = i + 1 + (i + 1 < len(lines) and not lines[i + 1].strip())  # the caption, after one blank line
            want = f"*{captions[m['name']]}*"
            if j < len(lines) and lines[j].startswith("*") and lines[j].rstrip().endswith("*") and lines[j] != want:
                changes.append(f"{page.name}: caption of {m['name']}")
                lines[j] = want
        if not check and "\n".join(lines) != text:  # an unchanged page is not rewritten
            page.write_text("\n".join(lines))
    return changes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="sources", nargs="*", default=None,
                   help="folders holding the run's figures (default: figures/ and results/cards/*/)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything would change")
    args = p.parse_args(argv)
    sources = ([Path(s) for s in args.sources] if args.sources is not None
               else [ROOT / "figures", *sorted(p for p in (ROOT / "results" / "cards").glob("*") if p.is_dir())])
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    changes = refresh(ROOT / "docs" / "img", pages, sources, check=args.check)
    for c in changes:
        print(("would change " if args.check else "changed ") + c)
    return 1 if args.check and changes else 0


if __name__ == "__main__":
    sys.exit(main())
