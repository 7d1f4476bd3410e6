"""Every model trains one step and samples once in float64, as a stand-in for another device.

No GPU runs these tests, but a tensor made without the device (and dtype) of the model's inputs shows up
here too: the model and its inputs are float64, the default dtype stays float32, so such a tensor is
float32 and either breaks the next operation (dtype mismatch) or turns an output float32. Each test
asserts that losses, parameters and samples are float64 and finite. Training runs through a real
Lightning ``Trainer`` (32-true precision: it does not convert anything, unlike ``64-true``, which would
make float64 the default dtype and hide exactly these tensors). Sizes are tiny: this is plumbing only.
"""
from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from genlab.data.arithmetic import VOCAB, tokenize
from genlab.data.rlhf_task import prompts, response_width
from genlab.nn.heads import RewardModel
from genlab.nn.transformer import Transformer, TransformerConfig

F64 = torch.float64


@pytest.fixture(autouse=True)
def _seed_and_quiet():
    torch.manual_seed(0)
    assert torch.get_default_dtype() == torch.float32      # a dtype-less factory makes float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                     # Lightning's advice on workers, logging, …
        yield


def f64(x):
    """Assert ``x`` (a tensor, or a dict / tuple / list of them) is float64 and finite; return it."""
    if isinstance(x, dict):
        for v in x.values():
            f64(v)
    elif isinstance(x, (tuple, list)):
        for v in x:
            f64(v)
    else:
        assert x.dtype == F64, f"{x.dtype} where float64 was expected"
        assert torch.isfinite(x).all()
    return x


class LastLoss(Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"] if isinstance(outputs, dict) else outputs)


def train_one_step(module: pl.LightningModule, batch) -> torch.Tensor:
    """One optimiser step (one batch, one epoch) of ``module`` in float64 on ``batch``; its loss, checked."""
    module = module.double()
    grab = LastLoss()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, log_every_n_steps=1, callbacks=[grab])
    trainer.fit(module, train_dataloaders=DataLoader([batch], batch_size=None))   # the batch as it is
    assert len(grab.losses) == 1
    for name, p in module.named_parameters():
        assert p.dtype == F64 and torch.isfinite(p).all(), name
    return f64(grab.losses[0])


def pixels(n: int = 4) -> torch.Tensor:
    return torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8)


def tiny_transformer(pos: str = "learned", block: int = 16) -> Transformer:
    return Transformer(TransformerConfig(vocab_size=len(VOCAB), block_size=block, n_layer=1, n_head=2, n_embd=8,
                                         pos=pos))


def tiny_unet(n_classes: int = 3):
    from genlab.nn.unet import UNet

    return UNet(channels=4, channel_mults=(1, 2), n_classes=n_classes)


# --- image classifiers -------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_classifier(arch):
    from genlab.models.classifier import Classifier, to_images
    from genlab.nn.classifiers import CNN, MLP

    net = MLP(hidden=8) if arch == "mlp" else CNN(channels=2, n_features=8)
    module = Classifier(net, lr=1e-3, weight_decay=0.0, shift=2)
    train_one_step(module, (pixels(), torch.randint(0, 10, (4,))))
    f64(module(to_images(pixels(), F64)))


def test_fgsm_training_and_attacks():
    from genlab.evaluate.adversarial import fgsm, pgd
    from genlab.models.adversarial import FGSMTrained
    from genlab.models.classifier import to_images
    from genlab.nn.classifiers import MLP

    module = FGSMTrained(MLP(hidden=8), lr=1e-3, weight_decay=0.0, shift=1, eps=0.1)
    x, y = pixels(), torch.randint(0, 10, (4,))
    train_one_step(module, (x, y))
    images = to_images(x, F64)
    f64(fgsm(module.net, images, y, 0.1))
    f64(pgd(module.net, images, y, 0.1, steps=2, step_size=0.05, generator=torch.Generator().manual_seed(0)))
    f64(pgd(module.net, images, y, 0.1, steps=1, step_size=0.05))


def test_calibration_and_uncertainty():
    from genlab.evaluate.calibration import ece_change_ci, fit_temperature, reliability
    from genlab.evaluate.uncertainty import ensemble_probs, entropy, ood_auroc, ood_inputs
    from genlab.nn.classifiers import MLP

    logits, labels = torch.randn(32, 10, dtype=F64), torch.randint(0, 10, (32,))
    rows = reliability(logits.softmax(-1), labels, n_bins=5)
    assert sum(r["count"] for r in rows) == 32
    assert fit_temperature(logits, labels) > 0
    lo, hi = ece_change_ci(logits.softmax(-1), (logits / 2).softmax(-1), labels, n_boot=5)
    assert lo <= hi
    nets = [MLP(hidden=8).double() for _ in range(2)]
    x = torch.rand(4, 1, 28, 28, dtype=F64)
    noise = f64(ood_inputs(x, "noise", torch.Generator().manual_seed(0)))
    scores = [f64(entropy(ensemble_probs(nets, z))) for z in (x, noise)]
    assert 0.0 <= ood_auroc(*scores) <= 1.0


# --- continuous normalising flow ------------------------------------------------------------

def test_cnf_exact_trace_and_sampling():
    from genlab.evaluate import ode
    from genlab.models.cnf import CNF
    from genlab.nn.vector_field import VectorField

    module = CNF(VectorField(2, width=8, depth=1), lr=1e-3, weight_decay=0.0, rtol=1e-3, atol=1e-3,
                 adjoint=False, exact_trace=True)
    train_one_step(module, (torch.randn(8, 2, dtype=F64),))
    f64(ode.sample(module.field, torch.randn(4, 2, dtype=F64), "midpoint", nfe=2))


def test_cnf_dequantized_hutchinson_adjoint():
    from genlab.models.cnf import CNF, LogitDequantize
    from genlab.nn.vector_field import VectorField

    module = CNF(VectorField(4, width=8, depth=1), lr=1e-3, weight_decay=0.0, rtol=1e-3, atol=1e-3,
                 adjoint=True, exact_trace=False, transform=LogitDequantize(17))
    k = torch.randint(0, 17, (8, 4))                                    # integer pixel levels
    train_one_step(module, (k,))
    f64(module.log_prob(k))


# --- flow matching -------------------------------------------------------------------------

@pytest.mark.parametrize("coupling, t_sampling", [("independent", "logit_normal"), ("ot", "uniform"),
                                                   ("gaussian", "uniform")])
def test_flow_matching_vector_data(coupling, t_sampling):
    from genlab.models import matchers
    from genlab.models.flow_matching import FlowMatching
    from genlab.nn.vector_field import VectorField

    matcher = matchers.build(coupling, sigma=0.1, sigma_min=1e-3, ot_block=4)
    matcher.t_sampling = t_sampling
    module = FlowMatching(VectorField(2, width=8, depth=1), matcher, lr=1e-3, rtol=1e-3, atol=1e-3)
    train_one_step(module, (torch.randn(8, 2, dtype=F64),))
    f64(module.sample(4, (2,), "euler", nfe=2))
    f64(module.log_prob(torch.randn(3, 2, dtype=F64)))


def test_flow_matching_class_conditional_with_guidance():
    from genlab.models import matchers
    from genlab.models.flow_matching import FlowMatching

    module = FlowMatching(tiny_unet(), matchers.IndependentCFM(), lr=1e-3, n_classes=3, label_dropout=0.5)
    train_one_step(module, (torch.randn(4, 1, 28, 28, dtype=F64), torch.randint(0, 3, (4,))))
    for w in (0.0, 1.5):
        f64(module.sample(torch.tensor([0, 1, 2]), (1, 28, 28), "euler", nfe=2, w=w))


# --- diffusion -----------------------------------------------------------------------------

@pytest.mark.parametrize("prediction, snr_gamma", [("eps", 0.0), ("v", 5.0)])
def test_diffusion_training_and_ddpm_ddim_sampling_with_guidance(prediction, snr_gamma):
    from genlab.models.diffusion import Diffusion

    module = Diffusion(tiny_unet(), T=4, schedule="cosine", lr=1e-3, prediction=prediction, snr_gamma=snr_gamma)
    train_one_step(module, (pixels(), torch.randint(0, 3, (4,))))
    for p in module.ema.parameters():
        assert p.dtype == F64
    y = torch.tensor([0, 2])
    f64(module.sample_ddpm(y, w=1.0, generator=torch.Generator().manual_seed(0)))
    f64(module.sample_ddpm(y))
    f64(module.sample_ddim(y, 2, w=1.0, generator=torch.Generator().manual_seed(0), eta=1.0))
    f64(module.sample_ddim(y, 3))


# --- language models -----------------------------------------------------------------------

@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_gpt_training_generation_and_beam_search(pos):
    from genlab.models.gpt import GPT

    module = GPT(tiny_transformer(pos), lr=1e-3, min_lr=1e-4, warmup_iters=1, lr_decay_iters=2, weight_decay=0.1,
                 beta2=0.99)
    train_one_step(module, (torch.randint(0, len(VOCAB), (4, 9)),))
    idx = torch.randint(0, len(VOCAB), (2, 3))
    out = module.net.generate(idx, 4, temperature=0.9, top_k=5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 7)
    assert module.net.generate(idx, 2).shape == (2, 5)
    seq, score = module.net.beam_search(idx, 3, beam_width=2)
    assert seq.shape == (2, 6)
    f64(score)
    f64(module.net.token_logprobs(out))


def test_arithmetic_lm_training_and_scoring():
    from genlab.models.arithmetic_lm import ArithmeticLM

    module = ArithmeticLM(tiny_transformer(), lr=1e-3, weight_decay=0.0, warmup_steps=1, max_steps=2)
    a, b, d = torch.tensor([12, 34, 56, 78]), torch.tensor([9, 87, 65, 43]), torch.full((4,), 2)
    ids, prompt_len, answer_len = tokenize(a, b, d, reverse=True)
    train_one_step(module, (ids, prompt_len, answer_len))
    scores = module.score(ids, int(prompt_len[0]), int(answer_len[0]))
    f64({k: scores[k] for k in ("answer_logprob", "brier")})
    assert all(len(v) == 4 for v in scores.values())


# --- RLHF ----------------------------------------------------------------------------------

def rlhf_batch(n: int = 4):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randint(0, 100, (n,), generator=g), torch.randint(0, 100, (n,), generator=g)
    d = torch.tensor([2, 1, 2, 1][:n])
    return {"a": a, "b": b, "digits": d, **dict(zip(("prompts", "prompt_len"), prompts(a, b, d)))}


@pytest.mark.parametrize("pool", ["last", "tokens"])
def test_reward_model(pool):
    from genlab.data.arithmetic import STOI
    from genlab.models.reward_model import RewardModelling

    model = RewardModel(tiny_transformer(), pool=pool, sep=STOI["="])
    seq_c, seq_r = torch.randint(0, 10, (2, 4, 10))
    seq_c[:, 3] = seq_r[:, 3] = STOI["="]
    last_c, last_r = torch.tensor([7, 8, 9, 6]), torch.tensor([9, 9, 5, 6])
    module = RewardModelling(model, lr=1e-3, center=0.01)
    train_one_step(module, (seq_c, seq_r, last_c, last_r, torch.zeros(4, dtype=F64)))
    f64(model(seq_c, last_c))


def test_sft():
    from genlab.models.sft import CausalLM

    seq = torch.randint(0, 10, (4, 10))
    targets = torch.zeros(4, 9, dtype=F64)
    targets[:, 5:] = 1.0
    train_one_step(CausalLM(tiny_transformer(), lr=1e-3, weight_decay=0.0), (seq, targets))


def ppo_config(**changes):
    return OmegaConf.create({"kl_coef": 0.1, "adaptive_kl": True, "target_kl": 1.0, "horizon": 100,
                             "kl_estimator": "k3", "gamma": 1.0, "lam": 0.95, "whiten": True, "epochs": 1,
                             "minibatches": 2, "clip": 0.2, "value_clip": 0.2, "vf_coef": 0.1, "grad_clip": 1.0,
                             "lr": 1e-4, "eval_every": 1, **changes})


def test_ppo_with_evaluation_during_training():
    from genlab.evaluate.policy import evaluate, summary
    from genlab.models.ppo import PPO

    problems, width = rlhf_batch(), response_width(2)
    policy, ref = tiny_transformer(), tiny_transformer()
    ref.load_state_dict(policy.state_dict())
    reward_model = RewardModel(tiny_transformer())
    results = []

    def evaluator(net):
        results.append(evaluate(net, ref, reward_model, problems, width, 1.0, True, 0.2, seed=0))
        return summary(results[-1])

    module = PPO(policy, ref, reward_model, ppo_config(), width, temperature=1.0, evaluator=evaluator)
    train_one_step(module, (problems["prompts"], problems["prompt_len"]))
    assert module.ref.wte.weight.dtype == module.reward_model.head.linear.weight.dtype == F64
    assert len(module.curve) == 2 and len(module.history) == 1        # evaluated at step 0 and at the end
    f64({k: results[0][k] for k in ("proxy", "kl")})          # the gold reward is the task's (float32), not the model's
    assert torch.isfinite(results[0]["gold"]).all()


@pytest.mark.parametrize("kind", ["dpo", "ipo", "hinge"])
def test_direct_preference(kind):
    from genlab.models.dpo import DirectPreference, sequence_logprob
    from genlab.rl.rollout import join, response_mask

    problems, width = rlhf_batch(), response_width(2)
    policy, ref = tiny_transformer().double(), tiny_transformer().double()
    responses = torch.randint(0, 10, (2, 4, width))
    seqs = [join(problems["prompts"], problems["prompt_len"], r) for r in responses]
    masks = [response_mask(r).double() for r in responses]
    with torch.no_grad():
        refs = [f64(sequence_logprob(ref, s, problems["prompt_len"], m, 1.0)) for s, m in zip(seqs, masks)]
    module = DirectPreference(policy, kind, beta=0.1, lr=1e-4, temperature=1.0)
    train_one_step(module, (seqs[0], seqs[1], problems["prompt_len"], masks[0], masks[1], *refs))
