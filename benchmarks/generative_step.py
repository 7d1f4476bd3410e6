"""Cost of one training step of the CNF and of flow matching, and of sampling per network evaluation (NFE).

    python benchmarks/generative_step.py [key=value ...]      # config overrides, as for `genlab`

Prints wall and process-CPU milliseconds (median of ``REPEATS``) with the default CPU preset's sizes:
CNF steps (2D exact trace, 64-D Hutchinson; backprop through dopri5 vs adjoint) against flow-matching
steps on the same data, the MNIST U-Net step, and sampling cost per NFE (unguided vs guided, where a
guided evaluation batches the conditional and unconditional halves: one NFE, twice the rows).
A CNF step's cost grows with its NFE, which grows as training sharpens the density: this times the
untrained field, a lower bound (see ``nfe`` and ``sec_per_iter`` in reports/metrics/cnf.json).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from genlab.cli import compose
from genlab.evaluate.ode import NFE
from genlab.models import matchers
from genlab.models.cnf import CNF, LogitDequantize
from genlab.models.flow_matching import FlowMatching
from genlab.nn.unet import UNet
from genlab.nn.vector_field import VectorField
from genlab.runner import torch_threads

REPEATS = 5


def timed(fn) -> tuple[float, float]:
    """Median (wall ms, CPU ms) of ``fn()`` over REPEATS runs after one warm-up."""
    fn()
    walls, cpus = [], []
    for _ in range(REPEATS):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(1e3 * (time.perf_counter() - w))
        cpus.append(1e3 * (time.process_time() - c))
    return statistics.median(walls), statistics.median(cpus)


def step(module, batch) -> None:
    """One optimisation step (forward, backward, AdamW) outside Lightning."""
    opt = getattr(module, "_bench_opt", None) or torch.optim.AdamW(module.parameters(), 1e-4)
    module._bench_opt = opt
    loss = module.training_step(batch, 0)
    opt.zero_grad()
    loss.backward()
    opt.step()


def cnf_toy(c, adjoint: bool) -> tuple[CNF, tuple[torch.Tensor]]:
    """The 2D CNF (exact trace) of ``model.cnf`` ``c``, untrained, and a batch of its size."""
    module = CNF(VectorField(2, c.toy.width, c.toy.depth, c.toy.activation), 1e-4, 0.0, c.rtol, c.atol, adjoint,
                 exact_trace=True)
    module.log = lambda *a, **k: None
    return module, (torch.randn(c.toy.batch_size, 2) * 2,)


def report(name: str, wall: float, cpu: float, extra: str = "") -> None:
    print(f"{name:<46} {wall:9.1f} ms wall {cpu:9.1f} ms CPU  {torch.get_num_threads()} threads  {extra}")


def main(overrides: list[str]) -> None:
    cfg = compose(overrides)
    c, f = cfg.model.cnf, cfg.model.flow_matching
    torch.manual_seed(0)
    torch.set_num_threads(cfg.trainer.threads or torch.get_num_threads())
    print(f"torch threads: {torch.get_num_threads()} (2D/digits steps: their model.<stage>.<data>.threads)")
    for adjoint in (False, True):
        module, batch = cnf_toy(c, adjoint)
        with NFE(module.field) as nfe, torch_threads(c.toy.threads):
            wall, cpu = timed(lambda: step(module, batch))
            report(f"cnf toy step ({'adjoint' if adjoint else 'direct'}, B={c.toy.batch_size})", wall, cpu,
                   f"{nfe.n / (REPEATS + 1):.0f} NFE/step")
    digits = torch.randint(0, 17, (c.digits.batch_size, 64), dtype=torch.uint8)
    module = CNF(VectorField(64, c.digits.width, c.digits.depth, c.digits.activation), 1e-4, 0.0, c.rtol, c.atol,
                 c.adjoint, exact_trace=False, transform=LogitDequantize(17, c.logit_alpha))
    module.log = lambda *a, **k: None
    with NFE(module.field) as nfe, torch_threads(c.digits.threads):
        wall, cpu = timed(lambda: step(module, (digits,)))
        report(f"cnf digits step (Hutchinson, B={len(digits)})", wall, cpu, f"{nfe.n / (REPEATS + 1):.0f} NFE/step")

    toy = torch.randn(f.toy.batch_size, 2) * 2
    for coupling in f.couplings:
        module = FlowMatching(VectorField(2, f.toy.width, f.toy.depth, f.toy.activation),
                              matchers.build(coupling, f.sigma, f.sigma_min), 1e-4)
        module.log = lambda *a, **k: None
        with torch_threads(f.toy.threads):
            report(f"fm toy step ({coupling}, B={len(toy)})", *timed(lambda: step(module, (toy,))))

    m = f.mnist
    module = FlowMatching(UNet.from_config(m.unet, 10), matchers.IndependentCFM(), 1e-4, n_classes=10)
    module.log = lambda *a, **k: None
    images, labels = torch.randn(m.batch_size, 1, 28, 28), torch.randint(0, 10, (m.batch_size,))
    report(f"fm mnist step (U-Net {m.unet.channels}ch, B={m.batch_size})", *timed(lambda: step(module, (images, labels))))
    module.eval()
    x, t, y = torch.randn(m.n_samples, 1, 28, 28), torch.rand(m.n_samples), torch.arange(m.n_samples) % 10
    with torch.no_grad():
        for w in (0.0, *m.guidance_ws):
            wall, cpu = timed(lambda: module.velocity(x, t, y, w))
            report(f"fm mnist sampling, per NFE (N={m.n_samples}, w={w:g})", wall, cpu,
                   f"→ {m.nfe} NFE: {wall * m.nfe / 1e3:.1f} s wall")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="config overrides key=value, as for `genlab`")
    main(parser.parse_args().overrides)
