"""Schema of ``trainer``, ``logger`` and ``paths``: how every stage trains, logs and where it writes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from genlab.config.checks import positive, one_of
from genlab.errors import ConfigError


@dataclass
class TrainerConfig:
    path: ClassVar[str] = "trainer"
    accelerator: str = "cpu"
    devices: Any = 1                  # int or "auto"
    strategy: str = "auto"            # auto | ddp | ddp_spawn | fsdp …
    num_nodes: int = 1
    precision: str = "32-true"        # bf16-mixed / 16-mixed on GPU
    deterministic: bool = True
    checkpoint_every: int = 200       # steps between `last.ckpt` saves (resume points)
    log_every: int = 10
    progress_bar: bool = True
    threads: int = 0                  # torch intra-op threads; 0 = leave torch's default

    def __post_init__(self):
        one_of(self, "accelerator", ("cpu", "gpu", "cuda", "mps", "auto"))
        positive(self, "num_nodes", "checkpoint_every", "log_every")
        if self.devices != "auto" and (not isinstance(self.devices, int) or self.devices < 1):
            raise ConfigError(f"trainer.devices must be a positive int or 'auto' (got {self.devices!r})",
                              "e.g. trainer.devices=2")


@dataclass
class WandbConfig:
    path: ClassVar[str] = "logger.wandb"
    mode: str = "offline"             # offline never touches the network; `wandb sync` uploads later
    project: str = "genlab"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self):
        one_of(self, "mode", ("offline", "online", "disabled"))


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    csv: bool = True


@dataclass
class PathsConfig:
    data: str = "data"
    models: str = "models"
    checkpoints: str = "checkpoints"
    reports: str = "reports"
    logs: str = "logs"
