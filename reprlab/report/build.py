"""Build ``report.md``, ``report.html`` and ``figures/*.{png,svg}`` for a study folder.

:func:`build_report` is what ``reprlab report`` calls. A run directory that cannot be read is
listed in the report with its reason instead of aborting the build; only a missing study folder,
or one without any run directory, raises :class:`~reprlab.errors.ReprlabError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reprlab.report import sections
from reprlab.report.document import Code, render_html, render_markdown
from reprlab.report.load import Study, load_study
from reprlab.report.tables import group_runs

__all__ = ["Built", "build", "build_report"]


@dataclass(frozen=True)
class Built:
    """What a build wrote, and the study it was built from."""

    html: Path
    md: Path
    study: Study


def build(root: Path, out_dir: Path | None = None) -> Built:
    """Build the report of the study at ``root`` into ``out_dir`` (default: ``root``)."""
    root = Path(root)
    study = load_study(root)
    out_dir = Path(out_dir) if out_dir is not None else root
    out_dir.mkdir(parents=True, exist_ok=True)
    page = sections.Page(study, out_dir)
    groups = group_runs(study.main_runs)

    n_sweeps = len({r.get("sweep") for r in study.sweep_runs})
    left_out = [f"{len(study.incomplete) + len(study.orphans)} incomplete/missing"]
    if study.stale:
        left_out.append(f"{len(study.stale)} stale")
    if study.bad:
        left_out.append(f"{len(study.bad)} unreadable")
    page.para(
        "Study ",
        Code(str(root)),
        f": {len(study.complete)} complete run(s) in {len(groups)} group(s), "
        f"{len(study.sweep_runs)} sweep trial run(s) in {n_sweeps} sweep(s), "
        f"{', '.join(left_out)}. Sweep trials appear only in the Sweeps section.",
    )
    warns = sections.input_warnings(study, groups)
    if warns:
        page.heading(2, "Warnings")
        for w in warns:
            page.note(w)
    sections.summary(page, groups)
    sections.gains(page, groups)
    sections.bars(page, groups)
    sections.fraction(page, groups)
    sections.ssl_methods(page, groups)
    sections.published(page, groups)
    sections.cnn_vit(page, groups)
    sections.sweeps(page, study.sweep_runs)
    sections.curves(page, groups)
    sections.incomplete(page, study, groups)
    sections.unreadable(page, study)
    sections.all_runs(page, study)
    page.remove_stale_figures()

    title = f"reprlab report: {root.resolve().name}"
    md_path = out_dir / "report.md"
    md_path.write_text(render_markdown(title, page.blocks), encoding="utf-8")
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(title, page.blocks), encoding="utf-8")
    return Built(html=html_path, md=md_path, study=study)


def build_report(root: Path, out_dir: Path | None = None) -> Path:
    """Build ``report.md``, ``report.html`` and ``figures/*.{png,svg}``; returns ``report.html``."""
    return build(root, out_dir).html
