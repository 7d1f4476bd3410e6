"""The classifier recipe: `classifier` trains the MLP and CNN with it; `generalization` reuses it for
memorization, adversarial training and the deep ensemble."""
from __future__ import annotations

import torch

from genlab import runner
from genlab.data.loader import loader
from genlab.models.classifier import Classifier
from genlab.nn.classifiers import build
from genlab.saved.classifier import model_config


def fit_and_test(cfg, module: Classifier, data: dict[str, torch.Tensor], *, stage: str, run: str, run_config,
                 epochs: int, batch_size: int, callbacks: list | None = None, precision: str | None = None) -> dict:
    """Train ``module`` on ``train_x/y`` (validated on ``val_x/y`` each epoch), then test on ``test_x/y``."""
    train = loader(data["train_x"], data["train_y"], batch_size=batch_size, seed=cfg.seed)
    val = loader(data["val_x"], data["val_y"], batch_size=1000, train=False)
    with runner.session(cfg, stage=stage, run=run, run_config=run_config, max_epochs=epochs,
                        callbacks=callbacks, precision=precision) as trainer:
        clock = runner.fit(trainer, module, train, val)
        test = trainer.test(module, loader(data["test_x"], data["test_y"], batch_size=1000, train=False),
                            verbose=False)[0]
    return {"test_accuracy": test["test/acc"], "test_ece": test["test/ece"], "test_loss": test["test/loss"],
            "parameters": sum(p.numel() for p in module.net.parameters()), "train_seconds": clock.seconds}


def train_one(cfg, arch: str, data: dict[str, torch.Tensor], stage: str = "classifier",
              run: str | None = None) -> tuple[Classifier, dict]:
    """The classifier recipe for ``arch`` (``run`` names the run under ``stage``; default: the arch)."""
    c = cfg.model.classifier
    runner.seed_all(cfg)
    module = Classifier(build(arch, c[arch]), c.lr, c.weight_decay, c.shift)
    return module, fit_and_test(cfg, module, data, stage=stage, run=run or arch,
                                run_config=[model_config(cfg, arch), cfg.data.mnist], epochs=c[arch].epochs,
                                batch_size=c.batch_size, precision=c[arch].precision)


def seed_run(cfg, arch: str, seed: int, data: dict[str, torch.Tensor], keep: bool = False) -> dict:
    """One replicate of the recipe under ``seed`` (a ``genlab.parallel.run_many`` job).

    Returns the test metrics; with ``keep`` also what the stage saves of its reported model: the weights,
    the training curve and the test confusion matrix (plain tensors and lists, so they cross processes).
    """
    cfg = cfg.copy()
    cfg.seed = seed
    module, metrics = train_one(cfg, arch, data, run=arch if seed == 0 else f"{arch}-seed{seed}")
    if keep:
        metrics |= {"state_dict": module.net.state_dict(), "history": module.history,
                    "confusion": module.confusion.compute()}
    return metrics
