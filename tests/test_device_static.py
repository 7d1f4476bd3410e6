"""Static device check of the code that runs on a GPU (models, rl, evaluate, nn): every tensor made from
nothing names its device, and every ``.numpy()`` comes after ``.cpu()``.

A factory call without ``device=`` (``torch.zeros(n)``, ``torch.randn(shape, generator=g)``, …) makes a CPU
tensor, which meets the model's CUDA tensors in the next operation and fails there — or silently runs on the
CPU. The fix is ``device=`` (and ``dtype=`` where it matters) taken from an input tensor, a ``*_like``
function, or ``genlab.nn.rng`` for draws from a seeded generator. Allowed without ``device=``:

* arguments of ``register_buffer`` and ``nn.Parameter`` (they follow the module's ``.to()``);
* lines marked ``# device: cpu-only`` (on the call, or on a comment line right above it) — deliberate
  CPU glue, such as Python values summarised on the CPU or schedules built once and kept as buffers.

``tensor.numpy()`` fails on a CUDA tensor; ``.cpu()`` first (``.detach().cpu().numpy()``, as torchcfm does).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "rl", "evaluate", "nn")
FACTORIES = {"zeros", "ones", "empty", "full", "arange", "range", "linspace", "logspace", "eye", "tensor",
             "as_tensor", "rand", "randn", "randint", "randperm", "empty_strided", "scalar_tensor",
             "tril_indices", "triu_indices", "Tensor", "FloatTensor", "DoubleTensor", "LongTensor", "BoolTensor"}
FOLLOW_MODULE = {"register_buffer", "Parameter"}
MARKER = "# device: cpu-only"


def _factory_name(call: ast.Call, torch_names: set[str]) -> str | None:
    """``zeros`` for ``torch.zeros(…)`` (or ``zeros(…)`` imported from torch), else None."""
    f = call.func
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "torch" and f.attr in FACTORIES:
        return f.attr
    if isinstance(f, ast.Name) and f.id in torch_names:
        return f.id
    return None


def _marked(lines: list[str], node: ast.AST) -> bool:
    """The marker on one of the node's lines, or on a comment-only line directly above it."""
    spanned = lines[node.lineno - 1: node.end_lineno]
    above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
    return any(MARKER in line for line in spanned) or (above.startswith("#") and MARKER in above)


def _moved_to_cpu(receiver: ast.AST) -> bool:
    """A method chain with ``.cpu()`` in it: ``x.detach().cpu().numpy()``, ``x.cpu().double().numpy()``."""
    while isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Attribute):
        if receiver.func.attr == "cpu":
            return True
        receiver = receiver.func.value
    return False


def check_source(source: str, name: str = "<string>") -> list[str]:
    """Problems in ``source``: one line each, ``name:line: what — fix``."""
    tree, lines = ast.parse(source), source.splitlines()
    torch_names = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and node.module == "torch" for a in node.names if a.name in FACTORIES}
    follow = set()                                  # factory calls passed straight to register_buffer / Parameter
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            callee = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if callee in FOLLOW_MODULE:
                follow.update(id(a) for a in [*node.args, *(k.value for k in node.keywords)])
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        factory = _factory_name(node, torch_names)
        if factory is not None and id(node) not in follow and not _marked(lines, node) \
                and not any(k.arg == "device" for k in node.keywords):
            problems.append((node.lineno, f"torch.{factory}(…) without device= — fix: pass device= (and dtype= if "
                             f"it matters) from an input tensor, use a *_like function or genlab.nn.rng, or mark "
                             f"deliberate CPU glue with '{MARKER} (why)'"))
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "numpy" and not node.args and not _marked(lines, node):
            if not _moved_to_cpu(f.value):
                problems.append((node.lineno, f".numpy() on a tensor that may be on a GPU — fix: "
                                 f".detach().cpu().numpy(), or mark it '{MARKER} (why)'"))
    return [f"{name}:{line}: {what}" for line, what in sorted(problems)]


def sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / "src" / "genlab" / pkg).rglob("*.py"))


def test_gpu_code_creates_tensors_on_the_inputs_device_and_leaves_it_through_cpu():
    problems = [p for path in sources()
                for p in check_source(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert not problems, "tensors created without a device:\n" + "\n".join(problems)


@pytest.mark.parametrize("code, flagged", [
    ("import torch\nx = torch.zeros(3)", True),
    ("import torch\nx = torch.randn(4, generator=g).to(y.device)", True),
    ("from torch import arange\nx = arange(5)", True),
    ("import torch\nx = torch.zeros(3, device=y.device)", False),
    ("import torch\nx = torch.zeros_like(y)", False),
    ("import torch\nx = torch.zeros(3)   # device: cpu-only (a summary)", False),
    ("import torch\n# device: cpu-only (a summary)\nx = torch.tensor(\n    [1.0, 2.0])", False),
    ("import torch\nx = 1\nx = torch.tensor(\n    [1.0, 2.0])", True),
    ("import torch\nself.register_buffer('s', torch.ones(()))", False),
    ("import torch\nw = nn.Parameter(torch.zeros(3, 4))", False),
    ("cost.numpy()", True),
    ("cost.detach().numpy()", True),
    ("cost.detach().cpu().numpy()", False),
    ("cost.cpu().double().numpy()", False),
    ("cost.double().numpy()", True),
])
def test_the_check_flags_what_it_should(code, flagged):
    problems = check_source(code, "snippet.py")
    assert bool(problems) == flagged, problems
    if flagged:
        assert problems[0].startswith("snippet.py:") and "fix:" in problems[0]
