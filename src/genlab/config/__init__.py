"""Structured schema of the composed config, and its validation.

Hydra composes ``experiments/`` (or DVC writes the composition to ``params.yaml``);
``validate`` merges that onto the dataclasses of this package, so an unknown key, a wrong
type or an impossible value fails *before any work starts*, as one line naming
the key and what is allowed.

Each stage owns one section (``model.<stage>`` or ``data.<name>``); DVC tracks
only that section for the stage, so unrelated edits don't re-run it. The modules
mirror the config groups: ``data``, ``infra`` (trainer, logger, paths), ``classifier``,
``generative``, ``language``, ``rlhf``; ``schema`` assembles them and validates.
"""
from genlab.config.generative import UNetConfig
from genlab.config.rlhf import RlhfConfig
from genlab.config.schema import Config, section_hash, validate
from genlab.errors import ConfigError

__all__ = ["Config", "ConfigError", "RlhfConfig", "UNetConfig", "section_hash", "validate"]
