"""Figures of 2D flows shared by the `cnf` and `flow_matching` stages: densities and trajectories."""
from __future__ import annotations

from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import torch

LIMIT = 4.0   # toy2d data live in about [−4, 4]²


def grid(n: int = 80) -> torch.Tensor:
    """``n × n`` points ``[n², 2]`` covering [−LIMIT, LIMIT]², row-major (y outer, x inner)."""
    axis = torch.linspace(-LIMIT, LIMIT, n)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], 1)


def density_figure(data: np.ndarray, log_probs: dict[str, torch.Tensor], n: int) -> plt.Figure:
    """Data histogram next to exp(log p) of each model, evaluated on ``grid(n)``."""
    fig, axes = plt.subplots(1, 1 + len(log_probs), figsize=(3.2 * (1 + len(log_probs)), 3.2))
    extent = [-LIMIT, LIMIT, -LIMIT, LIMIT]
    axes[0].hist2d(data[:, 0], data[:, 1], bins=n, range=[extent[:2], extent[2:]], cmap="viridis")
    axes[0].set_title("data (test)")
    for ax, (name, logp) in zip(axes[1:], log_probs.items()):
        ax.imshow(logp.exp().reshape(n, n).numpy(), origin="lower", extent=extent, cmap="viridis")
        ax.set_title(f"{name}: p(x)")
    for ax in axes:
        ax.set(xticks=[], yticks=[], aspect="equal")
    return fig


def trajectory_figure(paths: dict[str, torch.Tensor]) -> plt.Figure:
    """Sample paths ``[T, N, 2]`` from noise (t = 0, grey) to samples (t = 1, black), one panel per model."""
    fig, axes = plt.subplots(1, len(paths), figsize=(3.4 * len(paths), 3.4), squeeze=False)
    for ax, (name, path) in zip(axes[0], paths.items()):
        p = path.numpy()
        ax.plot(p[:, :, 0], p[:, :, 1], color="tab:blue", alpha=0.25, lw=0.6)
        ax.scatter(p[0, :, 0], p[0, :, 1], s=3, color="grey", label="t = 0")
        ax.scatter(p[-1, :, 0], p[-1, :, 1], s=3, color="black", label="t = 1")
        ax.set(xlim=(-LIMIT, LIMIT), ylim=(-LIMIT, LIMIT), xticks=[], yticks=[], aspect="equal", title=name)
    axes[0, 0].legend(loc="lower left", fontsize=6)
    return fig


def log_density_on_grid(log_prob: Callable[[torch.Tensor], torch.Tensor], n: int = 80) -> torch.Tensor:
    """``log_prob`` evaluated on ``grid(n)`` → ``[n²]``, in chunks (no parameter gradients)."""
    with torch.no_grad():
        return torch.cat([log_prob(chunk) for chunk in grid(n).split(2000)])
