"""The saved MNIST classifiers (``models/classifier/<arch>.pt``), which `generalization` attacks and
whose CNN is the feature space of the generative stages' FID."""
from __future__ import annotations

from omegaconf import OmegaConf


def model_config(cfg, arch: str) -> dict:
    """What a saved classifier depends on (checked again when a later stage loads it)."""
    c = OmegaConf.to_container(cfg.model.classifier, resolve=True)
    return {"arch": arch, **c[arch], **{k: v for k, v in c.items() if k not in ("archs", "mlp", "cnn")}}
