"""Training FLOPs of a decoder-only transformer, per token, counted with attention and the output layer.

Kaplan et al. 2020 (Table 1) count the forward pass of one token as

    C_forward ≈ 2N + 2 · n_layer · n_ctx · d_model

where N is the non-embedding parameter count (every weight is one multiply-add, 2 FLOPs) and the
second term is attention's QKᵀ scores and its weighted sum of values over the n_ctx context
(d_attn = d_model here; the full context is counted, as Kaplan does, not the causal half). The
token embedding is a lookup (no FLOPs), but the tied output layer is a d_model × V matrix
applied to every position, so we add 2 · V · d_model. The backward pass costs twice the forward
(gradients w.r.t. activations and weights), hence training FLOPs per token

    c = 6N + 6 · n_layer · n_ctx · d_model + 6 · V · d_model,        C = c · D.

At the widths used here (d ≤ 128, n_ctx = 64, V = 65) the last two terms add 10–60% to 6N —
which is why C = 6ND misplaces the small models on the compute axis.
"""
from __future__ import annotations


def flops_per_token(n_params: int, n_layer: int, n_embd: int, n_ctx: int, vocab_size: int) -> int:
    """Training FLOPs per token: 6N + 6·n_layer·n_ctx·d + 6·V·d (N non-embedding; see module doc)."""
    return 6 * n_params + 6 * n_layer * n_ctx * n_embd + 6 * vocab_size * n_embd


def non_embedding_params(n_layer: int, n_embd: int, bias: bool = False) -> int:
    """N = 12·n_layer·d² plus LayerNorm gains (2·d per block, d final); with biases 13·d per block, 2·d final."""
    per_block = 12 * n_embd**2 + (13 * n_embd if bias else 2 * n_embd)
    return n_layer * per_block + (2 * n_embd if bias else n_embd)
