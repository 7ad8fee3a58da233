"""``reprlab report ROOT [--out DIR]``: build report.md and report.html from finished runs."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "report"
HELP = "build report.md and a self-contained report.html (tables + figures) from a study's run directories"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Register the positional study root and the optional output directory."""
    p.add_argument("root", type=Path, help="study directory; every directory below it holding result.json is a run")
    p.add_argument("--out", type=Path, default=None, help="where to write report.md, report.html and figures/ (default: ROOT)")


def run(args: argparse.Namespace) -> int:
    """Build the report; a ReprlabError (bad run directory) propagates to the CLI's handler."""
    # Imported here so `reprlab --help` does not pay for importing matplotlib.
    from reprlab.studies.report import build_report

    html = build_report(args.root, args.out)
    print(f"wrote {html.with_name('report.md')}")
    print(f"wrote {html}")
    return 0
