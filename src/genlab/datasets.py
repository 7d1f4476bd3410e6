"""The `prepare` stage's datasets read back as tensors, for the stages that train or score on them.

Each reader takes the composed config (for ``paths.data``); ``genlab.io.load_arrays`` checks the
file against its recorded sha256 first.
"""
from __future__ import annotations

from pathlib import Path

import torch

from genlab.errors import GenlabError
from genlab.io import load_arrays


def load_mnist(cfg) -> dict[str, torch.Tensor]:
    """Images ``<split>_x`` uint8 ``[N, 28, 28]`` and labels ``<split>_y`` ``[N]`` of ``data/mnist``."""
    arrays, _ = load_arrays(Path(cfg.paths.data) / "mnist")
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def load_text(cfg) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Train/val char ids ``[N]`` and the vocabulary from ``data/text``."""
    arrays, meta = load_arrays(Path(cfg.paths.data) / "text")
    return {k: torch.from_numpy(v) for k, v in arrays.items()}, meta["vocab"]


def toy_split(cfg, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(train ``[N, 2]``, test ``[M, 2]``) of one toy2d set."""
    arrays, _ = load_arrays(Path(cfg.paths.data) / "toy2d")
    if f"{name}_train" not in arrays:
        raise GenlabError(f"toy2d set '{name}' was not prepared (have: {sorted({k.rsplit('_', 1)[0] for k in arrays})})",
                          f"add it to data.toy2d.names, or choose another model.cnf.dataset")
    return torch.from_numpy(arrays[f"{name}_train"]), torch.from_numpy(arrays[f"{name}_test"])
