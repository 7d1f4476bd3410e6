"""Stage `gpt`: a character-level GPT on ``data/text`` → val loss (nats and bits per char), tokens/s, samples.

Writes ``models/gpt/model.pt`` (best-on-validation weights + vocabulary),
``reports/metrics/gpt.json``, ``reports/plots/gpt/curve.csv`` and
``reports/figures/gpt/`` (loss curve, generated text). ``model/gpt=baby`` is
nanoGPT's CPU reference configuration (``benchmarks/gpt_vs_plain.py`` compares with
a plain PyTorch loop of the same recipe, ``benchmarks/gpt_vs_nanogpt.py`` with nanoGPT itself).

``val_loss`` is always the whole validation split's loss of the kept weights. With ``val_tokens`` > 0 the
periodic validations (which pick the best step) see only the split's first ``val_tokens`` — nanoGPT
estimates its val loss from a few batches the same way — and the kept weights are then scored once
on the whole split (``val_loss_selection`` is the subset's loss).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from omegaconf import OmegaConf

from genlab.data.prepared import load_text
from genlab.io import save_model
from genlab.models.gpt import GPT, windows
from genlab.nn.transformer import Transformer, TransformerConfig
from genlab.recipes.language_model import train_lm
from genlab.report.artifacts import figures_dir, plots_dir, save_figure, write_csv, write_metrics, write_text


def net_config(cfg, vocab_size: int) -> TransformerConfig:
    return TransformerConfig(vocab_size=vocab_size, **OmegaConf.to_container(cfg.model.gpt.arch, resolve=True))


@torch.no_grad()
def sampling_speed(net: Transformer, n_tokens: int, use_cache: bool) -> float:
    """Generated tokens/s for one sequence of ``n_tokens`` from a 1-token prompt."""
    start = time.perf_counter()
    net.generate(torch.zeros(1, 1, dtype=torch.long), n_tokens, use_cache=use_cache,
                 generator=torch.Generator().manual_seed(0))
    return n_tokens / (time.perf_counter() - start)


@torch.no_grad()
def split_loss(module: GPT, ids: torch.Tensor, block_size: int, batch_size: int = 256) -> float:
    """Exact mean next-token loss (nats/token) of ``ids`` in non-overlapping windows, each target once."""
    w = windows(ids, block_size, stride=block_size)
    total = sum(module.loss(b).item() * (b.numel() - b.size(0)) for b in w.split(batch_size))
    return total / (w.numel() - w.size(0))


def curve_figure(history: list[dict], best_step: int) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["train_loss"] for h in history], "o-", label="train (last batch)")
    ax.plot(steps, [h["val_loss"] for h in history], "o-", label="validation")
    ax.axvline(best_step, color="grey", ls=":", label=f"best step {best_step}")
    ax.set(xlabel="step", ylabel="loss (nats/char)", title="GPT char-level LM")
    ax.legend()
    return fig


def run(cfg) -> None:
    c = cfg.model.gpt
    data, vocab = load_text(cfg)
    net_cfg = net_config(cfg, len(vocab))
    # the vocabulary too: a corpus re-prepared with other characters must not resume this run's checkpoint
    run_config = [OmegaConf.to_container(c, resolve=True), cfg.data.text, vocab]
    started = time.perf_counter()
    module = train_lm(cfg, stage="gpt", run="char", net_cfg=net_cfg, optim=c.optim, max_iters=c.max_iters,
                      lr_decay_iters=c.lr_decay_iters, eval_interval=c.eval_interval, val_tokens=c.val_tokens,
                      data=data, run_config=run_config)
    val_loss = split_loss(module, data["val"], net_cfg.block_size) if c.val_tokens else module.best_loss
    wall = time.perf_counter() - started
    net = module.net
    save_model(Path(cfg.paths.models) / "gpt" / "model.pt", net.state_dict(), run_config[0], vocab=vocab)

    gen = torch.Generator().manual_seed(cfg.seed)
    newline = torch.tensor([[vocab.index("\n") if "\n" in vocab else 0]])
    # all samples in one batch: past block_size every new token recomputes the whole window
    samples = net.generate(newline.repeat(c.sample.n, 1), c.sample.tokens, temperature=c.sample.temperature,
                           top_k=c.sample.top_k, generator=gen)[:, 1:]
    text = "\n\n".join(f"--- sample {i + 1} (temperature {c.sample.temperature}, top-k {c.sample.top_k}) ---\n"
                       + "".join(vocab[int(t)] for t in s) for i, s in enumerate(samples))
    n_sample = net_cfg.block_size - 1          # the whole context fits the cache
    metrics = {"val_loss": val_loss, "val_bpc": val_loss / math.log(2), "best_step": module.best_step,
               **({"val_loss_selection": module.best_loss} if c.val_tokens else {}),
               "tokens_per_sec": module.train_tokens / module.train_seconds, "train_tokens": module.train_tokens,
               "train_seconds": module.train_seconds, "train_cpu_seconds": module.train_cpu_seconds,
               "wall_seconds": wall,
               "sample_tokens_per_sec_cache": sampling_speed(net, n_sample, use_cache=True),
               "sample_tokens_per_sec_no_cache": sampling_speed(net, n_sample, use_cache=False),
               "n_params_non_embedding": net.n_params(non_embedding=True), "n_params": net.n_params(False),
               "vocab_size": len(vocab)}
    write_metrics(cfg, "gpt", metrics)
    write_csv(plots_dir(cfg, "gpt") / "curve.csv", module.history)
    figures = figures_dir(cfg, "gpt")
    save_figure(curve_figure(module.history, module.best_step), figures / "loss.png")
    write_text(figures / "samples.txt", text)
    print(f"[genlab] gpt: val_loss={metrics['val_loss']:.4f} nats/char ({metrics['val_bpc']:.3f} bpc) at step "
          f"{module.best_step}, {metrics['tokens_per_sec']:.0f} train tokens/s, {wall:.0f}s")
