"""One training run, read top to bottom: shared by ``train``, ``finetune`` and ``--resume``.

:func:`run` is a short sequence of named phases around one :class:`~convtrain.training.state.RunState`
(the run's parts and state are typed in :mod:`convtrain.training.state`)::

    setup_process -> (hooks) -> setup_data -> build_model -> build_optim -> restore -> open_run_dir
    -> prepare_training -> loop (per epoch: train_epoch, validate, record, save_checkpoints) -> final_test

Everything that can be checked up front (data, model kwargs, pretrained weights, freeze, optional
packages) is checked before the run directory is created, so a refused run leaves nothing behind.
Writers that only rank 0 may use (run directory, progress) are do-nothing objects on the other ranks.

The runner names no tracker and no loop feature: trackers (TensorBoard, MLflow, W&B), the evaluated
model (EMA, SWA), stopping rules and limits, kept checkpoints and the caller's hooks (tune's pruner)
are one list of :class:`~convtrain.training.events.Hook`, fired at the points listed in
:mod:`convtrain.training.events`; their saved state rides in last.pt under each hook's key.
Where a run starts from (fresh, ``--resume``, ``finetune``) is :mod:`convtrain.training.start`'s
:class:`~convtrain.training.start.Start`, which loads that checkpoint once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from .. import backstop
from ..artifacts import checkpoint
from ..artifacts.metrics import MetricsRow
from ..artifacts.rundir import NullRunDir, RunDir, default_path
from ..artifacts.runfiles import Results
from ..artifacts.training_state import TrainingState
from ..config.schema import RunConfig, held_out_seed, to_dict, to_yaml
from ..data.batches import AugmentParams, make_batches
from ..data.cache import CACHE_FILE_NOTE
from ..data.sources import build as build_data
from ..data.types import DataBundle
from ..errors import CheckpointError, ConfigError, ConvtrainError, Interrupted, Preempted, RunStopped, TrainingError
from ..models import apply_init, create_model
from . import distributed, engine, events
from .events import Hook, Stop
from .losses import build_loss
from .optim import build_optimizer, build_scheduler
from .reporter import Reporter
from .repro import DETERMINISTIC_NOTE, deterministic, seed_everything
from .signals import StopSignals, pause_for_test
from .start import Start
from .state import Data, EpochFiles, Optim, Run, RunResult, RunState

# --------------------------------------------------------------------------------------------
# The run


def run(start: Start | RunConfig, *, run_dir: str | Path | None = None, reporter: Reporter | None = None,
        signals: StopSignals | None = None, hooks: Iterable[Hook] = ()) -> RunResult:
    """Train (or fine-tune, or resume) as ``start`` says; return the numbers. Rank 0 writes the run directory.

    ``signals``: an already installed :class:`StopSignals` (the CLI installs it before start-up);
    without one the run installs its own for its duration. ``hooks``: the caller's own
    :class:`~convtrain.training.events.Hook` entries, run after the built-in ones (``convtrain tune``'s
    pruner: its ``on_epoch_saved`` may raise :class:`~convtrain.errors.RunStopped` to end the run,
    and results.json then records that error's status and message).
    """
    if not isinstance(start, Start):
        start = Start(start, Path(run_dir) if run_dir is not None else None)
    with contextlib.ExitStack() as stack:
        signals = signals or stack.enter_context(StopSignals())
        untouched = f"{start.run_dir} is unchanged" if start.reopen else "nothing was written"
        signals.begin(lambda name: f"interrupted during start-up ({name}); {untouched}")
        stack.enter_context(deterministic(start.cfg.train.deterministic))
        dist, reporter = setup_process(start.cfg, reporter)
        try:
            return _phases(start, dist, reporter, signals, hooks)
        finally:
            reporter.close()
            distributed.teardown(dist)


def _phases(start: Start, dist: distributed.DistInfo, reporter: Reporter, signals: StopSignals,
            extra: Iterable[Hook] = ()) -> RunResult:
    cfg = start.cfg
    # every hook the config turns on; one whose optional package is missing refuses the run here,
    # before the data is even read (exit 2)
    hooks = events.build(cfg, dist.is_main, extra)
    d = setup_data(cfg, dist)
    model = build_model(cfg, d.bundle, dist, start, reporter)
    optim = build_optim(model, cfg, dist.device, d.updates_per_epoch)
    state = restore(start, model, optim, dist)
    r = Run(cfg=cfg, dist=dist, reporter=reporter, signals=signals, data=d, model=model, train_model=model,
            optim=optim, meta=_checkpoint_meta(cfg, d.bundle), hooks=hooks, resumed=start.reopen)
    # the hooks' parts (the EMA copy...) and, when resuming, their saved state; a misfit is refused here
    hooks.setup(r, start.resume["training_state"] if start.resume is not None else {})
    r.rundir = open_run_dir(start, state, dist)  # from here on the run has files: record how it ends
    try:
        prepare_training(r, state, start)
        loop(r, state)
        final_test(r, state)
        # ranks > 0 would otherwise leave while rank 0 still writes results.json and the plots; a rank
        # that exits early in a multi-node run sometimes took its node's rendezvous store down with it
        distributed.barrier()
        return state.result
    except (ConvtrainError, Interrupted) as exc:
        _record_end(r, state, exc)
        raise
    finally:
        # last: trackers close their files or mark their run (a crash ends as "failed")
        r.hooks.on_end(state.status if state.status != "running" else "failed")
        r.rundir.close()  # lets go of RUN/.lock


# --------------------------------------------------------------------------------------------
# Phases


def setup_process(cfg: RunConfig, reporter: Reporter | None) -> tuple[distributed.DistInfo, Reporter]:
    """Processes and devices, threads, seeds (model init uses the same seed on every rank)."""
    dist = distributed.setup(cfg.device, cfg.devices, cfg.dist_timeout)
    reporter = reporter if (reporter is not None and dist.is_main) else Reporter(enabled=False)
    reporter.log_every = cfg.train.log_every
    if dist.distributed and cfg.train.sync_batchnorm and dist.device.type != "cuda":
        distributed.teardown(dist)
        raise ConfigError("train.sync_batchnorm needs GPUs: PyTorch's SyncBatchNorm does not run on the CPU")
    if cfg.speed.threads:
        torch.set_num_threads(cfg.speed.threads)
    seed_everything(cfg.seed)
    return dist, reporter


def setup_data(cfg: RunConfig, dist: distributed.DistInfo) -> Data:
    """Decode the data once, resident on the training device (or served by a DataLoader)."""
    pause_for_test("start-up")
    bundle = build_data(cfg.data, held_out_seed(cfg))
    device = dist.device
    loader = cfg.data.loader
    if loader == "auto":
        loader = "tensor" if bundle.tensor_resident else "dataloader"
    elif loader == "tensor" and not bundle.tensor_resident:
        raise ConfigError(f"data.loader is tensor, but the decoded images exceed data.memory_budget_mb="
                          f"{cfg.data.memory_budget_mb}; raise the budget or set data.loader=auto (streams from disk)")
    splits = (bundle.train, bundle.val, bundle.test)
    if loader == "tensor":
        splits = tuple(s.to(device) for s in splits)
    channels_last = cfg.speed.channels_last and device.type in ("cpu", "cuda")
    augment = AugmentParams(**{k: v for k, v in dataclasses.asdict(cfg.data.augment).items() if k != "enabled"}) \
        if cfg.data.augment.enabled else None
    shared = dict(rank=dist.rank, world_size=dist.world_size, workers=cfg.data.workers, channels_last=channels_last)
    train = make_batches(splits[0], bundle, loader, cfg.train.batch_size, device, shuffle=True, seed=cfg.seed,
                         augment=augment, sampler=cfg.data.sampler, **shared)
    val, test = (make_batches(split, bundle, loader, cfg.train.eval_batch_size, device, shuffle=False, **shared)
                 for split in splits[1:])
    accumulate = cfg.train.accumulate
    steps = min(len(train), cfg.train.max_steps_per_epoch * accumulate if cfg.train.max_steps_per_epoch else math.inf)
    if steps < 1:
        raise ConfigError(f"the training set ({len(splits[0])} images) is smaller than one batch per process")
    # train.loss / class_weights / label_smoothing; a class_weights name the data lacks is refused here
    loss, notes = build_loss(cfg.train, bundle.classes, bundle.train.labels, device)
    bundle.notes.extend(notes)
    return Data(bundle, train, val, test, int(steps), engine.eval_chunk(device, cfg.speed.eval_chunk), channels_last,
                updates_per_epoch=math.ceil(steps / accumulate), loss=loss)


def build_model(cfg: RunConfig, bundle: DataBundle, dist: distributed.DistInfo, start: Start,
                reporter: Reporter) -> nn.Module:
    """The registry's model, initialised; with pretrained weights (and frozen parts) when fine-tuning."""
    model = create_model(cfg.model.name, num_classes=len(bundle.classes), in_channels=bundle.in_channels,
                         input_size=bundle.input_size, **cfg.model.kwargs)
    apply_init(model, cfg.model.init)
    if dist.distributed and cfg.train.sync_batchnorm:
        # before freezing: conversion replaces the BatchNorm modules that freeze() keeps in eval mode
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cfg.finetune.checkpoint and start.resume is None:  # a resumed run's weights come from its last.pt
        _load_pretrained(model, cfg, start.pretrained or checkpoint.load(cfg.finetune.checkpoint), reporter,
                         bundle.classes)
    model.to(dist.device)
    if cfg.speed.channels_last and dist.device.type in ("cpu", "cuda"):
        model.to(memory_format=torch.channels_last)
    return model


def build_optim(model: nn.Module, cfg: RunConfig, device: torch.device, steps_per_epoch: int) -> Optim:
    """Optimizer (refuses a model with nothing to train), per-step schedule, fp16 loss scaler.

    ``steps_per_epoch`` counts optimizer steps (with train.accumulate, fewer than batches)."""
    optimizer = build_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler("cuda") if (device.type == "cuda" and cfg.speed.amp == "fp16") else None
    return Optim(optimizer, build_scheduler(optimizer, cfg, steps_per_epoch), scaler)


def restore(start: Start, model: nn.Module, optim: Optim, dist: distributed.DistInfo) -> RunState:
    """A fresh state at epoch 1, or the resumed run's: weights, optimizer, schedule, best so far, position."""
    state = RunState(RunResult(None, is_main=dist.is_main))
    if start.resume is None:
        return state
    ts = TrainingState.from_dict(start.resume["training_state"])  # checked, key by key, when last.pt was read
    if ts.world_size != dist.world_size:
        raise ConfigError(f"this run was saved with {ts.world_size} process(es); resume it with the same number "
                          f"(now {dist.world_size}) so that the data order and RNG states carry over")
    model.load_state_dict(start.resume["model"]["state_dict"])
    where = start.run_dir / "checkpoints" / "last.pt" if start.run_dir is not None else "last.pt"
    for key, part in (("optimizer", optim.optimizer), ("scheduler", optim.scheduler), ("scaler", optim.scaler)):
        saved = getattr(ts, key)
        if part is not None and saved is not None:
            _load_part(part, saved, f"{where}: 'training_state.{key}'")
    if ts.epoch_complete:
        state.epoch = ts.epoch + 1
    else:
        state.epoch, state.epoch_state = ts.epoch, engine.EpochState(**ts.epoch_state[dist.rank])
    state.best.val_acc, state.best.epoch, state.best.state = ts.best_val_acc, ts.best_epoch, ts.best_state
    state.best.value = ts.best_val_acc if ts.best_value is None else ts.best_value
    return state


def _load_part(part, saved: dict, what: str) -> None:
    """``part.load_state_dict(saved)``; a state of the right shape that does not fit this run (another
    optimizer's groups...) is one line naming the key, not a traceback."""
    try:
        part.load_state_dict(saved)
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{what} does not fit this run ({reason})") from None


def open_run_dir(start: Start, state: RunState, dist: distributed.DistInfo) -> RunDir | NullRunDir:
    """Create the run directory (refusing to overwrite) and save the resolved config, or reopen it.

    The only phase that creates files, and the last set-up check: everything before it may refuse
    the run and leave nothing behind. Other ranks get a run directory that writes nothing.
    """
    if not dist.is_main:
        return RunDir.disabled()
    cfg = start.cfg
    rundir = RunDir.open(start.run_dir) if start.reopen else \
        RunDir.create(start.run_dir or default_path(cfg.out_dir, cfg.name or "run"))
    backstop.set_run_dir(rundir.path)  # an unforeseen crash from here on leaves its traceback in the run
    try:
        text = (f"# resolved config; {dist.world_size} process(es) x train.batch_size {cfg.train.batch_size} "
                f"= global batch {dist.world_size * cfg.train.batch_size}\n" + to_yaml(cfg))
        if start.reopen:
            rundir.truncate_metrics(state.epoch - 1)  # rows written after the checkpoint we restart from
            rundir.update_config(text)  # e.g. --set train.epochs=20: config.yaml says what the run now does
        else:
            rundir.write_config(text)
        state.result.run_dir = rundir.path
        state.result.epochs = rundir.read_metrics()
    except BaseException:
        rundir.close()  # the lock must not outlive a run that could not start
        raise
    return rundir


def prepare_training(r: Run, state: RunState, start: Start) -> None:
    """Attach the log and TensorBoard, wrap the model for DDP / compile, set the RNGs, say what runs."""
    cfg, dist = r.cfg, r.dist
    r.signals.immediate(lambda name: f"interrupted before training started ({name}); "
                                     f"resume with: {_resume_command(r)}")
    r.reporter.attach_log(r.rundir.log)
    notes = [*start.notes, *dist.notes, *r.data.bundle.notes, *([r.rundir.note] if r.rundir.note else []),
             *([DETERMINISTIC_NOTE] if cfg.train.deterministic else [])]
    for line in notes:
        (r.reporter.detail if line.startswith(CACHE_FILE_NOTE) else r.reporter.info)(line)
    r.hooks.on_start(r)  # the trackers start (and say where they log)
    if dist.distributed:
        r.train_model = nn.parallel.DistributedDataParallel(
            r.model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    if cfg.speed.compile:
        mode = cfg.speed.compile if isinstance(cfg.speed.compile, str) else "default"
        r.train_model = torch.compile(r.train_model, mode=mode)
    seed_everything(cfg.seed + dist.rank)  # dropout etc. differ per rank
    if start.resume is not None:
        checkpoint.set_rng_state(start.resume["training_state"]["rng"][dist.rank])
    n_params = sum(p.numel() for p in r.model.parameters())
    n_train = sum(p.numel() for p in r.model.parameters() if p.requires_grad)
    b = r.data.bundle
    # three short lines, not one of ~150 characters that wraps on any terminal
    r.reporter.info(f"{'resuming' if start.resume else 'run'}: {r.rundir.path}")
    if dist.launcher:  # which launcher started the processes (an srun job step, torchrun, mpirun)
        r.reporter.info(dist.launcher)
    trainable = "" if n_train == n_params else f", {n_train:,} trainable"
    r.reporter.info(f"model {cfg.model.name} ({n_params:,} parameters{trainable}) on {dist.device}"
                    f"{f' x {dist.world_size} processes' if dist.distributed else ''}")
    r.reporter.info(f"data {cfg.data.name}: {len(b.train)} train / {len(b.val)} val / {len(b.test)} test images")


def loop(r: Run, state: RunState) -> None:
    """The epochs: train, validate, record, checkpoint, until train.epochs or a stopping rule (early
    stopping, stop_at, max_time: ``state.stop``). A first Ctrl-C/SIGTERM stops after the current step."""
    r.signals.graceful(lambda name: _stopped_at_once(r, name))
    # a resumed run whose rule had already fired only runs the final test
    state.stop = _stop_reason(r, state) if state.epoch <= r.cfg.train.epochs else None
    while state.epoch <= r.cfg.train.epochs and state.stop is None:
        r.hooks.on_epoch_start(state.epoch)
        out = train_epoch(r, state)
        partial = stop_mid_epoch(r, state, out.state) if out.stopped else None
        r.hooks.on_train_epoch_end(state.epoch, partial is None)  # SWA averages here, before validation
        row = validate(r, state, out.state)
        improved = record(r, state, row)
        save_checkpoints(r, state, out.state, row, improved, partial)
        r.hooks.on_epoch_saved(row)  # tune's pruner may end the run here (RunStopped)
        state.epoch, state.epoch_state = state.epoch + 1, None
        # a rule that fires after the schedule's last full epoch stopped nothing early
        state.stop = _stop_reason(r, state) if state.epoch <= r.cfg.train.epochs or partial else None
    if state.stop is not None:
        r.reporter.info(state.stop.note)
    # the first signal came after the last step (validation, saves), on any rank: honour it here
    if distributed.broadcast_flag(r.signals.is_set(), r.dist.device):
        stop, word = _stop_kind(r)
        with r.signals.protected():
            r.rundir.write_results(Results("interrupted", epoch=state.epoch - 1, step=None))
            state.status = "interrupted"
        raise stop(f"{word} after the last epoch; last.pt saved. Resume with: {_resume_command(r)} "
                   "(it only runs the final test)")


def train_epoch(r: Run, state: RunState) -> engine.EpochResult:
    """One epoch of optimizer steps (from the saved position when resuming mid-epoch)."""
    cfg, steps = r.cfg, r.data.steps_per_epoch
    epoch_state = state.epoch_state or engine.EpochState()
    r.data.train.set_epoch(state.epoch)
    r.reporter.epoch_start(state.epoch, cfg.train.epochs, steps, cfg.train.batch_size, epoch_state.step)
    offset = (state.epoch - 1) * steps
    before, started = epoch_state.seconds, time.perf_counter()
    state.stop_asked_at = None

    def on_step(step: int, loss) -> None:
        r.reporter.step(step, loss)
        r.hooks.on_step(offset + step, loss, r.optim.optimizer.param_groups[0]["lr"])

    def should_stop() -> bool:  # asked between optimizer steps: a signal, or a hook (max_time)
        if r.signals.is_set():
            return True
        seconds = before + time.perf_counter() - started
        if r.hooks.should_stop(seconds):
            state.stop_asked_at = seconds
            return True
        return False

    try:
        return engine.train_one_epoch(
            r.train_model, r.data.train.iter_from(epoch_state.step), steps, r.optim.optimizer, r.optim.scheduler,
            epoch=state.epoch, device=r.dist.device, state=epoch_state, loss=r.data.loss,
            grad_clip=cfg.train.grad_clip, nonfinite=cfg.train.nonfinite, amp=cfg.speed.amp, scaler=r.optim.scaler,
            on_step=on_step, should_stop=should_stop, accumulate=cfg.train.accumulate, on_update=r.hooks.on_update,
            check_every=engine.check_interval(r.dist.device, cfg.train.log_every))
    except engine.NonFiniteLoss as exc:
        raise TrainingError(f"training diverged: {exc}; the last good checkpoint is kept "
                            f"(set train.nonfinite=skip to skip such batches, or lower optim.lr)") from None
    finally:
        r.reporter.epoch_end()


def stop_mid_epoch(r: Run, state: RunState, epoch_state: engine.EpochState) -> TrainingState:
    """The engine stopped before the epoch's end. On a signal: save last.pt at this step and exit 130.
    On a hook's request (train.max_time): return last.pt's training state at this step; the loop then
    validates, saves and tests as after any epoch (resumed with a larger max_time, the run continues
    from this step)."""
    if distributed.broadcast_flag(r.signals.is_set(), r.dist.device):
        save_interrupted(r, state, epoch_state)
    # the engine's own clock started a moment after the one that fired: count what fired, so the
    # loop (and a resume with the same max_time) see the budget as spent
    epoch_state.seconds = max(epoch_state.seconds, state.stop_asked_at or 0.0)
    return _training_state(r, state, epoch_state, complete=False)  # a collective: every rank calls it


def save_interrupted(r: Run, state: RunState, epoch_state: engine.EpochState) -> None:
    """After a first signal: save last.pt at this very step, record it, stop with exit 130 (75 when preempted)."""
    pause_for_test("stop")
    training_state = _training_state(r, state, epoch_state, complete=False)  # a collective: every rank calls it
    stop, word = _stop_kind(r)  # a collective as well
    with r.signals.protected():
        pause_for_test("save")
        r.rundir.save_checkpoint("last.pt", checkpoint.build(
            r.model, epoch=state.epoch - 1, metrics={}, training_state=training_state.to_dict(), **r.meta))
        r.rundir.write_results(Results("interrupted", epoch=state.epoch, step=epoch_state.step))
        state.status = "interrupted"
    raise stop(f"{word} at epoch {state.epoch}, step {epoch_state.step}; last.pt saved. "
               f"Resume with: {_resume_command(r)}")


def _stop_kind(r: Run) -> tuple[type[Interrupted], str]:
    """How a signalled stop ends on every rank: Preempted (exit 75) when any rank got a preemption
    notice (SIGUSR1), else Interrupted (130). A collective: every rank calls it."""
    if distributed.broadcast_flag(r.signals.preempted, r.dist.device):
        return Preempted, "preempted (SIGUSR1, exit 75)"
    return Interrupted, "interrupted"


def validate(r: Run, state: RunState, epoch_state: engine.EpochState) -> MetricsRow:
    """The epoch's metrics row: training sums of every rank, validation (and test when asked)."""
    model = _evaluated(r)  # the EMA or SWA weights when those are on
    val = _evaluate(r, model, r.data.val)
    test = _evaluate(r, model, r.data.test, "test") if r.cfg.train.test_every_epoch else {}
    state.last_test = test or None
    train_loss, train_acc = _global_train_metrics(epoch_state, r.dist.device)
    return MetricsRow(epoch=state.epoch, train_loss=train_loss, train_acc=train_acc, val_loss=val["loss"],
                      val_acc=val["accuracy"], lr=r.optim.optimizer.param_groups[0]["lr"], seconds=epoch_state.seconds,
                      test_loss=test.get("loss"), test_acc=test.get("accuracy"), val_seconds=val["seconds"],
                      test_seconds=test.get("seconds"), skipped=epoch_state.skipped, val_macro_f1=val["macro_f1"],
                      val_balanced_acc=val["balanced_accuracy"])


def record(r: Run, state: RunState, row: MetricsRow) -> bool:
    """Keep the best weights (chosen on validation: train.best_metric), print the epoch line, write and hand
    on the row (the hooks count it, log it...). True if improved."""
    best = state.best
    improved = row.score(r.cfg.train.best_metric) > best.value
    if improved:
        best.val_acc, best.value, best.epoch = row.val_acc, row.score(r.cfg.train.best_metric), row.epoch
        best.state = {k: v.detach().cpu().clone() for k, v in _evaluated(r).state_dict().items()}
        best.test = state.last_test  # the test numbers of exactly these weights, if this epoch made them
    state.result.epochs.append(row)
    r.reporter.epoch_summary(row, r.cfg.train.epochs, improved)
    r.rundir.append_metrics(row)
    r.hooks.on_epoch_end(row)
    return improved


def save_checkpoints(r: Run, state: RunState, epoch_state: engine.EpochState, row: MetricsRow, improved: bool,
                     partial: TrainingState | None = None) -> None:
    """best.pt when validation improved, the hooks' files (epoch-NNN.pt), last.pt always; a signal
    waits until all are written. best.pt and the hooks' files hold the evaluated weights (EMA, SWA),
    last.pt the trained ones (and the hooks' state). ``partial``: the training state of a stop inside
    the epoch (max_time), taken at that step."""
    complete = partial is None
    training_state = partial or _training_state(r, state, epoch_state, complete=True)  # a collective
    if partial is not None:
        training_state.hooks = r.hooks.state_dicts()  # as of this row (a hook leaves a partial epoch out itself)
    metrics = {k: v for k, v in row.as_dict().items() if v is not None}
    evaluated = _evaluated(r)
    files = EpochFiles(r.rundir, lambda: checkpoint.build(evaluated, epoch=state.epoch, metrics=metrics, **r.meta))
    with r.signals.protected():
        if improved:
            files.save("best.pt")
        r.hooks.on_checkpoint(state.epoch, files)
        pause_for_test("save")
        r.rundir.save_checkpoint("last.pt", checkpoint.build(
            r.model, epoch=state.epoch if complete else state.epoch - 1, metrics=metrics if complete else {},
            training_state=training_state.to_dict(), **r.meta))
        r.rundir.remove_checkpoints(files.stale)  # after last.pt no longer lists them


def final_test(r: Run, state: RunState) -> None:
    """Test the best weights (chosen on validation, never on test), write results.json, then the plots."""
    r.signals.immediate(lambda name: f"interrupted during the final test ({name}); training is complete and "
                                     f"last.pt is intact; resume with: {_resume_command(r)} "
                                     f"(it only runs the final test)")
    pause_for_test("final-test")
    res = state.result
    res.train_seconds = sum(row.seconds for row in res.epochs)
    added = r.hooks.results()  # what the hooks add to results.json (stopping: time_to_target, target_epoch)
    res.stopped_by, res.time_to_target = state.stop.by if state.stop else None, added.get("time_to_target")
    res.test = _reused_test(state) or _evaluate_best(r, state)
    with r.signals.protected():
        r.rundir.write_results(_finished(r, state, added))
        state.status = "finished"
        r.signals.immediate(lambda name: f"interrupted ({name}) after the run finished; results.json is complete; "
                                         f"redo the plots with: convtrain plot {r.rundir.path}")
    r.hooks.on_finish(r)  # the trackers upload: outside the protected block, so Ctrl-C is not held up
    if r.cfg.log.plots:
        # at a terminal someone waits for the prompt: the pictures follow from another process;
        # a script or a pipe reads them once the command ends, so there they are written first
        r.rundir.write_plots(r.reporter.info, background=r.reporter.live, detail=r.reporter.detail)


def _finished(r: Run, state: RunState, added: dict) -> Results:
    """results.json of a finished run."""
    res, t, bundle = state.result, state.result.test, r.data.bundle
    return Results(
        "finished", best_epoch=state.best.epoch, best_val_acc=state.best.val_acc, test_accuracy=t["accuracy"],
        test_loss=t["loss"], test_num_samples=t["num_samples"], test_per_class_accuracy=t["per_class_accuracy"],
        test_macro_f1=t.get("macro_f1"), test_balanced_accuracy=t.get("balanced_accuracy"),
        best_metric=r.cfg.train.best_metric,
        confusion_matrix=t["confusion_matrix"], classes=bundle.classes, epochs=len(res.epochs),
        train_seconds=res.train_seconds,
        # which images were tested: the same split_seed and data give the same fingerprint (--seeds compares them)
        split_seed=held_out_seed(r.cfg), test_fingerprint=bundle.test.fingerprint(), stopped_by=res.stopped_by,
        stopped_epoch=res.epochs[-1].epoch if state.stop is not None and res.epochs else None, added=added,
        world_size=r.dist.world_size, device=str(r.dist.device),
        # data.skip_unreadable: every file or CSV row left out is named there (nothing is dropped silently)
        skipped_files=tuple(bundle.skipped))


def _reused_test(state: RunState) -> dict | None:
    """The test pass made in the best epoch (test_every_epoch): the same weights on the same test
    batches give the same numbers, so the final test would only repeat it (0.6 s per 10k images here).
    None after a resume (the best epoch's test is not in last.pt): then the best weights are tested again."""
    return state.best.test


def _evaluate_best(r: Run, state: RunState) -> dict:
    model = _evaluated(r)
    if state.best.state is not None:
        model.load_state_dict(state.best.state)
    return _evaluate(r, model, r.data.test, "test")


def _load_pretrained(model: nn.Module, cfg: RunConfig, ckpt: dict, reporter: Reporter,
                     classes: list[str] | None = None) -> None:
    report = checkpoint.load_pretrained(model, ckpt, cfg.finetune.reinit_head, cfg.finetune.checkpoint, classes)
    try:
        frozen = model.freeze(cfg.finetune.freeze)
    except ValueError as exc:
        raise ConfigError(f"finetune.freeze: {exc}") from None
    reporter.info(f"pretrained: {cfg.finetune.checkpoint} (model {ckpt['model']['name']}, dataset {ckpt['dataset']}, "
                  f"{ckpt['num_classes']} classes, epoch {ckpt['epoch']})")
    reporter.info(f"  loaded ({len(report['loaded'])}): {', '.join(report['loaded'])}")
    reporter.info(f"  re-initialised ({len(report['reinitialized'])}): {', '.join(report['reinitialized']) or 'none'}")
    reporter.info(f"  frozen ({len(frozen)}): {', '.join(frozen) or 'none'}")


def _resume_command(r: Run) -> str:
    """What to type to continue this run (a distributed run resumes with as many processes, started
    the way they were: --nproc-per-node, or the srun / mpirun step that started them)."""
    resume = f"convtrain train --resume {r.rundir.path}"
    if r.dist.launch_name in ("slurm", "mpi") and r.dist.distributed:
        return f"{resume} in {'an srun step' if r.dist.launch_name == 'slurm' else 'mpirun'} of {r.dist.world_size} tasks"
    return resume + (f" --nproc-per-node {r.dist.world_size}" if r.dist.distributed else "")


def _checkpoint_meta(cfg: RunConfig, bundle: DataBundle) -> dict:
    return dict(model_name=cfg.model.name, model_kwargs=cfg.model.kwargs, classes=bundle.classes,
                in_channels=bundle.in_channels, input_size=bundle.input_size, mean=bundle.mean, std=bundle.std,
                dataset=cfg.data.name, config=to_dict(cfg))


def _evaluated(r: Run) -> nn.Module:
    """The weights the run validates, saves as best.pt and tests: the trained model, or what a hook
    puts in its place (EMA, SWA)."""
    return r.hooks.eval_model(r.model)


def _evaluate(r: Run, model: nn.Module, batches, name: str = "val") -> dict:
    """Evaluate ``model`` (see :func:`_evaluated`). A pass that takes more than ~2 s shows a progress
    line on a terminal."""
    tick = r.reporter.pass_progress(name, len(batches))
    try:
        return engine.evaluate(model, batches, len(r.data.bundle.classes), r.dist.device, r.cfg.speed.amp,
                               r.data.chunk, progress=tick)
    finally:
        r.reporter.pass_end()


def _stop_reason(r: Run, state: RunState) -> Stop | None:
    """Why the loop stops now, or None. Every process asks its hooks (max_time: each times its own
    steps); the first answer in rank order that is not None holds for all of them."""
    last = state.result.epochs[-1].epoch if state.result.epochs else 0
    answers = distributed.all_gather_objects(r.hooks.stop_reason(last))
    return next((a for a in answers if a is not None), None)


def _training_state(r: Run, state: RunState, epoch_state: engine.EpochState, complete: bool) -> TrainingState:
    """Everything --resume needs. Per-rank parts (position in the epoch, RNG) are gathered from every rank."""
    per_rank = distributed.all_gather_objects({"epoch_state": epoch_state.as_dict(), "rng": checkpoint.rng_state()})
    o = r.optim
    return TrainingState(
        epoch=state.epoch, epoch_complete=complete, epoch_state=[p["epoch_state"] for p in per_rank],
        rng=[p["rng"] for p in per_rank], optimizer=o.optimizer.state_dict(),
        scheduler=o.scheduler.state_dict() if o.scheduler is not None else None,
        scaler=o.scaler.state_dict() if o.scaler is not None else None,
        best_val_acc=state.best.val_acc, best_epoch=state.best.epoch, best_state=state.best.state,
        world_size=r.dist.world_size, hooks=r.hooks.state_dicts(),  # ema: None without train.ema
        best_value=state.best.value)


def _stopped_at_once(r: Run, name: str) -> str:
    """The message of a second signal in the loop (the first one asked for a clean stop)."""
    saved = ("checkpoints/last.pt is the last completed save" if r.rundir.has_checkpoint("last.pt")
             else "no checkpoint yet, so --resume starts the run again from epoch 1")
    return f"interrupted twice ({name}): stopped at once; {saved}; resume with: {_resume_command(r)}"


def _record_end(r: Run, state: RunState, exc: ConvtrainError | Interrupted) -> None:
    """After the run directory exists, results.json says how a run that did not finish ended (the
    hooks hear it in ``on_end``)."""
    if state.status != "running":  # already recorded (clean interrupt, or finished before the plots)
        return
    state.status = exc.run_status if isinstance(exc, RunStopped) else \
        "interrupted" if isinstance(exc, Interrupted) else "failed"
    with contextlib.suppress(ConvtrainError), r.signals.protected():
        # best effort: on a full disk this write fails too, and the previous results.json stays whole
        r.rundir.write_results(Results(state.status, reason=str(exc), epoch=state.epoch))


def _global_train_metrics(state: engine.EpochState, device: torch.device) -> tuple[float, float]:
    """Mean training loss and accuracy over the samples of every rank."""
    totals = torch.tensor([state.loss_sum, state.correct, state.samples], dtype=torch.float64, device=device)
    distributed.all_reduce_sum(totals)
    seen = max(float(totals[2]), 1.0)
    return float(totals[0]) / seen, float(totals[1]) / seen
