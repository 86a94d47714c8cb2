"""LaTeX tables a paper can ``\\input`` as they are: booktabs, inside ``\\textwidth`` of a standard article.

A wide table (Tables 2-4 have up to 13 columns) is laid out in as many stacked ``tabular`` blocks as it
needs, each repeating the first column, so that no block is wider than the text of ``\\documentclass{article}``
(345 pt at 10 pt); an interval (``0.89 [0.81, 0.94]``) goes on a second, smaller line under its value, and
headers and long first-column labels wrap onto up to three lines.  Nothing is scaled: the table keeps the
text's ``\\small`` size.  The only package needed is ``booktabs`` (the file's first line says so).  Widths
are estimated from the characters (a ``\\small`` Computer Modern digit is 4.6 pt); the tests compile the
tables with pdflatex and find no overfull box.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["TEXTWIDTH_PT", "latex_table", "tex_escape", "tex_layout"]

#: ``\textwidth`` of ``\documentclass{article}`` at its default 10 pt (letter or A4 paper), in points
TEXTWIDTH_PT = 345.0
_CHAR_PT = 4.5  # a \small character, on average (digits 4.6 pt, brackets and spaces less, capitals more)
_SMALLER = 0.75  # \scriptsize against \small
_PAD_PT = 12.0  # 2 \tabcolsep
_HEAD_CHARS = 12  # a header line wraps after this many characters
_LABEL_CHARS = 20  # so does a first-column label
_TEXT_CHARS = 28  # and words in a body cell
_LINE_PT = 11.0  # a \small line in a tabular (measured: a two-line interval row is about 18 pt)
_SMALL_LINE_PT = 7.0  # a \scriptsize one
_BLOCK_PT = 20.0  # rules and the gap between blocks
_FLOAT_PT = 495.0  # what one float may hold: 0.9 \textheight (about 550 pt)
_NOTE_LINE_PT = 9.5  # a \footnotesize line of the notes under a table
_CAPTION_CHARS = 140  # a caption of up to two lines stays whole; a longer one keeps its first sentence

#: Characters of the display tables and their LaTeX (math where it is math).
_TEX = {"\\": "\\textbackslash{}", "_": "\\_", "&": "\\&", "%": "\\%", "#": "\\#", "$": "\\$", "{": "\\{",
        "}": "\\}", ">": "\\textgreater{}", "<": "\\textless{}", "~": "\\textasciitilde{}",
        "^": "\\textasciicircum{}", "β": "$\\beta$",
        "λ": "$\\lambda$", "μ": "$\\mu$", "ε": "$\\varepsilon$", "±": "$\\pm$", "−": "$-$", "ℓ∞": "$\\ell_\\infty$",
        "ℓ1": "$\\ell_1$", "→": "$\\to$"}
_INTERVAL = re.compile(r"^(\S+)\s+(\[[^\]]+\])$")
#: every key of _TEX, the longest first, replaced in one pass (a replacement is never escaped again)
_TEX_KEYS = re.compile("|".join(re.escape(k) for k in sorted(_TEX, key=len, reverse=True)))


def tex_escape(text: str) -> str:
    """Plain text (with β, λ, μ, ε, ±, ℓ∞ ..., and LaTeX's special characters ``\\ _ & % # $ { } > < ~ ^``) as
    LaTeX source that prints it as written.

    >>> print(tex_escape("gap > 0 & 5 %"))
    gap \\textgreater{} 0 \\& 5 \\%
    """
    return _TEX_KEYS.sub(lambda m: _TEX[m.group()], text)


def _wrap(text: str, width: int, max_lines: int = 3) -> list[str]:
    """Words onto lines of about ``width`` characters, at most ``max_lines`` (the last takes the rest)."""
    lines: list[str] = []
    for word in text.split():
        if lines and (len(lines[-1]) + 1 + len(word) <= width or len(lines) == max_lines):
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def _cell_lines(text: str) -> list[tuple[str, bool]]:
    """A body cell as (line, smaller) pairs: an interval moves to a second, smaller line; words wrap."""
    m = _INTERVAL.match(text.strip())
    if m:
        return [(m.group(1), False), (m.group(2), True)]
    return [(t, False) for t in _wrap(text, _TEXT_CHARS, max_lines=6)]


def _width(lines: Sequence[tuple[str, bool]]) -> float:
    return max(len(t) * _CHAR_PT * (_SMALLER if small else 1.0) for t, small in lines) + _PAD_PT


def _stack(lines: Sequence[tuple[str, bool]], align: str, valign: str = "t") -> str:
    """One or more lines in one cell: a nested ``tabular`` (no package needed), top- or bottom-aligned."""
    body = [("\\scriptsize " if small else "") + tex_escape(t) for t, small in lines]
    if len(body) == 1:
        return body[0]
    return f"\\begin{{tabular}}[{valign}]{{@{{}}{align}@{{}}}}" + "\\\\".join(body) + "\\end{tabular}"


def _greedy(first: float, cols: Sequence[str], widths: Mapping[str, float], room: float) -> list[list[str]]:
    blocks: list[list[str]] = [[]]
    used = first
    for c in cols:
        if blocks[-1] and used + widths[c] > room:
            blocks.append([])
            used = first
        blocks[-1].append(c)
        used += widths[c]
    return blocks


def _balanced(first: float, cols: Sequence[str], widths: Mapping[str, float], room: float) -> list[list[str]]:
    """As few blocks as the greedy fill needs, with the columns spread evenly over them where that fits."""
    greedy = _greedy(first, cols, widths, room)
    k = len(greedy)
    size = -(-len(cols) // k)
    even = [list(cols[i:i + size]) for i in range(0, len(cols), size)]
    fits = len(even) == k and all(first + sum(widths[c] for c in b) <= room for b in even)
    return even if fits else greedy


def tex_layout(cols: Sequence[str], rows: Sequence[Mapping[str, str]], textwidth_pt: float = TEXTWIDTH_PT,
               groups: Sequence[Sequence[str]] | None = None) -> list[list[str]]:
    """The columns of each stacked block: the first column, then as many others as fit ``textwidth_pt``.

    Args:
        cols: the column names, the first one (the method) repeated in every block.
        rows: the rows as strings (``{column: text}``).
        textwidth_pt: the width each block must fit, in points (default :data:`TEXTWIDTH_PT`).
        groups: columns that belong together (accuracies; Lipschitz constants and gaps): no block mixes two
            groups (default: one group, every column but the first).

    Returns:
        One list of column names per block, each beginning with ``cols[0]``; every column in exactly one block,
        in the order of ``cols``.

    Raises:
        ValueError: no columns, or groups that do not cover the columns once each.

    Example:
        >>> tex_layout(["method", "acc"], [{"method": "AT", "acc": "0.90 [0.83, 0.94]"}])
        [['method', 'acc']]
    """
    if not cols:
        raise ValueError("no columns")
    groups = [list(cols[1:])] if groups is None else [[c for c in cols if c in set(g)] for g in groups]
    if sorted(c for g in groups for c in g) != sorted(cols[1:]):
        raise ValueError(f"groups must cover the columns {list(cols[1:])} once each, got {groups}")
    widths = {c: max(_width([(h, False) for h in _wrap(c, _HEAD_CHARS)]),
                     *(_width(_cell_lines(str(r[c]))) for r in rows)) for c in cols[1:]}
    first = max(_width([(h, False) for h in _wrap(cols[0], _HEAD_CHARS)]),
                *(_width([(t, False) for t in _wrap(str(r[cols[0]]), _LABEL_CHARS)]) for r in rows))
    room = 0.97 * textwidth_pt
    return [[cols[0], *b] for g in groups if g for b in _balanced(first, g, widths, room)]


def _height(block: Sequence[str], rows: Sequence[Mapping[str, str]]) -> float:
    """A block's height in points: its header lines, each row's tallest cell, rules and the gap above it."""
    head = max(len(_wrap(c, _HEAD_CHARS)) for c in block) * _LINE_PT
    body = 0.0
    for r in rows:
        lines = [[(t, False) for t in _wrap(str(r[block[0]]), _LABEL_CHARS)], *(_cell_lines(str(r[c])) for c in block[1:])]
        body += max(sum(_SMALL_LINE_PT if small else _LINE_PT for _, small in cell) for cell in lines)
    return head + body + _BLOCK_PT


def _row_chunks(block: Sequence[str], rows: Sequence[Mapping[str, str]],
                room: float) -> list[Sequence[Mapping[str, str]]]:
    """The rows in runs that each fit ``room`` points with the block's header (a long table over several floats)."""
    chunks: list[list[Mapping[str, str]]] = [[]]
    for r in rows:
        if chunks[-1] and _height(block, [*chunks[-1], r]) > room:
            chunks.append([])
        chunks[-1].append(r)
    return [c for c in chunks if c] or [[]]


def latex_table(cols: Sequence[str], rows: Sequence[Mapping[str, str]], caption: str = "",
                textwidth_pt: float = TEXTWIDTH_PT, groups: Sequence[Sequence[str]] | None = None) -> str:
    """A booktabs table, laid out by :func:`tex_layout`, as LaTeX source (``table`` floats when captioned).

    Blocks that do not fit one page together go into a second float, numbered as the first and captioned
    "(continued)"; a block with more rows than a page holds is split by rows the same way.  A caption longer than
    two lines keeps its first sentence above the table (the title) and puts the rest under its last block, in
    small type, as notes.

    Args:
        cols: the column names (headers in words; the first column left-aligned, the rest right-aligned).
        rows: the rows as strings (``{column: text}``); ``0.89 [0.81, 0.94]`` puts the interval on a second line.
        caption: the float's caption (default none: the bare tabular blocks).
        textwidth_pt: the width each block must fit, in points (default :data:`TEXTWIDTH_PT`).
        groups: columns no block mixes (default one group; see :func:`tex_layout`).

    Returns:
        The LaTeX source, beginning with a comment naming the one package it needs (booktabs).

    Raises:
        ValueError: no columns, or groups that do not cover them.

    Example:
        >>> print(latex_table(["method", "acc"], [{"method": "AT", "acc": "0.90"}]).splitlines()[0])
        % needs \\usepackage{booktabs}; every block fits \\textwidth of a standard article
    """
    title, notes = _split_caption(caption)
    head = len(title) / 70 * _LINE_PT + _LINE_PT  # the first float's caption; a continued one's is a line
    notes_pt = (len(notes) / 95 + 1) * _NOTE_LINE_PT if notes else 0.0
    # a block is split by rows only where it is taller than the float that takes it (the first block meets the
    # caption, every later one a float of its own at worst)
    blocks = [(b, part) for i, b in enumerate(tex_layout(cols, rows, textwidth_pt, groups))
              for part in _row_chunks(b, rows, _FLOAT_PT - (head if i == 0 else 2 * _LINE_PT) - _LINE_PT)]
    floats: list[list[tuple[list[str], Sequence[Mapping[str, str]]]]] = [[]]
    used = head
    for k, (block, part) in enumerate(blocks):
        h = _height(block, part) + (notes_pt if k == len(blocks) - 1 else 0.0)  # the notes go under the last
        if floats[-1] and used + h > _FLOAT_PT:
            floats.append([])
            used = 2 * _LINE_PT
        floats[-1].append((block, part))
        used += h
    out = ["% needs \\usepackage{booktabs}; every block fits \\textwidth of a standard article"]
    for k, held in enumerate(floats):
        if caption:
            # [tbp]: a float taller than a page's top area (0.7 of it) goes on a float page of its own near
            # its place ([t] alone sent the continued ones to the end of the document); the caption sits above
            # the top rule with a gap, as booktabs asks (article's skips assume a caption below)
            out += ["\\begin{table}[tbp]", "\\centering", "\\small",
                    "\\setlength{\\abovecaptionskip}{0pt}\\setlength{\\belowcaptionskip}{6pt}"]
            out += [f"\\caption{{{tex_escape(title)}}}"] if k == 0 else [
                "\\addtocounter{table}{-1}", "\\caption{(continued)}"]
        for i, (cols_i, some) in enumerate(held):
            if i:
                out.append("\\par\\medskip")
            out += _tabular(cols_i, some)
        if notes and k == len(floats) - 1:
            out += ["\\par\\smallskip", "\\begin{minipage}{\\linewidth}\\footnotesize",
                    f"\\emph{{Notes.}} {tex_escape(notes)}", "\\end{minipage}"]
        if caption:
            out.append("\\end{table}")
    return "\n".join(out)


def _split_caption(caption: str) -> tuple[str, str]:
    """A long caption as its first sentence (the ``\\caption``: a title, as booktabs tables have above them) and
    the rest (notes in small type under the table's last block); a caption of up to two lines stays whole.

    >>> _split_caption("Table 2. MNIST, eps = 0.1; intervals are 95 % Wilson intervals. " * 3)[0]
    'Table 2.'
    """
    caption = caption.strip()
    if len(caption) <= _CAPTION_CHARS:
        return caption, ""
    cut = re.search(r"\.\s", caption)
    if cut is None or cut.end() >= len(caption):
        return caption, ""
    return caption[:cut.start() + 1], caption[cut.end():]


#: a cell a column of numbers holds: a number (signed, with separators, an interval or an error after it) or a dash
_NUMBER = re.compile(r"^([-+−]?[\d.,]+(\s.*)?|-)$")


def _align(column: str, rows: Sequence[Mapping[str, str]]) -> str:
    """``r`` for a column of numbers, ``l`` for one of words (a claim, a verdict), as a reader scans each."""
    return "r" if all(_NUMBER.match(str(r[column]).strip()) for r in rows) else "l"


def _tabular(block: Sequence[str], rows: Sequence[Mapping[str, str]]) -> list[str]:
    align = ["l", *(_align(c, rows) for c in block[1:])]
    out = ["\\begin{tabular}{" + "".join(align) + "}", "\\toprule",
           " & ".join(_stack([(h, False) for h in _wrap(c, _HEAD_CHARS)], a, "b")
                      for c, a in zip(block, align, strict=True)) + " \\\\", "\\midrule"]
    for r in rows:
        cells = [_stack([(t, False) for t in _wrap(str(r[block[0]]), _LABEL_CHARS)], "l")]
        cells += [_stack(_cell_lines(str(r[c])), a) for c, a in zip(block[1:], align[1:], strict=True)]
        out.append(" & ".join(cells) + " \\\\")
    return [*out, "\\bottomrule", "\\end{tabular}"]
