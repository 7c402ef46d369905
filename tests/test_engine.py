from __future__ import annotations

import pytest
import torch
from torch import nn

from convtrain import engine


class _Poisoned(nn.Module):
    """A linear model whose output turns NaN on the batches whose first label is ``bad_label``."""

    def __init__(self, bad_label: int) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.bad_label = bad_label
        self.labels = None

    def forward(self, x):
        out = self.lin(x)
        return out * float("nan") if self.labels is not None and int(self.labels[0]) == self.bad_label else out


def _batches(model, n_batches=6):
    gen = torch.Generator().manual_seed(0)
    for i in range(n_batches):
        y = torch.full((8,), i % 3)
        model.labels = y
        yield torch.randn(8, 4, generator=gen), y


def test_nonfinite_loss_stops_with_epoch_and_step():
    model = _Poisoned(bad_label=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(engine.NonFiniteLoss) as info:
        engine.train_one_epoch(model, _batches(model), 6, opt, None, epoch=4, device=torch.device("cpu"))
    assert (info.value.epoch, info.value.step) == (4, 3)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad batch never reached the weights


def test_nonfinite_loss_skip_policy():
    model = _Poisoned(bad_label=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = engine.train_one_epoch(model, _batches(model), 6, opt, None, epoch=1, device=torch.device("cpu"),
                                 nonfinite="skip")
    assert out.state.skipped == 2 and out.state.step == 6 and out.state.samples == 32
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_evaluate_counts_and_confusion():
    model = nn.Linear(4, 3)
    x = torch.randn(10, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    r = engine.evaluate(model, [(x[:6], y[:6]), (x[6:], y[6:])], 3, torch.device("cpu"))
    pred = model(x).argmax(1)
    assert r["num_samples"] == 10
    assert r["accuracy"] == pytest.approx(float((pred == y).float().mean()))
    assert sum(map(sum, r["confusion_matrix"])) == 10
    assert r["loss"] == pytest.approx(float(nn.functional.cross_entropy(model(x), y)), rel=1e-5)


def test_should_stop_ends_epoch_early_with_resumable_state():
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = iter([False, False, True])
    batches = ((torch.randn(8, 4), torch.zeros(8, dtype=torch.long)) for _ in range(6))
    out = engine.train_one_epoch(model, batches, 6, opt, None, epoch=1, device=torch.device("cpu"),
                                 should_stop=lambda: next(calls))
    assert out.stopped and out.state.step == 2 and out.state.samples == 16
