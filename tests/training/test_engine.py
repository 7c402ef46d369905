from __future__ import annotations

import pytest
import torch
from torch import nn

from convtrain.training import engine


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


def _deferred(model, check_every, n_batches=6, nonfinite="stop", should_stop=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return engine.train_one_epoch(model, _batches(model, n_batches), n_batches, opt, None, epoch=2,
                                  device=torch.device("cpu"), nonfinite=nonfinite, check_every=check_every,
                                  should_stop=should_stop)


@pytest.mark.parametrize("check_every", [2, 4, 10])
def test_deferred_check_names_the_first_bad_step(check_every):
    # the GPU path (flags read every train.log_every steps), exercised on the CPU: NaN first at step 3
    with pytest.raises(engine.NonFiniteLoss) as info:
        _deferred(_Poisoned(bad_label=2), check_every)
    assert (info.value.epoch, info.value.step) == (2, 3)
    assert info.value.value != info.value.value  # the NaN itself, not a later loss or a placeholder


def test_deferred_check_reads_at_the_interval_not_only_at_the_end():
    steps = []
    model = _Poisoned(bad_label=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(engine.NonFiniteLoss):
        engine.train_one_epoch(model, _batches(model, 12), 12, opt, None, epoch=1, device=torch.device("cpu"),
                               check_every=4, on_step=lambda step, loss: steps.append(step))
    assert steps == [1, 2, 3, 4]  # NaN at step 3, read after step 4: the run stopped there


def test_deferred_check_skip_is_exact():
    # skip keeps the per-step read: the count is exact and no NaN batch reaches the weights
    model = _Poisoned(bad_label=2)
    out = _deferred(model, 10, nonfinite="skip")
    assert out.state.skipped == 2 and out.state.step == 6 and out.state.samples == 32
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_deferred_check_leaves_a_finite_epoch_unchanged():
    # same weights and sums with the flags read every step or every 4 steps
    results = []
    for every in (1, 4):
        torch.manual_seed(0)
        model = _Poisoned(bad_label=99)
        out = _deferred(model, every)
        results.append((out.loss, out.acc, [p.detach().clone() for p in model.parameters()]))
    assert results[0][:2] == results[1][:2]
    assert all(torch.equal(a, b) for a, b in zip(results[0][2], results[1][2]))


def test_deferred_stop_request_is_read_at_the_interval():
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) == 2

    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = ((torch.randn(8, 4), torch.zeros(8, dtype=torch.long)) for _ in range(12))
    out = engine.train_one_epoch(model, batches, 12, opt, None, epoch=1, device=torch.device("cpu"),
                                 should_stop=should_stop, check_every=4)
    assert out.stopped and out.state.step == 4 and out.state.samples == 32  # asked at steps 0 and 4


def test_check_interval_is_one_off_cuda():
    assert engine.check_interval(torch.device("cpu"), 100) == 1
    assert engine.check_interval(torch.device("cuda"), 100) == 100  # a device object; no GPU is used


def _deferred_rank(rank: int, world: int, port: int, out: str) -> None:
    """One of two gloo processes: only rank 1's loss turns NaN (at its step 3); both read every 4 steps."""
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = _Poisoned(bad_label=2 if rank == 1 else 99)
        try:
            _deferred(model, check_every=4, n_batches=8)
            got = None
        except engine.NonFiniteLoss as exc:
            got = [exc.epoch, exc.step, str(exc.value)]
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump(got, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_deferred_check_names_the_bad_step_on_every_rank(tmp_path):
    # under DDP a rank whose own losses were finite used to stop with "step 0"
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_deferred_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [2, 3, "nan"], rank
