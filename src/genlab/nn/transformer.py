"""Decoder-only transformer (GPT): the network behind ``gpt``, ``gpt_scaling``, emergence and RLHF.

nanoGPT-shaped (Radford et al. 2019; Karpathy's nanoGPT): token embedding (+ learned
positions, or RoPE inside attention) → ``n_layer`` pre-LayerNorm blocks
``x + Attn(LN(x))``, ``x + MLP(LN(x))`` → final LayerNorm → linear head tied to the
token embedding (Press & Wolf 2017).

Parameter count. Each block holds 4·d² attention weights (q, k, v, output projections)
and 8·d² MLP weights (d→4d→d), so the non-embedding count (Kaplan et al. 2020, Eq. 2.1;
N excludes token and position embeddings) is

    N = 12 · n_layer · d²  (+ 13·d per block and 2·d final LN when ``bias``; d per LN when not)

``Transformer.n_params(non_embedding=True)`` returns exactly that.

API (shapes: B batch, T time, d = n_embd, V = vocab_size, H heads, hd = d / H)::

    net = Transformer(TransformerConfig(vocab_size=V, block_size=64, n_layer=4, n_head=4, n_embd=128))
    logits = net(idx)                              # idx [B, T] long → [B, T, V]
    logits, kv = net(idx, past_kv=kv, use_cache=True)  # incremental decoding
    h, kv = net.hidden(idx)                        # final-LN hidden states [B, T, d] (reward/value heads)
    lp = net.token_logprobs(idx)                   # [B, T-1]: log p(idx[:, t+1] | idx[:, :t+1])
    out = net.generate(idx, 50, temperature=0.8, top_k=20)   # [B, T+50]; greedy=True for argmax
    out, score = net.beam_search(idx, 10, beam_width=4)      # best beam per row and its summed log-prob

The KV cache is a list (one per layer) of ``(k, v)`` tensors ``[B, H, T_past, hd]``.
All rows of a batch share one length (right-pad and read position ``len-1`` for ragged inputs:
causality makes trailing pads invisible to earlier positions).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

KV = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TransformerConfig:
    vocab_size: int
    block_size: int = 64          # maximum context length
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True             # biases in Linear and LayerNorm layers
    pos: str = "learned"          # "learned" absolute embeddings | "rope" rotary (Su et al. 2021)
    rope_base: float = 10000.0

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.pos not in ("learned", "rope"):
            raise ValueError(f"pos={self.pos!r}: use 'learned' or 'rope'")
        if self.pos == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError("RoPE needs an even head dimension n_embd / n_head")


# --- rotary position embedding ---------------------------------------------------------

def rope_angles(positions: torch.Tensor, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin ``[T, hd/2]`` of angles m·θ_i, θ_i = base^(-2i/hd) (RoFormer, Su et al. 2021, Eq. 15)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    angles = positions.float()[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i+hd/2}) of ``x [..., T, hd]`` by its angle (RoFormer Eq. 34, half-split form).

    A rotation preserves norms, and ⟨R_m q, R_n k⟩ depends only on n − m.
    """
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


# --- blocks ----------------------------------------------------------------------------

class CausalSelfAttention(nn.Module):
    """Multi-head causal attention through ``F.scaled_dot_product_attention``: softmax(QKᵀ/√hd)V."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x ``[B, T, d]`` → (y ``[B, T, d]``, (k, v) ``[B, H, T_past+T, hd]``)."""
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)
                   for z in self.qkv(x).split(d, dim=2))                      # each [B, H, T, hd]
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        s = k.size(2)
        # Query i (absolute position s-t+i) sees keys 0..s-t+i. Without a cache this is the usual
        # causal mask; one new query sees every cached key; a chunk needs the offset mask.
        if s == t:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                               is_causal=True)
        else:
            mask = torch.ones(t, s, dtype=torch.bool, device=x.device).tril(s - t)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                               dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(b, t, d)
        return self.resid_drop(self.proj(y)), (k, v)


class MLP(nn.Module):
    """d → 4d → GELU → d (Vaswani et al. 2017 FFN with GELU, Hendrycks & Gimpel 2016)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN residual block: x + Attn(LN(x)), then x + MLP(LN(x)) (Xiong et al. 2020)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, rope=None, past=None):
        a, kv = self.attn(self.ln1(x), rope, past)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv


# --- the model -------------------------------------------------------------------------

class Transformer(nn.Module):
    """GPT decoder. See the module docstring for the API and shapes."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight                     # weight tying
        self.apply(self._init)
        for name, p in self.named_parameters():                   # GPT-2: residual projections / √(2L)
            if name.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def n_params(self, non_embedding: bool = True) -> int:
        """Parameter count; ``non_embedding`` drops token + position embeddings (Kaplan's N)."""
        n = sum(p.numel() for p in self.parameters())             # tied head counted once
        if non_embedding:
            n -= self.wte.weight.numel() + (self.wpe.weight.numel() if self.wpe is not None else 0)
        return n

    def hidden(self, idx: torch.Tensor, past_kv: KV | None = None) -> tuple[torch.Tensor, KV]:
        """idx ``[B, T]`` (continuing a cache of T_past tokens) → (final-LN states ``[B, T, d]``, new cache)."""
        t = idx.size(1)
        t0 = past_kv[0][0].size(2) if past_kv else 0
        if t0 + t > self.config.block_size:
            raise ValueError(f"sequence of {t0 + t} tokens exceeds block_size={self.config.block_size}")
        pos = torch.arange(t0, t0 + t, device=idx.device)
        x = self.wte(idx)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(pos)
        else:
            rope = rope_angles(pos, self.config.n_embd // self.config.n_head, self.config.rope_base)
        x = self.drop(x)
        present = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, rope, past_kv[i] if past_kv else None)
            present.append(kv)
        return self.ln_f(x), present

    def forward(self, idx: torch.Tensor, past_kv: KV | None = None, use_cache: bool = False):
        """idx ``[B, T]`` → logits ``[B, T, V]``; with ``use_cache`` → (logits, new cache)."""
        h, present = self.hidden(idx, past_kv)
        logits = self.lm_head(h)
        return (logits, present) if use_cache else logits

    def token_logprobs(self, idx: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """``[B, T-1]``: log p(idx[:, t+1] | idx[:, :t+1]) under softmax(logits / temperature)."""
        logits = self(idx[:, :-1]) / temperature
        return logits.log_softmax(-1).gather(-1, idx[:, 1:, None]).squeeze(-1)

    # --- generation --------------------------------------------------------------------

    def _next_logits(self, idx: torch.Tensor, kv: KV | None, use_cache: bool) -> tuple[torch.Tensor, KV | None]:
        """Logits ``[B, V]`` of the token after ``idx [B, T]``; reuses ``kv`` (which covers idx[:, :-1]).

        Without a cache, or once it holds ``block_size`` tokens, the last ``block_size`` tokens
        are recomputed (nanoGPT's cropping), so cached and uncached decoding agree exactly.
        """
        bs = self.config.block_size
        if kv is None or kv[0][0].size(2) >= bs:
            logits, kv = self(idx[:, -bs:], use_cache=True)
        else:
            logits, kv = self(idx[:, -1:], past_kv=kv, use_cache=True)
        return logits[:, -1], (kv if use_cache else None)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 greedy: bool = False, use_cache: bool = True, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx [B, T]`` → ``[B, T + max_new_tokens]``.

        Samples from softmax(logits / temperature) restricted to the ``top_k`` most likely tokens,
        or takes the argmax when ``greedy``.
        """
        kv = None
        for _ in range(max_new_tokens):
            logits, kv = self._next_logits(idx, kv, use_cache)
            if greedy:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = logits.softmax(-1)
                # a generator draws on its own device: a seeded CPU generator picks the same tokens on any device
                if generator is not None:
                    probs = probs.to(generator.device)
                nxt = torch.multinomial(probs, 1, generator=generator).to(idx.device)
            idx = torch.cat([idx, nxt], dim=1)
        return idx

    @torch.no_grad()
    def beam_search(self, idx: torch.Tensor, max_new_tokens: int, beam_width: int = 4
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep the ``beam_width`` continuations of highest summed log-prob (no length penalty).

        idx ``[B, T]`` → (best sequence per row ``[B, T + max_new_tokens]``, its log-prob ``[B]``).
        """
        b, w = idx.size(0), beam_width
        seq = idx.repeat_interleave(w, dim=0)                                   # [B·W, T]
        score = torch.full((b, w), float("-inf"), device=idx.device)
        score[:, 0] = 0.0                                                       # identical beams start as one
        kv = None
        for _ in range(max_new_tokens):
            logits, kv = self._next_logits(seq, kv, use_cache=True)
            logp = logits.log_softmax(-1)                                       # [B·W, V]
            v = logp.size(-1)
            total = (score.reshape(-1, 1) + logp).reshape(b, w * v)
            score, flat = total.topk(w, dim=-1)                                 # [B, W]
            parent = (flat // v + torch.arange(b, device=idx.device)[:, None] * w).reshape(-1)
            seq = torch.cat([seq[parent], (flat % v).reshape(-1, 1)], dim=1)
            kv = [(k[parent], vv[parent]) for k, vv in kv]
        best = score.argmax(-1)
        rows = torch.arange(b, device=idx.device)
        return seq.view(b, w, -1)[rows, best], score[rows, best]
