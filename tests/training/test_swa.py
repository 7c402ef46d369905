"""Stochastic weight averaging (train.swa, training/hooks/swa.py) on tiny real MNIST runs through the CLI:
the average is the mean of the epochs' weights and does not change training, it is what is validated and
kept, a run resumed across epochs or in the middle of one ends exactly like the uninterrupted run, two
processes validate the same average, and bad settings are refused in one line.
Each test names the breaks it was checked against."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convtrain.artifacts import checkpoint
from convtrain.cli.app import app
from convtrain.errors import CheckpointError
from convtrain.training.hooks.swa import start_epoch

from ..conftest import REPO, load_ckpt, metrics_rows, run_cli
from .test_loop_features import TINY, _tiny_checkpoint, core_state, max_diff, same, train, weights

cli = CliRunner()
# smoke.yaml's Adam rate, reached at once: SWA then changes no learning rate, only what is evaluated
SAME_LR = ["train.swa.lr=2e-3", "train.swa.anneal_epochs=0"]
# a small BatchNorm model (update_bn has statistics to recompute), one thread per process
BN = ["model.name=bn_cnn", "model.kwargs.width=8", "model.kwargs.hidden=16", "speed.threads=1"]


def _without_seconds(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in metrics_rows(run)]


@pytest.mark.slow
def test_swa_is_the_mean_of_the_epochs_weights_is_validated_and_does_not_change_training(data_root, tmp_path):
    """3 epochs, SWA from epoch 2 at the run's own learning rate: the trained weights (last.pt) equal a
    run without SWA bit for bit; epoch-002.pt holds epoch 2's weights, epoch-003.pt the mean of epochs 2
    and 3 (to float rounding, measured 6e-8; the tolerance is 1e-6, a step moves them by ~1e-3), and so
    does last.pt's training_state.swa; the validation row of epoch 3 is that average's accuracy and loss.
    Breaks tried: the average updated before the epoch's last step (on_epoch_start): the mean is off;
    eval_model returning the trained model (validation and epoch-003.pt are the trained weights):
    both fail."""
    plain, swa, two = tmp_path / "plain", tmp_path / "swa", tmp_path / "two"
    keep = "checkpoint.every_n_epochs=1"
    train(plain, "train.epochs=3", keep)
    train(swa, "train.epochs=3", keep, "train.swa.start=2", *SAME_LR)
    train(two, "train.epochs=2", keep, "train.swa.start=2", *SAME_LR)  # its last.pt: epoch 2's trained weights
    assert same(weights(swa, "last.pt"), weights(plain, "last.pt"))  # SWA does not change training
    assert same(weights(swa, "epoch-001.pt"), weights(plain, "epoch-001.pt"))  # before the start: the plain weights
    w2, w3, avg = weights(two, "last.pt"), weights(plain, "last.pt"), weights(swa, "epoch-003.pt")
    assert same(weights(swa, "epoch-002.pt"), w2)  # an average of one epoch is that epoch
    assert max(float((avg[k] - (w2[k] + w3[k]) / 2).abs().max()) for k in avg) < 1e-6
    assert max_diff(avg, w3) > 1e-4  # the premise: the average is not the last weights
    state = load_ckpt(swa, "last.pt")["training_state"]["swa"]
    assert state["averaged"] == 2 and state["start_epoch"] == 2 and same(state["state_dict"], avg)

    r = cli.invoke(app, ["eval", "--checkpoint", str(swa / "checkpoints" / "epoch-003.pt"), "--split", "val",
                         "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    row = metrics_rows(swa)[2]
    assert json.loads(r.stdout)["accuracy"] == pytest.approx(float(row["val_acc"]), abs=1e-6)
    assert json.loads(r.stdout)["loss"] == pytest.approx(float(row["val_loss"]), rel=1e-5)
    best = json.loads((swa / "results.json").read_text())["best_epoch"]
    assert same(weights(swa, "best.pt"), weights(swa, f"epoch-{best:03d}.pt"))  # best.pt: the evaluated weights


def _interrupted_in_epoch_3(run: Path, common: list[str]) -> None:
    """Start ``common`` into ``run`` and send SIGINT when epoch 3's step 2 is reported."""
    proc = subprocess.Popen([sys.executable, "-m", "convtrain", *common, "--run-dir", str(run)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    for line in proc.stdout:
        if line.startswith("epoch 3/") and "step 2/" in line:
            proc.send_signal(signal.SIGINT)
            break
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr


@pytest.mark.slow
def test_swa_resumed_across_epochs_and_mid_epoch_ends_like_the_uninterrupted_run(data_root, tmp_path):
    """A BatchNorm model, SWA from epoch 2 with the rate annealed over 2 epochs (SWALR is half-way when
    epoch 3 starts). Stopped after epoch 2 and resumed with train.epochs=3, or interrupted by SIGINT at
    epoch 3's step 2 and resumed: metrics.csv, last.pt (weights and the SWA state), best.pt equal the
    uninterrupted run's bit for bit. Breaks tried: SWALR's state not saved (the resumed rate restarts its
    anneal); the average's count not restored (the resumed average restarts from epoch 3's weights alone): both fail."""
    sets = [*TINY, "train.max_steps_per_epoch=8", "data.train_subset=1280", "train.log_every=2", *BN,
            "train.swa.start=2", "train.swa.lr=5e-4", "train.swa.anneal_epochs=2"]
    common = ["train", "--config", "configs/smoke.yaml", "--device", "cpu", *[a for s in sets for a in ("--set", s)]]
    straight, epochs, signalled = tmp_path / "straight", tmp_path / "epochs", tmp_path / "signalled"
    assert run_cli(*common, "--set", "train.epochs=3", "--run-dir", str(straight)).returncode == 0
    assert run_cli(*common, "--set", "train.epochs=2", "--run-dir", str(epochs)).returncode == 0
    assert run_cli("train", "--resume", str(epochs), "--set", "train.epochs=3").returncode == 0
    _interrupted_in_epoch_3(signalled, [*common, "--set", "train.epochs=3"])
    ts = load_ckpt(signalled, "last.pt")["training_state"]
    assert ts["epoch"] == 3 and not ts["epoch_complete"] and 0 < ts["epoch_state"][0]["step"] < 8
    assert run_cli("train", "--resume", str(signalled)).returncode == 0

    a = load_ckpt(straight, "last.pt")
    for run in (epochs, signalled):
        b = load_ckpt(run, "last.pt")
        assert same(a["model"]["state_dict"], b["model"]["state_dict"]), run.name
        sa, sb = a["training_state"]["swa"], b["training_state"]["swa"]
        assert same(sa["state_dict"], sb["state_dict"]) and sa["schedule"] == sb["schedule"], run.name
        assert same(weights(straight, "best.pt"), weights(run, "best.pt")), run.name
        assert _without_seconds(straight) == _without_seconds(run), run.name
    lrs = [float(r["lr"]) for r in metrics_rows(straight)]
    assert lrs[0] == 2e-3 and 5e-4 < lrs[1] < 2e-3 and lrs[2] == pytest.approx(5e-4)  # the anneal, per epoch


@pytest.mark.slow
def test_two_processes_validate_the_same_average(data_root, tmp_path):
    """`--nproc-per-node 2` (gloo) with a BatchNorm model: each process recomputes the average's
    statistics on its shard and they are averaged over the processes, so the validation row equals a
    single-process eval of the saved average (loss to 1e-5). Break tried: the statistics not averaged
    over the processes (each validates its own shard's statistics): the loss differs, fails."""
    run = tmp_path / "ddp"
    sets = [*TINY, "data.train_subset=1024", "train.max_steps_per_epoch=8", "train.batch_size=32", *BN,
            "train.epochs=2", "train.swa.start=2", "checkpoint.every_n_epochs=1"]
    r = run_cli("train", "--config", "configs/smoke.yaml", "--device", "cpu", "--nproc-per-node", "2",
                *[a for s in sets for a in ("--set", s)], "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-3000:]
    assert load_ckpt(run, "last.pt")["training_state"]["swa"]["averaged"] == 1
    e = run_cli("eval", "--checkpoint", str(run / "checkpoints" / "epoch-002.pt"), "--split", "val", "--device", "cpu",
                "--json")
    assert e.returncode == 0, e.stderr
    row = metrics_rows(run)[1]
    assert json.loads(e.stdout)["loss"] == pytest.approx(float(row["val_loss"]), rel=1e-5)
    assert json.loads(e.stdout)["accuracy"] == pytest.approx(float(row["val_acc"]), abs=1e-6)


BAD = {"train.swa.start=0": "an epoch >= 1 or a fraction in (0, 1)",
       "train.swa.start=1.5": "an epoch is a whole number",
       "train.swa.start=soon": "an epoch (e.g. 8) or a fraction of train.epochs",
       "train.swa.start=12": "after the last epoch",
       "train.swa.lr=0": "'train.swa.lr' must be > 0",
       "train.swa.anneal_epochs=-1": "'train.swa.anneal_epochs' must be >= 0",
       "train.swa.strat=2": "did you mean 'train.swa.start'",
       "train.ema.decay=0.9": "'train.swa' and 'train.ema' both average the weights"}


@pytest.mark.parametrize("override", sorted(BAD))
def test_bad_swa_settings_are_one_line_and_write_nothing(tmp_path, override):
    """Break tried: the EMA + SWA refusal removed (the run trains with both): its case fails."""
    run = tmp_path / "run"
    r = cli.invoke(app, ["train", "--config", "configs/smoke.yaml", "--device", "cpu", "--run-dir", str(run),
                         "--set", "train.epochs=3", "--set", "train.swa.start=2", "--set", override])
    assert r.exit_code == 2 and BAD[override] in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
    assert not run.exists()


def test_the_swa_rate_does_not_crowd_out_the_usual_suggestion():
    """`--set train.lr=...` (or lr) still suggests optim.lr alone, as before train.swa.lr existed; a
    setting nested in a feature only comes up when no section has that name. Break tried: the
    narrowing in suggest_key removed ('one of: train.swa.lr, optim.lr'): fails."""
    from convtrain.config.schema import suggest_key

    assert suggest_key("train.lr") == suggest_key("lr") == " (did you mean 'optim.lr'?)"
    assert suggest_key("train.decay") == " (did you mean 'train.ema.decay'?)"


def test_a_fraction_starts_at_the_epoch_after_that_share_of_the_epochs():
    assert [start_epoch(0.75, 20), start_epoch(0.5, 3), start_epoch(0.01, 10), start_epoch(4, 10)] == [16, 2, 1, 4]


@pytest.mark.parametrize("swa,key", [
    ({"start_epoch": 0, "averaged": 0, "state_dict": None, "schedule": None}, "training_state.swa.start_epoch"),
    ({"start_epoch": 2, "averaged": 1, "state_dict": None, "schedule": None}, "training_state.swa.state_dict"),
    ({"start_epoch": 2, "averaged": 0, "state_dict": {"w": torch.zeros(1)}, "schedule": None},
     "training_state.swa.state_dict"),
    ({"start_epoch": 2, "averaged": -1, "state_dict": None, "schedule": None}, "training_state.swa.averaged"),
    ({"start_epoch": 2, "averaged": 0, "state_dict": None}, "training_state.swa.schedule' is missing"),
    ({"start_epoch": 2, "averaged": 0, "state_dict": None, "schedule": {"_step_count": 1, "anneal_epochs": 1,
      "_last_lr": [0.1], "base_lrs": [0.1], "optimizer": {}}}, "training_state.swa.schedule"),
    ([2], "training_state.swa"),
])
def test_a_damaged_swa_state_is_refused_naming_its_key(tmp_path, swa, key):
    path = _tiny_checkpoint(tmp_path / "last.pt", training_state={**core_state(), "swa": swa})
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        checkpoint.load(path)
