"""CNF mathematics (divergence estimators, exact likelihood of a linear flow, logit dequantization) and the stage."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genlab.evaluate.ode import NFE, divergence, log_likelihood, rademacher
from genlab.models.cnf import CNF, LogitDequantize
from genlab.nn.vector_field import VectorField


class Linear(nn.Module):
    """v(x, t) = A x (time-independent): the flow is x(1) = e^A x(0), so p_1 = N(0, e^A e^Aᵀ)."""

    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.a = nn.Parameter(a.clone())

    def forward(self, x, t):
        return x @ self.a.T


def test_exact_divergence_is_the_trace_of_the_jacobian():
    torch.manual_seed(0)
    field = VectorField(3, width=16, depth=2, activation="tanh")
    x = torch.randn(5, 3, requires_grad=True)
    div = divergence(field(x, torch.full((5,), 0.3)), x, None, create_graph=False)
    for i in range(5):
        jac = torch.autograd.functional.jacobian(lambda z: field(z[None], torch.tensor([0.3]))[0], x[i].detach())
        assert div[i].item() == pytest.approx(torch.trace(jac).item(), abs=1e-5)


def test_hutchinson_is_unbiased_for_a_random_jacobian():
    """Mean of εᵀJε over many Rademacher probes → tr(J), within 4 standard errors (and not its 0 at ε = 0)."""
    torch.manual_seed(1)
    d, probes = 8, 20000
    a = torch.randn(d, d)
    x = torch.randn(1, d).expand(probes, d).clone().requires_grad_(True)
    estimates = divergence(x @ a.T, x, rademacher(x), create_graph=False)
    assert set(rademacher(x).unique().tolist()) == {-1.0, 1.0}
    se = estimates.std() / math.sqrt(probes)
    assert abs(estimates.mean() - torch.trace(a)) < 4 * se
    assert estimates.std() > 0.5   # it is an estimate, not the exact trace in disguise


def test_linear_flow_likelihood_matches_closed_form_gaussian():
    torch.manual_seed(2)
    a = 0.5 * torch.randn(2, 2)
    x = 2 * torch.randn(64, 2)
    expm = torch.linalg.matrix_exp(a)
    closed = torch.distributions.MultivariateNormal(torch.zeros(2), expm @ expm.T).log_prob(x)
    with torch.no_grad():
        exact = log_likelihood(Linear(a), x, exact=True, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(exact, closed, rtol=1e-4, atol=1e-4)
    # Hutchinson (one probe per row, fixed through the solve): unbiased for log p
    rows = x[:1].expand(4000, 2)
    with torch.no_grad():
        hutch = log_likelihood(Linear(a), rows, exact=False, rtol=1e-6, atol=1e-6)
    assert abs(hutch.mean() - closed[0]) < 4 * hutch.std() / math.sqrt(len(rows))


def test_adjoint_and_direct_backprop_give_the_same_gradient_and_count_nfe():
    torch.manual_seed(3)
    x = torch.randn(32, 2)
    grads, backward_nfe = [], []
    for adjoint in (False, True):
        torch.manual_seed(4)
        module = CNF(VectorField(2, 8, 2, "tanh"), 1e-3, 0.0, 1e-6, 1e-6, adjoint, exact_trace=True)
        loss = -module.log_prob(x).mean()
        module.on_before_backward(loss)
        loss.backward()
        module.on_after_backward()
        grads.append(torch.cat([p.grad.flatten() for p in module.field.parameters()]))
        backward_nfe.append(module.nfe_backward[-1])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-4)
    assert backward_nfe[0] == 0 and backward_nfe[1] > 0   # direct: re-uses the graph; adjoint: solves again


def test_logit_dequantization_jacobian_and_inverse():
    deq = LogitDequantize(levels=17, alpha=0.05)
    y = torch.tensor([[0.3, 8.0, 16.7]], requires_grad=True)
    z, log_jac = deq.logit(y)
    dz = torch.autograd.grad(z.sum(), y)[0]   # diagonal Jacobian
    assert log_jac.item() == pytest.approx(dz.log().sum().item(), rel=1e-5)
    torch.testing.assert_close(deq.inverse(z.detach()), y.detach() / 17)
    k = torch.randint(0, 17, (100, 64), dtype=torch.uint8)
    pixels = deq.inverse(deq(k)[0]) * 17
    assert ((pixels - k.float() >= 0) & (pixels - k.float() < 1 + 1e-4)).all()   # y = k + u, u ∈ [0, 1)


def test_nfe_counter_counts_forward_calls():
    net = VectorField(2, 4, 1)
    with NFE(net) as nfe:
        for _ in range(3):
            net(torch.zeros(1, 2), torch.zeros(1))
    net(torch.zeros(1, 2), torch.zeros(1))
    assert nfe.n == 3


def test_cnf_stage_smoke(make_cfg, prepared, tmp_path):
    from genlab.io import load_model, read_json
    from genlab.stages import cnf

    cfg = make_cfg(tmp_path, f"paths.data={prepared / 'data'}")
    cnf.run(cfg)
    metrics = read_json(tmp_path / "reports" / "metrics" / "cnf.json")
    toy, digits = metrics["cnf_toy"], metrics["digits"]
    assert toy["dataset"] == cfg.model.cnf.dataset and toy["steps"] == cfg.model.cnf.toy.steps
    assert all(math.isfinite(toy[k]) and toy[k] > 0 for k in ("test_nll", "sec_per_iter", "nfe", "train_seconds"))
    assert 0 < digits["test_bpd"] < 20 and digits["divergence"] == "hutchinson"
    load_model(tmp_path / "models" / "cnf" / "toy.pt", expect_config=cnf.model_config(cfg, "toy"))
    figures = {p.name for p in (tmp_path / "reports" / "figures" / "cnf").iterdir()}
    assert {"toy_density.png", "toy_trajectories.png", "digits_samples.png"} <= figures
    assert (tmp_path / "reports" / "plots" / "cnf" / "toy_nll.csv").read_text().startswith("step,seconds")
