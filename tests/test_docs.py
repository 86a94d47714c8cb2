"""The documentation: the Sphinx site builds without a warning, every public name has its page, no link is broken."""

from __future__ import annotations

import html as html_module
import re
import subprocess
import sys
from pathlib import Path

import pytest

import rll_core

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _relative_links(markdown: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", markdown.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if "://" not in t and not t.startswith("mailto:")]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-W", "--keep-going", "-E", "-b", "html",
                           "-d", str(out / "doctrees"), str(ROOT / "docs"), str(out / "html")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "html"


def test_every_public_name_has_a_page_with_its_docstring(site):
    names = [n for n in rll_core.__all__ if n != "__version__"]
    for name in names:
        page = site / "api" / f"{name}.html"
        assert page.exists(), name
        doc = (getattr(rll_core, name).__doc__ or "").strip().splitlines()[0]
        first_words = " ".join(re.sub(r"[`*:]", "", doc).split()[:3])
        html = re.sub(r"[`*:]", "", html_module.unescape(re.sub(r"<[^>]+>", "", page.read_text())))
        html = html.replace("\u2019", "'").replace("\u201c", "\"").replace("\u201d", "\"")  # smartquotes
        assert first_words in " ".join(html.split()), (name, first_words)


def test_every_page_and_notebook_is_built(site):
    for md in (ROOT / "docs").glob("*.md"):
        assert (site / f"{md.stem}.html").exists(), md.name
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        assert (site / "notebooks" / f"{nb.stem}.html").exists(), nb.name


def test_the_site_renders_math_offline_and_opens_on_the_readme(site):
    """No raw $...$ left in any page (MathJax typesets \\( \\) from its own copy in _static, no CDN); the front
    page is the README with its links and pictures rewritten for the site; the footer names its authors."""
    raw = re.compile(r"\$[^$\s][^$]*\\[a-zA-Z]+[^$]*\$")  # a $...$ span holding a LaTeX command
    for page in site.rglob("*.html"):
        text = re.sub(r"<(script|pre|code)\b.*?</\1>", "", page.read_text(), flags=re.S)
        assert not raw.search(text), (page.name, raw.search(text).group()[:80])
        if "mathjax" in page.read_text().lower():
            assert "cdn" not in " ".join(re.findall(r'src="([^"]*mathjax[^"]*)"', page.read_text())), page.name
    assert (site / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert "\\(\\ell_\\infty\\)" in (site / "notebooks" / "02_theory.html").read_text()
    front = (site / "index.html").read_text()
    assert "Your own data and model" in front and 'href="results.html"' in front and "_images/fig_train_vs_test" in front
    assert "2026, the rll authors" in front and "&#169;. |" not in front
    # code and notebook outputs wrap at the page's width (alabaster scrolls them sideways)
    assert '_static/rll.css' in front and "pre-wrap" in (site / "_static" / "rll.css").read_text()


def test_no_link_of_the_readme_or_the_pages_is_broken():
    """Sphinx checks links between pages (-W); this checks the README and the images the pages show."""
    broken = []
    for md in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in _relative_links(md):
            if not (md.parent / target).exists():
                broken.append(f"{md.relative_to(ROOT)} -> {target}")
    assert not broken


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    text = "\n".join(lines)
    for must in ("make run", "make test", "make docs", "docs/_build/html/index.html"):
        assert must in text


def test_the_readme_example_runs_as_written_on_an_npz_of_your_own(own_npz, capsys, monkeypatch):
    """The front page's Python block, on a small .npz in place of mine.npz (one epoch): it runs and prints."""
    text = (ROOT / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert 'load_train_test("mine.npz")' in code
    code = code.replace('"mine.npz"', repr(str(own_npz))).replace("epochs=2", "epochs=1")
    monkeypatch.setenv("RLL_PROGRESS", "off")
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example
    out = capsys.readouterr().out.splitlines()
    # readable as printed: n and 95 % intervals, the Lipschitz mean with its standard error (no tensor(...))
    assert re.fullmatch(r"n = 16: clean [01]\.\d{3} \[[01]\.\d{3}, [01]\.\d{3}\], pgd .*, multitarget .*", out[-2]), out[-2]
    assert re.fullmatch(r"local Lipschitz \d+\.\d ± \d+\.\d \(s\.e\., n = 16\)", out[-1]), out[-1]


def test_docs_images_are_refreshed_from_one_run_with_their_captions(tmp_path):
    """tools/docs_images.py: a picture takes its run's figure (same name, or the one tagged name), its caption
    line the figure's caption file; --check changes nothing; a picture without one source is kept."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_images", ROOT / "tools" / "docs_images.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    img, run = tmp_path / "img", tmp_path / "figures"
    img.mkdir()
    run.mkdir()
    (img / "fig_a.png").write_bytes(b"old a")
    (img / "fig_b.png").write_bytes(b"old b")
    (run / "fig_a_n150-e20.png").write_bytes(b"new a")
    (run / "fig_a_n150-e20.caption.txt").write_text("MNIST · new settings.\n")
    (run / "fig_b_x.png").write_bytes(b"one b")
    (run / "fig_b_y.png").write_bytes(b"another b")  # two candidates: which is meant is unknown, so kept
    page = tmp_path / "page.md"
    page.write_text("text\n\n![a](img/fig_a.png)\n\n*MNIST · old settings.*\n\n![b](img/fig_b.png)\n\n*b's own.*\n")
    before = page.read_text()
    assert tool.refresh(img, [page], [run], check=True) == ["fig_a.png <- " + str(run / "fig_a_n150-e20.png"),
                                                            "page.md: caption of fig_a.png"]
    assert page.read_text() == before and (img / "fig_a.png").read_bytes() == b"old a"
    tool.refresh(img, [page], [run])
    assert (img / "fig_a.png").read_bytes() == b"new a" and (img / "fig_b.png").read_bytes() == b"old b"
    assert page.read_text() == before.replace("*MNIST · old settings.*", "*MNIST · new settings.*")
    assert tool.refresh(img, [page], [run], check=True) == []  # a second run changes nothing
