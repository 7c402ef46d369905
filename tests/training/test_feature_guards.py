"""Tests that fail when a second-wave feature breaks in a way the older tests did not see: BatchNorm
buffers under EMA and averaging, the stopping rules at their thresholds, every field of the --seeds
summary, out-of-range numbers in a saved training state, the pages never putting text into the DOM
as HTML, and the training order changing from epoch to epoch.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from convtrain.artifacts import checkpoint
from convtrain.artifacts.average import average_checkpoints
from convtrain.artifacts.metrics import MetricsRow
from convtrain.errors import CheckpointError
from convtrain.models import create_model
from convtrain.training.hooks.ema import WeightEMA
from convtrain.training.seeds import summarize
from convtrain.training.hooks.stopping import EarlyStopping, Target

from ..conftest import REPO
from .test_loop_features import _tiny_checkpoint, core_state


def _bn_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("bn_cnn", num_classes=10, width=4, hidden=8)


def _train_steps(model: torch.nn.Module, steps: int, seed: int) -> None:
    """Forward passes in train mode: they move BatchNorm's running statistics and its counter."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        x = torch.randn(8, 1, 28, 28, generator=g) * 2 + 1
        loss = model(x).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


# --------------------------------------------------------------------------------------------
# BatchNorm buffers

def test_ema_copies_batchnorm_buffers_and_averages_only_weights():
    model = _bn_model(0)
    ema = WeightEMA(decay=0.5, every=1)
    ema.attach(model)
    before = {n: p.detach().clone() for n, p in ema.model.named_parameters()}
    _train_steps(model, 3, seed=1)
    ema.on_update()
    live_b, ema_b = dict(model.named_buffers()), dict(ema.model.named_buffers())
    assert any("running_mean" in n for n in live_b)
    for name, b in live_b.items():  # copied as they are: running stats and the integer counter
        assert torch.equal(ema_b[name], b), name
    assert int(ema_b[next(n for n in live_b if n.endswith("num_batches_tracked"))]) == 3
    for name, p in model.named_parameters():  # weights: decay * old + (1 - decay) * new
        assert torch.allclose(dict(ema.model.named_parameters())[name], 0.5 * before[name] + 0.5 * p.detach(),
                              atol=1e-6), name


@pytest.mark.slow
def test_average_of_batchnorm_checkpoints_averages_statistics_and_keeps_the_counter(tmp_path):
    paths = []
    for seed, steps in ((0, 2), (1, 5)):
        model = _bn_model(seed)
        _train_steps(model, steps, seed)
        p = _tiny_checkpoint(tmp_path / f"{seed}.pt", "bn_cnn")
        ck = checkpoint.load(p)
        ck["model"]["kwargs"] = {"width": 4, "hidden": 8}
        ck["model"]["state_dict"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        checkpoint.save(ck, p)
        paths.append(p)
    average_checkpoints(paths, tmp_path / "avg.pt")
    a, b = (checkpoint.load(p)["model"]["state_dict"] for p in paths)
    out = checkpoint.load(tmp_path / "avg.pt")["model"]["state_dict"]
    stats = [k for k in out if k.endswith(("running_mean", "running_var"))]
    counters = [k for k in out if k.endswith("num_batches_tracked")]
    assert stats and counters
    for k in stats:
        assert torch.allclose(out[k], (a[k].double() + b[k].double()).div(2).float(), atol=1e-6), k
        assert not torch.equal(a[k], b[k])  # the two really differ: a copy of either would fail
    for k in counters:
        assert out[k].dtype == torch.int64 and int(out[k]) == int(a[k]) == 2 and int(b[k]) == 5


# --------------------------------------------------------------------------------------------
# Stopping rules at, just below and just above their thresholds (exact binary fractions)

def _row(epoch: int, val_acc: float = 0.5, val_loss: float = 1.0) -> MetricsRow:
    return MetricsRow(epoch=epoch, train_loss=1.0, train_acc=0.5, val_loss=val_loss, val_acc=val_acc, lr=0.1,
                      seconds=1.0)


EPS = 2.0 ** -20


@pytest.mark.parametrize("metric,second,improves", [
    ("val_acc", 0.75, False), ("val_acc", 0.75 + EPS, True), ("val_acc", 0.75 - EPS, False),
    ("val_loss", 0.25, False), ("val_loss", 0.25 - EPS, True), ("val_loss", 0.25 + EPS, False),
])
def test_early_stopping_min_delta_boundary(metric, second, improves):
    """best 0.5, min_delta 0.25: an improvement must beat 0.75 (acc) / go under 0.25 (loss); equal is not one."""
    rule = EarlyStopping(metric, patience=1, min_delta=0.25)
    rule.observe(_row(1, **{metric: 0.5}))
    rule.observe(_row(2, **{metric: second}))
    assert (rule.best == second) is improves
    assert rule.reason() == (None if improves else "early_stopping")


@pytest.mark.parametrize("metric,value,reached", [
    ("val_acc", 0.75, True), ("val_acc", 0.75 - EPS, False), ("val_acc", 0.75 + EPS, True),
    ("val_loss", 0.25, True), ("val_loss", 0.25 + EPS, False), ("val_loss", 0.25 - EPS, True),
])
def test_stop_at_boundary(metric, value, reached):
    target = Target(val_acc=0.75 if metric == "val_acc" else None, val_loss=0.25 if metric == "val_loss" else None)
    target.observe(_row(3, **{metric: value}), seconds=7.0)
    assert target.reason() == ("stop_at" if reached else None)
    assert (target.epoch, target.seconds) == ((3, 7.0) if reached else (None, None))


# --------------------------------------------------------------------------------------------
# The --seeds summary, every field

def _seed_run(root: Path, seed: int, test_acc: float, seconds: float, val_accs: list[float], best: int) -> None:
    run = root / f"seed-{seed}"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"seed: {seed}\n")
    lines = ["epoch,train_loss,train_acc,val_loss,val_acc,test_acc,lr,seconds"]
    lines += [f"{i + 1},1.0,0.5,1.0,{v},,0.1,1.0" for i, v in enumerate(val_accs)]
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    (run / "results.json").write_text(json.dumps({"status": "finished", "test_accuracy": test_acc, "best_epoch": best,
                                                  "train_seconds": seconds, "classes": ["0", "1"],
                                                  "split_seed": 0, "test_fingerprint": f"fp{seed}"}))


def test_seeds_summary_fields(tmp_path):
    _seed_run(tmp_path, 3, 0.5, 10.0, [0.25, 0.5], best=2)
    _seed_run(tmp_path, 7, 0.75, 14.0, [0.5, 0.25, 0.75], best=3)
    s = summarize(tmp_path, [3, 7])
    assert s["seeds"] == [3, 7] and "ddof=1" in s["std"]
    std = math.sqrt(((0.5 - 0.625) ** 2 + (0.75 - 0.625) ** 2) / 1)
    assert s["test_accuracy"] == pytest.approx({"mean": 0.625, "std": std, "min": 0.5, "max": 0.75, "n": 2})
    assert s["train_seconds"] == pytest.approx({"mean": 12.0, "std": math.sqrt(8.0), "min": 10.0, "max": 14.0, "n": 2})
    per = {e["epoch"]: e for e in s["val_acc_per_epoch"]}
    assert per[1] == pytest.approx({"epoch": 1, "mean": 0.375, "std": math.sqrt(2 * 0.125 ** 2), "min": 0.25,
                                    "max": 0.5, "n": 2})
    assert per[3] == {"epoch": 3, "mean": 0.75, "std": None, "min": 0.75, "max": 0.75, "n": 1}
    assert s["runs"] == [
        {"seed": 3, "run_dir": str(tmp_path / "seed-3"), "test_accuracy": 0.5, "split_seed": 0,
         "test_fingerprint": "fp3", "best_epoch": 2, "train_seconds": 10.0, "epochs": 2, "val_acc": [0.25, 0.5]},
        {"seed": 7, "run_dir": str(tmp_path / "seed-7"), "test_accuracy": 0.75, "split_seed": 0,
         "test_fingerprint": "fp7", "best_epoch": 3, "train_seconds": 14.0, "epochs": 3, "val_acc": [0.5, 0.25, 0.75]}]


# --------------------------------------------------------------------------------------------
# Saved training state: out-of-range numbers (not only wrong types)

GOOD_STOPS = {"seconds": 1.5, "early_best": 0.9, "early_bad_epochs": 1, "target_epoch": 2, "target_seconds": 1.0}


@pytest.mark.parametrize("ts,key", [
    ({"ema": {"state_dict": {}, "steps": -1}}, "training_state.ema.steps"),
    ({"stops": {**GOOD_STOPS, "seconds": -0.5}}, "training_state.stops.seconds"),
    ({"stops": {**GOOD_STOPS, "seconds": math.inf}}, "training_state.stops.seconds"),
    ({"stops": {**GOOD_STOPS, "early_best": math.nan}}, "training_state.stops.early_best"),
    ({"stops": {**GOOD_STOPS, "early_bad_epochs": -1}}, "training_state.stops.early_bad_epochs"),
    ({"stops": {**GOOD_STOPS, "target_epoch": 0}}, "training_state.stops.target_epoch"),
    ({"stops": {**GOOD_STOPS, "target_seconds": -1.0}}, "training_state.stops.target_seconds"),
    ({"kept": [[0.9, 0]]}, "training_state.kept"),
    ({"kept": [[math.nan, 2]]}, "training_state.kept"),
    ({"kept": [[1.5, 2]]}, "training_state.kept"),
    ({"kept": [[-0.1, 2]]}, "training_state.kept"),
])
def test_training_state_out_of_range_numbers_are_refused(tmp_path, ts, key):
    p = _tiny_checkpoint(tmp_path / "bad.pt", training_state={**core_state(), **ts})
    with pytest.raises(CheckpointError, match=re.escape(key)):
        checkpoint.load(p)


def test_training_state_at_its_bounds_is_accepted(tmp_path):
    ts = {"ema": {"state_dict": {}, "steps": 0}, "kept": [[0.0, 1], [1.0, 2]],
          "stops": {"seconds": 0.0, "early_best": -3.0, "early_bad_epochs": 0, "target_epoch": 1, "target_seconds": 0.0}}
    assert checkpoint.load(_tiny_checkpoint(tmp_path / "ok.pt", training_state={**core_state(), **ts}))["training_state"]["kept"] == \
        [[0.0, 1], [1.0, 2]]


# --------------------------------------------------------------------------------------------
# The pages: user text (class names, run names, folder names, error texts) only ever as text

HTML_SINKS = re.compile(r"\.(innerHTML|outerHTML)\s*[+]?=|insertAdjacentHTML|document\.write|createContextualFragment"
                        r"|DOMParser|\.html\s*\(|srcdoc|setHTMLUnsafe")


def _scripts() -> dict[str, str]:
    static = REPO / "convtrain" / "serve" / "static"
    found = {p.name: p.read_text() for p in static.glob("*.js")}
    for page in static.glob("*.html"):  # inline scripts and on* attributes count too
        found.update({f"{page.name} <script>": s for s in re.findall(r"<script[^>]*>(.*?)</script>", page.read_text(),
                                                                      re.S)})
    return found


def test_shipped_javascript_never_puts_strings_into_the_dom_as_html():
    scripts = _scripts()
    assert {"app.js", "runs.js"} <= set(scripts)
    bad = {name: sorted(set(m.group(0) for m in HTML_SINKS.finditer(text))) for name, text in scripts.items()}
    assert not {k: v for k, v in bad.items() if v}, bad
    assert all("textContent" in scripts[n] for n in ("app.js", "runs.js"))  # how they do show text


def test_the_html_sink_pattern_catches_the_usual_mistakes():
    for line in ("el.innerHTML = name", "el.innerHTML += x", "el.outerHTML=x", "el.insertAdjacentHTML('beforeend', x)",
                 "document.write(x)", "$(el).html(x)"):
        assert HTML_SINKS.search(line), line
    assert not HTML_SINKS.search("el.textContent = name")


# --------------------------------------------------------------------------------------------
# Data order: the training permutation changes with the epoch, and is the same for the same epoch

@pytest.mark.parametrize("loader", ["tensor", "dataloader"])
def test_training_order_changes_from_epoch_to_epoch_and_repeats_for_the_same_epoch(loader):
    from convtrain.data.batches import make_batches
    from convtrain.data.types import DataBundle, Split

    n = 64
    split = Split(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous(),
                  torch.arange(n) % 10)
    bundle = DataBundle(split, split, split, [str(i) for i in range(10)], [0.0], [1.0])
    batches = make_batches(split, bundle, loader, 16, torch.device("cpu"), shuffle=True, seed=5, workers=0)
    orders = []
    for epoch in (1, 2, 1):
        batches.set_epoch(epoch)
        orders.append(torch.cat([x[:, 0, 0, 0] for x, _ in batches]).mul(255).round().long().tolist())
    assert sorted(orders[0]) == list(range(n))
    assert orders[0] != orders[1] and orders[0] == orders[2]


def test_a_real_run_trains_each_epoch_in_another_order(data_root, tmp_path, monkeypatch):
    """Through `convtrain train`: the loop must tell the batches which epoch it is (a loop that never
    calls set_epoch, or a sampler that ignores it, trains every epoch in the same order)."""
    from typer.testing import CliRunner

    from convtrain.cli.app import app
    from convtrain.data import batches as batches_mod

    seen = []
    real = batches_mod.shard_indices

    def recording(n, shuffle, seed, epoch, rank, world_size, balance=None):
        out = real(n, shuffle, seed, epoch, rank, world_size, balance)
        if shuffle:
            seen.append(out.tolist())
        return out

    monkeypatch.setattr(batches_mod, "shard_indices", recording)
    r = CliRunner().invoke(app, ["train", "-c", "configs/smoke.yaml", "--set", "data.train_subset=96", "--set",
                                 "data.val_size=32", "--set", "data.test_subset=32", "--set", "train.epochs=2",
                                 "--set", "model.name=lenet5", "--set", "log.plots=false", "--device", "cpu",
                                 "--run-dir", str(tmp_path / "run")])
    assert r.exit_code == 0, r.stderr
    assert len(seen) == 2 and sorted(seen[0]) == sorted(seen[1]) and seen[0] != seen[1]
