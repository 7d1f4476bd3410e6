"""The GPT network: causality, RoPE, parameter count, init loss, cached decoding, beam search."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genlab.nn.transformer import Transformer, TransformerConfig, apply_rope, rope_angles


def net(pos: str = "learned", **kw) -> Transformer:
    torch.manual_seed(0)
    cfg = dict(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16, pos=pos) | kw
    return Transformer(TransformerConfig(**cfg)).eval()


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_changing_a_future_token_leaves_earlier_logits_unchanged(pos):
    model = net(pos)
    idx = torch.randint(0, 23, (3, 12))
    changed = idx.clone()
    changed[:, 7] = (idx[:, 7] + 1) % 23
    a, b = model(idx), model(changed)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert not torch.allclose(a[:, 7:], b[:, 7:], atol=1e-3)   # the mask is not hiding everything


def test_rope_preserves_norms_and_depends_only_on_relative_offset():
    torch.manual_seed(1)
    hd = 8
    q, k = torch.randn(hd), torch.randn(hd)
    pos = torch.arange(40)
    cos, sin = rope_angles(pos, hd)
    rq = apply_rope(q.expand(40, hd), cos, sin)                 # q placed at positions 0..39
    rk = apply_rope(k.expand(40, hd), cos, sin)
    assert torch.allclose(rq.norm(dim=-1), q.norm().expand(40), atol=1e-5)
    dots = rq @ rk.T                                            # [m, n] = <R_m q, R_n k>
    for offset in (0, 3, -5):
        diag = torch.diagonal(dots, offset)
        assert torch.allclose(diag, diag[0].expand_as(diag), atol=1e-4)
    assert not torch.allclose(dots[0, 0], dots[0, 3], atol=1e-3)   # it does depend on the offset


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_parameter_count_matches_12_L_d2_formula(bias, pos):
    L, d, V, bs = 3, 32, 50, 20
    model = Transformer(TransformerConfig(vocab_size=V, block_size=bs, n_layer=L, n_head=4, n_embd=d,
                                          bias=bias, pos=pos))
    # weights 12·L·d²; per block biases 3d + d + 4d + d and 2 LayerNorms (2d each); final LN 2d
    small = L * (13 * d) + 2 * d if bias else L * 2 * d + d
    assert model.n_params(non_embedding=True) == 12 * L * d * d + small
    embeddings = V * d + (bs * d if pos == "learned" else 0)
    assert model.n_params(non_embedding=False) == 12 * L * d * d + small + embeddings


def test_loss_at_init_is_about_log_vocab():
    model = net(vocab_size=65, n_embd=32)
    idx = torch.randint(0, 65, (16, 16))
    loss = F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
    assert abs(loss.item() - math.log(65)) < 0.05


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_kv_cache_decoding_equals_full_recomputation(pos):
    model = net(pos)
    prompt = torch.randint(0, 23, (2, 5))
    # 20 new tokens: crosses block_size=16, so the cropped-window path is exercised too
    a = model.generate(prompt, 20, top_k=5, generator=torch.Generator().manual_seed(3), use_cache=True)
    b = model.generate(prompt, 20, top_k=5, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert torch.equal(a, b)
    # and the cached logits themselves match a full forward pass
    seq = a[:, :16]
    logits, kv = model(seq[:, :9], use_cache=True)
    step, _ = model(seq[:, 9:], past_kv=kv, use_cache=True)
    assert torch.allclose(step, model(seq)[:, 9:], atol=1e-5)


def test_top_k_1_and_greedy_pick_the_argmax():
    model = net()
    prompt = torch.randint(0, 23, (4, 3))
    greedy = model.generate(prompt, 8, greedy=True)
    assert torch.equal(greedy, model.generate(prompt, 8, top_k=1))
    manual = prompt
    for _ in range(8):
        manual = torch.cat([manual, model(manual)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(greedy, manual)


def test_beam_search_width_1_equals_greedy_and_full_width_is_exhaustive():
    model = net()
    prompt = torch.randint(0, 23, (3, 4))
    seq1, _ = model.beam_search(prompt, 6, beam_width=1)
    assert torch.equal(seq1, model.generate(prompt, 6, greedy=True))
    # two new tokens with beam_width = V keeps every first token: the exact best pair
    seq, score = model.beam_search(prompt, 2, beam_width=23)
    pairs = torch.cartesian_prod(torch.arange(23), torch.arange(23))               # [V², 2]
    for row in range(3):
        cands = torch.cat([prompt[row].expand(len(pairs), 4), pairs], dim=1)
        total = model.token_logprobs(cands)[:, 3:].sum(-1)                           # Σ log p of the 2 new tokens
        assert torch.equal(seq[row], cands[total.argmax()])
        assert torch.allclose(score[row], total.max(), atol=1e-4)


def test_token_logprobs_and_hidden_shapes():
    model = net()
    idx = torch.randint(0, 23, (2, 10))
    h, kv = model.hidden(idx)
    assert h.shape == (2, 10, 16) and len(kv) == 2 and kv[0][0].shape == (2, 2, 10, 8)
    lp = model.token_logprobs(idx)
    assert lp.shape == (2, 9) and (lp <= 0).all()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
