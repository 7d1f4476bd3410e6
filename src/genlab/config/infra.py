"""Schema of ``trainer``, ``logger`` and ``paths``: how every stage trains, logs and where it writes.

Values live in ``experiments/trainer/``, ``experiments/logger/`` and ``experiments/paths/``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from omegaconf import MISSING

from genlab.config.checks import Section, positive, one_of
from genlab.errors import ConfigError


@dataclass
class TrainerConfig(Section):
    path: ClassVar[str] = "trainer"
    accelerator: str = MISSING        # cpu | gpu | cuda | mps | auto
    devices: Any = MISSING            # a positive int, or "auto"
    strategy: str = MISSING           # auto | ddp | ddp_spawn | fsdp …
    num_nodes: int = MISSING
    precision: str = MISSING          # Lightning precision: 32-true; bf16-mixed / 16-mixed on GPU
    deterministic: bool = MISSING
    checkpoint_every: int = MISSING   # steps between `last.ckpt` saves (resume points)
    log_every: int = MISSING          # steps between logged training metrics
    progress_bar: bool = MISSING
    threads: int = MISSING            # torch intra-op threads; 0 = leave torch's default

    def check(self):
        one_of(self, "accelerator", ("cpu", "gpu", "cuda", "mps", "auto"))
        positive(self, "num_nodes", "checkpoint_every", "log_every")
        if self.devices != "auto" and (not isinstance(self.devices, int) or self.devices < 1):
            raise ConfigError(f"trainer.devices must be a positive int or 'auto' (got {self.devices!r})",
                              "e.g. trainer.devices=2")
        if self.threads < 0:
            raise ConfigError(f"trainer.threads must be ≥ 0 (got {self.threads})", "use 0 for torch's default")


@dataclass
class WandbConfig(Section):
    path: ClassVar[str] = "logger.wandb"
    mode: str = MISSING               # offline never touches the network; `wandb sync` uploads later
    project: str = MISSING
    entity: Optional[str] = MISSING   # null: the logged-in user's default entity
    group: Optional[str] = MISSING    # null: the stage name (sweeps set their own)
    tags: list[str] = MISSING

    def check(self):
        one_of(self, "mode", ("offline", "online", "disabled"))


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    csv: bool = MISSING               # also write CSV logs under paths.logs


@dataclass
class PathsConfig:
    """Output roots, relative to the working directory (DVC runs stages at the repository root)."""
    data: str = MISSING
    models: str = MISSING
    checkpoints: str = MISSING
    reports: str = MISSING
    logs: str = MISSING
