"""The saved class-conditional MNIST flow (``models/flow_matching/mnist.pt``); `inpainting` completes digits with it."""
from __future__ import annotations

from omegaconf import OmegaConf


def mnist_config(cfg) -> dict:
    """What the saved MNIST model depends on (training part of ``model.flow_matching.mnist``)."""
    m = OmegaConf.to_container(cfg.model.flow_matching.mnist, resolve=True)
    return {k: m[k] for k in ("unet", "steps", "batch_size", "lr", "ema", "label_dropout", "t_sampling", "precision")}
