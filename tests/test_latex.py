"""LaTeX tables: every block inside \\textwidth of a standard article, every value kept, compiled by pdflatex
without an overfull box where pdflatex is installed (make tex-deps)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rll_core.findings import FINDINGS
from rll_core.latex import _cell_lines, _width, latex_table, tex_escape, tex_layout
from rll_core.tables import display_rows, export_table

METHODS = ["natural", "GR", "LLR", "AT", "TRADES (β=1)", "TRADES (β=6)", "RST (λ=0.5)",
           "Section 4 classifier (r = 0.492)"]


def _wide_rows() -> list[dict]:
    """Rows as Table 2/3 has them: every accuracy on both splits, both Lipschitz estimators, both gaps."""
    rows = []
    for i, label in enumerate(METHODS):
        a = 0.4 + 0.05 * i
        rows.append({"label": label, "method": "at", "dataset": "mnist", "eps": 0.1, "n_train": 2000,
                     "train_n": 500, "test_n": 500, "train_accuracy": 1.0, "test_accuracy": 0.94,
                     "train_pgd_accuracy": a + 0.2, "test_pgd_accuracy": a, "test_multitarget_accuracy": a - 0.02,
                     "test_autoattack_accuracy": a - 0.05, "test_autoattack_n": 25,
                     "train_lipschitz": 140.0 - i, "train_lipschitz_se": 2.1, "test_lipschitz": 137.0 - i,
                     "test_lipschitz_se": 2.2, "test_lipschitz_reference": 8.12, "test_lipschitz_reference_se": 0.19,
                     "gap_standard": 0.06, "gap_adversarial": 0.2})
    return rows


def test_the_layout_puts_every_column_in_one_block_that_fits():
    shown = display_rows(_wide_rows())
    cols = list(shown[0])
    blocks = tex_layout(cols, shown)
    assert len(blocks) > 1  # 13 columns do not fit one block
    assert sorted(c for b in blocks for c in b[1:]) == sorted(cols[1:]) and all(b[0] == "method" for b in blocks)
    one = tex_layout(cols, shown, textwidth_pt=1e9)
    assert one == [cols]  # unlimited width: one block, in order


def test_every_value_is_kept_in_the_latex():
    shown = display_rows(_wide_rows())
    tex = latex_table(list(shown[0]), shown, caption="Tables 2/3.")
    for row in shown:
        label, *cells = row.values()
        assert all(tex_escape(word) in tex for word in label.split()), label
        for text in cells:
            for line, _ in _cell_lines(text):
                assert tex_escape(line) in tex, line
    assert tex.splitlines()[0].startswith("% needs \\usepackage{booktabs}")


def test_a_cell_width_counts_its_longest_line():
    assert _width(_cell_lines("0.89 [0.81, 0.94]")) < _width([("0.89 [0.81, 0.94]", False)])


def _compile(tmp_path: Path, body: str, name: str) -> str:
    (tmp_path / f"{name}.tex").write_text(body)
    doc = tmp_path / f"doc_{name}.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                   f"\\input{{{name}}}\n\\end{{document}}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    log = (tmp_path / f"doc_{name}.log").read_text(errors="replace")
    assert done.returncode == 0, log[-2000:]
    return log


needs_pdflatex = pytest.mark.skipif(shutil.which("pdflatex") is None,
                                    reason="pdflatex not installed (make tex-deps installs Debian's texlive)")


@needs_pdflatex
def test_the_tables_compile_in_a_plain_article_without_an_overfull_box(tmp_path):
    from rll_core.findings import export_findings

    paths = export_table(_wide_rows(), tmp_path / "methods", title="Tables 2/3")
    findings = [{"finding": f, "method": m, "claim": FINDINGS[f].format(m=m),  # as many rows as make run's
                 "estimate": 0.17, "lo": 0.12, "hi": 0.22, "interval": "paired bootstrap", "verdict": "not separated",
                 "n_train": 500, "n_test": 500} for f in FINDINGS for m in ("natural", "AT", "TRADES (β=6)", "RST (λ=2)")]
    paths += export_findings(findings, tmp_path / "findings", caption="Section 5 findings.")
    for tex in [p for p in paths if p.suffix == ".tex"]:
        log = _compile(tmp_path, tex.read_text(), tex.stem)
        assert "Overfull \\hbox" not in log, (tex.name, re.findall(r"Overfull \\hbox.*", log))
        assert "Float too large" not in log, tex.name  # taller than a page


@needs_pdflatex
def test_the_overfull_check_bites_on_one_wide_block(tmp_path):
    """The same table in one block (as before the layout) overflows the page: the check above can fail."""
    shown = display_rows(_wide_rows())
    body = latex_table(list(shown[0]), shown, textwidth_pt=1e9)
    assert body.count("\\begin{tabular}{l") == 1
    assert "Overfull \\hbox" in _compile(tmp_path, body, "wide")


@needs_pdflatex
@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext (poppler-utils) not installed")
def test_the_rendered_text_reads_as_written(tmp_path):
    """Not only the boxes: the compiled PDF says "adversarial gap > 0" (a bare > in text mode prints ¿), and every
    special character of a caption comes out as itself."""
    from rll_core.findings import export_findings

    findings = [{"finding": "1a", "method": "at", "claim": FINDINGS["1a"].format(m="AT"), "estimate": 0.2, "lo": 0.1,
                 "hi": 0.3, "interval": "Newcombe", "verdict": "holds", "n_train": 500, "n_test": 500}]
    (tex,) = [p for p in export_findings(findings, tmp_path / "f", caption="50 % of {a} & b_c < d ~ e^f $5 #1")
              if p.suffix == ".tex"]
    _compile(tmp_path, tex.read_text(), "f")
    text = subprocess.run(["pdftotext", "-layout", str(tmp_path / "doc_f.pdf"), "-"], capture_output=True,
                          text=True, check=True).stdout
    assert re.search(r"1a AT\s+adversarial gap > 0", text) and "¿" not in text and "¡" not in text
    # (OT1's underscore, tilde and circumflex are glyphs pdftotext reads as a space, ˜ and ˆ: present, not lost)
    assert "50 % of {a} & b c < d ˜ eˆf $5 #1" in " ".join(text.split())


def test_a_long_caption_does_not_cut_a_block_that_fits_a_page():
    """A block that fits a float of its own is never split by rows because the caption is long (make run's Table 2/3
    caption is ~1,500 characters; its multi-targeted block came out as a page and a two-row stub): a long caption
    keeps its first sentence as the title and puts the rest under the table as notes."""
    rows = _wide_rows()
    shown = display_rows([*rows, *({**r, "label": f"{r['label']}, seed 2"} for r in rows[:4])])  # 12 rows
    caption = "Tables 2/3. " + "settings and intervals, " * 65
    body = latex_table(list(shown[0]), shown, caption=caption)
    blocks = tex_layout(list(shown[0]), shown)
    assert body.count("\\begin{tabular}{l") == len(blocks)  # each block whole, in one float
    assert body.count("\\begin{table}") > 1 and body.count("\\caption{(continued)}") == body.count("\\begin{table}") - 1
    # the caption's first sentence is the title above the table, the rest notes under its last block
    assert "\\caption{Tables 2/3.}" in body
    assert body.rindex("\\bottomrule") < body.index("\\emph{Notes.} settings and intervals,") < body.rindex("\\end{table}")


def _words(pdf: Path, page: int | None = None) -> list[tuple[str, float, float]]:
    """The words of a compiled PDF (pdftotext -bbox) as (text, top, bottom) in points from the page's top."""
    pages = ["-f", str(page), "-l", str(page)] if page else []
    xml = subprocess.run(["pdftotext", "-bbox", *pages, str(pdf), "-"], capture_output=True, text=True,
                         check=True).stdout
    return [(w, float(y0), float(y1)) for y0, y1, w in
            re.findall(r'<word [^>]*yMin="([\d.]+)"[^>]*yMax="([\d.]+)">([^<]*)</word>', xml)]


needs_pdftotext = pytest.mark.skipif(shutil.which("pdftotext") is None,
                                     reason="pdftotext (poppler-utils) not installed")


@needs_pdflatex
@needs_pdftotext
def test_the_caption_stands_clear_of_the_top_rule(tmp_path):
    """The caption above a booktabs table keeps a gap to the top rule (article's skips assume a caption below the
    float, which put the caption's descenders about 4 pt above the header's text, on the rule)."""
    _compile(tmp_path, latex_table(["method", "acc"], [{"method": "AT", "acc": "0.90"}], caption="A table."), "c")
    words = _words(tmp_path / "doc_c.pdf")
    caption_bottom = next(b for w, _, b in words if w == "1:")
    header_top = next(t for w, t, _ in words if w == "method")
    assert header_top - caption_bottom >= 8.0


@needs_pdflatex
@needs_pdftotext
def test_a_table_of_several_floats_stays_near_its_place(tmp_path):
    """Every float of a table taller than a page comes before the text that follows it by a few pages ([t] alone
    sent the continued ones, too tall for a page's top area, to the end of the document)."""
    rows = _wide_rows()
    (tex,) = [p for p in export_table(rows, tmp_path / "m", title="Tables 2/3. " + "settings and intervals, " * 60)
              if p.suffix == ".tex"]
    para = "Text of a paper around the table. " * 40 + "\n\n"
    (tmp_path / "t.tex").write_text(tex.read_text())
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                                      + para * 3 + "\\input{t}\n" + para * 12 + "\\section{Next}\n" + para * 6
                                      + "\\end{document}\n")
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                   capture_output=True, timeout=120, check=True)
    n_floats = tex.read_text().count("\\begin{table}")
    pages = subprocess.run(["pdfinfo", str(tmp_path / "doc.pdf")], capture_output=True, text=True, check=True).stdout
    texts = [" ".join(w for w, _, _ in _words(tmp_path / "doc.pdf", p))
             for p in range(1, int(re.search(r"Pages:\s+(\d+)", pages).group(1)) + 1)]
    float_pages = [i for i, t in enumerate(texts) for _ in range(t.count("Table 1:"))]
    next_section = next(i for i, t in enumerate(texts) if "1 Next" in t)
    assert n_floats > 1 and len(float_pages) == n_floats
    assert max(float_pages) < next_section
