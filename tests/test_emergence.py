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
