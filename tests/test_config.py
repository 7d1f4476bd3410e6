"""Config validation: every bad key/type/value is refused with one line naming it; the YAML in
experiments/ is the only source of values, and params.yaml is exactly its default composition."""
from __future__ import annotations

import dataclasses
import functools

import pytest
from conftest import ROOT, run_cli
from omegaconf import MISSING, OmegaConf

from genlab.config import validate
from genlab.errors import ConfigError

PRESETS = [[], ["experiment=smoke"], ["experiment=cpu"], ["experiment=gpu"], ["experiment=cluster"],
           ["trainer=gpu"], ["trainer=ddp"], ["trainer=ddp_cpu"], ["logger=disabled"], ["logger=wandb_online"],
           ["model/gpt=baby"]]


def hydra_compose(overrides=()):
    """Hydra's composition of experiments/ (not validated), as DVC's Hydra integration composes it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "experiments"), version_base="1.3"):
        return compose("config", list(overrides))


@functools.lru_cache(maxsize=1)
def _default():
    return OmegaConf.to_container(hydra_compose())


def with_override(override: dict):
    """The default composition with ``override`` merged in: validate needs every key set."""
    return OmegaConf.merge(OmegaConf.create(_default()), override)


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
    ({"model": {"classifier": {"weight_decay": -0.1}}}, "model.classifier.weight_decay must be ≥ 0"),
])
def test_validation_names_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        validate(with_override(override))
    message = str(err.value)
    assert needle in message and "fix:" in message and "\n" not in message


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("override, key", [
    ({"model": {"classifier": {"lr": NAN}}}, "model.classifier.lr"),
    ({"model": {"classifier": {"weight_decay": NAN}}}, "model.classifier.weight_decay"),
    ({"model": {"gpt": {"optim": {"grad_clip": NAN}}}}, "grad_clip"),
    ({"model": {"gpt": {"optim": {"weight_decay": NAN}}}}, "weight_decay"),
    ({"model": {"emergence": {"grad_clip": NAN}}}, "model.emergence.grad_clip"),
    ({"model": {"rlhf": {"ppo": {"grad_clip": NAN}}}}, "model.rlhf.ppo.grad_clip"),
    ({"model": {"gpt": {"sample": {"temperature": NAN}}}}, "model.gpt.sample.temperature"),
    ({"model": {"gpt": {"sample": {"temperature": INF}}}}, "model.gpt.sample.temperature"),
    ({"model": {"rlhf": {"task": {"temperature": -INF}}}}, "model.rlhf.task.temperature"),
    ({"model": {"diffusion": {"snr_gamma": NAN}}}, "model.diffusion.snr_gamma"),
    ({"model": {"diffusion": {"guidance_ws": [0.5, NAN]}}}, "model.diffusion.guidance_ws"),
    ({"model": {"cnf": {"weight_decay": NAN}}}, "model.cnf.weight_decay"),
    ({"data": {"toy2d": {"noise": NAN}}}, "data.toy2d.noise"),
])
def test_nan_and_inf_are_refused(override, key):
    with pytest.raises(ConfigError) as err:
        validate(with_override(override))
    message = str(err.value)
    assert key in message and "fix:" in message and "\n" not in message
    assert "finite" in message or "must be >" in message


def test_unknown_key_suggests_the_close_match():
    with pytest.raises(ConfigError, match="did you mean 'classifier'"):
        validate(with_override({"model": {"classifer": {}}}))
    with pytest.raises(ConfigError) as err:
        validate(with_override({"model": {"classifier": {"batchsize": 64}}}))
    message = str(err.value)
    assert "unknown config key 'model.classifier.batchsize'" in message
    assert "did you mean 'batch_size'?" in message and "allowed keys here: archs, mlp, cnn, batch_size" in message


def _leaves(cls, prefix=""):
    """(key, default) of every leaf field of a schema dataclass, nested sections walked into."""
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            yield from _leaves(f.default_factory, key + ".")
        else:
            yield key, f.default if f.default_factory is dataclasses.MISSING else f.default_factory


def test_schema_holds_no_values():
    """experiments/ is the single source of values: a schema default would silently fill a key the YAML lost."""
    from genlab.config.schema import Config

    leaves = dict(_leaves(Config))
    assert len(leaves) > 200
    assert {k: v for k, v in leaves.items() if v is not MISSING} == {}
    # built without values, every leaf of the bare schema is ??? (its sections skip their checks)
    bare = OmegaConf.to_container(OmegaConf.structured(Config))

    def values(node, key=""):
        if isinstance(node, dict):
            return [v for k, n in node.items() for v in values(n, f"{key}.{k}".lstrip("."))]
        return [] if node == MISSING else [f"{key}={node!r}"]

    assert values(bare) == []


@pytest.mark.parametrize("overrides", PRESETS, ids=lambda o: " ".join(o) or "default")
def test_every_preset_sets_every_key_and_validates(overrides):
    from genlab.config.schema import Config

    cfg = hydra_compose(overrides)
    merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
    assert OmegaConf.missing_keys(merged) == set()
    validate(cfg)


def test_a_key_missing_from_the_yaml_is_named_with_its_file():
    cfg = with_override({})
    del cfg.model.cnf.digits["threads"]
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value) == ("config key 'model.cnf.digits.threads' has no value — fix: add it to "
                              "experiments/model/cnf/default.yaml (then `genlab params`) or pass "
                              "model.cnf.digits.threads=…")
    del cfg.trainer["threads"]
    with pytest.raises(ConfigError, match="experiments/trainer/cpu.yaml"):
        validate(cfg)


def test_params_yaml_is_the_default_composition_as_dvc_writes_it(tmp_path):
    """params.yaml (what DVC tracks) is byte for byte what `genlab params` writes and what `dvc exp run`
    composes through its Hydra integration (.dvc/config [hydra]): stale params are a silent bug."""
    from genlab.cli import compose

    committed = (ROOT / "params.yaml").read_text()
    ours = OmegaConf.to_yaml(compose([], raw=True))
    assert ours == committed, ("params.yaml is not the default composition of experiments/ — fix: `genlab params` "
                               "(after a workspace `dvc exp run`: `git checkout params.yaml` or `dvc exp apply`)")
    hydra = pytest.importorskip("dvc.utils.hydra")
    hydra.compose_and_dump(tmp_path / "params.yaml", str(ROOT / "experiments"), None, "config", str(ROOT), [])
    assert (tmp_path / "params.yaml").read_text() == committed


def test_params_refuses_a_preset_into_the_tracked_params_yaml(tmp_path):
    result = run_cli("params", "experiment=smoke", cwd=tmp_path)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("genlab: error:")
    assert "dvc exp run --temp -S experiment=smoke" in lines[0] and not (tmp_path / "params.yaml").exists()
    # an explicit file takes any composition; the default preset may always be written
    assert run_cli("params", "experiment=smoke", "--out", "smoke.yaml", cwd=tmp_path).returncode == 0
    assert "  toy2d:\n    names:" in (tmp_path / "smoke.yaml").read_text()
    assert run_cli("params", "experiment=cpu", cwd=tmp_path).returncode == 0
    assert (tmp_path / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()


@pytest.mark.parametrize("args, needle", [
    (["show", "model.classifier.hiden=3"], "unknown config key 'model.classifier.hiden'"),
    (["show", "model.classifier.batchsize=3"], "did you mean 'batch_size'?"),
    (["show", "model.classifier.lr=abc"], "has the wrong type"),
    (["show", "model.classifier.lr=nan"], "model.classifier.lr must be a finite number"),
    (["show", "model.classifier.lr=[1,"], "override"),
    (["classifier", "trainer.devices=-2"], "trainer.devices must be a positive int"),
    (["nosuchstage"], "unknown command 'nosuchstage'"),
])
def test_cli_prints_one_line_and_exits_2(args, needle):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("genlab: error:")
