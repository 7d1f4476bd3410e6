"""The RLHF trust layer: best-of-n (estimator, exact KL, fits) against brute force on small discrete
policies, the interval test for over-optimization, KL-matched baselines, where the score enters the
rewards, critic-free advantages, the carry-habit demonstrations, margins in the pairs file, and the
reference model left bit-identical by PPO."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from genlab.data.arithmetic import EOS, PAD, VOCAB
from genlab.data.preferences import read_jsonl
from genlab.data.rlhf_task import demonstrations, prompts, response_width, units_carry
from genlab.evaluate import overoptimization as oo
from genlab.evaluate.gold_reward import answer_digits, gold_reward
from genlab.evaluate.policy import interpolate_at_kl, kl_matched_gap, score
from genlab.nn.heads import RewardModel
from genlab.nn.transformer import Transformer, TransformerConfig
from genlab.rl.advantages import group_advantages, rloo_advantages, token_rewards
from genlab.rl.rollout import greedy, join, response_logprobs, response_mask


def brute_force_bon(p: np.ndarray, proxy: np.ndarray, n: int) -> np.ndarray:
    """π_bon by enumerating all K^n ordered draws: the draw with the highest proxy wins (ties: the
    lowest index wins — the order ``best_of_n_kl_exact`` uses)."""
    out = np.zeros(len(p))
    for draw in itertools.product(range(len(p)), repeat=n):
        winner = max(draw, key=lambda k: (proxy[k], -k))
        out[winner] += np.prod(p[list(draw)])
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_exact_best_of_n_kl_matches_brute_force_and_stays_below_the_formula(n):
    rng = np.random.default_rng(n)
    p = rng.dirichlet(np.ones(5) * 0.7)                      # a skewed 5-outcome policy: repeats are likely
    proxy = rng.normal(size=5)
    bon = brute_force_bon(p, proxy, n)
    exact = float((bon * np.log(np.where(bon > 0, bon, 1) / p)).sum())
    got = oo.best_of_n_kl_exact(torch.tensor(np.log(p)), torch.tensor(proxy), n)
    assert got == pytest.approx(exact, abs=1e-10)
    assert got <= oo.best_of_n_kl(n) + 1e-12                 # log n − (n−1)/n is an upper bound


def test_exact_best_of_n_kl_reaches_the_formula_on_a_fine_uniform_policy():
    k, n = 4000, 4
    kl = oo.best_of_n_kl_exact(torch.full((k,), -math.log(k), dtype=torch.float64), torch.randn(k), n)
    assert kl == pytest.approx(oo.best_of_n_kl(n), abs=2e-3)


def test_exact_best_of_n_kl_lumps_unsampled_mass_below_every_sample():
    p, proxy = np.array([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 2.0])   # outcome 0 "unsampled", ranked lowest
    full = oo.best_of_n_kl_exact(torch.tensor(np.log(p)), torch.tensor(proxy), 3)
    partial = oo.best_of_n_kl_exact(torch.tensor(np.log(p[1:])), torch.tensor(proxy[1:]), 3)
    assert partial == pytest.approx(full, abs=1e-12)


def test_distinct_keeps_the_first_value_of_each_repeated_response():
    y = torch.tensor([[1, 2], [3, 4], [1, 2], [5, 6]])
    uniq, v = oo.distinct(y, torch.tensor([10.0, 20.0, 10.0, 30.0]))
    assert sorted(map(tuple, uniq.tolist())) == [(1, 2), (3, 4), (5, 6)]
    assert sorted(v.tolist()) == [10.0, 20.0, 30.0]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_best_of_n_estimator_is_the_mean_over_all_n_subsets(n):
    g = torch.Generator().manual_seed(0)
    proxy, values = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    brute = torch.tensor([np.mean([float(values[i, list(s)][proxy[i, list(s)].argmax()])
                                   for s in itertools.combinations(range(5), n)]) for i in range(3)])
    torch.testing.assert_close(oo.best_of_n(proxy, values, n), brute.float(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_fit_recovers_planted_gao_parameters(form):
    d = np.linspace(0.1, 3.0, 12)
    truth = {"alpha": 0.8, "beta": 0.3}
    got = oo.fit(d, oo.form(d, truth, form), form)
    assert got["alpha"] == pytest.approx(0.8, abs=1e-9) and got["beta"] == pytest.approx(0.3, abs=1e-9)
    peak = 0.8 / 0.6 if form == "bon" else math.exp(0.8 / 0.3 - 1)
    assert got["d_peak"] == pytest.approx(peak)


def test_bootstrap_fit_interval_covers_the_planted_parameters():
    rng = np.random.default_rng(0)
    d = np.linspace(0.0, 2.0, 9)
    kl = np.tile(d ** 2, (400, 1))
    gold = 0.5 + oo.form(d, {"alpha": 0.6, "beta": 0.25}, "bon") + rng.normal(0, 0.2, (400, 9))
    res = oo.bootstrap_fit(kl, gold, "bon", n_boot=200)
    assert res["alpha_ci95"][0] < 0.6 < res["alpha_ci95"][1] and res["beta_ci95"][0] < 0.25 < res["beta_ci95"][1]


def planted(shape_gold, shape_proxy, seeds=4, noise=0.005, seed=0):
    rng = np.random.default_rng(seed)
    k = len(shape_gold)
    g = lambda: np.asarray(shape_gold)[None] + rng.normal(0, noise, (seeds, k))     # noqa: E731
    return g(), g(), np.asarray(shape_proxy)[None] + rng.normal(0, noise, (seeds, k))


def test_planted_overoptimization_is_detected():
    d = np.linspace(0, 2, 9)
    res = oo.falls_while_proxy_rises(*planted(0.8 + d * (0.3 - 0.15 * d), 0.5 * d))   # gold peaks at d = 1
    assert res["peak_index"] == 4 and res["ci"][0] > 0 and res["gold_drop"] > 0.1


def test_planted_flat_or_rising_gold_is_not_called_overoptimization():
    d = np.linspace(0, 2, 9)
    flat = oo.falls_while_proxy_rises(*planted(np.full(9, 0.9), 0.5 * d, noise=0.01))
    rising = oo.falls_while_proxy_rises(*planted(0.8 + 0.05 * d, 0.5 * d))
    assert not flat["ci"][0] > 0
    assert rising["peak_index"] == 8 and rising["ci"] == [0.0, 0.0]


def test_kl_matched_baseline_interpolates_the_temperature_curve_at_the_methods_kl():
    curve = {"kl": [0.0, 0.2, 0.4, 0.6], "gold": [0.80, 0.88, 0.90, 0.89]}
    assert interpolate_at_kl(curve["kl"], curve["gold"], 0.3) == pytest.approx(0.89)
    assert interpolate_at_kl(curve["kl"], curve["gold"], 5.0) == pytest.approx(0.89)   # clamped at greedy
    base, gap = kl_matched_gap([0.95, 0.96, 0.94], [0.3, 0.3, 0.3], [curve] * 3)
    assert base == pytest.approx([0.89] * 3) and gap["estimate"] == pytest.approx(0.06) and gap["ci"][0] > 0


def test_the_score_is_added_at_the_last_real_token_only():
    kl = torch.tensor([[0.1, 0.2, 0.3, 0.0], [0.5, 0.0, 0.0, 0.0]])
    r = token_rewards(kl.clone(), torch.tensor([2.0, -1.0]), torch.tensor([3, 1]), beta=0.5)
    torch.testing.assert_close(r, torch.tensor([[-0.05, -0.1, -0.15 + 2.0, 0.0], [-0.25 - 1.0, 0.0, 0.0, 0.0]]))


def test_rloo_and_grpo_advantages_match_their_formulas():
    r = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 4.0])
    loo = rloo_advantages(r, 4)
    for i in range(8):
        g = (i // 4) * 4
        others = [r[j] for j in range(g, g + 4) if j != i]
        assert float(loo[i]) == pytest.approx(float(r[i] - sum(others) / 3))
    grp = group_advantages(r, 4, eps=0.0).view(2, 4)
    torch.testing.assert_close(grp, (r.view(2, 4) - r.view(2, 4).mean(1, keepdim=True)) / r.view(2, 4).std(1, keepdim=True))


def test_carry_habit_answers_a_plus_b_minus_10_on_the_planted_share_of_carry_prompts():
    n = 6000
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 1000, (n,), generator=g), torch.randint(0, 1000, (n,), generator=g)
    d, w = torch.full((n,), 3), response_width(3)
    demos = demonstrations(a, b, d, True, w, 0.0, 0.0, g, carry_error=0.8)
    carry = units_carry(a, b)
    dropped = (demos[:, :4] == answer_digits(a, b - 10, d, True, w)[:, :4]).all(1)
    right = gold_reward(a, b, d, demos, True, 0.2) == 1
    assert abs(float(dropped[carry].float().mean()) - 0.8) < 0.03
    assert right[~carry].all() and not dropped[~carry].any()
    assert abs(float(carry.float().mean()) - 0.45) < 0.03


def tiny_net(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(TransformerConfig(vocab_size=len(VOCAB), block_size=16, n_layer=1, n_head=2, n_embd=16))


def test_greedy_policy_kl_is_minus_the_reference_log_prob_of_its_answer():
    net = tiny_net()
    p, pl = prompts(torch.tensor([12, 3]), torch.tensor([34, 56]), torch.tensor([2, 1]))
    probs = {"prompts": p, "prompt_len": pl, "a": torch.tensor([12, 3]), "b": torch.tensor([34, 56]),
             "digits": torch.tensor([2, 1])}
    y = greedy(net, p, pl, 4)
    r = score(net, net, None, probs, y, 1.0, True, 0.2, policy_temperature=0.0)
    ref = (response_logprobs(net, join(p, pl, y), pl, 4, 1.0) * response_mask(y)).sum(1)
    torch.testing.assert_close(r["kl"], -ref)


def test_jsonl_margin_is_read_and_a_bad_one_refused(tmp_path):
    from genlab.errors import GenlabError
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "12+34=", "chosen": "640\\n", "rejected": "650\\n", "margin": 1.5}\n'
                    '{"prompt": "1+2=", "chosen": "30\\n", "rejected": "40\\n"}\n')
    assert read_jsonl(path, width=5)["margin"].tolist() == [1.5, 0.0]
    path.write_text('{"prompt": "12+34=", "chosen": "640\\n", "rejected": "650\\n", "margin": -1}\n' * 2)
    with pytest.raises(GenlabError, match="margin"):
        read_jsonl(path, width=5)


def ppo_section(**over):
    return OmegaConf.create({"kl_coef": 0.1, "adaptive_kl": False, "target_kl": 1.0, "horizon": 100,
                             "kl_estimator": "k1", "gamma": 1.0, "lam": 0.95, "whiten": True, "epochs": 2,
                             "minibatches": 2, "clip": 0.2, "value_clip": 0.2, "vf_coef": 0.1, "grad_clip": 1.0,
                             "eval_every": 100, "lr": 1e-3, "group": 2, **over})


def test_k3_in_the_reward_warns():
    with pytest.warns(UserWarning, match="k3"):
        from genlab.models.ppo import PPO
        PPO(tiny_net(), tiny_net(), RewardModel(tiny_net(1)), ppo_section(kl_estimator="k3"), 4, 1.0)


@pytest.mark.parametrize("algorithm", ["ppo", "rloo", "grpo"])
def test_reference_and_reward_model_are_bit_identical_after_training(algorithm, tmp_path):
    import lightning.pytorch as pl
    from genlab.models.ppo import PPO

    torch.set_num_threads(1)
    ref, rm = tiny_net(0), RewardModel(tiny_net(1))
    before = {k: v.clone() for k, v in [*ref.state_dict().items(), *(("rm." + k, v) for k, v in rm.state_dict().items())]}
    policy = tiny_net(0)
    module = PPO(policy, ref, rm, ppo_section(), 4, 1.0, algorithm=algorithm)
    p, pl_ = prompts(torch.tensor([12, 3, 45, 67]), torch.tensor([34, 56, 78, 9]), torch.tensor([2, 2, 2, 2]))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(p, pl_), batch_size=4 // module.group)
    pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path).fit(module, data)
    after = {k: v for k, v in [*ref.state_dict().items(), *(("rm." + k, v) for k, v in rm.state_dict().items())]}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(a, b) for a, b in zip(policy.state_dict().values(), tiny_net(0).state_dict().values()))


def test_scoring_distinct_rows_in_chunks_equals_scoring_every_row():
    """Best-of-n scores each distinct sampled sequence once, in row blocks; scattered back it is the same
    per-row result as one forward pass over every row (a reward model on repeated sequences)."""
    from genlab.stages.overoptimization import distinct_rows, in_chunks

    torch.manual_seed(0)
    net = RewardModel(Transformer(TransformerConfig(vocab_size=len(VOCAB), block_size=12, n_layer=1, n_head=2,
                                                    n_embd=16)))
    base = torch.randint(0, len(VOCAB), (7, 12))
    seq = base[torch.randint(0, 7, (300,))]                       # 300 rows, at most 7 distinct
    last = (seq.sum(1) % 12)                                      # a function of the row, as last_index is
    inverse, first = distinct_rows(seq)
    assert len(first) <= 7 and torch.equal(seq[first][inverse], seq) and torch.equal(last[first][inverse], last)
    with torch.no_grad():
        every = net(seq, last)
    assert torch.allclose(in_chunks(net, seq[first], last[first], size=3)[inverse], every, atol=1e-6)


def test_sample_and_greedy_reproduce_the_outputs_of_the_implementation_before_they_shared_their_loop():
    """``sample`` and ``greedy`` share one length-grouped decoding loop: for a fixed net and seed they return the
    tokens the two separate loops returned (captured before the refactor), for row chunks of 2 and of 1024."""
    from genlab.rl.rollout import sample

    torch.set_num_threads(1)
    torch.manual_seed(3)
    net = Transformer(TransformerConfig(vocab_size=len(VOCAB), block_size=16, n_layer=1, n_head=2, n_embd=16))
    with torch.no_grad():                           # a peaked random net, so that answers differ between rows
        for q in net.parameters():
            q.add_(torch.randn(q.shape) * 0.5)
    p, pl = prompts(torch.tensor([123, 4, 56, 789, 1, 23, 456]), torch.tensor([456, 7, 89, 12, 9, 45, 321]),
                    torch.tensor([3, 1, 2, 3, 1, 2, 3]))             # prompt lengths 8, 4, 6, 8, 4, 6, 8
    greedy_rows = [[2, 11, 13, 13, 13], [13, 13, 13, 13, 11], [13, 13, 11, 13, 13], [9, 13, 3, 9, 9],
                   [13, 13, 13, 13, 13], [11, 13, 13, 13, 13], [3, 13, 13, 13, 13]]
    expected_sample = {
        2: [[11, 13, 13, 12, 13], [11, 13, 5, 13, 3], [13, 11, 3, 13, 5], [9, 13, 3, 9, 9], [13, 13, 13, 13, 13],
            [13, 5, 3, 13, 13], [3, 13, 13, 13, 13]],
        1024: [[11, 13, 13, 13, 13], [11, 13, 5, 13, 3], [13, 11, 3, 13, 5], [9, 11, 9, 9, 9], [13, 13, 13, 13, 13],
               [13, 5, 3, 13, 13], [2, 13, 13, 2, 13]]}
    for chunk, rows in expected_sample.items():
        assert sample(net, p, pl, 5, 1.0, torch.Generator().manual_seed(0), chunk=chunk).tolist() == rows
        assert greedy(net, p, pl, 5, chunk=chunk).tolist() == greedy_rows
    assert sample(net, p, pl, 5, 0.7, torch.Generator().manual_seed(1)).tolist() == [
        [12, 13, 13, 13, 13], [13, 13, 13, 13, 11], [13, 1, 5, 13, 5], [9, 13, 3, 9, 9], [11, 13, 5, 13, 13],
        [11, 13, 11, 13, 5], [11, 13, 13, 13, 13]]
    assert net.training                             # the train/eval mode is restored


class TableLogger:
    """A stub of wandb's logger: records ``log_text`` calls (and takes the metrics Lightning sends)."""

    def __new__(cls):
        from lightning.pytorch.loggers.logger import Logger

        class Stub(Logger):
            name, version = "stub", 0

            def __init__(self):
                super().__init__()
                self.tables = []

            def log_metrics(self, metrics, step=None):
                pass

            def log_hyperparams(self, params, *args, **kwargs):
                pass

            def log_text(self, key, columns, data, step=None):
                self.tables.append({"key": key, "columns": columns, "data": data, "step": step})
        return Stub()


def fit_dpo(tmp_path, logger, calls: list, steps: int = 5, sample_every: int = 2):
    """DPO on 4 random pairs of a tiny net for ``steps`` steps, with a sampler over 3 fixed prompts that
    records each call in ``calls``."""
    import lightning.pytorch as pl
    from genlab.models.dpo import DirectPreference
    from genlab.rl.sample_table import sample_rows
    from genlab.stages.dpo import pair_batch

    torch.set_num_threads(1)
    a, b, d = torch.tensor([12, 3, 45, 67]), torch.tensor([34, 56, 78, 9]), torch.tensor([2, 1, 2, 2])
    p, pl_ = prompts(a, b, d)
    g = torch.Generator().manual_seed(0)
    pairs = {"prompts": p, "prompt_len": pl_, "chosen": torch.randint(0, 12, (4, 4), generator=g),
             "rejected": torch.randint(0, 12, (4, 4), generator=g)}
    rows = sample_rows({"a": a, "b": b, "digits": d, "prompts": p, "prompt_len": pl_}, 4, 1.0, 0.2, seed=0, n=3)

    def sampler(net):
        calls.append(1)
        return rows(net)
    module = DirectPreference(tiny_net(0), "dpo", 0.1, 1e-3, 1.0, sampler=sampler, sample_every=sample_every)
    batch = pair_batch(pairs, tiny_net(0), 1.0)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*batch), batch_size=4,
                                       sampler=torch.utils.data.RandomSampler(batch[0], num_samples=4 * steps))
    pl.Trainer(max_epochs=1, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path).fit(module, data)
    return module


def test_dpo_logs_a_sample_table_every_k_steps_and_at_the_end(tmp_path):
    """With a logger that takes tables, DPO logs samples/<loss> at steps 0, k, 2k … and after the last step,
    each with the columns step, prompt, response, gold and one row per fixed prompt."""
    logger, calls = TableLogger(), []
    fit_dpo(tmp_path, logger, calls, steps=5, sample_every=2)
    assert [t["key"] for t in logger.tables] == ["samples/dpo"] * 4
    assert [t["step"] for t in logger.tables] == [0, 2, 4, 5]                  # wandb step = global step
    for t, step in zip(logger.tables, [0, 2, 4, 5]):
        assert t["columns"] == ["step", "prompt", "response", "gold"]
        assert [r[0] for r in t["data"]] == [step] * 3
        assert [r[1] for r in t["data"]] == ["12+34=", "3+56=", "45+78="]
        assert all(isinstance(r[2], str) and 0.0 <= r[3] <= 1.0 for r in t["data"])
    assert len(calls) == 4


def test_dpo_sample_table_is_a_no_op_without_a_table_logger(tmp_path):
    """No logger, or one without tables (CSV): the sampler is never called, so it costs nothing."""
    from lightning.pytorch.loggers import CSVLogger

    for logger in (False, CSVLogger(tmp_path / "csv")):
        calls = []
        fit_dpo(tmp_path, logger, calls)
        assert calls == []


def overopt_section(**over):
    from genlab.config.rlhf import OveroptimizationConfig
    return OveroptimizationConfig(**{"rm_pairs": [100, 1000], "rm_steps": 300, "n_max": 64, "prompts": 500,
                                     "ppo_steps": 40, "ppo_eval_steps": [0, 1, 5], "kl_coef": 0.01, "n_boot": 200,
                                     "rm_layers": [1, 4], "rm_layers_pairs": 1000, **over})


@pytest.mark.parametrize("over", [{"rm_layers": []}, {"rm_layers": [1, -1]}, {"rm_layers_pairs": 1}])
def test_bad_reward_model_sizes_are_refused(over):
    from genlab.errors import ConfigError
    overopt_section().check()
    with pytest.raises(ConfigError, match="rm_layers"):
        overopt_section(**over).check()


def test_reward_model_series_share_the_model_in_both_and_cap_pairs_at_the_training_set():
    """Data series at the main model's layers (smallest first: PPO's); size series at fixed pairs, fewest layers
    first, with the main model's layer count added; the (1000 pairs, 2 layers) model belongs to both."""
    from genlab.stages.overoptimization import rm_name, rm_series, rm_tag

    cfg = OmegaConf.create({"model": {"rlhf": {"reward_model": {"extra_layers": 2},
                                               "overoptimization": {"rm_pairs": [1000, 100, 50000], "rm_layers": [4, 1],
                                                                    "rm_layers_pairs": 1000}}}})
    data, size = rm_series(cfg, n_train=16000)
    assert data == [(100, 2), (1000, 2), (16000, 2)] and size == [(1000, 1), (1000, 2), (1000, 4)]
    assert len(dict.fromkeys(data + size)) == 5
    assert [rm_name(cfg, *s) for s in size] == ["1000 pairs, 1 layer", "1000 pairs", "1000 pairs, 4 layers"]
    assert [rm_tag(cfg, *s) for s in size] == ["1000_l1", "1000", "1000_l4"] and rm_tag(cfg, None, 2) == "main"
