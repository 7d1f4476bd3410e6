"""Offline check of a wandb sweep file: everything `wandb sweep` would only discover on the cluster.

A sweep file must parse, name a method, pass parameters as Hydra overrides
(``${args_no_hyphens}`` in ``command``), and every parameter value must compose into a
valid genlab config.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from genlab.errors import GenlabError

METHODS = ("grid", "random", "bayes")


def check(path: str | Path, compose) -> int:
    """Validate the sweep at ``path``; ``compose(overrides)`` must raise/exit on a bad config.

    Returns the number of parameter values checked.
    """
    path = Path(path)
    if not path.exists():
        raise GenlabError(f"sweep file {path} does not exist", "give the path of a YAML file in experiments/sweeps/")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise GenlabError(f"sweep file {path} is not valid YAML ({str(e).splitlines()[0]})",
                          "fix the YAML syntax") from None
    if not isinstance(spec, dict):
        raise GenlabError(f"sweep file {path} must be a mapping", "see experiments/sweeps/classifier_width.yaml")
    if spec.get("method") not in METHODS:
        raise GenlabError(f"sweep file {path}: method={spec.get('method')!r}", f"use one of {', '.join(METHODS)}")
    command = spec.get("command") or []
    if "${args_no_hyphens}" not in command:
        raise GenlabError(f"sweep file {path}: command does not pass ${{args_no_hyphens}}",
                          "add `- ${args_no_hyphens}` so parameters arrive as Hydra overrides (key=value)")
    params = spec.get("parameters")
    if not isinstance(params, dict) or not params:
        raise GenlabError(f"sweep file {path} has no parameters", "add a `parameters:` mapping")
    fixed = [c for c in command if isinstance(c, str) and "=" in c and not c.startswith("$")]
    n = 0
    for key, values in params.items():
        candidates = values.get("values") if isinstance(values, dict) else None
        if candidates is None and isinstance(values, dict) and "value" in values:
            candidates = [values["value"]]
        if candidates is None and isinstance(values, dict) and {"min", "max"} <= set(values):
            candidates = [values["min"], values["max"]]
        if not candidates:
            raise GenlabError(f"sweep file {path}: parameter {key} has no values/value/min+max",
                              "give `values: [...]`, `value: x` or `min:`/`max:`")
        for value in candidates:
            compose([*fixed, f"{key}={value}"])
            n += 1
    return n
