"""RLHF mathematics: GAE, KL estimators and controller, PPO losses, whitening, BT/DPO/IPO/hinge,
the gold reward, noisy demonstrations, and log-probs/KL of policy vs reference at initialisation."""
from __future__ import annotations

import math

import pytest
import torch

from genlab.data.arithmetic import EOS, PAD, VOCAB, encode
from genlab.data.rlhf_task import demonstrations, prompts, response_width
from genlab.evaluate.gold_reward import gold_reward
from genlab.nn.heads import RewardModel
from genlab.nn.transformer import Transformer, TransformerConfig
from genlab.rl.advantages import gae, masked_whiten
from genlab.rl.kl import KLController, kl_estimate
from genlab.rl.ppo_loss import policy_loss, value_loss
from genlab.rl.preference import bradley_terry_loss, preference_loss
from genlab.rl.rollout import join, response_logprobs, response_mask, sample


def test_gae_matches_a_hand_computed_example():
    # γ = 0.9, λ = 0.8; row 0 has 3 tokens, row 1 only 2 (its third value must be ignored)
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 1.5, 99.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0: δ2 = 1 − 0.7 = 0.3; δ1 = 0.9·0.7 − 0.6 = 0.03; δ0 = 0.9·0.6 − 0.5 = 0.04
    a2 = 0.3
    a1 = 0.03 + 0.72 * a2
    a0 = 0.04 + 0.72 * a1
    # row 1: δ1 = 2 − 1.5 = 0.5 (V after the end is 0); δ0 = 0.9·1.5 − 1 = 0.35
    b1 = 0.5
    b0 = 0.35 + 0.72 * b1
    expected = torch.tensor([[a0, a1, a2], [b0, b1, 0.0]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, (expected + values) * mask)


def test_gae_with_unit_discount_and_zero_values_is_reward_to_go():
    rewards = torch.tensor([[1.0, -2.0, 3.0, 0.5]])
    adv, _ = gae(rewards, torch.zeros_like(rewards), torch.ones_like(rewards), gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv, rewards.flip(1).cumsum(1).flip(1))


def test_whitening_gives_zero_mean_unit_std_on_real_tokens_and_zero_on_padding():
    x = torch.randn(4, 6) * 3 + 5
    mask = torch.ones(4, 6)
    mask[1, 4:] = 0
    w = masked_whiten(x, mask)
    real = w[mask.bool()]
    assert abs(float(real.mean())) < 1e-5 and abs(float(real.std()) - 1) < 1e-4
    assert (w[~mask.bool()] == 0).all()


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_kl_estimators_are_unbiased_for_the_exact_kl(estimator):
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(5, generator=g), 0)
    q = torch.softmax(torch.randn(5, generator=g), 0)
    exact = float((p * (p.log() - q.log())).sum())
    per_outcome = kl_estimate(p.log(), q.log(), estimator)       # the estimator's value on each outcome
    torch.testing.assert_close(float((p * per_outcome).sum()), exact, rtol=1e-5, atol=1e-6)   # E_p exactly
    x = torch.multinomial(p, 200_000, replacement=True, generator=g)      # and by Monte Carlo
    est = per_outcome[x]
    assert abs(float(est.mean()) - exact) < 4 * float(est.std()) / math.sqrt(len(x))
    if estimator == "k3":
        assert (per_outcome >= 0).all()


def test_k3_has_lower_variance_than_k1_for_close_distributions():
    p = torch.tensor([0.3, 0.3, 0.4])
    q = torch.tensor([0.32, 0.28, 0.4])
    var = {e: float((p * (kl_estimate(p.log(), q.log(), e) - (p * kl_estimate(p.log(), q.log(), e)).sum()) ** 2).sum())
           for e in ("k1", "k3")}
    assert var["k3"] < var["k1"] / 10


def test_adaptive_kl_controller_moves_beta_towards_the_target():
    fixed = KLController(0.1)
    assert fixed.update(kl=100.0, n_steps=256) == 0.1
    ctl = KLController(0.1, target=1.0, horizon=1000)
    torch.testing.assert_close(ctl.update(kl=5.0, n_steps=100), 0.1 * (1 + 0.2 * 100 / 1000))     # error clipped at +0.2
    before = ctl.beta
    torch.testing.assert_close(ctl.update(kl=0.95, n_steps=100), before * (1 - 0.05 * 100 / 1000))


def test_ppo_clipped_policy_loss_matches_its_formula():
    ratio = torch.tensor([[0.5, 1.0, 1.5, 0.7]])
    old = torch.zeros(1, 4)
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])                   # last token is padding
    loss, stats = policy_loss(ratio.log(), old, adv, mask, clip=0.2)
    # per token max(−A·ρ, −A·clip(ρ, 0.8, 1.2)): max(−0.5, −0.8) = −0.5; max(1, 1) = 1; max(−1.5, −1.2) = −1.2
    torch.testing.assert_close(loss, torch.tensor((-0.5 + 1.0 - 1.2) / 3))
    torch.testing.assert_close(stats["clipfrac"], torch.tensor(1 / 3))
    torch.testing.assert_close(stats["ratio"], torch.tensor(1.0))
    torch.testing.assert_close(stats["approxkl"], 0.5 * (ratio.log()[0, :3] ** 2).mean())


def test_ppo_clipped_value_loss_matches_its_formula():
    old = torch.tensor([[0.0, 0.0, 0.0]])
    values = torch.tensor([[1.0, -0.1, 0.6]])
    returns = torch.tensor([[0.5, 0.5, 0.7]])
    loss, clipfrac = value_loss(values, old, returns, torch.ones(1, 3), clip=0.2)
    # clipped values 0.2, −0.1, 0.2 → max((v−R)², (v_clip−R)²) = max(.25,.09), .36, max(.01,.25)
    torch.testing.assert_close(loss, torch.tensor(0.5 * (0.25 + 0.36 + 0.25) / 3))
    torch.testing.assert_close(clipfrac, torch.tensor(1 / 3))


def test_bradley_terry_loss_is_ln2_at_equal_rewards_and_has_margin_and_centering():
    r = torch.randn(8)
    torch.testing.assert_close(bradley_terry_loss(r, r), torch.tensor(math.log(2)))
    torch.testing.assert_close(bradley_terry_loss(r, r, margin=1.0), -torch.nn.functional.logsigmoid(torch.tensor(-1.0)))
    torch.testing.assert_close(bradley_terry_loss(r, r, center=0.5), math.log(2) + 0.5 * (2 * r).pow(2).mean())
    # P(c ≻ r) = σ(r_c − r_r): a 2-nat gap gives −log σ(2)
    torch.testing.assert_close(bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0])),
                               -torch.nn.functional.logsigmoid(torch.tensor(2.0)))


def test_dpo_is_ln2_at_initialisation_and_ipo_hinge_match_their_formulas():
    net = tiny_net()
    seq = torch.randint(0, 10, (6, 9))
    logp = net.token_logprobs(seq).sum(1)
    h = (logp[:3] - logp[:3]) - (logp[3:] - logp[3:])            # policy == reference
    torch.testing.assert_close(preference_loss("dpo", h, beta=0.1), torch.tensor(math.log(2)))
    h = torch.tensor([0.0, 3.0, -2.0, 12.0])
    beta = 0.1
    torch.testing.assert_close(preference_loss("ipo", h, beta), ((h - 1 / (2 * beta)) ** 2).mean())
    torch.testing.assert_close(preference_loss("ipo", torch.full((3,), 5.0), beta), torch.tensor(0.0))   # h* = 1/(2β)
    torch.testing.assert_close(preference_loss("hinge", h, beta), torch.clamp(1 - beta * h, min=0).mean())
    torch.testing.assert_close(preference_loss("dpo", h, beta), -torch.nn.functional.logsigmoid(beta * h).mean())


def tiny_net(seed: int = 0, block: int = 16) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(TransformerConfig(vocab_size=len(VOCAB), block_size=block, n_layer=1, n_head=2, n_embd=16))


def test_policy_logprobs_equal_the_reference_at_initialisation_and_use_the_temperature():
    from genlab.models.ppo import PPO
    from omegaconf import OmegaConf

    ref, policy = tiny_net(), tiny_net()
    c = OmegaConf.create({"kl_coef": 0.1, "adaptive_kl": False, "target_kl": 1.0, "horizon": 100, "kl_estimator": "k1",
                          "gamma": 1.0, "lam": 0.95, "whiten": True})
    ppo = PPO(policy, ref, RewardModel(tiny_net(1)), c, width=4, temperature=0.7)
    p, pl = prompts(torch.tensor([12, 3]), torch.tensor([34, 56]), torch.tensor([2, 1]))
    r = ppo.rollout(p, pl)
    assert (r["kl"] == 0).all() and (r["values"] == 0).all()      # KL = 0 and V ≡ 0 (zero-initialised head)
    logp, _, _ = ppo.policy_outputs(r["seq"], pl)
    torch.testing.assert_close(logp, response_logprobs(ref, r["seq"], pl, 4, 0.7))
    logits = ref(r["seq"][:1, :-1])[0, pl[0] - 1] / 0.7            # first response token of row 0
    torch.testing.assert_close(logp[0, 0], logits.log_softmax(-1)[r["seq"][0, pl[0]]])


def test_sampled_responses_stop_at_eos_and_join_places_them_after_each_prompt():
    net = tiny_net()
    p, pl = prompts(torch.tensor([12, 3, 456]), torch.tensor([34, 5, 789]), torch.tensor([2, 1, 3]))
    y = sample(net, p, pl, 6, 1.0, torch.Generator().manual_seed(0))
    mask = response_mask(y)
    for row, m in zip(y, mask):
        n = int(m.sum())
        assert (row[n:] == PAD).all() and (EOS not in row[: n - 1].tolist())
    seq = join(p, pl, y)
    for i in range(3):
        assert seq[i, : pl[i]].tolist() == p[i, : pl[i]].tolist() and seq[i, pl[i]: pl[i] + 6].tolist() == y[i].tolist()


def test_gold_reward_known_values():
    a, b, d = torch.tensor([123] * 6), torch.tensor([456] * 6), torch.tensor([3] * 6)   # 579 → "9750" reversed
    rows = ["9750\n", "9751\n", "975\n", "97500\n", "1111\n", "9750"]       # the last one never ends
    w = response_width(3)
    resp = torch.tensor([encode(r) + [PAD] * (w - len(r)) for r in rows])
    g = gold_reward(a, b, d, resp, reverse=True, format_weight=0.2)
    torch.testing.assert_close(g, torch.tensor([1.0, 0.8 * 3 / 4 + 0.2, 0.8 * 3 / 4, 0.8, 0.2, 0.8]))


def test_noisy_demonstrations_have_the_planted_error_rates():
    n = 4000
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 1000, (n,), generator=g), torch.randint(0, 1000, (n,), generator=g)
    d = torch.full((n,), 3)
    w = response_width(3)
    clean = demonstrations(a, b, d, True, w, 0.0, 0.0, g)
    assert (gold_reward(a, b, d, clean, True, 0.2) == 1).all()
    one_wrong = demonstrations(a, b, d, True, w, 1.0, 0.0, g)
    torch.testing.assert_close(gold_reward(a, b, d, one_wrong, True, 0.2), torch.full((n,), 0.2 + 0.8 * 3 / 4))
    slips = demonstrations(a, b, d, True, w, 0.0, 0.3, g)
    bad_format = (gold_reward(a, b, d, slips, True, 0.2) < 0.9).float().mean()
    assert abs(float(bad_format) - 0.3) < 0.03
