"""Sampling responses and reading per-token quantities at response positions.

Sequences are ``prompt + response`` right-padded with PAD: ``[N, L]`` with ``L = P + R``.
Row i's response token k sits at position ``prompt_len[i] + k`` and is predicted by the
state at ``prompt_len[i] − 1 + k``; ``at_response`` gathers those states.
"""
from __future__ import annotations

import torch

from genlab.data.arithmetic import EOS, PAD
from genlab.nn.transformer import Transformer


def response_lengths(responses: torch.Tensor) -> torch.Tensor:
    """Tokens up to and including the first EOS (all R if there is none) → ``[N]``."""
    is_eos = responses == EOS
    first = is_eos.float().argmax(1)
    return torch.where(is_eos.any(1), first + 1, torch.full_like(first, responses.shape[1]))


def response_mask(responses: torch.Tensor) -> torch.Tensor:
    """1.0 on real response tokens, 0.0 on the PAD after them → ``[N, R]``."""
    positions = torch.arange(responses.shape[1], device=responses.device)
    return (positions[None, :] < response_lengths(responses)[:, None]).float()


def join(prompts: torch.Tensor, prompt_len: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """``[N, P]`` prompts + ``[N, R]`` responses → ``[N, P + R]`` sequences (PAD-filled)."""
    n, p = prompts.shape
    seq = torch.full((n, p + responses.shape[1]), PAD, dtype=torch.long, device=prompts.device)
    seq[:, :p] = prompts
    cols = prompt_len[:, None] + torch.arange(responses.shape[1], device=prompt_len.device)[None, :]
    return seq.scatter(1, cols, responses)


def at_response(x: torch.Tensor, prompt_len: torch.Tensor, width: int) -> torch.Tensor:
    """States ``[N, L, ...]`` → the ``width`` states that predict the response tokens ``[N, width, ...]``."""
    idx = prompt_len[:, None] - 1 + torch.arange(width, device=prompt_len.device)[None, :]
    return x.gather(1, idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))


def last_index(prompt_len: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """Position of each sequence's last real token (EOS, or the last response token) → ``[N]``."""
    return prompt_len + response_lengths(responses) - 1


def response_logprobs(net: Transformer, seq: torch.Tensor, prompt_len: torch.Tensor, width: int,
                      temperature: float) -> torch.Tensor:
    """log π(response token k | prefix) under softmax(logits / T) → ``[N, width]``."""
    return at_response(net.token_logprobs(seq, temperature), prompt_len, width)


@torch.no_grad()
def decode_by_prompt_length(net: Transformer, prompts: torch.Tensor, prompt_len: torch.Tensor, width: int,
                            chunk: int = 1024, **generate) -> torch.Tensor:
    """``net.generate(..., **generate)`` responses ``[N, width]`` (PAD after the first EOS), in eval mode. Rows
    are decoded in groups of equal prompt length (the transformer's KV cache needs one length per batch) and
    ``chunk`` rows at a time, in the order of ``prompt_len.unique()``, so a shared generator is consumed the
    same way on every call."""
    was_training = net.training
    net.eval()
    out = torch.full((len(prompts), width), PAD, dtype=torch.long, device=prompts.device)
    for p in prompt_len.unique().tolist():
        rows = (prompt_len == p).nonzero().squeeze(1)
        for part in rows.split(chunk):
            out[part] = net.generate(prompts[part, :p], width, **generate)[:, p:]
    net.train(was_training)
    return out.masked_fill(torch.arange(width, device=out.device)[None, :] >= response_lengths(out)[:, None], PAD)


def sample(net: Transformer, prompts: torch.Tensor, prompt_len: torch.Tensor, width: int, temperature: float,
           generator: torch.Generator | None = None, chunk: int = 1024) -> torch.Tensor:
    """Responses ``[N, width]`` sampled from softmax(logits / T) (PAD after the first EOS)."""
    return decode_by_prompt_length(net, prompts, prompt_len, width, chunk, temperature=temperature,
                                   generator=generator)


def greedy(net: Transformer, prompts: torch.Tensor, prompt_len: torch.Tensor, width: int,
           chunk: int = 1024) -> torch.Tensor:
    """Greedy (argmax) responses ``[N, width]`` (PAD after the first EOS)."""
    return decode_by_prompt_length(net, prompts, prompt_len, width, chunk, greedy=True)
