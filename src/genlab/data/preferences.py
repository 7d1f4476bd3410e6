"""Preference pairs (prompt, chosen, rejected): labelled by a gold reward through Bradley–Terry,
or read from a JSONL file of real comparisons.

Generated labels are noisy like human ones: for responses y1, y2 with gold rewards g1, g2,
P(y1 ≻ y2) = σ((g1 − g2)/τ) (Bradley & Terry 1952), so near-ties are coin flips and
``bayes_accuracy`` — E[σ(|g1 − g2|/τ)] — is the best any model can agree with the labels.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from genlab.data.arithmetic import EOS, PAD, STOI
from genlab.errors import GenlabError


def bradley_terry_labels(gold1: torch.Tensor, gold2: torch.Tensor, temperature: float,
                         generator: torch.Generator) -> torch.Tensor:
    """Sample ``[N]`` booleans "y1 is preferred" with P = σ((g1 − g2)/τ)."""
    p = torch.sigmoid((gold1 - gold2) / temperature)
    return torch.rand(p.shape, generator=generator) < p


def bayes_accuracy(gold1: torch.Tensor, gold2: torch.Tensor, temperature: float) -> float:
    """Expected agreement of the best predictor with sampled labels: E[σ(|g1 − g2|/τ)]."""
    return float(torch.sigmoid((gold1 - gold2).abs() / temperature).mean())


def _ids(text, field: str, where: str) -> list[int]:
    if not isinstance(text, str) or not text:
        raise GenlabError(f"{where}: '{field}' must be a non-empty string", "fix that line of the JSONL file")
    bad = sorted({c for c in text if c not in STOI or c == "_"})
    if bad:
        raise GenlabError(f"{where}: '{field}' has characters outside the vocabulary: {bad!r}",
                          "use digits, '+', '=' and a final newline only")
    return [STOI[c] for c in text]


def read_jsonl(path: str | Path, width: int) -> dict[str, torch.Tensor]:
    """Lines ``{"prompt": "123+456=", "chosen": "9750\\n", "rejected": "9650\\n"}`` with an optional
    ``"margin": 1.5`` (the labeller's strength of preference, ≥ 0; default 0) → padded tensors: prompts
    ``[N, P]``, prompt_len ``[N]``, chosen / rejected ``[N, width]`` (EOS appended if missing), margin ``[N]``."""
    path = Path(path)
    if not path.exists():
        raise GenlabError(f"missing preference file {path}", "set model.rlhf.reward_model.jsonl to an existing file")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise GenlabError(f"{where}: not valid JSON ({e.msg})", "one JSON object per line") from None
        if not isinstance(obj, dict) or not {"prompt", "chosen", "rejected"} <= obj.keys():
            raise GenlabError(f"{where}: needs keys prompt, chosen, rejected", "one JSON object per line")
        responses = []
        for key in ("chosen", "rejected"):
            ids = _ids(obj[key], key, where)
            ids = ids if ids[-1] == EOS else ids + [EOS]
            if len(ids) > width:
                raise GenlabError(f"{where}: '{key}' has {len(ids)} tokens, more than {width}",
                                  "shorten it or raise model.rlhf.task.digits")
            responses.append(ids + [PAD] * (width - len(ids)))
        margin = obj.get("margin", 0.0)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < float("inf"):
            raise GenlabError(f"{where}: 'margin' must be a finite number ≥ 0 (got {margin!r})",
                              "omit it, or give the labeller's strength of preference")
        rows.append((_ids(obj["prompt"], "prompt", where), *responses, float(margin)))
    if len(rows) < 2:
        raise GenlabError(f"{path} holds {len(rows)} preference pairs", "provide at least 2 lines")
    p = max(len(r[0]) for r in rows)
    return {"prompts": torch.tensor([r[0] + [PAD] * (p - len(r[0])) for r in rows]),
            "prompt_len": torch.tensor([len(r[0]) for r in rows]),
            "chosen": torch.tensor([r[1] for r in rows]), "rejected": torch.tensor([r[2] for r in rows]),
            "margin": torch.tensor([r[3] for r in rows])}
