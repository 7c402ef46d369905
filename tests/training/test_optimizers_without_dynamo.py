"""convtrain's optimizers are torch.optim's, minus the start-up import of torch._dynamo.

torch.optim wraps add_param_group, zero_grad, state_dict, load_state_dict and step so that
torch.compile skips them; the wrappers import torch._dynamo (1.1-1.5 s of CPU here) on their first
call. convtrain.training.optim calls the wrapped functions directly: the same numbers, the same
state_dict (last.pt files of either kind load into the other), and no torch._dynamo.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from convtrain.training import optim

from ..conftest import REPO

CASES = [
    (optim.Adam, torch.optim.Adam, {"lr": 1e-2, "betas": (0.7, 0.9), "fused": True}),
    (optim.Adam, torch.optim.Adam, {"lr": 1e-2}),
    (optim.AdamW, torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1, "fused": True}),
    (optim.SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}),
]


def _steps(model, opt, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        opt.zero_grad()
        model(torch.randn(8, 5, generator=g)).pow(2).sum().backward()
        opt.step()


@pytest.mark.parametrize("ours, theirs, kwargs", CASES)
def test_same_steps_and_interchangeable_state_as_torch_optim(ours, theirs, kwargs):
    """Breaks tried: step run without torch.no_grad (the in-place update of a leaf raises); zero_grad
    passing set_to_none=False; state_dict built from the param groups alone (no moments): each fails."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    oa, ob = ours(a.parameters(), **kwargs), theirs(b.parameters(), **kwargs)
    _steps(a, oa, 4, seed=1)
    _steps(b, ob, 4, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert all(p.grad is None for p in a.parameters()) is False  # step leaves the last gradients
    oa.zero_grad()
    assert all(p.grad is None for p in a.parameters())
    # each one's state continues in the other, bit for bit
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    oa2, ob2 = ours(a.parameters(), **kwargs), theirs(b.parameters(), **kwargs)
    oa2.load_state_dict(sb)
    ob2.load_state_dict(sa)
    _steps(a, oa2, 2, seed=2)
    _steps(b, ob2, 2, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_building_and_stepping_them_does_not_import_torch_dynamo():
    """Break tried: build_optimizer returning torch.optim.Adam again: torch._dynamo appears."""
    code = ("import sys, torch\nfrom convtrain.training import optim\n"
            "for cls in (optim.Adam, optim.AdamW, optim.SGD):\n"
            "    m = torch.nn.Linear(3, 2)\n    o = cls(m.parameters(), lr=0.1)\n"
            "    o.zero_grad(); m(torch.ones(1, 3)).sum().backward(); o.step(); o.load_state_dict(o.state_dict())\n"
            "from convtrain.config.load import load_config\nfrom convtrain.training.optim import build_optimizer\n"
            "build_optimizer(torch.nn.Linear(3, 2), load_config(None, []), torch.device('cpu'))\n"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
