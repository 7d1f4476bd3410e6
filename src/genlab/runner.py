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
* CSV + wandb loggers (``genlab.tracking``; wandb ``offline`` by default: never touches the network,
  telemetry included), tagged with stage, git sha and config hash; progress bar;
  a resumed run appends to its CSV log;
* a lock on the checkpoint folder, held for the session: a second identical run started while
  the first is training stops with one line instead of "resuming" from a live checkpoint.

The checkpoint folder is deleted after a successful fit: resume points are for
interrupted runs, the stage itself saves the final weights it hands on.
"""
from __future__ import annotations

import fcntl
import os
import random
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from omegaconf import DictConfig, OmegaConf

from genlab.config import section_hash
from genlab.errors import GenlabError
from genlab.models.clock import TrainClock
from genlab.precision import precision_args
from genlab.tracking import ResumableCSVLogger, finish_loggers, has_wandb_credentials, loggers, start_loggers


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


def lr_keys(cfg: DictConfig | None, stage: str, run: str = "") -> list[str]:
    """Dotted keys of the learning rates a stage's config section holds (``model.gpt.optim.lr``…).

    The section is ``model.<stage>`` or, for stages grouped under one section (``model.rlhf.ppo``),
    the first ``<stage>`` found below ``model``; narrowed to the run's own subsections, level by level,
    when it has them (run ``toy_ot`` → ``model.flow_matching.toy``; ``toy_vae-seed1`` → ``model.zoo.toy.vae``).
    Keys ``lr`` and ``*_lr`` (not ``min_lr``) count.
    """
    def find(node, path):
        if not isinstance(node, dict):
            return None
        if path and path[-1] == stage:
            return path, node
        for k, v in node.items():
            if (hit := find(v, [*path, k])) is not None:
                return hit
        return None

    def lrs(node, path):
        for k, v in node.items():
            if isinstance(v, dict):
                yield from lrs(v, [*path, k])
            elif k == "lr" or k.endswith("_lr") and not k.startswith("min"):
                yield ".".join([*path, k])

    if cfg is None or "model" not in cfg:
        return []
    hit = find(OmegaConf.to_container(cfg.model, resolve=True), ["model"])
    if hit is None:
        return []
    path, node = hit
    keys = sorted(lrs(node, path), key=len)
    while (sub := next((k for k, v in node.items() if isinstance(v, dict) and
                        (run == k or run.startswith((f"{k}_", f"{k}-")))), None)) is not None:
        path, node, run = [*path, sub], node[sub], run[len(sub) + 1:]
        keys = sorted(lrs(node, path), key=len) or keys
    return keys


class FiniteLoss(Callback):
    """Stop with a one-line message as soon as the training loss is NaN or inf."""

    def __init__(self, stage: str, cfg: DictConfig | None = None, run: str = ""):
        self.stage = stage
        keys = lr_keys(cfg, stage, run)
        self.advice = f"lower {' or '.join(keys)}" if keys else "lower the stage's learning rate"

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            raise GenlabError(f"{self.stage}: training loss became {loss.item()} at step {trainer.global_step}",
                              f"{self.advice}, or check the input data for NaNs")


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
    if cfg.logger.wandb.mode == "online" and not has_wandb_credentials():
        raise GenlabError("logger.wandb.mode=online but no wandb credentials were found",
                          "run `wandb login` (or set WANDB_API_KEY), or use logger=wandb_offline")


@contextmanager
def run_lock(ckpt_dir: Path, run: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<ckpt_dir>/.lock`` (rank 0 only); refuse if another process holds it.

    Two identical runs share one checkpoint folder: the second would "resume" from the first's live
    checkpoint and both would write the same logs. The kernel drops the lock when the holder exits,
    however it exits, so a killed run never leaves a stale lock.
    """
    if rank_zero_only.rank != 0:
        yield
        return
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        fh = open(ckpt_dir / ".lock", "a+")
    except OSError as e:
        raise GenlabError(f"cannot write {ckpt_dir}: {e.strerror}", "check that paths.checkpoints is writable") from None
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GenlabError(f"{run}: another genlab process is running this exact run (it holds {ckpt_dir}/.lock)",
                              "wait for it to finish (or stop it), then re-run; to run both, give this one "
                              "other paths.checkpoints/models/reports/logs") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()   # closing the file releases the lock


@contextmanager
def session(cfg: DictConfig, *, stage: str, run: str, run_config: Any, max_steps: int = -1,
            max_epochs: int | None = None, callbacks: list[Callback] | None = None, precision: str | None = None,
            **kwargs) -> Iterator[pl.Trainer]:
    """A Trainer with genlab's callbacks and loggers; loggers are closed on exit (also on failure).

    ``precision`` overrides ``trainer.precision`` for this run (a model whose config sets its own).

    ``run_config`` is whatever the run's result depends on: its hash names the checkpoint folder.
    Every session times its training batches with a ``TrainClock`` (the caller's, if it passes one), which
    ``fit`` returns.
    """
    check_hardware(cfg)
    precision = precision or cfg.trainer.precision
    run_hash = section_hash(run_config, cfg.seed, precision)
    ckpt_dir = Path(cfg.paths.checkpoints) / stage / f"{run}-{run_hash}"
    with run_lock(ckpt_dir, f"{stage}/{run}"):
        logs = loggers(cfg, stage, run, run_hash)
        try:
            start_loggers(logs, cfg.logger.wandb.mode)
            yield from _trainer(cfg, stage, run, ckpt_dir, logs, max_steps, max_epochs, callbacks,
                                {**precision_args(precision, cfg.trainer.accelerator), **kwargs})
        finally:
            finish_loggers(logs)


def _trainer(cfg, stage, run, ckpt_dir, logs, max_steps, max_epochs, callbacks, kwargs) -> Iterator[pl.Trainer]:
    t = cfg.trainer
    bar = t.progress_bar and sys.stderr.isatty()   # no carriage-return spam in CI/DVC logs
    callbacks = list(callbacks or [])
    clock = next((c for c in callbacks if isinstance(c, TrainClock)), None) or TrainClock()
    trainer = pl.Trainer(
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes,
        deterministic=t.deterministic, max_steps=max_steps, max_epochs=max_epochs,
        logger=logs or False, log_every_n_steps=t.log_every, enable_progress_bar=bar,
        enable_model_summary=False, use_distributed_sampler=False, num_sanity_val_steps=0,
        default_root_dir=str(ckpt_dir),
        callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0,
                                   every_n_train_steps=t.checkpoint_every),
                   FiniteLoss(stage, cfg, run), ResumeCursor(cfg.seed),
                   *([TQDMProgressBar(refresh_rate=max(1, t.log_every))] if bar else []),
                   *callbacks, *([] if clock in callbacks else [clock])],
        **kwargs)
    trainer.genlab_run, trainer.genlab_clock = f"{stage}/{run}", clock
    trainer.genlab_ckpt_dir = ckpt_dir
    yield trainer


def fit(trainer: pl.Trainer, module: pl.LightningModule, train, val=None, keep_checkpoints: bool = False) -> TrainClock:
    """Train ``module``, resuming from ``last.ckpt`` if this exact run was interrupted; returns the run's clock
    (training seconds, resumed runs included)."""
    ckpt_dir: Path = trainer.genlab_ckpt_dir
    last = ckpt_dir / "last.ckpt"
    if last.exists():
        try:   # refuse a corrupt/unsafe resume point up front, with the fix, before Lightning touches it
            ckpt = torch.load(last, map_location="cpu", weights_only=True)
            saved = ckpt["state_dict"]
        except Exception as e:   # an empty file's error has an empty message: name the exception instead
            why = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
            raise GenlabError(f"{trainer.genlab_run}: cannot resume from {last} ({why})",
                              f"delete {ckpt_dir} to start this run afresh") from None
        if {k: v.shape for k, v in saved.items()} != {k: v.shape for k, v in module.state_dict().items()}:
            raise GenlabError(f"{trainer.genlab_run}: {last} holds the weights of a different network (the code "
                              "changed since it was saved)", f"delete {ckpt_dir} to start this run afresh")
        print(f"[genlab] {trainer.genlab_run}: resuming from {last}")
        for log in trainer.loggers:
            if isinstance(log, ResumableCSVLogger):
                log.resume_step = int(ckpt.get("global_step", 0))
    try:
        trainer.fit(module, train, val, ckpt_path=str(last) if last.exists() else None, weights_only=True)
    except SystemExit:
        # Lightning turns Ctrl-C into a "graceful shutdown" and sys.exit(1): give the CLI the interrupt back
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    if not keep_checkpoints and trainer.is_global_zero:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return trainer.genlab_clock
