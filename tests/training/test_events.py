"""The run-event protocol (training/events.py): the events a hook hears on a tiny real run, in the
documented order; the hook list's order; discovery of a package's hook modules; how a run that does not
finish ends for its hooks."""

from __future__ import annotations

import json
import sys

import pytest

from convtrain.config.load import load_config
from convtrain.errors import RunStopped
from convtrain.training import events
from convtrain.training.events import Hook, Stop
from convtrain.training.runner import run

TINY = ["data.train_subset=640", "data.val_size=200", "data.test_subset=200", "train.max_steps_per_epoch=3",
        "train.epochs=2", "log.plots=false", "device=cpu"]


class Recorder(Hook):
    """Writes down every event it hears (per-batch events once per epoch)."""

    def __init__(self, stop_after: int | None = None, fail_in: str | None = None) -> None:
        self.seen: list[str] = []
        self.stop_after, self.fail_in = stop_after, fail_in

    def _note(self, event: str) -> None:
        if not self.seen or self.seen[-1] != event:
            self.seen.append(event)
        if event == self.fail_in:
            raise RuntimeError(f"{event} failed (a test)")

    def setup(self, run):
        self._note("setup")

    def on_start(self, run):
        self._note("on_start")

    def on_epoch_start(self, epoch):
        self._note(f"on_epoch_start {epoch}")

    def on_step(self, global_step, loss, lr):
        self._note("on_step")

    def on_update(self):
        self._note("on_update")

    def should_stop(self, epoch_seconds):
        self._note("should_stop")
        return False

    def on_train_epoch_end(self, epoch, complete):
        self._note(f"on_train_epoch_end {epoch} {complete}")

    def eval_model(self, model):
        self._note("eval_model")
        return model

    def on_epoch_end(self, row):
        self._note(f"on_epoch_end {row.epoch}")

    def on_checkpoint(self, epoch, files):
        self._note(f"on_checkpoint {epoch} {'best.pt' in files.names()}")

    def on_epoch_saved(self, row):
        self._note(f"on_epoch_saved {row.epoch}")
        if row.epoch == self.stop_after:
            raise RunStopped(f"stopped after epoch {row.epoch} (a test)", "pruned")

    def stop_reason(self, last_epoch):
        self._note(f"stop_reason {last_epoch}")
        return None

    def results(self):
        self._note("results")
        return {"recorder": "was here"}

    def on_finish(self, run):
        self._note("on_finish")

    def on_end(self, status):
        self._note(f"on_end {status}")


@pytest.mark.slow
def test_a_hook_hears_every_event_in_the_documented_order(data_root, tmp_path):
    """(Per-batch events that repeat are written once per run of them.) Breaks tried: on_epoch_saved fired
    before the epoch's save (the order check fails); results() not merged into results.json: both fail."""
    hook = Recorder()
    run(load_config("configs/smoke.yaml", TINY), run_dir=tmp_path / "run", hooks=[hook])
    steps = ["should_stop", "on_update", "on_step"] * 3  # 3 optimizer steps an epoch
    assert hook.seen == [
        "setup", "on_start", "stop_reason 0",
        "on_epoch_start 1", *steps, "on_train_epoch_end 1 True",
        "eval_model", "on_epoch_end 1", "eval_model", "on_checkpoint 1 True", "on_epoch_saved 1", "stop_reason 1",
        "on_epoch_start 2", *steps, "on_train_epoch_end 2 True",
        "eval_model", "on_epoch_end 2", "eval_model", "on_checkpoint 2 True", "on_epoch_saved 2",
        "results", "eval_model", "on_finish", "on_end finished"]  # the final test: the evaluated model again
    assert json.loads((tmp_path / "run" / "results.json").read_text())["recorder"] == "was here"


@pytest.mark.slow
def test_a_hook_ends_the_run_with_its_status_and_every_hook_hears_how_it_ended(data_root, tmp_path):
    """RunStopped from on_epoch_saved (tune's pruner): results.json says pruned, the hooks hear on_end
    pruned; an unforeseen error in a hook ends the run as failed for the others."""
    hook = Recorder(stop_after=1)
    with pytest.raises(RunStopped):
        run(load_config("configs/smoke.yaml", TINY), run_dir=tmp_path / "pruned", hooks=[hook])
    assert hook.seen[-2:] == ["on_epoch_saved 1", "on_end pruned"]
    assert json.loads((tmp_path / "pruned" / "results.json").read_text())["status"] == "pruned"

    failing, listener = Recorder(fail_in="on_epoch_end 1"), Recorder()
    with pytest.raises(RuntimeError):
        run(load_config("configs/smoke.yaml", TINY), run_dir=tmp_path / "crashed", hooks=[failing, listener])
    assert listener.seen[-1] == "on_end failed"


def test_the_hook_list_runs_in_its_documented_order():
    """The evaluated model first (EMA/SWA), then the stopping rules, the kept checkpoints, the trackers,
    the caller's hooks; every one of the package's modules found."""
    pytest.importorskip("tensorboard", reason="the tensorboard extra (pip install 'convtrain[tensorboard]')")
    cfg = load_config(None, ["train.swa.start=2", "log.tensorboard=true", "device=cpu"])
    caller = Recorder()
    hooks = list(events.build(cfg, True, [caller]))
    names = [type(h).__name__ for h in hooks]
    assert names == ["NoEMA", "SWA", "Stops", "Kept", "TensorBoardLogger", "Recorder"]
    assert [h.order for h in hooks] == sorted(h.order for h in hooks)
    assert "TensorBoardLogger" not in [type(h).__name__ for h in events.build(cfg, False)]  # rank 0 only
    modules = {m.__name__.rsplit(".", 1)[1] for m in events.discover()}
    assert modules == {"ema", "swa", "stopping", "kept_checkpoints", "calibrate", "tblog", "mlflowlog", "wandblog"}


def test_discovery_finds_a_new_hook_module_without_a_list_to_edit(tmp_path, monkeypatch):
    """A package of hook modules (a helper module's name starts with _): each module's build decides."""
    pkg = tmp_path / "toyhooks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_shared.py").write_text("raise AssertionError('a helper module is not a hook')\n")
    (pkg / "counter.py").write_text("from convtrain.training.events import Hook\n\n"
                                    "class Counter(Hook):\n    order = 60\n\n"
                                    "def build(cfg, is_main):\n    return Counter() if is_main else None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (module,) = events.discover("toyhooks")
    assert type(module.build(None, True)).__name__ == "Counter" and module.build(None, False) is None
    sys.modules.pop("toyhooks.counter", None)
    sys.modules.pop("toyhooks", None)


def test_the_first_stop_reason_wins_and_states_go_under_their_keys():
    class Saves(Hook):
        state_key, order = "mine", 5

        def __init__(self):
            self.loaded = "not yet"

        def state_dict(self):
            return {"n": 1}

        def load_state_dict(self, state):
            self.loaded = state

        def stop_reason(self, last_epoch):
            return Stop("mine", f"stopped after {last_epoch}")

    class Later(Hook):
        def stop_reason(self, last_epoch):
            return Stop("later", "")

    saves = Saves()
    hooks = events.Hooks([Later(), saves])
    assert hooks.stop_reason(3) == Stop("mine", "stopped after 3")
    assert hooks.state_dicts() == {"mine": {"n": 1}}
    hooks.setup(None, {"mine": {"n": 2}})
    assert saves.loaded == {"n": 2}
    hooks.setup(None, {})
    assert saves.loaded is None  # an older last.pt without the key: the hook starts fresh
