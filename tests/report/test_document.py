"""Tests for ``reprlab.report.document``: the block model rendered to Markdown and HTML."""

from __future__ import annotations

import base64

from reprlab.report.document import Code, FigureBlock, Heading, Lines, Link, Para, Table, render_html, render_markdown

BLOCKS = [
    Heading(2, "Summary <1>", "summary-1"),
    Para(["a | b <c> ", Code("x|y"), " ", Link("run a", "runs/a%20b/")]),
    Para(["careful"], kind="note"),
    Table(["Name", "Acc"], [[Lines([["s0 ", Link("r|0", "r0/")], ["s1 ", Code("c|d")]]), "41.00 ± —"]], frozenset({1})),
    FigureBlock("fig-a", "A figure", b"\x89PNG fake"),
]


def test_markdown_escapes_table_cells_and_links_figures() -> None:
    md = render_markdown("T", BLOCKS)
    assert md.startswith("# T\n\n## Summary <1>\n")
    assert "a | b &lt;c> `x|y` [run a](runs/a%20b/)" in md  # outside a table a pipe is text
    assert "> careful" in md
    assert "| Name | Acc |\n|---|---:|\n| s0 [r\\|0](r0/); s1 `c\\|d` | 41.00 ± — |" in md
    assert "![A figure](figures/fig-a.png)" in md and "([SVG](figures/fig-a.svg))" in md


def test_html_is_self_contained_and_escaped() -> None:
    page = render_html("T <x>", BLOCKS)
    assert "<title>T &lt;x&gt;</title>" in page and '<li><a href="#summary-1">Summary &lt;1&gt;</a></li>' in page
    assert '<h2 id="summary-1">Summary &lt;1&gt;</h2>' in page
    assert '<p class="note">careful</p>' in page
    assert '<td>s0 <a href="r0/">r|0</a><br>s1 <code>c|d</code></td><td class="num">41.00 ± —</td>' in page
    data = base64.b64encode(BLOCKS[-1].png).decode()
    assert f'src="data:image/png;base64,{data}"' in page
    assert "<script" not in page and "<link" not in page
