"""Stage `emergence`: train the transformer size family on n-digit addition, score each size.

One model per width in ``model.emergence.widths`` (``only=<width>``: just that one — what each
DVC ``foreach`` item runs), all with the same training budget (the same batches in the same
order), on the ``model.emergence.digits`` problems of ``data/arithmetic``. The loss covers the
answer digits and the closing "\\n" only (the prompt is given).

Answers are written **least-significant digit first** (``data.arithmetic.reverse=true``):
a left-to-right model then emits the units digit first and each later digit needs only the
operand digits of that place plus the carry it has just produced — the order in which
addition is computed. Written most-significant first, the first token would depend on a
carry chain through every digit, a harder and less "local" task for a small model.

Each size is scored on every held-out test problem of those digit counts (``data.arithmetic.n_test``
per digit count: 2 × 2,000 in the default) with exact match, per-digit accuracy and token edit distance
of the greedy answer, and the answer log-probability / Brier score under teacher forcing
(``genlab.evaluate.emergence``). Writes ``models/emergence/w<width>.pt``: the weights plus
those results, which the `emergence_eval` stage collects.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from genlab import runner
from genlab.data.arithmetic import VOCAB, tokenize
from genlab.data import prepared
from genlab.data.loader import loader
from genlab.errors import GenlabError
from genlab.io import save_model
from genlab.models.arithmetic_lm import ArithmeticLM
from genlab.nn.transformer import Transformer, TransformerConfig
from genlab.saved.emergence import METRICS, model_config


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


def problems(arrays: dict, split: str, digits: list[int], reverse: bool) -> tuple[torch.Tensor, ...]:
    """The ``split`` problems with ``digits`` digits per operand → (ids, prompt_len, answer_len, digits)."""
    have = sorted(set(arrays[f"{split}_digits"].tolist()))
    if not set(digits) <= set(have):
        raise GenlabError(f"model.emergence.digits={list(digits)} but the arithmetic data has digits {have}",
                          "add them to data.arithmetic.digits (then `genlab prepare`) or pick from those")
    keep = np.isin(arrays[f"{split}_digits"], digits)
    a, b, d = (arrays[f"{split}_{k}"][keep] for k in ("a", "b", "digits"))
    return *tokenize(a, b, d, reverse), torch.from_numpy(d)


def train_one(cfg, width: int, train: tuple[torch.Tensor, ...]) -> tuple[ArithmeticLM, dict]:
    c = cfg.model.emergence
    runner.seed_all(cfg)
    torch.set_num_threads(c.threads)
    module = ArithmeticLM(network(cfg, width, train[0].size(1)), c.lr, c.weight_decay, c.warmup_steps, c.steps)
    with runner.session(cfg, stage="emergence", run=f"w{width}", run_config=model_config(cfg, width),
                        max_steps=c.steps, gradient_clip_val=c.grad_clip) as trainer:
        clock = runner.fit(trainer, module, loader(*train, batch_size=c.batch_size, seed=cfg.seed))
    return module, {"train_seconds": clock.seconds, "train_cpu_seconds": clock.cpu_seconds}


@torch.no_grad()
def evaluate(module: ArithmeticLM, test: tuple[torch.Tensor, ...], digits: torch.Tensor, batch: int = 1000) -> dict:
    """Mean of every metric per digit count (and the answer length L = digits + 1 + EOS)."""
    ids, prompt_len, answer_len = test
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


def run(cfg) -> None:
    c = cfg.model.emergence
    arrays, meta = prepared.load(cfg, "arithmetic")
    train, test = (problems(arrays, split, c.digits, meta["reverse"]) for split in ("train", "test"))
    for width in [c.only] if c.only is not None else c.widths:
        module, timing = train_one(cfg, width, train[:3])
        wall, cpu = time.perf_counter(), time.process_time()
        by_digits = evaluate(module, test[:3], test[3])
        results = {"width": width, "n_params": module.net.n_params(non_embedding=True),
                   "n_params_total": module.net.n_params(non_embedding=False), "by_digits": by_digits,
                   **timing, "eval_seconds": time.perf_counter() - wall, "eval_cpu_seconds": time.process_time() - cpu}
        save_model(Path(cfg.paths.models) / "emergence" / f"w{width}.pt", module.net.state_dict(),
                   model_config(cfg, width), results=results, history=module.history)
        print(f"[genlab] emergence/w{width}: N={results['n_params']} " + " | ".join(
            f"{d}d: EM={r['exact_match']:.3f} digit={r['per_digit_accuracy']:.3f} "
            f"logp={r['answer_logprob']:.2f}" for d, r in by_digits.items())
            + f" ({timing['train_seconds']:.0f}s train, {results['eval_seconds']:.0f}s eval)")
