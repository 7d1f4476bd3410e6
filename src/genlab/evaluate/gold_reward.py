"""The programmatic "human" of the RLHF stages: a gold reward for answers to ``a+b=``.

gold = (1 − w)·(fraction of the d+1 answer digits right, position by position) + w·[format ok]

where format ok means exactly d+1 digits followed by the end-of-answer token "\\n" and
w = ``format_weight``. Range [0, 1]; 1 only for the exact answer in the exact format.
Partial credit per digit gives a dense, monotone notion of "better" that a reward model
can learn and a policy can be checked against.
"""
from __future__ import annotations

import torch

from genlab.data.arithmetic import EOS


def answer_digits(a: torch.Tensor, b: torch.Tensor, digits: torch.Tensor, reverse: bool, width: int) -> torch.Tensor:
    """The d+1 answer digits of a + b as written by ``arithmetic.render`` → ``[N, width]`` (−1 past d+1)."""
    k = torch.arange(width, device=digits.device)
    n = digits[:, None] + 1                                          # answer length
    power = k[None, :] if reverse else (n - 1 - k[None, :]).clamp_min(0)
    out = ((a + b)[:, None] // 10 ** power) % 10
    return out.masked_fill(k[None, :] >= n, -1)


def gold_reward(a: torch.Tensor, b: torch.Tensor, digits: torch.Tensor, responses: torch.Tensor, reverse: bool,
                format_weight: float) -> torch.Tensor:
    """Gold reward ``[N]`` of response token ids ``[N, R]`` (anything after the first "\\n" is ignored)."""
    n, width = digits + 1, responses.shape[1]
    target = answer_digits(a, b, digits, reverse, width)
    k = torch.arange(width, device=responses.device)[None, :]
    ended = (responses == EOS).long().cumsum(1) > 0                  # at or after the first EOS
    correct = ((responses == target) & ~ended & (k < n[:, None])).sum(1).float() / n
    is_digit = responses < 10
    body_ok = (is_digit | (k >= n[:, None])).all(1)
    eos_at_n = responses.gather(1, n.clamp_max(width - 1)[:, None]).squeeze(1) == EOS
    format_ok = body_ok & eos_at_n & (n < width)
    return (1 - format_weight) * correct + format_weight * format_ok.float()
