"""ODE flows shared by the CNF and flow matching: samplers, divergence, exact log-likelihood.

Convention (as in flow matching): t = 0 is the N(0, I) base, t = 1 the data, and a field
``field(x [B, …], t [B]) → [B, …]`` moves noise to data. Samplers integrate 0 → 1;
the log-likelihood integrates 1 → 0 with the instantaneous change of variables
(Chen et al. 2018, Thm 1):  d log p_t(x(t)) / dt = −tr(∂v/∂x).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from genlab.errors import GenlabError

SAMPLERS = ("euler", "midpoint", "dopri5")
DIVERGED = ("underflow in dt", "non-finite values in state")   # torchdiffeq's assertions when a solve blows up


def solve(solver: Callable, func: Callable, y0: torch.Tensor, times: torch.Tensor, **kwargs) -> torch.Tensor:
    """``solver(func, y0, times, **kwargs)`` (``odeint`` or ``odeint_adjoint``), with a diverging solve —
    the adaptive step shrinking to nothing, or the state leaving the floats — as one line with advice."""
    try:
        return solver(func, y0, times, **kwargs)
    except AssertionError as e:
        reason = str(e).split(":")[0]
        if not reason.startswith(DIVERGED):
            raise
        raise GenlabError(f"the ODE solve diverged (torchdiffeq: {reason[:60]})",
                          "loosen rtol/atol, lower the learning rate, or sample with a fixed-step solver "
                          "(euler/midpoint)") from None


class NFE:
    """Counts forward calls of ``module`` while active: ``with NFE(net) as nfe: …`` then ``nfe.n``."""

    def __init__(self, module: nn.Module):
        self.module, self.n = module, 0

    def __enter__(self) -> "NFE":
        self.handle = self.module.register_forward_pre_hook(lambda *_: setattr(self, "n", self.n + 1))
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def rademacher(like: torch.Tensor) -> torch.Tensor:
    """±1 with probability ½ each, shaped like ``like``."""
    return torch.randint(0, 2, like.shape, dtype=like.dtype, device=like.device) * 2 - 1


def divergence(v: torch.Tensor, x: torch.Tensor, noise: torch.Tensor | None, create_graph: bool) -> torch.Tensor:
    """tr(∂v/∂x) per sample ``[B]`` for v, x ``[B, D]``.

    ``noise=None``: exact, one vector-Jacobian product per dimension. Otherwise Hutchinson's
    unbiased estimator E_ε[εᵀ(∂v/∂x)ε] with Rademacher ε (Hutchinson 1989; FFJORD eq. 7), one VJP.
    """
    if noise is not None:
        (e_jac,) = torch.autograd.grad(v, x, noise, create_graph=create_graph)
        return (e_jac * noise).flatten(1).sum(1)
    return sum(torch.autograd.grad(v[:, i].sum(), x, create_graph=create_graph, retain_graph=True)[0][:, i]
               for i in range(x.shape[1]))


class Augmented(nn.Module):
    """Dynamics of the state ``[x, a]`` ``[B, D+1]``: dx/dt = v(x, t), da/dt = tr(∂v/∂x).

    ``noise`` (Hutchinson) is drawn once per solve and kept for every evaluation — resampling it
    per evaluation makes the dynamics random and dopri5's step count explode (torchdiffeq #120).
    """

    def __init__(self, field: nn.Module, noise: torch.Tensor | None):
        super().__init__()
        self.field, self.noise = field, noise

    def forward(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        create_graph = torch.is_grad_enabled()   # training (direct or adjoint backward) needs d(div)/dθ
        with torch.enable_grad():
            if not state.requires_grad:
                state = state.detach().requires_grad_(True)
            x = state[:, :-1]
            v = self.field(x, t.expand(len(x)))
            div = divergence(v, x, self.noise, create_graph)
        if not create_graph:
            v, div = v.detach(), div.detach()
        return torch.cat([v, div[:, None]], dim=1)


def standard_normal_logpdf(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over all but the batch dimension → ``[B]``."""
    z = z.flatten(1)
    return -0.5 * (z.pow(2).sum(1) + z.shape[1] * math.log(2 * math.pi))


def log_likelihood(field: nn.Module, x: torch.Tensor, exact: bool = True, rtol: float = 1e-5, atol: float = 1e-5,
                   adjoint: bool = False) -> torch.Tensor:
    """log p_1(x) ``[B]`` of data x ``[B, D]`` under the flow of ``field`` from N(0, I) at t = 0.

    Solves [x, a] from t = 1 (a = 0) back to t = 0 with dopri5; then
    log p_1(x) = log N(x(0)) + a(0), since a(0) = −∫₀¹ tr(∂v/∂x) dt.
    ``exact=False`` uses Hutchinson's estimator (an unbiased estimate of log p).
    ``adjoint=True`` backpropagates by solving the adjoint ODE (O(1) memory) instead of through the solver.
    """
    dynamics = Augmented(field, None if exact else rademacher(x))
    state = torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)
    times = torch.tensor([1.0, 0.0], dtype=x.dtype, device=x.device)
    end = solve(odeint_adjoint if adjoint else odeint, dynamics, state, times, rtol=rtol, atol=atol,
                method="dopri5")[-1]
    return standard_normal_logpdf(end[:, :-1]) + end[:, -1]


def sample(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor, sampler: str = "euler",
           nfe: int = 10, rtol: float = 1e-5, atol: float = 1e-5, n_save: int = 2) -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t [B]) from x0 at t = 0 to t = 1; the path at ``n_save`` times ``[n_save, B, …]``.

    ``euler``: ``nfe`` steps, one evaluation each. ``midpoint``: ``nfe / 2`` steps, two each (``nfe`` even).
    ``dopri5``: adaptive steps to ``rtol``/``atol`` (``nfe`` ignored; count it with ``NFE``).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; use one of {SAMPLERS}")
    options = {}
    if sampler != "dopri5":
        steps = nfe if sampler == "euler" else nfe // 2
        if steps < 1 or (sampler == "midpoint" and nfe % 2):
            raise ValueError(f"{sampler} needs nfe ≥ {1 if sampler == 'euler' else 2}"
                             f"{' and even' if sampler == 'midpoint' else ''} (got {nfe})")
        options["grid_constructor"] = lambda f, y0, t: torch.linspace(0.0, 1.0, steps + 1, dtype=y0.dtype,
                                                                    device=y0.device)

    def func(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return velocity(x, t.expand(len(x)))

    times = torch.linspace(0.0, 1.0, n_save, dtype=x0.dtype, device=x0.device)
    with torch.no_grad():
        return solve(odeint, func, x0, times, rtol=rtol, atol=atol, method=sampler, options=options)
