"""Stage `gpt_scaling`: one size of the GPT family → rows of N, D, C ≈ 6ND, final val loss.

Each entry of ``model.gpt_scaling.sizes`` ("L<n_layer>-W<n_embd>") is one DVC foreach
item (``model.gpt_scaling.only=<size>``; without it every size trains in turn). Every
size trains for ``tokens`` tokens; the ``extra_sizes`` largest also for each fraction in
``extra_budgets``. Each run has its own warmup + cosine schedule matched to its budget
(Hoffmann et al. 2022: not a truncated longer run) on the char-level ``data/text``.
``models/gpt_scaling/<size>.json`` holds one row per run: N (non-embedding parameters,
Kaplan et al. 2020), D (tokens trained on), C = 6·N·D, the final validation loss over
the whole split, and the training curve. ``scaling_fit`` fits the laws.
"""
from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

from genlab.data.prepared import load_text
from genlab.io import write_json
from genlab.nn.transformer import TransformerConfig
from genlab.recipes.language_model import train_lm


def parse_size(size: str) -> tuple[int, int]:
    """"L2-W48" → (n_layer 2, n_embd 48)."""
    m = re.fullmatch(r"L(\d+)-W(\d+)", size)
    return int(m[1]), int(m[2])


def budgets(c, size: str) -> list[int]:
    """Token budgets of ``size``: the main one, plus the extras for the largest ``extra_sizes`` sizes."""
    extra = c.extra_budgets if size in c.sizes[len(c.sizes) - c.extra_sizes:] and c.extra_sizes else []
    return sorted({c.tokens, *(round(f * c.tokens) for f in extra)})


def train_run(cfg, size: str, tokens: int, data, vocab: list[str]) -> dict:
    c = cfg.model.gpt_scaling
    n_layer, n_embd = parse_size(size)
    net_cfg = TransformerConfig(vocab_size=len(vocab), block_size=c.block_size, n_layer=n_layer,
                                n_head=n_embd // c.head_dim, n_embd=n_embd, dropout=0.0, bias=False, pos=c.pos)
    steps = max(1, round(tokens / (c.optim.batch_size * c.block_size)))
    shared = {k: c[k] for k in ("head_dim", "block_size", "pos", "optim", "val_tokens")}
    module = train_lm(cfg, stage="gpt_scaling", run=f"{size}-D{tokens}", net_cfg=net_cfg, optim=c.optim,
                      max_iters=steps, lr_decay_iters=steps, eval_interval=steps, val_tokens=c.val_tokens, data=data,
                      run_config=[size, steps, OmegaConf.to_container(OmegaConf.create(shared)), cfg.data.text, vocab])
    n, d = module.net.n_params(non_embedding=True), module.train_tokens
    row = {"size": size, "budget": tokens, "n_layer": n_layer, "n_embd": n_embd, "N": n, "D": d, "C": 6 * n * d,
           "val_loss": module.history[-1]["val_loss"], "steps": steps,
           "N_total": module.net.n_params(non_embedding=False), "train_seconds": module.train_seconds,
           "tokens_per_sec": d / module.train_seconds, "curve": module.train_curve}
    print(f"[genlab] gpt_scaling/{size}: N={n:,} D={d:,} C={6 * n * d:.3g} val_loss={row['val_loss']:.4f} "
          f"({module.train_seconds:.0f}s)")
    return row


def run(cfg) -> None:
    c = cfg.model.gpt_scaling
    data, vocab = load_text(cfg)
    for size in [c.only] if c.only else c.sizes:
        rows = [train_run(cfg, size, tokens, data, vocab) for tokens in budgets(c, size)]
        write_json(Path(cfg.paths.models) / "gpt_scaling" / f"{size}.json", rows)
