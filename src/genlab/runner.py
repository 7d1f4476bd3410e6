"""The one way genlab trains a LightningModule.

``with session(cfg, stage=…, run=…, run_config=…) as trainer: fit(trainer, module, train, val)``
gives every stage:

* seeds (``seed_everything(seed, workers=True)``; under DDP each rank its own at train start)
  and deterministic algorithms on CPU;
* ``last.ckpt`` every ``trainer.checkpoint_every`` steps under
  ``checkpoints/<stage>/<run>-<hash of run_config>/``; a rerun with the same config
  resumes from it automatically (loaders and RNG state included, so the result is
  bit-identical to an uninterrupted run); a different config gets a different folder;
* a clear stop on a NaN/inf loss;
* CSV + wandb loggers (wandb ``offline`` by default: never touches the network),
  tagged with stage, git sha and config hash; progress bar.

The checkpoint folder is deleted after a successful fit: resume points are for
interrupted runs, the stage itself saves the final weights it hands on.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from genlab.config import section_hash
from genlab.errors import GenlabError
from genlab.models.clock import TrainClock


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def seed_all(cfg: DictConfig) -> None:
    """Seed python/numpy/torch and make CPU kernels deterministic."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=cfg.trainer.accelerator != "cpu")


def thread_count(n: int) -> int:
    """The torch thread count a ``threads`` config key stands for: ``n``, or 0 → the current count."""
    return n or torch.get_num_threads()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (0: leave the count as it is), then restore it.

    Tiny models (a 64-wide MLP on 2D points) train as fast on one thread as on two: the second only adds a
    synchronisation per op, and makes the step time hostage to any other process on the machine.
    """
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class FiniteLoss(Callback):
    """Stop with a one-line message as soon as the training loss is NaN or inf."""

    def __init__(self, stage: str):
        self.stage = stage

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            raise GenlabError(f"{self.stage}: training loss became {loss.item()} at step {trainer.global_step}",
                              f"lower model.{self.stage}.lr, or check the input data for NaNs")


class ResumeCursor(Callback):
    """Counts consumed batches and snapshots RNG + loader state and the module's ``history`` (its
    training curve, if it keeps one), so resume is exact.

    Two Lightning gaps are closed in ``on_train_start`` after a resume: its own restore of
    stateful loaders is skipped when ``estimated_stepping_batches`` built the loader early,
    and a checkpoint saved in ``on_train_batch_end`` holds per-step LR schedulers *before*
    that step's ``scheduler.step()``, so they would lag one step behind forever.
    """

    def __init__(self, seed: int):
        self.seed, self.pending = seed, None

    @staticmethod
    def _sampler(trainer):
        sampler = getattr(trainer.train_dataloader, "batch_sampler", None)
        return sampler if hasattr(sampler, "consumed") else None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if sampler := self._sampler(trainer):
            sampler.consumed += 1

    def on_save_checkpoint(self, trainer, module, checkpoint):
        np_state = np.random.get_state()
        checkpoint["rng"] = {"torch": torch.get_rng_state(), "numpy": np_state[1].tolist(),
                             "numpy_pos": int(np_state[2]), "python": list(random.getstate()[1])}
        if sampler := self._sampler(trainer):
            checkpoint["loader"] = sampler.state_dict()
        if hasattr(module, "history"):
            checkpoint["history"] = module.history

    def on_load_checkpoint(self, trainer, module, checkpoint):
        self.pending = checkpoint
        if "history" in checkpoint:
            module.history = checkpoint["history"]

    def on_train_start(self, trainer, module):
        if self.pending is not None:
            # RNG last, after anything above that might draw from it
            rng, loader = self.pending.get("rng"), self.pending.get("loader")
            if loader and (sampler := self._sampler(trainer)):
                sampler.load_state_dict(loader)
            for config in trainer.lr_scheduler_configs:
                if config.interval == "step" and config.frequency == 1:
                    while config.scheduler.last_epoch < trainer.global_step:
                        config.scheduler.step()
            if rng:
                torch.set_rng_state(rng["torch"])
                np.random.set_state(("MT19937", np.array(rng["numpy"], dtype=np.uint32), rng["numpy_pos"], 0, 0.0))
                random.setstate((3, tuple(rng["python"]), None))
            self.pending = None
        if trainer.world_size > 1:
            # per-rank seeds: DDP gives every rank rank 0's weights, but each must draw its own noise,
            # timesteps and augmentations; (seed, rank, step) also re-seeds a resumed rank its own way
            pl.seed_everything(self.seed + 100_003 * trainer.global_rank + trainer.global_step, verbose=False)


def check_hardware(cfg: DictConfig) -> None:
    """Refuse trainer settings this machine cannot honour, before Lightning starts processes."""
    t = cfg.trainer
    if t.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise GenlabError(f"trainer.accelerator={t.accelerator} but no CUDA device is visible",
                          "use trainer=cpu (or experiment=cpu) on this machine")
    if t.accelerator == "cpu" and isinstance(t.devices, int) and t.devices > (os.cpu_count() or 1):
        raise GenlabError(f"trainer.devices={t.devices} CPU processes requested but this machine has "
                          f"{os.cpu_count()} cores", f"use trainer.devices≤{os.cpu_count()}")
    if cfg.logger.wandb.mode == "online" and not (os.environ.get("WANDB_API_KEY") or _netrc_has_wandb()):
        raise GenlabError("logger.wandb.mode=online but no wandb credentials were found",
                          "run `wandb login` (or set WANDB_API_KEY), or use logger=wandb_offline")


def _netrc_has_wandb() -> bool:
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_args(cfg: DictConfig, stage: str, name: str, *tags: str) -> dict:
    """``wandb.init`` arguments shared by every genlab run: grouped by stage (or sweep), tagged with
    the stage and git sha, the full config as a plain dict. Creates ``<logs>/wandb``."""
    wb = cfg.logger.wandb
    (Path(cfg.paths.logs) / "wandb").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    return dict(project=wb.project, entity=wb.entity, group=wb.group or stage, mode=wb.mode, name=name,
                job_type=stage, dir=str(cfg.paths.logs), tags=[stage, f"git:{git_sha()}", *tags, *wb.tags],
                config=OmegaConf.to_container(cfg, resolve=True))


def loggers(cfg: DictConfig, stage: str, run: str, run_hash: str) -> list[Logger]:
    out: list[Logger] = []
    if cfg.logger.csv:
        out.append(CSVLogger(Path(cfg.paths.logs) / "csv", name=stage, version=f"{run}-{run_hash}"))
    if cfg.logger.wandb.mode != "disabled":
        args = wandb_args(cfg, stage, f"{stage}/{run}", f"cfg:{run_hash}")
        out.append(WandbLogger(save_dir=args.pop("dir"), **args))
    return out


def finish_loggers(logs: list[Logger]) -> None:
    """Close wandb runs (also on failure) so sweep jobs never share a run."""
    for log in logs:
        if isinstance(log, WandbLogger):
            import wandb
            wandb.finish()


@contextmanager
def session(cfg: DictConfig, *, stage: str, run: str, run_config: Any, max_steps: int = -1,
            max_epochs: int | None = None, callbacks: list[Callback] | None = None, **kwargs) -> Iterator[pl.Trainer]:
    """A Trainer with genlab's callbacks and loggers; loggers are closed on exit (also on failure).

    ``run_config`` is whatever the run's result depends on: its hash names the checkpoint folder.
    Every session times its training batches with a ``TrainClock`` (the caller's, if it passes one), which
    ``fit`` returns.
    """
    check_hardware(cfg)
    run_hash = section_hash(run_config, cfg.seed, cfg.trainer.precision)
    ckpt_dir = Path(cfg.paths.checkpoints) / stage / f"{run}-{run_hash}"
    logs = loggers(cfg, stage, run, run_hash)
    t = cfg.trainer
    bar = t.progress_bar and sys.stderr.isatty()   # no carriage-return spam in CI/DVC logs
    callbacks = list(callbacks or [])
    clock = next((c for c in callbacks if isinstance(c, TrainClock)), None) or TrainClock()
    trainer = pl.Trainer(
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes,
        precision=t.precision, deterministic=t.deterministic, max_steps=max_steps, max_epochs=max_epochs,
        logger=logs or False, log_every_n_steps=t.log_every, enable_progress_bar=bar,
        enable_model_summary=False, use_distributed_sampler=False, num_sanity_val_steps=0,
        default_root_dir=str(ckpt_dir),
        callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0,
                                   every_n_train_steps=t.checkpoint_every),
                   FiniteLoss(stage), ResumeCursor(cfg.seed),
                   *([TQDMProgressBar(refresh_rate=max(1, t.log_every))] if bar else []),
                   *callbacks, *([] if clock in callbacks else [clock])],
        **kwargs)
    trainer.genlab_run, trainer.genlab_clock = f"{stage}/{run}", clock
    trainer.genlab_ckpt_dir = ckpt_dir
    try:
        yield trainer
    finally:
        finish_loggers(logs)


def fit(trainer: pl.Trainer, module: pl.LightningModule, train, val=None, keep_checkpoints: bool = False) -> TrainClock:
    """Train ``module``, resuming from ``last.ckpt`` if this exact run was interrupted; returns the run's clock
    (training seconds, resumed runs included)."""
    ckpt_dir: Path = trainer.genlab_ckpt_dir
    last = ckpt_dir / "last.ckpt"
    if last.exists():
        try:   # refuse a corrupt/unsafe resume point up front, with the fix, before Lightning touches it
            saved = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
        except Exception as e:
            raise GenlabError(f"{trainer.genlab_run}: cannot resume from {last} ({str(e).splitlines()[0][:120]})",
                              f"delete {ckpt_dir} to start this run afresh") from None
        if {k: v.shape for k, v in saved.items()} != {k: v.shape for k, v in module.state_dict().items()}:
            raise GenlabError(f"{trainer.genlab_run}: {last} holds the weights of a different network (the code "
                              "changed since it was saved)", f"delete {ckpt_dir} to start this run afresh")
        print(f"[genlab] {trainer.genlab_run}: resuming from {last}")
    trainer.fit(module, train, val, ckpt_path=str(last) if last.exists() else None, weights_only=True)
    if not keep_checkpoints and trainer.is_global_zero:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return trainer.genlab_clock
