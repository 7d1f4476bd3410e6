"""Config validation: every bad key/type/value is refused with one line naming it."""
from __future__ import annotations

import pytest
import yaml
from conftest import ROOT, run_cli

from genlab.config import validate
from genlab.errors import ConfigError


@pytest.mark.parametrize("override, needle", [
    ({"model": {"classifier": {"hiden": 3}}}, "unknown config key 'model.classifier.hiden'"),
    ({"trainer": {"max_stepz": 3}}, "unknown config key 'trainer.max_stepz'"),
    ({"model": {"classifier": {"batch_size": "big"}}}, "'model.classifier.batch_size' has the wrong type"),
    ({"model": {"classifier": {"lr": -1.0}}}, "model.classifier.lr must be > 0"),
    ({"model": {"classifier": {"mlp": {"epochs": 0}}}}, "epochs must be > 0"),
    ({"data": {"mnist": {"source": "imagenet"}}}, "data.mnist.source='imagenet' is not allowed"),
    ({"data": {"text": {"val_fraction": 1.5}}}, "data.text.val_fraction must be in [0, 1)"),
    ({"data": {"text": {"source": "file"}}}, "data.text.source=file needs data.text.file"),
    ({"logger": {"wandb": {"mode": "cloud"}}}, "logger.wandb.mode='cloud' is not allowed"),
    ({"trainer": {"devices": 0}}, "trainer.devices must be a positive int"),
    ({"model": {"classifier": {"archs": ["mlp", "resnet"]}}}, "model.classifier.archs='resnet' is not allowed"),
    ({"model": {"rlhf": {"reward_model": {"pool": "mean"}}}}, "model.rlhf.reward_model.pool='mean' is not allowed"),
    ({"model": {"cnf": {"toy": {"threads": -1}}}}, "threads must be ≥ 0"),
])
def test_validation_names_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        validate(override)
    message = str(err.value)
    assert needle in message and "fix:" in message and "\n" not in message


def test_unknown_key_suggests_the_close_match():
    with pytest.raises(ConfigError, match="did you mean 'classifier'"):
        validate({"model": {"classifer": {}}})


def test_defaults_are_valid_and_params_yaml_is_the_default_composition(make_cfg):
    """params.yaml (what DVC tracks) must equal `genlab params` output: stale params are a silent bug."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(ROOT / "experiments"), version_base="1.3"):
        composed = validate(compose("config"))
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert OmegaConf.to_container(composed) == committed


def test_schema_defaults_are_the_default_yaml():
    """The dataclass defaults fill any key a YAML file leaves out, so they must be the CPU default's values:
    a stale default would silently change a run whose YAML drops that line."""
    from omegaconf import OmegaConf

    from genlab.cli import compose
    from genlab.config.schema import Config

    composed = OmegaConf.to_container(compose([]))       # validated: the YAML's keys over the schema
    schema = OmegaConf.to_container(OmegaConf.structured(Config))

    def differences(a, b, key=""):
        if isinstance(a, dict) and isinstance(b, dict):
            return [d for k in a.keys() | b.keys() for d in differences(a.get(k), b.get(k), f"{key}.{k}".lstrip("."))]
        return [] if a == b else [f"{key}: schema {a!r}, yaml {b!r}"]

    assert differences(schema, composed) == []


@pytest.mark.parametrize("args, needle", [
    (["show", "model.classifier.hiden=3"], "unknown config key 'model.classifier.hiden'"),
    (["show", "model.classifier.lr=abc"], "has the wrong type"),
    (["show", "model.classifier.lr=[1,"], "override"),
    (["classifier", "trainer.devices=-2"], "trainer.devices must be a positive int"),
    (["nosuchstage"], "unknown command 'nosuchstage'"),
])
def test_cli_prints_one_line_and_exits_2(args, needle):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("genlab: error:")
