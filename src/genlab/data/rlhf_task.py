"""The RLHF task: answer ``a+b=`` prompts (tokens of ``genlab.data.arithmetic``).

A *response* is the token ids after the prompt, ``[N, R]``: answer digits, the
end-of-answer token "\\n", then PAD.

SFT demonstrations come from humans with one *systematic* habit and some random noise:

* **the carry habit** — on prompts whose units column carries (a₀ + b₀ ≥ 10; 45% of uniform
  operands), a ``carry_error`` share of demonstrators forget the carry and write a + b − 10.
  With ``carry_error`` > ½ the SFT policy's *mode* on those prompts is the wrong answer, so its
  greedy answer is wrong on a known share of prompts (those with ``units_carry``) and lowering its sampling
  temperature makes it worse, not better; the right answer is a minority sample the gold reward
  prefers. Only learning from preferences can move the mode there.
* **random slips** — a ``digit_noise`` fraction with one random wrong digit and a ``format_noise``
  fraction with the last digit dropped or a stray digit appended: noise around the right answer,
  which sharpening (low temperature) alone removes.

The base model, trained on correct answers only, is the ceiling every table shows.
"""
from __future__ import annotations

import torch

from genlab.data.arithmetic import EOS, PAD, encode, render
from genlab.evaluate.gold_reward import answer_digits


def response_width(max_digits: int) -> int:
    """Response slots: d+1 answer digits, one stray digit, and "\\n"."""
    return max_digits + 3


def prompts(a, b, digits) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded prompt ids ``[N, P]`` of ``"<a>+<b>="`` and their lengths ``[N]``."""
    rows = [encode(render(int(x), int(y), int(d), True)[0]) for x, y, d in zip(a, b, digits)]
    ids = torch.full((len(rows), max(map(len, rows))), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids, torch.tensor([len(r) for r in rows])


def units_carry(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[N]`` bool: the units column carries (a mod 10 + b mod 10 ≥ 10), where the carry habit strikes."""
    return a % 10 + b % 10 >= 10


def demonstrations(a: torch.Tensor, b: torch.Tensor, digits: torch.Tensor, reverse: bool, width: int,
                   digit_noise: float, format_noise: float, generator: torch.Generator,
                   carry_error: float = 0.0) -> torch.Tensor:
    """Human answers ``[N, width]``: on a ``carry_error`` share of the prompts with a units carry the
    answer to a + b − 10 (the dropped carry); then a ``digit_noise`` fraction with one wrong digit and a
    ``format_noise`` fraction with the last digit dropped or a stray digit appended."""
    n_rows, n = len(a), digits + 1
    rand = lambda *shape: torch.rand(*shape, generator=generator)             # noqa: E731
    dropped = units_carry(a, b) & (rand(n_rows) < carry_error)
    answer = answer_digits(a, b - 10 * dropped.long(), digits, reverse, width)   # a + b − 10: carry forgotten
    wrong = rand(n_rows) < digit_noise
    pos = (rand(n_rows) * n).long()
    shift = 1 + (rand(n_rows) * 9).long()                                      # 1..9: always a different digit
    rows = torch.arange(n_rows)
    answer[rows[wrong], pos[wrong]] = (answer[rows[wrong], pos[wrong]] + shift[wrong]) % 10
    slip = rand(n_rows) < format_noise
    longer = rand(n_rows) < 0.5
    length = n + (slip & longer).long() - (slip & ~longer).long()
    answer[rows, n.clamp_max(width - 1)] = (rand(n_rows) * 10).long()          # the stray digit, if kept
    k = torch.arange(width)[None, :]
    out = torch.where(k < length[:, None], answer, torch.full_like(answer, PAD))
    out[rows, length] = EOS
    return out
