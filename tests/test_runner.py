"""The training runner: determinism, exact resume after interruption, NaN stop, wandb offline, DDP."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from genlab import runner
from genlab.data.loader import loader
from genlab.errors import GenlabError
from genlab.models.classifier import Classifier
from genlab.nn.classifiers import MLP
from genlab.stages.classifier import load_mnist


class SimulatedKill(Exception):
    pass


class Crash(Callback):
    """Simulates a killed process: raises after `at` optimizer steps."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.at:
            raise SimulatedKill(f"step {self.at}")


def train(cfg, epochs: int = 2, callbacks=None, lr: float = 3e-3, hidden: int = 16) -> Classifier:
    runner.seed_all(cfg)
    data = load_mnist(cfg)
    module = Classifier(MLP(hidden), lr=lr, weight_decay=0.0, shift=1)
    with runner.session(cfg, stage="test", run="mlp", run_config={"lr": lr, "epochs": epochs},
                        max_epochs=epochs, callbacks=callbacks) as trainer:
        runner.fit(trainer, module, loader(data["train_x"][:640], data["train_y"][:640], batch_size=64,
                                           seed=cfg.seed),
                   loader(data["val_x"], data["val_y"], batch_size=500, train=False))
    return module


def weights(module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


@pytest.fixture
def cfg(make_cfg, prepared, tmp_path):
    return make_cfg(prepared, f"paths.checkpoints={tmp_path / 'ckpt'}", f"paths.logs={tmp_path / 'logs'}",
                    "trainer.checkpoint_every=3")


def test_torch_threads_holds_inside_the_block_and_is_restored_after_it_even_on_error():
    original = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        with runner.torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 3
        with pytest.raises(ZeroDivisionError), runner.torch_threads(2):
            1 / 0
        assert torch.get_num_threads() == 3
        with runner.torch_threads(0):   # 0: unchanged
            assert torch.get_num_threads() == 3
        assert (runner.thread_count(0), runner.thread_count(1)) == (3, 1)   # what a stage records
    finally:
        torch.set_num_threads(original)


def test_same_seed_same_weights_different_seed_different(cfg, make_cfg, prepared, tmp_path):
    a, b = weights(train(cfg)), weights(train(cfg))
    assert torch.equal(a, b)
    other = make_cfg(prepared, f"paths.checkpoints={tmp_path / 'ckpt2'}", "seed=1")
    assert not torch.allclose(a, weights(train(other)))


def test_interrupted_run_resumes_to_identical_weights(cfg):
    reference = weights(train(cfg))
    ckpt_root = Path(cfg.paths.checkpoints) / "test"
    assert not any(ckpt_root.glob("*/last.ckpt")), "checkpoints are removed after a successful fit"
    with pytest.raises(SimulatedKill):
        train(cfg, callbacks=[Crash(at=14)])          # 10 batches/epoch: dies mid-epoch 2, last.ckpt at step 12
    saved = list(ckpt_root.glob("*/last.ckpt"))
    assert len(saved) == 1
    assert torch.load(saved[0], weights_only=True)["global_step"] == 12
    resumed = weights(train(cfg))
    assert torch.equal(resumed, reference)


def test_changed_config_does_not_resume(cfg):
    with pytest.raises(SimulatedKill):
        train(cfg, callbacks=[Crash(at=5)])
    before = set(Path(cfg.paths.checkpoints).rglob("last.ckpt"))
    train(cfg, lr=1e-3)                                 # different run_config → different folder, fresh start
    assert set(Path(cfg.paths.checkpoints).rglob("last.ckpt")) == before


def test_corrupt_checkpoint_is_refused_with_a_fix(cfg):
    with pytest.raises(SimulatedKill):
        train(cfg, callbacks=[Crash(at=5)])
    (last,) = Path(cfg.paths.checkpoints).rglob("last.ckpt")
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(GenlabError, match="cannot resume .* delete"):
        train(cfg)


def test_checkpoint_of_a_different_network_is_refused_with_a_fix(cfg):
    """The run's config hash names its checkpoint folder, but the code can change under it: a resume point
    whose weights do not fit the network is refused before Lightning's multi-line state_dict error."""
    with pytest.raises(SimulatedKill):
        train(cfg, callbacks=[Crash(at=5)])
    with pytest.raises(GenlabError, match="holds the weights of a different network .* delete"):
        train(cfg, hidden=24)


def test_nan_loss_stops_with_one_line(cfg):
    # a stage without a config section of its own: no key to name (stage `gpt`: test_failures_one_line.py)
    with pytest.raises(GenlabError, match=r"training loss became (nan|inf) at step \d+ .* fix: lower the stage's learning rate"):
        train(cfg, lr=1e30)      # Adam steps of ~1e30 overflow the logits after one update


def test_wandb_offline_writes_a_run_directory_without_network(make_cfg, prepared, tmp_path):
    cfg = make_cfg(prepared, f"paths.checkpoints={tmp_path / 'ckpt'}", f"paths.logs={tmp_path / 'logs'}",
                   "logger.wandb.mode=offline")
    train(cfg, epochs=1)                                  # the conftest socket guard refuses non-loopback traffic
    runs = list((tmp_path / "logs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert list((tmp_path / "logs" / "csv" / "test").glob("*/metrics.csv"))


@pytest.mark.slow
def test_ddp_two_cpu_processes_sync_validation_metrics(make_cfg, prepared, tmp_path):
    """DDP (2 CPU processes, ddp_spawn) sees the full val set through synced torchmetrics."""
    cfg = make_cfg(prepared, f"paths.checkpoints={tmp_path / 'ckpt'}", "trainer=ddp_cpu", "trainer.strategy=ddp_spawn",
                   "trainer.deterministic=false")
    data = load_mnist(cfg)
    module = Classifier(MLP(16), lr=3e-3, weight_decay=0.0, shift=0)
    val = loader(data["val_x"], data["val_y"], batch_size=50, train=False)
    with runner.session(cfg, stage="test", run="ddp", run_config={}, max_epochs=1) as trainer:
        runner.fit(trainer, module, loader(data["train_x"], data["train_y"], batch_size=64, seed=0), val)
        assert trainer.world_size == 2
        ddp = trainer.validate(module, val, verbose=False)[0]
    single = make_cfg(prepared, f"paths.checkpoints={tmp_path / 'ckpt1'}")
    with runner.session(single, stage="test", run="one", run_config={}, max_epochs=0) as trainer:
        one = trainer.validate(module, val, verbose=False)[0]
    # same weights (ddp_spawn copies them back to rank 0's module), full val set on both: same accuracy
    assert ddp["val/acc"] == pytest.approx(one["val/acc"], abs=1e-6)


class Draws(Classifier):
    """A classifier that records a random number per training step and saves them per rank."""

    def __init__(self, out: Path):
        super().__init__(MLP(8), lr=1e-3, weight_decay=0.0, shift=0)
        self.out, self.draws = out, []

    def training_step(self, batch, batch_idx):
        self.draws.append(float(torch.rand(())))
        return super().training_step(batch, batch_idx)

    def on_train_end(self):
        torch.save(self.draws, self.out / f"rank{self.global_rank}.pt")


@pytest.mark.slow
def test_ddp_ranks_draw_different_random_numbers(make_cfg, prepared, tmp_path):
    """Same weights on every rank (DDP broadcasts rank 0's), but each rank its own noise/augmentation stream."""
    cfg = make_cfg(prepared, f"paths.checkpoints={tmp_path / 'ckpt'}", "trainer=ddp_cpu", "trainer.strategy=ddp_spawn",
                   "trainer.deterministic=false")
    data = load_mnist(cfg)
    with runner.session(cfg, stage="test", run="draws", run_config={}, max_steps=3) as trainer:
        runner.fit(trainer, Draws(tmp_path), loader(data["train_x"], data["train_y"], batch_size=32, seed=0))
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert len(rank0) == len(rank1) == 3 and rank0 != rank1


def test_lr_keys_narrow_to_the_runs_own_subsection_level_by_level(make_cfg, tmp_path):
    """A diverging run's error names the learning rate of that run, not every one of its stage's."""
    from genlab.runner import lr_keys

    cfg = make_cfg(tmp_path)
    assert lr_keys(cfg, "zoo", "toy_vae-seed1") == ["model.zoo.toy.vae.lr"]
    assert lr_keys(cfg, "zoo", "digits_coupling-seed0") == ["model.zoo.digits.coupling.lr"]
    assert lr_keys(cfg, "flow_matching", "toy_gaussian") == ["model.flow_matching.toy.lr"]
    assert len(lr_keys(cfg, "zoo", "other")) == 8              # no subsection matches: every rate of the stage


def test_autocast_follows_the_lightning_precision_and_samplers_keep_their_state_dtype():
    """``precision.autocast`` is the context Trainer(precision=…) trains under; a sampler's network output comes back
    in the state's dtype, so guidance arithmetic and ODE/DDIM updates never run in bfloat16."""
    from genlab.models.flow_matching import FlowMatching
    from genlab.models.matchers import IndependentCFM
    from genlab.nn.vector_field import VectorField
    from genlab.precision import autocast

    a = torch.randn(8, 8)
    with autocast("bf16-mixed"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast("32-true"):
        assert (a @ a).dtype == torch.float32
    fm = FlowMatching(VectorField(3, 16, 2, "silu"), IndependentCFM(), 1e-3)
    x, t = torch.randn(5, 3), torch.rand(5)
    with autocast("bf16-mixed"):
        v = fm.velocity(x, t)
    assert v.dtype == torch.float32 and torch.allclose(v, fm.velocity(x, t), atol=0.05)


@pytest.mark.parametrize("stage, train", [("cnf", lambda m, cfg, data: m.train(cfg, "toy", data)),
                                          ("zoo", lambda m, cfg, data: m.replicate(cfg, "toy", "coupling", 0, data)),
                                          ("sbi", lambda m, cfg, data: m.replicate(cfg, "gaussian_linear", 0, {}))])
def test_density_models_train_in_float32_under_a_half_precision_trainer(make_cfg, tmp_path, monkeypatch, stage, train):
    """The gpu and cluster presets set ``trainer.precision: bf16-mixed``; the likelihood models (dopri5 solves,
    log-determinants) must still get a float32 Trainer."""
    import importlib

    import numpy as np

    from genlab.evaluate.selection import Split

    module = importlib.import_module(f"genlab.stages.{stage}")
    cfg = make_cfg(tmp_path, "trainer.precision=bf16-mixed")
    seen = {}

    class Stop(Exception):
        pass

    def session(cfg, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(module.runner, "session", session)
    x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    data = ({k: Split(k, x) for k in ("train", "val", "test")} if stage == "cnf" else
            {k: torch.as_tensor(x) for k in ("train", "val", "test")})
    with pytest.raises(Stop):
        train(module, cfg, data)
    assert cfg.trainer.precision == "bf16-mixed" and seen["precision"] == "32-true"
