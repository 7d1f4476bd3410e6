"""Emergence metrics on hand-made answers, Schaeffer's toy model, and a smoke run of the stages."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genlab.evaluate import emergence as em


# --- metrics of generated answers --------------------------------------------------------

def test_exact_match_needs_every_token_and_the_length():
    pred = ["0531", "0532", "053", "05310", ""]
    assert em.exact_match(pred, ["0531"] * 5).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_per_digit_accuracy_is_position_aligned():
    target = ["0531"] * 5
    pred = ["0531", "0532", "053", "1531", "5310"]   # right, 3/4, short (3/4), 3/4, shifted (0/4)
    assert em.per_digit_accuracy(pred, target).tolist() == [1.0, 0.75, 0.75, 0.75, 0.0]
    assert em.per_digit_accuracy(["05310"], ["0531"]).item() == 1.0   # extras: edit distance counts them


@pytest.mark.parametrize("pred, target, dist", [
    ("0531", "0531", 0), ("0532", "0531", 1), ("053", "0531", 1), ("05310", "0531", 1),
    ("5310", "0531", 2),                      # shift: one delete + one insert, not four substitutions
    ("", "0531", 4), ("kitten", "sitting", 3),
])
def test_token_edit_distance_is_levenshtein(pred, target, dist):
    assert em.token_edit_distance([pred], [target]).item() == dist


# --- continuous scores ------------------------------------------------------------------

def test_answer_logprob_sums_masked_token_logprobs():
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]])   # [1, T=3, V=3]
    targets = torch.tensor([[0, 1, 2]])
    mask = torch.tensor([[False, True, True]])           # the first position is prompt: not scored
    got = em.answer_logprob(probs.log(), targets, mask)
    assert got.item() == pytest.approx(math.log(0.8) + math.log(0.4), rel=1e-6)


def test_answer_logprob_of_uniform_model_is_minus_length_log_vocab():
    logits = torch.zeros(4, 6, 14)
    targets = torch.randint(0, 14, (4, 6))
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[:, 2:5] = True
    assert torch.allclose(em.answer_logprob(logits, targets, mask), torch.full((4,), -3 * math.log(14)))


def test_token_brier_known_values():
    targets, mask = torch.tensor([[0, 1]]), torch.tensor([[True, True]])
    perfect = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]).clamp_min(1e-12).log()
    wrong = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]).clamp_min(1e-12).log()
    uniform = torch.zeros(1, 2, 2)
    assert em.token_brier(perfect, targets, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert em.token_brier(wrong, targets, mask).item() == pytest.approx(2.0, abs=1e-6)
    assert em.token_brier(uniform, targets, mask).item() == pytest.approx(0.5)   # (0.5)² + (0.5)²


# --- Schaeffer toy model ----------------------------------------------------------------

def test_token_p_and_toy_exact_match():
    assert em.token_p(0.0) == 1.0
    assert em.token_p(math.log(2)) == pytest.approx(0.5)
    assert em.toy_exact_match(0.5, 3) == pytest.approx(0.125)
    # p^L with p = exp(-L_CE) is exp(-L·L_CE): the probability of the whole answer under teacher forcing
    assert em.toy_exact_match(em.token_p(0.2), 5) == pytest.approx(math.exp(-1.0))


def test_fit_token_p_recovers_a_planted_p_from_noisy_exact_match():
    rng = np.random.default_rng(0)
    p_true, n = 0.83, 2000
    lengths = np.array([2, 3, 4, 5, 6, 7, 8])
    exact = rng.binomial(n, p_true ** lengths) / n      # measured exact match on n problems per length
    assert em.fit_token_p(lengths, exact) == pytest.approx(p_true, abs=0.005)
    assert em.fit_token_p(lengths, p_true ** lengths) == pytest.approx(p_true, abs=1e-6)


def test_fit_loss_power_law_recovers_planted_constants():
    n = np.logspace(3, 6, 8)
    c, alpha = 2e3, -0.4
    loss = (n / c) ** alpha * np.exp(np.random.default_rng(1).normal(0, 0.01, n.size))
    c_hat, alpha_hat = em.fit_loss_power_law(n, loss)
    assert alpha_hat == pytest.approx(alpha, abs=0.02)
    assert c_hat == pytest.approx(c, rel=0.15)


# --- the answer-only language model ----------------------------------------------------

def tiny_lm(width: int = 16):
    from genlab.data.arithmetic import VOCAB
    from genlab.models.arithmetic_lm import ArithmeticLM
    from genlab.nn.transformer import Transformer, TransformerConfig

    torch.manual_seed(0)
    net = Transformer(TransformerConfig(vocab_size=len(VOCAB), block_size=16, n_layer=2, n_head=2, n_embd=width))
    return ArithmeticLM(net, lr=1e-3, weight_decay=0.0, warmup_steps=1, max_steps=10)


def test_answer_mask_marks_answer_digits_and_eos_only():
    from genlab.data.arithmetic import EOS, decode, tokenize
    from genlab.models.arithmetic_lm import answer_mask

    ids, prompt_len, answer_len = tokenize([7, 123], [5, 456], [2, 3], reverse=True)   # "07+05=210\n", "123+456=9750\n"
    mask = answer_mask(prompt_len, answer_len, ids.size(1) - 1)
    targets = ids[:, 1:]
    assert decode(targets[0][mask[0]]) == "210\n" and decode(targets[1][mask[1]]) == "9750\n"
    assert (targets[0][mask[0]] == EOS).sum() == 1


def test_answer_loss_at_initialisation_is_log_vocab():
    from genlab.data.arithmetic import VOCAB, tokenize

    rng = np.random.default_rng(0)
    ids, prompt_len, answer_len = tokenize(rng.integers(0, 100, 256), rng.integers(0, 100, 256), [2] * 256, True)
    loss = tiny_lm().answer_nll(ids, prompt_len, answer_len)
    assert loss.item() == pytest.approx(math.log(len(VOCAB)), abs=0.05)


def test_score_is_consistent_per_problem():
    """On an untrained model: exact ⇔ edit distance 0, per-digit ≥ exact, log p ≤ 0, Brier ∈ [0, 2];
    the teacher-forced log-prob equals the transformer's own token log-probs summed over the answer."""
    from genlab.data.arithmetic import tokenize

    rng = np.random.default_rng(1)
    ids, prompt_len, answer_len = tokenize(rng.integers(0, 1000, 64), rng.integers(0, 1000, 64), [3] * 64, True)
    module = tiny_lm()
    s = module.score(ids, int(prompt_len[0]), int(answer_len[0]))
    assert torch.equal(s["exact_match"] == 1, s["edit_distance"] == 0)
    assert (s["per_digit_accuracy"] >= s["exact_match"]).all()
    assert (s["answer_logprob"] <= 0).all() and ((s["brier"] >= 0) & (s["brier"] <= 2)).all()
    p = int(prompt_len[0])
    expected = module.net.token_logprobs(ids)[:, p - 1:].sum(-1)       # targets p … end (answer + EOS)
    assert torch.allclose(s["answer_logprob"], expected, atol=1e-5)


def test_problems_are_the_same_for_every_run_and_split_disjointly(tmp_path, make_cfg):
    from genlab.stages.emergence import problems

    cfg = make_cfg(tmp_path, "model.emergence.digits=[1,3]", "model.emergence.n_train=50",
                   "model.emergence.n_val=10", "model.emergence.n_test=20")
    data, again = problems(cfg), problems(cfg)
    assert all(torch.equal(x, y) for split in data for x, y in zip(data[split], again[split]))
    ids, prompt_len, answer_len, digits = data["test"]
    assert digits.tolist().count(1) == 20 and digits.tolist().count(3) == 20      # 1 digit: 100 pairs, ≤ 1/5 test
    assert set(answer_len[digits == 3].tolist()) == {4} and set(prompt_len[digits == 1].tolist()) == {4}
    assert digits.tolist().count(1) + data["val"][3].tolist().count(1) + data["train"][3].tolist().count(1) <= 100


def test_init_scale_multiplies_every_weight_matrix_of_the_gpt2_init(tmp_path, make_cfg):
    from genlab.stages.emergence import network

    nets = []
    for scale in (1.0, 4.0):
        torch.manual_seed(0)
        nets.append(network(make_cfg(tmp_path, f"model.emergence.init_scale={scale}"), 8, 16))
    for (name, p1), p4 in zip(nets[0].named_parameters(), nets[1].parameters()):
        assert torch.equal(p4, 4.0 * p1 if p1.dim() >= 2 else p1), name   # LayerNorms and biases untouched


# --- smoke run of the stage family -----------------------------------------------------

SMALL = ("model.emergence.digits=[1,2]", "model.emergence.n_train=200", "model.emergence.n_val=20",
         "model.emergence.n_test=50", "model.emergence.val_every=3", "model.emergence.patience=2")


def test_emergence_stages_smoke(tmp_path, make_cfg):
    import json

    from genlab.io import load_model
    from genlab.stages import emergence, emergence_eval

    cfg = make_cfg(tmp_path, *SMALL)
    emergence.run(cfg)
    payload = load_model(tmp_path / "models" / "emergence" / "w8.pt", expect_config=emergence.model_config(cfg, 8))
    n_layer, d = cfg.model.emergence.n_layer, 8
    assert payload["results"]["n_params"] == n_layer * (12 * d * d + 13 * d) + 2 * d   # 12·L·d² + biases/LNs
    assert sorted(payload["results"]["seeds"]) == [str(s) for s in cfg.seeds]
    run = payload["results"]["seeds"]["0"]
    assert run["steps"] <= cfg.model.emergence.steps and run["val_history"][0]["step"] == 3
    assert {"val_exact_match_1", "val_exact_match_2"} <= set(run["val_history"][0])
    emergence_eval.run(cfg)
    metrics = json.loads((tmp_path / "reports" / "metrics" / "emergence.json").read_text())
    assert set(metrics["sizes"]) == {"w8", "w16"}
    cell = metrics["sizes"]["w8"]["by_digits"]["2"]
    assert {"exact_match", "token_accuracy", "per_digit_accuracy", "edit_distance", "answer_logprob"} <= set(cell)
    assert cell["answer_tokens"] == 4 and len(cell["exact_match"]["ci95"]) == 2
    assert {"transition", "saturated"} <= set(metrics["schaeffer"])
    figures = {p.name for p in (tmp_path / "reports" / "figures" / "emergence").iterdir()}
    assert {"metrics_vs_size.png", "predicted_vs_measured.png", "exact_match_vs_length.png", "val_curves.png"} <= figures
    assert (tmp_path / "reports" / "plots" / "emergence" / "val_curves.csv").exists()


@pytest.mark.parametrize("override, needle", [
    ({"only": 20}, "model.emergence.only=20 is not allowed"),
    ({"widths": [8, 15]}, "must be positive multiples of n_head=2"),
    ({"steps": 0}, "model.emergence.steps must be > 0"),
    ({"digits": [0, 2]}, "must be positive digit counts"),
    ({"seeds": [1, 1]}, "must be distinct seeds"),
    ({"transition_band": [0.9, 0.1]}, "must be [lo, hi]"),
    ({"window": 1.0}, "must be an N ratio > 1"),
    ({"steps": 5, "val_every": 10}, "val_every=10 exceeds steps=5"),
])
def test_emergence_config_is_validated(override, needle, make_cfg, tmp_path):
    from omegaconf import OmegaConf

    from genlab.config import validate
    from genlab.errors import ConfigError

    with pytest.raises(ConfigError) as err:     # validate needs a whole config: the override on the smoke preset
        validate(OmegaConf.merge(make_cfg(tmp_path), {"model": {"emergence": override}}))
    assert needle in str(err.value) and "fix:" in str(err.value)
