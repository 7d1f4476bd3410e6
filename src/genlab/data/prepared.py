"""Read the datasets the ``prepare`` stage wrote, and refuse one prepared from other ``data.*`` settings.

``prepare`` records each dataset's config section in its manifest (``save``). A stage run with a data
override (``genlab gpt data.text.source=file data.text.file=X``) would otherwise train, silently, on
the file prepared earlier from other settings; ``load`` stops it with one line instead.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from genlab.errors import GenlabError
from genlab.io import load_arrays, save_arrays


def section(cfg: DictConfig, name: str) -> dict:
    """``cfg.data.<name>`` as plain, JSON-comparable values."""
    return OmegaConf.to_container(cfg.data[name], resolve=True)


def save(cfg: DictConfig, name: str, arrays: dict[str, np.ndarray], meta: dict | None = None) -> str:
    """Write ``<paths.data>/<name>.npz`` + manifest, recording the ``data.<name>`` section it came from."""
    return save_arrays(Path(cfg.paths.data) / name, arrays, {**(meta or {}), "config": section(cfg, name)})


def load(cfg: DictConfig, name: str) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) of ``<paths.data>/<name>``, hash-checked and prepared from the current ``data.<name>``."""
    arrays, meta = load_arrays(Path(cfg.paths.data) / name)
    want, have = section(cfg, name), meta.get("config")
    if have != want:
        if have is None:
            what = "without a record of its data settings"
        else:
            changed = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
            what = ("from " + ", ".join(f"data.{name}.{k}={have.get(k)!r}" for k in changed)
                    + " but this run has " + ", ".join(f"{want.get(k)!r}" for k in changed))
        raise GenlabError(f"{Path(cfg.paths.data) / name}.npz was prepared {what}",
                          f"run `genlab prepare` with the same data.{name} overrides first, "
                          "or `dvc repro` after changing them in params.yaml")
    return arrays, meta


def load_mnist(cfg: DictConfig) -> dict[str, torch.Tensor]:
    """MNIST ``{train,val,test}_x [N,28,28] uint8`` and ``_y [N]``."""
    arrays, _ = load(cfg, "mnist")
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def toy_split(cfg: DictConfig, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(train ``[N, 2]``, test ``[M, 2]``) of one toy2d set."""
    arrays, _ = load(cfg, "toy2d")
    if f"{name}_train" not in arrays:
        raise GenlabError(f"toy2d set '{name}' was not prepared (have: {sorted({k.rsplit('_', 1)[0] for k in arrays})})",
                          "add it to data.toy2d.names, or choose another model.cnf.dataset")
    return torch.from_numpy(arrays[f"{name}_train"]), torch.from_numpy(arrays[f"{name}_test"])


def load_text(cfg: DictConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Train/val char ids ``[N]`` and the vocabulary from ``data/text``."""
    arrays, meta = load(cfg, "text")
    return {k: torch.from_numpy(v) for k, v in arrays.items()}, meta["vocab"]
