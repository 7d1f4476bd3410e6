"""The whole config (``Config``), its validation against the composed YAML, and the section hash.

The schema holds types and checks only: every value is ``MISSING`` and comes from the YAML in
``experiments/`` (one source of defaults), so a key the YAML lacks fails validation by name instead
of being filled in silently.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from genlab.config.checks import Section
from genlab.config.classifier import ClassifierConfig, GeneralizationConfig
from genlab.config.data import DataConfig
from genlab.config.generative import (CnfConfig, DiffusionConfig, FlowMatchingConfig, GenerativeEvalConfig,
                                      InpaintingConfig)
from genlab.config.infra import TrainerConfig, LoggerConfig, PathsConfig
from genlab.config.language import EmergenceConfig, GPTConfig, GPTScalingConfig, ScalingFitConfig
from genlab.config.rlhf import RlhfConfig
from genlab.config.sbi import SbiConfig
from genlab.config.zoo import ZooConfig
from genlab.errors import ConfigError


@dataclass
class ModelConfig:
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    generalization: GeneralizationConfig = field(default_factory=GeneralizationConfig)
    emergence: EmergenceConfig = field(default_factory=EmergenceConfig)
    gpt: GPTConfig = field(default_factory=GPTConfig)
    gpt_scaling: GPTScalingConfig = field(default_factory=GPTScalingConfig)
    scaling_fit: ScalingFitConfig = field(default_factory=ScalingFitConfig)
    cnf: CnfConfig = field(default_factory=CnfConfig)
    flow_matching: FlowMatchingConfig = field(default_factory=FlowMatchingConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    generative_eval: GenerativeEvalConfig = field(default_factory=GenerativeEvalConfig)
    zoo: ZooConfig = field(default_factory=ZooConfig)
    inpainting: InpaintingConfig = field(default_factory=InpaintingConfig)
    sbi: SbiConfig = field(default_factory=SbiConfig)
    rlhf: RlhfConfig = field(default_factory=RlhfConfig)


@dataclass
class ReportConfig:
    title: str = MISSING              # heading of reports/index.html


@dataclass
class Config(Section):
    path: ClassVar[str] = "config"
    seed: int = MISSING               # global seed: every stage derives its own seeds from it
    seeds: list[int] = MISSING        # replicate seeds of the headline estimates (mean ± CI); contains `seed`,
                                      # whose run is the one saved for later stages
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def check(self):
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or self.seed not in self.seeds:
            raise ConfigError(f"seeds={list(self.seeds)} must be distinct and contain seed={self.seed}",
                              f"e.g. seeds=[{self.seed},{self.seed + 1},{self.seed + 2}]")


def _allowed_keys(schema: DictConfig, full_key: str) -> str:
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    node = OmegaConf.select(schema, parent) if parent else schema
    return ", ".join(node.keys()) if isinstance(node, DictConfig) else "?"


def yaml_home(full_key: str) -> str:
    """The file of ``experiments/`` that gives ``full_key`` its value (for the fix of a missing key)."""
    parts = full_key.split(".")
    if parts[0] == "model" and len(parts) > 2:
        return f"experiments/model/{parts[1]}/default.yaml"
    return {"data": "experiments/data/default.yaml", "paths": "experiments/paths/default.yaml",
            "trainer": "experiments/trainer/cpu.yaml", "logger": "experiments/logger/wandb_offline.yaml",
            }.get(parts[0], "experiments/config.yaml")


def validate(cfg: DictConfig | dict) -> DictConfig:
    """Merge ``cfg`` onto the schema; return a plain (non-structured) DictConfig.

    ``cfg`` must be a whole composition (every key of the schema set). Raises ConfigError with one line
    naming the key and what is allowed.
    """
    schema = OmegaConf.structured(Config)
    try:
        merged = OmegaConf.merge(schema, cfg)
        OmegaConf.to_object(merged)    # instantiates the dataclasses: runs every __post_init__
    except ConfigKeyError as e:
        key = e.full_key or str(e.key)
        allowed = _allowed_keys(schema, key)
        guess = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed.split(", "), n=1)
        hint = f"did you mean '{guess[0]}'? " if guess else ""
        raise ConfigError(f"unknown config key '{key}'", f"{hint}allowed keys here: {allowed}") from None
    except MissingMandatoryValue as e:
        key = e.full_key or str(e.key)
        raise ConfigError(f"config key '{key}' has no value",
                          f"add it to {yaml_home(key)} (then `genlab params`) or pass {key}=…") from None
    except ValidationError as e:
        raise ConfigError(f"config key '{e.full_key}' has the wrong type: {e.msg.splitlines()[0]}",
                          "give a value of the type in experiments/ (see `genlab show`)") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config: {str(e).splitlines()[0]}", "check experiments/ and your overrides") from None
    return OmegaConf.create(OmegaConf.to_container(merged, resolve=True))


def section_hash(*sections: Any) -> str:
    """Stable 12-hex hash of config sections (used to key checkpoints and artefacts)."""
    plain = [OmegaConf.to_container(s, resolve=True) if isinstance(s, DictConfig) else s for s in sections]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:12]
