"""The report as a list of blocks (headings, paragraphs, tables, figures), rendered twice:
to Markdown with relative figure links and to one self-contained HTML page."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from typing import Sequence, Union

__all__ = [
    "FIGURES_DIR",
    "Link",
    "Code",
    "Lines",
    "Inline",
    "Cell",
    "Heading",
    "Para",
    "Table",
    "FigureBlock",
    "Block",
    "render_markdown",
    "render_html",
]

FIGURES_DIR = "figures"  # next to report.md; the Markdown links into it, the HTML inlines it


@dataclass(frozen=True)
class Link:
    text: str
    href: str


@dataclass(frozen=True)
class Code:
    text: str


Inline = Union[str, Link, Code]


class Lines(list):
    """A table cell with several lines (one per run); joined by <br> in HTML, '; ' in Markdown."""


Cell = Union[Inline, list, Lines]


@dataclass
class Heading:
    level: int
    text: str
    anchor: str


@dataclass
class Para:
    parts: list[Inline]
    kind: str = "p"  # "p" or "note"


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]
    numeric: frozenset[int] = frozenset()  # right-aligned columns


@dataclass
class FigureBlock:
    stem: str
    caption: str
    png: bytes


Block = Union[Heading, Para, Table, FigureBlock]


def _cell_lines(cell: Cell) -> list[list[Inline]]:
    if isinstance(cell, Lines):
        return [list(line) if isinstance(line, list) else [line] for line in cell]
    if isinstance(cell, list):
        return [cell]
    return [[cell]]


def _md_inline(part: Inline, in_table: bool = False) -> str:
    if isinstance(part, Link):
        return f"[{_md_text(part.text, in_table)}]({part.href})"
    if isinstance(part, Code):
        # newlines would end the table row; GFM reads "\|" as a pipe inside a cell's code span
        text = part.text.replace("`", "").replace("\n", " ")
        if in_table:
            text = text.replace("|", r"\|")
        return f"`{text}`"
    return _md_text(part, in_table)


def _md_text(text: str, in_table: bool) -> str:
    # "<" would start raw HTML in Markdown; group names are plain text.
    text = text.replace("\n", " ").replace("<", "&lt;")
    return text.replace("|", r"\|") if in_table else text


def _html_inline(part: Inline) -> str:
    if isinstance(part, Link):
        return f'<a href="{html.escape(part.href)}">{html.escape(part.text)}</a>'
    if isinstance(part, Code):
        return f"<code>{html.escape(part.text)}</code>"
    return html.escape(part)


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    """Markdown with relative figure links (``figures/<stem>.png``)."""
    out = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out += [f"{'#' * b.level} {b.text}", ""]
        elif isinstance(b, Para):
            text = "".join(_md_inline(p) for p in b.parts)
            out += [f"> {text}" if b.kind == "note" else text, ""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_text(h, True) for h in b.header) + " |")
            out.append("|" + "|".join("---:" if i in b.numeric else "---" for i in range(len(b.header))) + "|")
            for row in b.rows:
                cells = ["; ".join("".join(_md_inline(p, True) for p in line) for line in _cell_lines(c)) for c in row]
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
        elif isinstance(b, FigureBlock):
            out += [f"![{b.caption}]({FIGURES_DIR}/{b.stem}.png)", "", f"*{b.caption}* ([SVG]({FIGURES_DIR}/{b.stem}.svg))", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body{font-family:"Liberation Sans",Arial,Helvetica,sans-serif;color:#1d1d1f;margin:0;background:#f6f7f9;line-height:1.45}
main{max-width:1220px;margin:0 auto;padding:24px 32px 64px;background:#fff;box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{font-size:1.7em;margin:.2em 0 .4em}
h2{font-size:1.3em;margin-top:1.8em;padding-bottom:.2em;border-bottom:2px solid #e3e6ea}
h3{font-size:1.08em;margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:13px;width:auto;max-width:100%}
th,td{border:1px solid #d9dde3;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#eef1f5;font-weight:600}
tr:nth-child(even) td{background:#fafbfc}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{font-family:"Liberation Mono",Menlo,monospace;font-size:.92em;background:#f1f3f5;padding:0 3px;border-radius:3px}
a{color:#0b5cad;text-decoration:none}a:hover{text-decoration:underline}
figure{margin:1em 0 1.6em}figure img{max-width:100%;height:auto;border:1px solid #e3e6ea}
figcaption{font-size:13px;color:#555;margin-top:4px}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;font-size:14px}
nav ul{columns:2;font-size:14px}
""".strip()


def render_html(title: str, blocks: Sequence[Block]) -> str:
    """A single self-contained page: inline CSS, PNGs as base64 data URIs."""
    body: list[str] = [f"<h1>{html.escape(title)}</h1>"]
    toc = [b for b in blocks if isinstance(b, Heading) and b.level == 2]
    if toc:
        items = "".join(f'<li><a href="#{b.anchor}">{html.escape(b.text)}</a></li>' for b in toc)
        body.append(f"<nav><ul>{items}</ul></nav>")
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f'<h{b.level} id="{b.anchor}">{html.escape(b.text)}</h{b.level}>')
        elif isinstance(b, Para):
            text = "".join(_html_inline(p) for p in b.parts)
            body.append(f'<p class="note">{text}</p>' if b.kind == "note" else f"<p>{text}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            rows = []
            for row in b.rows:
                tds = []
                for i, c in enumerate(row):
                    inner = "<br>".join("".join(_html_inline(p) for p in line) for line in _cell_lines(c))
                    tds.append(f'<td class="num">{inner}</td>' if i in b.numeric else f"<td>{inner}</td>")
                rows.append("<tr>" + "".join(tds) + "</tr>")
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        elif isinstance(b, FigureBlock):
            data = base64.b64encode(b.png).decode("ascii")
            cap = html.escape(b.caption)
            svg = html.escape(f"{FIGURES_DIR}/{b.stem}.svg")
            body.append(
                f'<figure id="fig-{html.escape(b.stem)}"><img src="data:image/png;base64,{data}" alt="{cap}">'
                f'<figcaption>{cap} (<a href="{svg}">SVG</a>)</figcaption></figure>'
            )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )
