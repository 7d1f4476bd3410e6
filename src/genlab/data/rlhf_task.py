"""The RLHF task: answer ``a+b=`` prompts (tokens of ``genlab.data.arithmetic``).

A *response* is the token ids after the prompt, ``[N, R]``: answer digits, the
end-of-answer token "\\n", then PAD. SFT demonstrations come from noisy humans: a
fraction get one digit wrong, a fraction have a format slip (last digit dropped or a
stray digit appended), so the SFT policy inherits mistakes that RLHF can remove.
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


def demonstrations(a: torch.Tensor, b: torch.Tensor, digits: torch.Tensor, reverse: bool, width: int,
                   digit_noise: float, format_noise: float, generator: torch.Generator) -> torch.Tensor:
    """Noisy human answers ``[N, width]``: correct, except a ``digit_noise`` fraction with one wrong
    digit and a ``format_noise`` fraction with the last digit dropped or a stray digit appended."""
    n_rows, n = len(a), digits + 1
    answer = answer_digits(a, b, digits, reverse, width)
    rand = lambda *shape: torch.rand(*shape, generator=generator)             # noqa: E731
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
