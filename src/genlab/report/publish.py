"""Publish what the stages wrote to wandb: one ``<stage>/results`` run per report section.

Training runs (``runner.session``) log curves while they train; their stage writes figures,
text samples and metrics *after* the run closed. The report stage therefore publishes the
files themselves, so the wandb dashboard shows exactly what ``reports/`` holds:

  reports/figures/<stage>/*.png  → images     ``<stage>/<figure>``
  reports/figures/<stage>/*.txt  → tables     ``<stage>/<file>`` (LM samples; RLHF policy vs policy)
  reports/metrics/<stage>.json   → summary    (the same nested dict, so summary == metrics file)

Each results run joins its stage's group (same git tag as the training runs), is offline
unless ``logger=wandb_online``, and is finished in a ``finally``; ``logger=disabled`` logs nothing.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from genlab.tracking import wandb_args, wandb_environment, wandb_init_failed

HEADER = re.compile(r"^--- (.+?) ---$", re.M)    # gpt samples: "--- sample 1 (temperature 0.8, top-k 40) ---"


def text_table(text: str) -> tuple[list[str], list[list[str]]]:
    """A text sample file → (columns, rows).

    ``--- title ---`` blocks (LM samples) → one row per block; a table whose header starts with
    ``prompt`` followed by policy names, each row ``prompt (response reward)… (gold answer X)``
    (RLHF before/after) → one column per policy response and gold reward; anything else → one row per line.
    """
    parts = HEADER.split(text)
    if len(parts) > 1:
        return ["sample", "text"], [[title, body.strip("\n")] for title, body in zip(parts[1::2], parts[2::2])]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header = next((i for i, ln in enumerate(lines) if ln.split()[0] == "prompt"), None)
    if header is not None:
        policies = lines[header].split()[1:]
        rows = []
        for ln in lines[header + 1:]:
            cells, _, note = ln.partition("(")
            tokens = cells.split()
            if len(tokens) != 1 + 2 * len(policies):
                break
            rows.append([tokens[0], *tokens[1:], note.rstrip(")")])
        if rows:
            columns = [c for p in policies for c in (f"{p} response", f"{p} gold reward")]
            return ["prompt", *columns, "note"], rows
    return ["line"], [[ln] for ln in lines]


def publish(cfg, reports: Path, names: list[str]) -> int:
    """Log the figures, text tables and metrics of each stage in ``names``; returns the runs logged."""
    if cfg.logger.wandb.mode == "disabled":
        return 0
    wandb_environment(cfg.logger.wandb.mode)   # before wandb's import: its telemetry reads the environment
    import wandb

    for name in names:
        figures = reports / "figures" / name
        try:
            run = wandb.init(**wandb_args(cfg, name, f"{name}/results", "results"), reinit="create_new")
        except wandb.Error as e:   # online: rejected key, server timeout
            raise wandb_init_failed(e, cfg.logger.wandb.mode) from None
        try:
            media = {f"{name}/{p.stem}": wandb.Image(str(p), caption=p.stem) for p in sorted(figures.glob("*.png"))}
            for p in sorted(figures.glob("*.txt")):
                columns, rows = text_table(p.read_text())
                media[f"{name}/{p.stem}"] = wandb.Table(columns=columns, data=rows)
            if name == "conclusions":   # the claims table the report opens with, one row per claim
                from genlab.report.conclusions import COLUMNS, load, table_rows

                media["conclusions/claims"] = wandb.Table(columns=COLUMNS, data=table_rows(load(reports)))
            if media:
                run.log(media)
            metrics = reports / "metrics" / f"{name}.json"
            if metrics.exists():
                run.summary.update(json.loads(metrics.read_text()))
        finally:
            run.finish()
    return len(names)
