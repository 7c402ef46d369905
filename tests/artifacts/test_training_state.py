"""last.pt's training state (artifacts/training_state.py): every key --resume reads is checked once, so a
last.pt with a key removed or of the wrong type is refused by ``convtrain train --resume`` in one line
naming the key, with the documented exit code (CheckpointError: 1; a process count that does not match: 2),
no traceback, no crash file, and nothing on disk changed.

The table runs on the last.pt of one real tiny run. Breaks tried: validate_core's call left out of
training_state.validate (every case of a core key then ends in a KeyError/TypeError deep in the runner:
an uncaught exception and a crash file, the table fails); the per-rank length check removed (the
"epoch_state: two entries" case fails); restore() loading the optimizer without _load_part (the "another
optimizer's groups" case reaches the backstop). The training state written by the runner keeps the keys
and their order of every earlier version (the 52beffa fixture's), checked by the last test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from convtrain.artifacts.training_state import CORE, TrainingState

from ..conftest import REPO
from ..hostile.kit import changed_files, contract_problems, invoke, snapshot
from ..training.test_loop_features import TINY

MISSING = object()  # the key removed

# (what is changed, its path in training_state, the new value (MISSING: removed), the text the one line names,
# the exit code)
CASES = [
    *[(f"{key} removed", (key,), MISSING, f"'training_state.{key}' is missing", 1) for key in CORE],
    ("epoch a string", ("epoch",), "1", "'training_state.epoch' must be an integer >= 1", 1),
    ("epoch 0", ("epoch",), 0, "'training_state.epoch' must be an integer >= 1", 1),
    ("epoch_complete an integer", ("epoch_complete",), 1, "'training_state.epoch_complete' must be true or false", 1),
    ("epoch_state a mapping", ("epoch_state",), {}, "'training_state.epoch_state' must be a list", 1),
    ("epoch_state: two entries for one process", ("epoch_state",), "twice", "one entry per process (1)", 1),
    ("epoch_state[0] a list", ("epoch_state", 0), [], "'training_state.epoch_state[0]' must be a mapping", 1),
    ("epoch_state[0].step removed", ("epoch_state", 0, "step"), MISSING, "'training_state.epoch_state[0].step' is missing", 1),
    ("epoch_state[0].step negative", ("epoch_state", 0, "step"), -1, "'training_state.epoch_state[0].step' must be", 1),
    ("epoch_state[0].loss_sum NaN", ("epoch_state", 0, "loss_sum"), float("nan"), "epoch_state[0].loss_sum", 1),
    ("epoch_state[0] an unknown key", ("epoch_state", 0, "stepz"), 3, "unknown key 'stepz'", 1),
    ("rng a string", ("rng",), "x", "'training_state.rng' must be a list", 1),
    ("rng[0].torch a float tensor", ("rng", 0, "torch"), torch.zeros(3), "'training_state.rng[0].torch' must be", 1),
    ("rng[0].python a string", ("rng", 0, "python"), "x", "'training_state.rng[0].python' must be", 1),
    ("rng[0].numpy removed", ("rng", 0, "numpy"), MISSING, "'training_state.rng[0].numpy' is missing", 1),
    ("rng[0].numpy.keys a string", ("rng", 0, "numpy", "keys"), "x", "'training_state.rng[0].numpy' must be", 1),
    ("rng[0].cuda a string", ("rng", 0, "cuda"), "x", "'training_state.rng[0].cuda' must be a list of tensors", 1),
    ("optimizer a list", ("optimizer",), [], "'training_state.optimizer' must be a mapping", 1),
    ("optimizer.state removed", ("optimizer", "state"), MISSING, "'training_state.optimizer.state' must be", 1),
    ("optimizer.param_groups a string", ("optimizer", "param_groups"), "x", "training_state.optimizer.param_groups", 1),
    ("optimizer: another optimizer's groups", ("optimizer", "param_groups"), "doubled",
     "'training_state.optimizer' does not fit this run", 1),
    ("scheduler a string", ("scheduler",), "cosine", "'training_state.scheduler' must be a mapping or null", 1),
    ("scaler a number", ("scaler",), 3, "'training_state.scaler' must be a mapping or null", 1),
    ("best_val_acc a string", ("best_val_acc",), "0.5", "'training_state.best_val_acc' must be", 1),
    ("best_val_acc 1.5", ("best_val_acc",), 1.5, "'training_state.best_val_acc' must be", 1),
    ("best_epoch a float", ("best_epoch",), 1.5, "'training_state.best_epoch' must be an integer >= 0", 1),
    ("best_state a list", ("best_state",), [1], "'training_state.best_state' must be a mapping of tensors or null", 1),
    ("best_state of numbers", ("best_state",), {"w": 1}, "'training_state.best_state' must be", 1),
    ("world_size a boolean", ("world_size",), True, "'training_state.world_size' must be an integer >= 1", 1),
    ("world_size 2, everything per rank twice", ("world_size",), "two processes", "saved with 2 process(es)", 2),
]


@pytest.fixture(scope="module")
def tiny(data_root, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("state") / "run"
    sets = [a for s in [*TINY, "train.epochs=1"] for a in ("--set", s)]
    out = invoke(["train", "--config", "configs/smoke.yaml", "--device", "cpu", *sets, "--run-dir", str(run)])
    assert out.code == 0, out.stderr + out.stdout
    return run


def _changed(ts: dict, path: tuple, value) -> None:
    *parents, leaf = path
    node = ts
    for p in parents:
        node = node[p]
    if value is MISSING:
        del node[leaf]
    elif value == "twice":
        node[leaf] = node[leaf] * 2
    elif value == "doubled":  # a second group naming parameters the model does not have
        node[leaf] = node[leaf] + [{**node[leaf][0], "params": [10_000]}]
    elif value == "two processes":
        ts.update(world_size=2, epoch_state=ts["epoch_state"] * 2, rng=ts["rng"] * 2)
    else:
        node[leaf] = value


@pytest.mark.parametrize("what,path,value,text,code", CASES, ids=[c[0] for c in CASES])
def test_a_damaged_training_state_is_one_line_naming_its_key(tiny, tmp_path, monkeypatch, what, path, value, text,
                                                             code):
    run = tmp_path / "run"
    shutil.copytree(tiny, run)
    last = run / "checkpoints" / "last.pt"
    raw = torch.load(last, weights_only=True)
    _changed(raw["training_state"], path, value)
    torch.save(raw, last)
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))  # where a crash file would go before the run dir is open
    before = snapshot(run)
    out = invoke(["train", "--resume", str(run)])
    assert not contract_problems(out, (code,), text), (what, contract_problems(out, (code,), text))
    assert not changed_files(before) and sorted(before) == sorted(snapshot(run)), "the run directory changed"
    assert not list(cache.rglob("crash-*")) and not list(run.rglob("crash-*")), "a crash file was written"


def test_the_training_state_keeps_its_keys_and_their_order(tiny):
    """What the runner writes (through TrainingState) has the core keys, then the hooks' keys, in the
    order of every earlier last.pt (the fixture of commit 52beffa), so older readers find them."""
    old = torch.load(REPO / "tests" / "fixtures" / "run-52beffa" / "checkpoints" / "last.pt", weights_only=True)
    new = torch.load(tiny / "checkpoints" / "last.pt", weights_only=True)
    assert list(new["training_state"]) == list(old["training_state"]) == [*CORE, "ema", "stops", "kept"]
    assert TrainingState.from_dict(new["training_state"]).to_dict().keys() == new["training_state"].keys()
