"""The saved CNFs (``models/cnf/{toy,digits}.pt``); `flow_matching` loads the toy model to compare densities."""
from __future__ import annotations

from omegaconf import OmegaConf


def model_config(cfg, part: str) -> dict:
    """What a saved CNF depends on (checked again when flow_matching loads the toy model)."""
    c = OmegaConf.to_container(cfg.model.cnf, resolve=True)
    return {"part": part, "dataset": c["dataset"] if part == "toy" else "digits", **c[part],
            **{k: v for k, v in c.items() if k not in ("toy", "digits", "dataset")}}
