"""Resume from EVERY checkpoint of one run, not just the one a timed kill -9 happens to catch.

The run (flow matching's 2D toy: 4 batches per epoch, a checkpoint every 2 steps) crashes right
after checkpoint k, is rerun, and must end with the weights of an uninterrupted run. Checkpoints
at an epoch's last batch (k = 4, 8) are the hard case: between that save and the next step the
uninterrupted run creates the validation and next-epoch DataLoader iterators; a DataLoader without
its own generator draws its ``_base_seed`` from torch's global RNG, which the resumed run (RNG
restored from the checkpoint) never replays — why ``ResumableLoader`` has a private generator.
"""
from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from genlab import runner
from genlab.stages import cnf, flow_matching

OVERRIDES = ["trainer.checkpoint_every=2", "trainer.threads=1", "model.flow_matching.toy.steps=10",
             "model.flow_matching.toy.eval_every=4"]


class CrashAfter(Callback):
    """Raise once training has passed step ``k`` (its checkpoint is on disk by then)."""

    def __init__(self, k: int):
        self.k = k

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.k:
            raise RuntimeError("simulated crash")


def train(cfg, extra: list[Callback]) -> torch.Tensor:
    """The toy flow-matching run (extra callbacks added to its session); its final weights, flat."""
    session = runner.session

    def with_extra(*args, callbacks=None, **kwargs):
        return session(*args, callbacks=[*(callbacks or []), *extra], **kwargs)

    train_x, test_x = cnf.toy_split(cfg, cfg.model.cnf.dataset)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(runner, "session", with_extra)
        module, _ = flow_matching.train_toy(cfg, "gaussian", train_x, test_x)
    return torch.cat([p.detach().flatten() for p in module.net.parameters()])


@pytest.fixture(scope="module")
def uninterrupted(prepared, tmp_path_factory):
    from conftest import compose_cfg

    cfg = compose_cfg(tmp_path_factory.mktemp("uninterrupted"), *OVERRIDES)
    cfg.paths.data = str(prepared / "data")
    return train(cfg, [])


@pytest.mark.slow
@pytest.mark.parametrize("k", [2, 4, 6, 8])
def test_resume_from_checkpoint_k_gives_the_uninterrupted_weights(k, uninterrupted, prepared, make_cfg, tmp_path):
    cfg = make_cfg(tmp_path, *OVERRIDES)
    cfg.paths.data = str(prepared / "data")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, [CrashAfter(k)])
    assert list((tmp_path / "checkpoints").rglob("last.ckpt"))
    assert torch.equal(train(cfg, []), uninterrupted)
