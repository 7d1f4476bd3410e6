"""Stage `emergence`: train the transformer size family on a mix of n-digit additions, over seeds.

Every (width, seed) in ``model.emergence.widths`` × ``seeds`` (``model.emergence.seeds``, else the
global ``seeds``) is one job of a pool of single-thread workers (``genlab.parallel.run_many``), so the
results do not depend on the pool size; the widest jobs are queued first, so the pool's last job is a short
one. ``only=<width>`` trains just that width (all seeds), for development: the DVC stage trains every width.

Task. Problems ``a+b=`` with 1…5-digit operands (``model.emergence.digits``) are drawn here, disjoint
train / validation / test per digit count (``genlab.data.arithmetic.sample_splits``, a fixed stream per
digit count: the same for every size and seed). A model trains on the mix of all digit counts, each
equally often (``balanced``), and is scored on each alone, so exact match can be read against answer length L = d + 2 tokens (d + 1 answer
digits and the closing "\\n"). Answers are written least-significant digit first: each later digit
needs only the operand digits of its place and the carry just produced, the order of the addition.

Compute per size. Each run trains until it is *solved* (validation exact match ≥ ``solved_at`` at
every digit count), *stalled* (``patience`` validation checks without a ``min_rel_delta`` relative fall of
the validation loss), or hits the step cap ``steps``; the best-on-validation weights are scored. A model
that escapes a loss plateau late is then not cut off at an arbitrary fixed budget, and one that has
solved the task stops spending compute. Steps-to-threshold (first check with validation exact match ≥
``threshold``) are recorded per digit count from the validation curve.

Scores. On every held-out test problem: greedy exact match, per-digit accuracy, token edit distance;
under teacher forcing the answer log-probability, the Brier score and the token accuracy (the share of
answer tokens whose argmax is right: Schaeffer et al.'s per-token p). Writes
``models/emergence/w<width>.pt``: the weights of the run under ``seed`` plus every seed's results,
which `emergence_eval` collects.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genlab import runner
from genlab.data.arithmetic import VOCAB, sample_splits, tokenize
from genlab.data.loader import loader
from genlab.io import save_model
from genlab.models.arithmetic_lm import ArithmeticLM, SolvedOrStalled
from genlab.nn.transformer import Transformer, TransformerConfig
from genlab.parallel import run_many
from genlab.saved.emergence import METRICS, model_config, seeds_of


def network(cfg, width: int, block_size: int) -> Transformer:
    """The GPT-2 init with every weight matrix scaled by ``init_scale``: GPT-2's N(0, 0.02) is sized for
    d = 768; at d ≤ 64 it starts attention almost uniform (q·k ≈ 0) and small models sat for most of the
    budget on the loss plateau of the digit marginals (×4: std 0.08, still below 1/√d)."""
    c = cfg.model.emergence
    net = Transformer(TransformerConfig(vocab_size=len(VOCAB), block_size=block_size, n_layer=c.n_layer,
                                        n_head=c.n_head, n_embd=width, dropout=c.dropout, pos=c.pos))
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() >= 2:
                p.mul_(c.init_scale)
    return net


def problems(cfg) -> dict[str, tuple[torch.Tensor, ...]]:
    """``{split: (ids [N, T], prompt_len [N], answer_len [N], digits [N])}`` for train / val / test.

    Drawn from ``seed`` (the data seed), not from a run's seed: every size and seed sees the same
    problems, and a replicate re-draws only initialisation and batch order.
    """
    c = cfg.model.emergence
    arrays = sample_splits(c.digits, c.n_train, c.n_val, c.n_test, cfg.seed)
    out = {}
    for split in ("train", "val", "test"):
        a, b, d = (arrays[f"{split}_{k}"] for k in ("a", "b", "digits"))
        if split == "train":
            a, b, d = balanced(a, b, d)
        out[split] = (*tokenize(a, b, d, reverse=True), torch.from_numpy(d))
    return out


def balanced(a: np.ndarray, b: np.ndarray, digits: np.ndarray) -> tuple[np.ndarray, ...]:
    """The training mix with every digit count equally often: a digit count with fewer distinct problems
    (1 digit: 70) is tiled up to the largest count, or a batch would hold it a few tenths of a percent of
    the time and the short answers would go unlearned."""
    counts = {d: int((digits == d).sum()) for d in np.unique(digits)}
    most = max(counts.values())
    keep = np.concatenate([np.resize(np.flatnonzero(digits == d), most) for d in counts])
    return a[keep], b[keep], digits[keep]


@torch.no_grad()
def evaluate(module: ArithmeticLM, test: tuple[torch.Tensor, ...], batch: int = 1000) -> dict:
    """Per digit count d: the mean of every metric over its test problems, the per-token loss
    L_CE = −mean log p(answer) / L and the answer length L = d + 2 tokens (digits + EOS)."""
    ids, prompt_len, answer_len, digits = test
    out = {}
    for d in digits.unique().tolist():
        rows = (digits == d).nonzero().squeeze(1)
        p, a = int(prompt_len[rows[0]]), int(answer_len[rows[0]])
        parts = [module.score(ids[chunk, : p + a + 1], p, a) for chunk in rows.split(batch)]
        scores = {k: torch.cat([s[k] for s in parts]) for k in METRICS}
        out[str(d)] = {k: float(v.mean()) for k, v in scores.items()} | {
            "answer_tokens": a + 1, "token_loss": -float(scores["answer_logprob"].mean()) / (a + 1),
            "n_problems": len(rows)}
    return out


def steps_to_threshold(val_history: list[dict], digits: list[int], threshold: float) -> dict[str, int | None]:
    """Per digit count: the first validation step with exact match ≥ ``threshold`` (None: never reached)."""
    return {str(d): next((r["step"] for r in val_history if r.get(f"val_exact_match_{d}", 0.0) >= threshold), None)
            for d in digits}


def train_size(cfg, width: int, seed: int, data: dict, keep: bool) -> dict:
    """One (width, seed) run — a ``run_many`` job: train to solved / stalled / the cap, test the best weights.

    Returns the test scores per digit count, the training and validation curves, steps-to-threshold,
    timing, and with ``keep`` the weights.
    """
    c = cfg.model.emergence
    cfg = cfg.copy()
    cfg.seed = seed
    runner.seed_all(cfg)
    train, val, test = data["train"], data["val"], data["test"]
    module = ArithmeticLM(network(cfg, width, train[0].size(1)), c.lr, c.weight_decay, c.warmup_steps, c.steps)
    stop = SolvedOrStalled(c.solved_at, c.patience, c.min_rel_delta)
    with runner.torch_threads(c.threads), runner.session(
            cfg, stage="emergence", run=f"w{width}-seed{seed}", run_config=model_config(cfg, width),
            max_steps=c.steps, gradient_clip_val=c.grad_clip, callbacks=[stop], val_check_interval=c.val_every,
            check_val_every_n_epoch=None) as trainer:
        clock = runner.fit(trainer, module, loader(*train[:3], batch_size=c.batch_size, seed=seed),
                           loader(*val[:3], batch_size=len(val[0]), train=False))
        steps = int(trainer.global_step)
    if stop.best_state is not None:
        module.net.load_state_dict(stop.best_state)
    by_digits = evaluate(module, test)
    out = {"width": width, "seed": seed, "n_params": module.net.n_params(non_embedding=True),
           "n_params_total": module.net.n_params(non_embedding=False), "by_digits": by_digits,
           "steps": steps, "best_step": stop.best_step, "stopped": stop.reason,
           "steps_to_threshold": steps_to_threshold(module.val_history, list(c.digits), c.threshold),
           "history": module.history, "val_history": module.val_history,
           "train_seconds": clock.seconds, "train_cpu_seconds": clock.cpu_seconds}
    return out | ({"state_dict": module.net.state_dict()} if keep else {})


def run(cfg) -> None:
    c = cfg.model.emergence
    data = problems(cfg)
    widths, seeds = ([c.only] if c.only is not None else list(c.widths)), seeds_of(cfg)
    keep = seeds[0] if cfg.seed not in seeds else cfg.seed
    jobs = [{"cfg": cfg, "width": w, "seed": s, "data": data, "keep": s == keep}
            for w in sorted(widths, reverse=True) for s in seeds]
    results = run_many(train_size, jobs, desc="emergence (width, seed)")
    for width in widths:
        runs = [r for j, r in zip(jobs, results) if j["width"] == width]
        state = next(r.pop("state_dict") for r in runs if "state_dict" in r)
        save_model(Path(cfg.paths.models) / "emergence" / f"w{width}.pt", state, model_config(cfg, width),
                   results={"width": width, "n_params": runs[0]["n_params"], "saved_seed": keep,
                            "seeds": {str(r["seed"]): r for r in runs}})
        for r in runs:
            print(f"[genlab] emergence/w{width} seed {r['seed']}: N={r['n_params']} {r['stopped']} at step "
                  f"{r['steps']} ({r['train_seconds']:.0f}s) | " + " ".join(
                      f"{d}d EM={m['exact_match']:.2f}" for d, m in r["by_digits"].items()))
