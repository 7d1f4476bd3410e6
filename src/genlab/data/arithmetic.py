"""Synthetic n-digit addition with exact answers (the emergence and RLHF tasks).

A problem is rendered as characters ``"<a>+<b>="`` followed by the answer padded to
``d + 1`` digits. With ``reverse=True`` the answer is written least-significant
digit first, so each output digit depends only on digits already seen plus a
carry — the order in which a left-to-right model can actually compute it.
"""
from __future__ import annotations

import numpy as np
import torch

VOCAB = list("0123456789+=") + ["\n", "_"]   # "\n" ends an answer; "_" pads (never a target)
STOI = {c: i for i, c in enumerate(VOCAB)}
EOS, PAD = STOI["\n"], STOI["_"]


def render(a: int, b: int, digits: int, reverse: bool) -> tuple[str, str]:
    """Return (prompt, answer) strings for a + b with ``digits``-digit operands."""
    prompt = f"{a:0{digits}d}+{b:0{digits}d}="
    answer = f"{a + b:0{digits + 1}d}"
    return prompt, answer[::-1] if reverse else answer


def encode(text: str) -> list[int]:
    return [STOI[c] for c in text]


def decode(ids) -> str:
    return "".join(VOCAB[int(i)] for i in ids)


def tokenize(a, b, digits, reverse: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Problems → right-padded ids ``[N, L]`` of ``prompt + answer + "\n"``, prompt lengths ``[N]``,
    answer lengths ``[N]`` (digits only, without the "\n")."""
    rows = [render(int(x), int(y), int(d), reverse) for x, y, d in zip(a, b, digits)]
    seqs = [encode(p + ans + "\n") for p, ans in rows]
    ids = torch.full((len(seqs), max(map(len, seqs))), PAD, dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)] = torch.tensor(seq)
    prompt_len = torch.tensor([len(p) for p, _ in rows])
    answer_len = torch.tensor([len(ans) for _, ans in rows])
    return ids, prompt_len, answer_len


def prepare(cfg, seed: int) -> dict[str, np.ndarray]:
    """Disjoint train/test (a, b, digits) triples, ``n_*`` per digit count."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {f"{s}_{k}": [] for s in ("train", "test") for k in ("a", "b", "digits")}
    for d in cfg.digits:
        space = 10 ** (2 * d)
        n_total = min(cfg.n_train + cfg.n_test, space)
        codes = rng.choice(space, size=n_total, replace=False)   # distinct (a, b) pairs
        n_test = min(cfg.n_test, n_total // 5)
        for split, part in (("test", codes[:n_test]), ("train", codes[n_test:])):
            out[f"{split}_a"].append(part // 10**d)
            out[f"{split}_b"].append(part % 10**d)
            out[f"{split}_digits"].append(np.full(len(part), d))
    return {k: np.concatenate(v).astype(np.int64) for k, v in out.items()}


def sample_splits(digits, n_train: int, n_val: int, n_test: int, seed: int) -> dict[str, np.ndarray]:
    """Disjoint train/val/test (a, b, digits) triples for each operand digit count in ``digits``.

    Per digit count d the 10^(2d) distinct (a, b) pairs are drawn without replacement; when the
    space is small (d = 1: 100 pairs) test takes at most a fifth of it and validation a tenth, and
    train the rest. Each digit count draws from its own stream ``(seed, d)``, so adding a digit
    count leaves the problems of the others unchanged. Returns ``{"<split>_<a|b|digits>": [n]}``.
    """
    out: dict[str, list] = {f"{s}_{k}": [] for s in ("train", "val", "test") for k in ("a", "b", "digits")}
    for d in digits:
        rng = np.random.default_rng([seed, d])
        space = 10 ** (2 * d)
        n_total = min(n_train + n_val + n_test, space)
        codes = rng.choice(space, size=n_total, replace=False)
        n_te = min(n_test, space // 5)
        n_va = min(n_val, space // 10)
        for split, part in (("test", codes[:n_te]), ("val", codes[n_te:n_te + n_va]), ("train", codes[n_te + n_va:])):
            out[f"{split}_a"].append(part // 10**d)
            out[f"{split}_b"].append(part % 10**d)
            out[f"{split}_digits"].append(np.full(len(part), d))
    return {k: np.concatenate(v).astype(np.int64) for k, v in out.items()}
