"""Stage `report`: collect every stage's metrics, figures and the environment into reports/index.html."""
from __future__ import annotations

from pathlib import Path

from genlab.io import atomic_write
from genlab.report.build import environment, render_html, render_markdown, sections
from genlab.runner import git_sha


def run(cfg) -> None:
    reports = Path(cfg.paths.reports)
    secs = sections(reports)
    env = environment(Path(cfg.paths.data), git_sha())
    atomic_write(reports / "index.html", lambda fh: fh.write(render_html(cfg.report.title, secs, env)), mode="w")
    atomic_write(reports / "report.md", lambda fh: fh.write(render_markdown(cfg.report.title, secs, env)), mode="w")
    print(f"[genlab] report: {len(secs)} sections → {reports / 'index.html'}")
