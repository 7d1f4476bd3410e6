"""The saved sizes of the emergence family (``models/emergence/w<width>.pt``): the weights of one seed
plus every seed's test results under the metric names of ``METRICS``, which `emergence_eval` collects."""
from __future__ import annotations

from omegaconf import OmegaConf

METRICS = ("exact_match", "per_digit_accuracy", "edit_distance", "answer_logprob", "brier", "token_accuracy")


def seeds_of(cfg) -> list[int]:
    """The replicate seeds of every size: ``model.emergence.seeds``, else the global ``seeds``."""
    seeds = cfg.model.emergence.seeds
    return list(cfg.seeds if seeds is None else seeds)


def model_config(cfg, width: int) -> dict:
    """What one size's results depend on (checked again by `emergence_eval` when it loads them)."""
    c = OmegaConf.to_container(cfg.model.emergence, resolve=True)
    return {"width": width, **{k: v for k, v in c.items() if k not in ("widths", "only", "seeds")},
            "seeds": seeds_of(cfg), "data_seed": cfg.seed}
