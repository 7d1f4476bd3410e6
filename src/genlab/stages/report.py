"""Stage `report`: every stage's claims merged into reports/metrics/conclusions.json (the table the report
opens with), every stage's metrics and figures, a headline table, the metrics diff vs HEAD, config and
environment → reports/index.html; the same files published to wandb (offline by default)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from genlab.io import atomic_write
from genlab.report.build import (HEADLINE, config_sections, environment, headline, metrics_diff, render_html,
                                 render_markdown, sections)
from genlab.report.conclusions import collect
from genlab.report.publish import publish
from genlab.tracking import git_sha


def run(cfg) -> None:
    reports = Path(cfg.paths.reports)
    claims = collect(reports)
    secs = sections(reports)
    env = environment(Path(cfg.paths.data), git_sha())
    heads = headline(secs)
    configs = config_sections(OmegaConf.to_container(cfg, resolve=True),
                              list(dict.fromkeys(["trainer", *(h[3] for h in HEADLINE)])))
    page = render_html(cfg.report.title, secs, env, heads, metrics_diff(), configs)
    atomic_write(reports / "index.html", lambda fh: fh.write(page), mode="w")
    atomic_write(reports / "report.md", lambda fh: fh.write(render_markdown(cfg.report.title, secs, env, heads)),
                 mode="w")
    runs = publish(cfg, reports, [s["name"] for s in secs])
    verdicts = {v: sum(c["verdict"] == v for c in claims) for v in ("holds", "does not hold", "inconclusive")}
    print(f"[genlab] report: {len(claims)} claims ({', '.join(f'{n} {v}' for v, n in verdicts.items())}); "
          f"{len(secs)} sections → {reports / 'index.html'}; {runs} wandb results runs")
