"""Stage `gpt_scaling`: IsoFLOP profiles of the GPT family (Hoffmann et al. 2022, approach 2) → one row per run.

For each compute budget C in ``model.gpt_scaling.budgets`` the sizes listed beside it are each
trained on D = C / c(N) tokens, c the training FLOPs per token counted with attention and the
output layer (``genlab.evaluate.flops``: c = 6N + 6·n_layer·n_ctx·d + 6·V·d). A size appears under
several budgets, so every size is seen at several D and the L(N, D) fit can separate the N and D
terms (with one D per size, E and B/D^β are not identifiable).

The recipe per run (one job of ``genlab.parallel.run_many``, single-threaded):

* batch ``batch_size`` windows of ``block_size`` tokens, small enough that even the smallest
  budget gets a few hundred steps;
* its own schedule: linear warm-up over ``warmup_frac`` of its steps, cosine decay to
  ``min_lr_ratio``·lr at its last step (a run of budget D is not a truncated longer run);
* peak lr by width, μP-style for Adam (Yang et al. 2021, Tensor Programs V: hidden-layer lr ∝
  1/fan_in): lr(d) = ``lr`` · (``lr_base_width`` / d)^``lr_width_power``;
* one validation at the end on the first ``val_tokens`` of the validation split (nothing to
  early-stop: D repeats the corpus at most a few times).

Design (``experiments/model/gpt_scaling/default.yaml``). At 256 tokens per step these budgets are
step-limited, so the loss-optimal model per budget is tiny (≈ 0.5–10k non-embedding parameters) and
each budget's sizes are centred on it, with at least one size on either side: an IsoFLOP profile
whose smallest size is its best brackets no minimum, and then its parabola and N_opt say nothing.
Reaching the minimum of the larger budgets with small models needs D past one epoch of the ≈ 1M
training tokens; D is allowed to repeat the corpus a few times (Muennighoff et al. 2023: up to
≈ 4 epochs of repeated data are almost as good as fresh data), and every run records its
``epochs``.

The ``seeded_budgets`` smallest budgets are trained under every seed of ``seeds`` (the seed-to-seed
noise the fit and its simulation use); the rest under ``seed`` only. Writes
``models/gpt_scaling/runs.json``: per run size, n_layer, n_embd, N (non-embedding, Kaplan et al.
2020), N_total, budget C, flops_per_token, D (tokens trained), C_actual = c·D, seed, lr, steps,
val_loss, epochs of the corpus seen, seconds.
"""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from omegaconf import OmegaConf

from genlab.data.prepared import load_text
from genlab.evaluate.flops import flops_per_token, non_embedding_params
from genlab.io import write_json
from genlab.nn.transformer import TransformerConfig
from genlab.parallel import run_many
from genlab.recipes.language_model import train_lm


def parse_size(size: str) -> tuple[int, int]:
    """"L2-W48" → (n_layer 2, n_embd 48)."""
    m = re.fullmatch(r"L(\d+)-W(\d+)", size)
    return int(m[1]), int(m[2])


def peak_lr(c, n_embd: int) -> float:
    """lr(d) = lr · (lr_base_width / d)^lr_width_power (μP-style width rule; power 0: one lr for all)."""
    return c.lr * (c.lr_base_width / n_embd) ** c.lr_width_power


def plan(c, vocab_size: int, seeds: list[int], seed: int) -> list[dict]:
    """Every run of the design: one dict per (budget, size, seed), largest compute first (pool balance)."""
    runs = []
    for i, (budget, sizes) in enumerate(zip(c.budgets, c.sizes)):
        for size in sizes:
            n_layer, n_embd = parse_size(size)
            n = non_embedding_params(n_layer, n_embd)
            fpt = flops_per_token(n, n_layer, n_embd, c.block_size, vocab_size)
            steps = max(1, round(budget / fpt / (c.batch_size * c.block_size)))
            for s in seeds if i < c.seeded_budgets else [seed]:
                runs.append({"size": size, "budget": float(budget), "seed": int(s), "steps": steps,
                             "flops_per_token": fpt, "lr": peak_lr(c, n_embd)})
    return sorted(runs, key=lambda r: -r["budget"])


def train_run(cfg, run: dict, data, vocab: list[str]) -> dict:
    """One IsoFLOP run (a ``run_many`` job): train ``run["size"]`` for ``run["steps"]`` steps; its row."""
    c = cfg.model.gpt_scaling
    cfg = cfg.copy()
    cfg.seed = run["seed"]
    n_layer, n_embd = parse_size(run["size"])
    net_cfg = TransformerConfig(vocab_size=len(vocab), block_size=c.block_size, n_layer=n_layer,
                                n_head=max(1, n_embd // c.head_dim), n_embd=n_embd, dropout=0.0, bias=False,
                                pos=c.pos)
    steps = run["steps"]
    optim = SimpleNamespace(batch_size=c.batch_size, lr=run["lr"], min_lr=run["lr"] * c.min_lr_ratio,
                            warmup_iters=max(1, round(c.warmup_frac * steps)), weight_decay=c.weight_decay,
                            beta2=c.beta2, grad_clip=c.grad_clip)
    recipe = {k: c[k] for k in ("head_dim", "block_size", "pos", "batch_size", "min_lr_ratio", "warmup_frac",
                                "weight_decay", "beta2", "grad_clip", "val_tokens")}
    name = f"{run['size']}-C{run['budget']:.2g}" + (f"-seed{run['seed']}" if run["seed"] != 0 else "")
    module = train_lm(cfg, stage="gpt_scaling", run=name, net_cfg=net_cfg, optim=optim, max_iters=steps,
                      lr_decay_iters=steps, eval_interval=steps, val_tokens=c.val_tokens, data=data,
                      run_config=[run, OmegaConf.to_container(OmegaConf.create(recipe)), cfg.data.text, vocab])
    n, d = module.net.n_params(non_embedding=True), module.train_tokens
    row = {"size": run["size"], "n_layer": n_layer, "n_embd": n_embd, "N": n,
           "N_total": module.net.n_params(non_embedding=False), "budget": run["budget"],
           "flops_per_token": run["flops_per_token"], "D": d, "C": run["flops_per_token"] * d, "C_6ND": 6 * n * d,
           "seed": run["seed"], "lr": run["lr"], "steps": steps, "val_loss": module.history[-1]["val_loss"],
           "epochs": d / len(data["train"]), "train_seconds": module.train_seconds}
    print(f"[genlab] gpt_scaling/{name}: N={n:,} D={d:,} C={row['C']:.3g} lr={run['lr']:.2g} "
          f"val_loss={row['val_loss']:.4f} ({module.train_seconds:.0f}s)")
    return row


def run(cfg) -> None:
    c = cfg.model.gpt_scaling
    data, vocab = load_text(cfg)
    runs = plan(c, len(vocab), list(cfg.seeds), cfg.seed)
    rows = run_many(train_run, [{"cfg": cfg, "run": r, "data": data, "vocab": vocab} for r in runs],
                    desc="gpt_scaling runs")
    rows.sort(key=lambda r: (r["budget"], r["N"], r["seed"]))
    write_json(Path(cfg.paths.models) / "gpt_scaling" / "runs.json", rows)
