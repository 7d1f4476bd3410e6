"""Numerical precision: Lightning's precision strings for training, and the matching autocast for inference.

A model's config may set its own ``precision`` (the U-Nets' ``bf16-mixed``, the CNN's ``bf16-train``);
``runner.session(precision=…)`` trains under it and ``autocast`` samples under the same context, so the
network sees the arithmetic at sampling time that it saw in training. Network outputs are cast back to
the state's dtype by the samplers, so ODE and sampler updates stay in float32.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from lightning.pytorch.plugins.precision import MixedPrecision

AUTOCAST = {"bf16-mixed": torch.bfloat16, "bf16-train": torch.bfloat16, "16-mixed": torch.float16}   # → autocast dtype


class TrainOnlyMixedPrecision(MixedPrecision):
    """Lightning's mixed precision in training steps only (``precision: bf16-train``): validation, test and
    predict steps run in float32, so what they measure (accuracy, calibration) is the float32 network's."""

    def val_step_context(self):
        return nullcontext()

    test_step_context = predict_step_context = val_step_context


def autocast(precision: str, device_type: str = "cpu") -> torch.autocast:
    """The autocast context ``Trainer(precision=…)`` trains under, for inference outside Lightning (sampling):
    ``bf16-mixed`` / ``16-mixed`` run matmuls and convolutions in that dtype, any other precision is a no-op."""
    dtype = AUTOCAST.get(precision)
    return torch.autocast(device_type, dtype=dtype, enabled=dtype is not None)


# Likelihood models train through log-determinants and adaptive ODE solves (dopri5 at rtol ≈ 1e-5):
# half-precision autocast would swamp both, so they keep float32 whatever ``trainer.precision`` says
# (the gpu and cluster presets set bf16-mixed for every other model).
DENSITY_PRECISION = "32-true"


def precision_args(precision: str, accelerator: str) -> dict:
    """Trainer keyword arguments for a precision: Lightning's own, or the plugin behind ``bf16-train``."""
    if precision != "bf16-train":
        return {"precision": precision}
    return {"plugins": [TrainOnlyMixedPrecision("bf16-mixed", "cpu" if accelerator == "cpu" else "cuda")]}
