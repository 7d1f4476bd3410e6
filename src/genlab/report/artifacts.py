"""Where stages put what the report shows.

``reports/metrics/<stage>.json``   DVC metrics (git-tracked, ``cache: false``)
``reports/plots/<stage>/*.csv``    DVC plots: small curves (git-tracked, ``cache: false``)
``reports/figures/<stage>/``       figures (*.png) and text samples (*.txt): a cached DVC output

Only rank 0 writes; all writes are atomic.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from lightning.fabric.utilities.rank_zero import rank_zero_only  # noqa: E402

from genlab.errors import GenlabError  # noqa: E402
from genlab.io import atomic_write, write_json  # noqa: E402


def plots_dir(cfg, stage: str) -> Path:
    return Path(cfg.paths.reports) / "plots" / stage


def figures_dir(cfg, stage: str) -> Path:
    return Path(cfg.paths.reports) / "figures" / stage


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text), mode="w")


def write_metrics(cfg, stage: str, metrics: dict[str, Any]) -> None:
    write_json(Path(cfg.paths.reports) / "metrics" / f"{stage}.json", metrics)


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Rows of dicts → CSV (columns from the first row)."""
    if not rows:
        raise GenlabError(f"no rows to write to {path} (the run recorded no history)",
                          "report this as a bug; re-run the stage with a fresh checkpoint folder")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()), mode="w")


@rank_zero_only
def save_figure(fig: plt.Figure, path: str | Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def image_grid(images, nrow: int, title: str = "", labels: list[str] | None = None) -> plt.Figure:
    """Grid of greyscale images ``[N, H, W]`` (values in [0, 1]) as one figure."""
    n = len(images)
    ncol = -(-n // nrow)
    fig, axes = plt.subplots(nrow, ncol, figsize=(ncol * 0.9, nrow * 0.9 + (0.3 if title else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=1)
            if labels:
                ax.set_title(labels[i], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
