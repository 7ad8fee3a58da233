"""``reprlab report ROOT [--out DIR]``: build report.md and report.html from finished runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "report"
HELP = "build report.md and a self-contained report.html (tables + figures) from a study's run directories"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Register the positional study root and the optional output directory."""
    p.add_argument("root", type=Path, help="study directory; every directory below it holding result.json is a run")
    p.add_argument("--out", type=Path, default=None, help="where to write report.md, report.html and figures/ (default: ROOT)")


def run(args: argparse.Namespace) -> int:
    """Build the report. Unreadable run directories are listed in it (and counted here) instead
    of aborting; a missing or empty study folder is a ReprlabError for the CLI's handler."""
    # Imported here so `reprlab --help` does not pay for importing matplotlib.
    from reprlab.report.build import build

    built = build(args.root, args.out)
    print(f"wrote {built.md}")
    print(f"wrote {built.html}")
    study = built.study
    if study.bad:
        print(f"reprlab: warning: {len(study.bad)} unreadable run director{'y' if len(study.bad) == 1 else 'ies'} left out "
              f"(listed in the report): {'; '.join(b.reason for b in study.bad[:3])}{' ...' if len(study.bad) > 3 else ''}", file=sys.stderr)
    if study.failed:
        print(f"reprlab: warning: {len(study.failed)} failed run(s), listed under 'Failed runs'", file=sys.stderr)
    return 0
