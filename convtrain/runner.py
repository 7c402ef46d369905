"""One training run, read top to bottom: shared by ``train``, ``finetune`` and ``--resume``.

:func:`run` is the whole recipe: set up the process, load the data, build the model (from
pretrained weights when fine-tuning), build the optimizer and schedule, then loop over epochs,
validating, logging and checkpointing on rank 0, and finally test the best checkpoint. Each step
is a small function in this package; this file only wires them together.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import checkpoint, config as config_mod, data, distributed, engine
from .config import RunConfig
from .errors import CheckpointError, ConfigError, Interrupted, TrainingError
from .models import apply_init, create_model
from .progress import Reporter
from . import backstop
from .rundir import RunDir, default_path
from .tblog import TensorBoardLogger

# Settings that may change when a run is resumed: they do not alter what the finished run means.
RESUMABLE_CHANGES = ("train.epochs", "device", "train.log_every", "speed.threads", "speed.compile", "out_dir")


@dataclass
class RunResult:
    run_dir: Path | None
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = 0.0
    test: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# The run


def run(cfg: RunConfig | None, *, run_dir: str | Path | None = None, resume: str | Path | None = None,
        reporter: Reporter | None = None) -> RunResult:
    """Train (or fine-tune, or resume) as ``cfg`` says; return the numbers. Rank 0 writes ``run_dir``."""
    resumed = _load_resume(resume, cfg) if resume is not None else None
    if resumed is not None:
        cfg, run_dir = resumed["config"], resumed["run_dir"]
    dist = distributed.setup(cfg.device, cfg.devices)
    reporter = reporter if (reporter is not None and dist.is_main) else Reporter(enabled=False)
    reporter.log_every = cfg.train.log_every
    try:
        # 1. Process-wide settings: threads and seeds (model init uses the same seed on every rank).
        if dist.distributed and cfg.train.sync_batchnorm and dist.device.type != "cuda":
            raise ConfigError("train.sync_batchnorm needs GPUs: PyTorch's SyncBatchNorm does not run on the CPU")
        if cfg.speed.threads:
            torch.set_num_threads(cfg.speed.threads)
        seed_everything(cfg.seed)

        # 2. Data: decoded once, resident on the training device (or served by a DataLoader).
        bundle = data.build(cfg.data, cfg.seed)
        device = dist.device
        loader = cfg.data.loader
        if loader == "auto":
            loader = "tensor" if data.DATASETS[cfg.data.name].tensor_resident else "dataloader"
        train_split, val_split, test_split = bundle.train, bundle.val, bundle.test
        if loader == "tensor":
            train_split, val_split, test_split = (s.to(device) for s in (train_split, val_split, test_split))
        channels_last = cfg.speed.channels_last and device.type in ("cpu", "cuda")
        augment = data.AugmentParams(**{k: v for k, v in dataclasses.asdict(cfg.data.augment).items() if k != "enabled"}) \
            if cfg.data.augment.enabled else None
        shared = dict(rank=dist.rank, world_size=dist.world_size, workers=cfg.data.workers, channels_last=channels_last)
        train_batches = data.make_batches(train_split, bundle, loader, cfg.train.batch_size, device, shuffle=True,
                                          seed=cfg.seed, augment=augment, **shared)
        val_batches, test_batches = (
            data.make_batches(split, bundle, loader, cfg.train.eval_batch_size, device, shuffle=False, **shared)
            for split in (val_split, test_split))

        chunk = engine.eval_chunk(device, cfg.speed.eval_chunk)
        steps_per_epoch = min(len(train_batches), cfg.train.max_steps_per_epoch or math.inf)
        if steps_per_epoch < 1:
            raise ConfigError(f"the training set ({len(train_split)} images) is smaller than one batch per process")

        # 3. The run directory (rank 0 only): refuse to overwrite, save the resolved config.
        rundir = None
        if dist.is_main:
            if resumed is not None:
                rundir = RunDir.open(run_dir)
                ts = resumed["ckpt"]["training_state"]
                rundir.truncate_metrics(ts["epoch"] if ts["epoch_complete"] else ts["epoch"] - 1)
            else:
                rundir = RunDir.create(run_dir or default_path(cfg.out_dir, cfg.name or "run"))
                rundir.write_config(f"# resolved config; {dist.world_size} process(es) x train.batch_size "
                                    f"{cfg.train.batch_size} = global batch {dist.world_size * cfg.train.batch_size}\n"
                                    + config_mod.to_yaml(cfg))
            reporter.attach_log(rundir.log)
            backstop.set_run_dir(rundir.path)  # a crash from here on leaves its traceback in the run
        result = RunResult(rundir.path if rundir else None)
        if resumed is not None and rundir is not None:
            result.epochs = [_parse_row(r) for r in rundir.read_metrics()]

        # 4. Model: from the registry, optionally re-initialised, optionally from pretrained weights.
        model = create_model(cfg.model.name, num_classes=len(bundle.classes), in_channels=bundle.in_channels,
                             input_size=bundle.input_size, **cfg.model.kwargs)
        apply_init(model, cfg.model.init)
        if dist.distributed and cfg.train.sync_batchnorm:
            # before freezing: conversion replaces the BatchNorm modules that freeze() keeps in eval mode
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if cfg.finetune.checkpoint and resumed is None:
            _load_pretrained(model, cfg, reporter)
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)

        # 5. Optimizer, schedule, loss scaling.
        optimizer = build_optimizer(model, cfg, device)
        scheduler = build_scheduler(optimizer, cfg, int(steps_per_epoch))
        scaler = torch.amp.GradScaler("cuda") if (device.type == "cuda" and cfg.speed.amp == "fp16") else None

        # 6. Where to start: epoch 1, or where the resumed run stopped.
        start_epoch, epoch_state, best_val_acc, best_epoch, best_state = 1, None, -1.0, 0, None
        if resumed is not None:
            start_epoch, epoch_state, best_val_acc, best_epoch, best_state = _restore(
                resumed["ckpt"], model, optimizer, scheduler, scaler, dist)
        train_model: nn.Module = model
        if dist.distributed:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.speed.compile:
            train_model = torch.compile(train_model)
        seed_everything(cfg.seed + dist.rank)  # dropout etc. differ per rank
        if resumed is not None:
            checkpoint.set_rng_state(resumed["ckpt"]["training_state"]["rng"][dist.rank])

        n_params = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        reporter.info(f"{'resuming' if resumed else 'run'}: {result.run_dir}  model {cfg.model.name} "
                      f"({n_params:,} parameters, {n_train:,} trainable)  data {cfg.data.name}: "
                      f"{len(train_split)} train / {len(val_split)} val / {len(test_split)} test  "
                      f"device {device}{f' x {dist.world_size} processes' if dist.distributed else ''}")

        # 7. The epochs.
        tb = TensorBoardLogger.open(rundir.path / "tensorboard", cfg.log.tensorboard_every) \
            if (rundir is not None and cfg.log.tensorboard) else None
        if rundir is not None and cfg.log.tensorboard and tb is None:
            reporter.info("note: log.tensorboard is on but the tensorboard package is missing "
                          "(pip install 'convtrain[tensorboard]'); no event files are written")
        stop = _StopFlag()
        ckpt_meta = dict(model_name=cfg.model.name, model_kwargs=cfg.model.kwargs, classes=bundle.classes,
                         in_channels=bundle.in_channels, input_size=bundle.input_size, mean=bundle.mean,
                         std=bundle.std, dataset=cfg.data.name, config=config_mod.to_dict(cfg))
        with stop.installed():
            for epoch in range(start_epoch, cfg.train.epochs + 1):
                state = epoch_state if (epoch == start_epoch and epoch_state is not None) else engine.EpochState()
                train_batches.set_epoch(epoch)
                reporter.epoch_start(epoch, cfg.train.epochs, int(steps_per_epoch), cfg.train.batch_size, state.step)
                on_step = reporter.step if tb is None else _with_tensorboard(
                    reporter.step, tb, optimizer, (epoch - 1) * int(steps_per_epoch))
                try:
                    out = engine.train_one_epoch(
                        train_model, train_batches.iter_from(state.step), int(steps_per_epoch), optimizer, scheduler,
                        epoch=epoch, device=device, state=state, label_smoothing=cfg.train.label_smoothing,
                        grad_clip=cfg.train.grad_clip, nonfinite=cfg.train.nonfinite, amp=cfg.speed.amp,
                        scaler=scaler, on_step=on_step, should_stop=stop.is_set)
                except engine.NonFiniteLoss as exc:
                    reporter.epoch_end()
                    if rundir is not None:
                        rundir.write_results({"status": "failed", "reason": str(exc), "epoch": epoch})
                    raise TrainingError(f"training diverged: {exc}; the last good checkpoint is kept "
                                        f"(set train.nonfinite=skip to skip such batches, or lower optim.lr)") from None
                reporter.epoch_end()

                if out.stopped:
                    state_now = _training_state(epoch, False, out.state, optimizer, scheduler, scaler, best_val_acc,
                                                best_epoch, best_state, dist)  # a collective: every rank calls it
                    if rundir is not None:
                        rundir.save_checkpoint("last.pt", checkpoint.build(
                            model, epoch=epoch - 1, metrics={}, training_state=state_now, **ckpt_meta))
                        rundir.write_results({"status": "interrupted", "epoch": epoch, "step": out.state.step})
                    raise Interrupted(f"interrupted at epoch {epoch}, step {out.state.step}; last.pt saved. "
                                      f"Resume with: convtrain train --resume {result.run_dir}")

                val = engine.evaluate(model, val_batches, len(bundle.classes), device, cfg.speed.amp, chunk)
                test = (engine.evaluate(model, test_batches, len(bundle.classes), device, cfg.speed.amp, chunk)
                        if cfg.train.test_every_epoch else None)
                train_loss, train_acc = _global_train_metrics(out.state, device)
                row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val["loss"],
                       "val_acc": val["accuracy"], "test_loss": test["loss"] if test else None,
                       "test_acc": test["accuracy"] if test else None, "lr": optimizer.param_groups[0]["lr"],
                       "seconds": out.state.seconds, "val_seconds": val["seconds"],
                       "test_seconds": test["seconds"] if test else None}
                result.epochs.append(row)
                improved = val["accuracy"] > best_val_acc
                if improved:
                    best_val_acc, best_epoch = val["accuracy"], epoch
                    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                reporter.epoch_summary(row, cfg.train.epochs, improved)
                if tb is not None:
                    tb.epoch(row)
                state_now = _training_state(epoch, True, out.state, optimizer, scheduler, scaler, best_val_acc,
                                            best_epoch, best_state, dist)  # a collective: every rank calls it
                if rundir is not None:
                    rundir.append_metrics(row)
                    metrics = {k: v for k, v in row.items() if v is not None}
                    if improved:
                        rundir.save_checkpoint("best.pt", checkpoint.build(model, epoch=epoch, metrics=metrics, **ckpt_meta))
                    rundir.save_checkpoint("last.pt", checkpoint.build(
                        model, epoch=epoch, metrics=metrics, training_state=state_now, **ckpt_meta))

        # 8. Test the best checkpoint's weights (chosen on validation, never on test).
        result.best_epoch, result.best_val_acc = best_epoch, best_val_acc
        result.train_seconds = sum(r["seconds"] for r in result.epochs)
        if best_state is not None:
            model.load_state_dict(best_state)
        test = engine.evaluate(model, test_batches, len(bundle.classes), device, cfg.speed.amp, chunk)
        result.test = test
        if rundir is not None:
            rundir.write_results({
                "status": "finished", "best_epoch": best_epoch, "best_val_acc": best_val_acc,
                "test_accuracy": test["accuracy"], "test_loss": test["loss"], "test_num_samples": test["num_samples"],
                "test_per_class_accuracy": test["per_class_accuracy"], "test_confusion_matrix": test["confusion_matrix"],
                "classes": bundle.classes, "epochs": len(result.epochs), "train_seconds": result.train_seconds,
                "world_size": dist.world_size, "device": str(device)})
            if cfg.log.plots:
                _write_plots(rundir.path, reporter)
        if tb is not None:
            tb.close()
        return result
    finally:
        reporter.close()
        distributed.teardown(dist)


# --------------------------------------------------------------------------------------------
# Steps of the run


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(model: nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer over trainable parameters; when fine-tuning, head and backbone get their own lr."""
    o, ft = cfg.optim, cfg.finetune
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError("every parameter is frozen: nothing to train (check finetune.freeze)")
    if ft.checkpoint and (ft.head_lr is not None or ft.backbone_lr is not None):
        head = [p for n, p in trainable if n.startswith("head.")]
        rest = [p for n, p in trainable if not n.startswith("head.")]
        groups = [g for g in ({"params": rest, "lr": ft.backbone_lr or o.lr, "name": "backbone"},
                              {"params": head, "lr": ft.head_lr or o.lr, "name": "head"}) if g["params"]]
    else:
        groups = [{"params": [p for _, p in trainable], "lr": o.lr, "name": "all"}]
    # fused Adam/AdamW (one kernel for all parameters; CUDA, and CPU since torch 2.4) measured 6% faster
    # per training step than the default on the CPU; fused SGD gains nothing here
    extra = {"fused": True} if device.type in ("cuda", "cpu") and o.name != "sgd" else {}
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, **extra)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, **extra)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: RunConfig, steps_per_epoch: int):
    """A per-step schedule (so a mid-epoch resume lands on the same lr), or None."""
    s = cfg.sched
    total = steps_per_epoch * cfg.train.epochs
    if s.name == "none":
        return None
    if s.name == "step":
        every = s.step_epochs * steps_per_epoch
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: s.gamma ** (step // every))
    if s.name == "cosine":
        warmup = int(round(s.warmup_epochs * steps_per_epoch))

        def factor(base_lr: float):
            floor = min(s.min_lr / base_lr, 1.0)

            def f(step: int) -> float:
                if step < warmup:
                    return (step + 1) / warmup
                progress = min((step - warmup) / max(total - warmup, 1), 1.0)
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
            return f
        return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(g["lr"]) for g in optimizer.param_groups])
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                               total_steps=total, pct_start=s.pct_start)


def _load_pretrained(model: nn.Module, cfg: RunConfig, reporter: Reporter) -> None:
    ckpt = checkpoint.load(cfg.finetune.checkpoint)
    report = checkpoint.load_pretrained(model, ckpt, cfg.finetune.reinit_head, cfg.finetune.checkpoint)
    try:
        frozen = model.freeze(cfg.finetune.freeze)
    except ValueError as exc:
        raise ConfigError(f"finetune.freeze: {exc}") from None
    reporter.info(f"pretrained: {cfg.finetune.checkpoint} (model {ckpt['model']['name']}, dataset {ckpt['dataset']}, "
                  f"{ckpt['num_classes']} classes, epoch {ckpt['epoch']})")
    reporter.info(f"  loaded ({len(report['loaded'])}): {', '.join(report['loaded'])}")
    reporter.info(f"  re-initialised ({len(report['reinitialized'])}): {', '.join(report['reinitialized']) or 'none'}")
    reporter.info(f"  frozen ({len(frozen)}): {', '.join(frozen) or 'none'}")


def _training_state(epoch: int, complete: bool, state: engine.EpochState, optimizer, scheduler, scaler,
                    best_val_acc: float, best_epoch: int, best_state: dict | None, dist: distributed.DistInfo) -> dict:
    """Everything --resume needs. Per-rank parts (position in the epoch, RNG) are gathered from every rank."""
    per_rank = distributed.all_gather_objects({"epoch_state": state.as_dict(), "rng": checkpoint.rng_state()})
    return {
        "epoch": epoch,
        "epoch_complete": complete,
        "epoch_state": [r["epoch_state"] for r in per_rank],
        "rng": [r["rng"] for r in per_rank],
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "best_val_acc": best_val_acc,
        "best_epoch": best_epoch,
        "best_state": best_state,
        "world_size": dist.world_size,
    }


def _restore(ckpt: dict, model, optimizer, scheduler, scaler, dist: distributed.DistInfo):
    ts = ckpt["training_state"]
    if ts["world_size"] != dist.world_size:
        raise ConfigError(f"this run was saved with {ts['world_size']} process(es); resume it with the same number "
                          f"(now {dist.world_size}) so that the data order and RNG states carry over")
    model.load_state_dict(ckpt["model"]["state_dict"])
    optimizer.load_state_dict(ts["optimizer"])
    if scheduler is not None and ts["scheduler"] is not None:
        scheduler.load_state_dict(ts["scheduler"])
    if scaler is not None and ts["scaler"] is not None:
        scaler.load_state_dict(ts["scaler"])
    if ts["epoch_complete"]:
        start_epoch, epoch_state = ts["epoch"] + 1, None
    else:
        start_epoch, epoch_state = ts["epoch"], engine.EpochState(**ts["epoch_state"][dist.rank])
    return start_epoch, epoch_state, ts["best_val_acc"], ts["best_epoch"], ts["best_state"]


def _global_train_metrics(state: engine.EpochState, device: torch.device) -> tuple[float, float]:
    """Mean training loss and accuracy over the samples of every rank."""
    totals = torch.tensor([state.loss_sum, state.correct, state.samples], dtype=torch.float64, device=device)
    distributed.all_reduce_sum(totals)
    seen = max(float(totals[2]), 1.0)
    return float(totals[0]) / seen, float(totals[1]) / seen


def _load_resume(resume: str | Path, cfg: RunConfig | None) -> dict:
    """Find last.pt, check that ``cfg`` (if given) only differs in resumable settings."""
    path = Path(resume)
    last = path / "checkpoints" / "last.pt" if path.is_dir() else path
    run_dir = last.parent.parent
    ckpt = checkpoint.load(last)
    if "training_state" not in ckpt:
        raise CheckpointError(f"{last} has no training state (is it a best.pt?); resume needs a run's last.pt")
    saved = config_mod.from_dict(ckpt["config"], f"{last} (saved config)")
    if cfg is not None:
        diffs = _config_diff(config_mod.to_dict(saved), config_mod.to_dict(cfg))
        refused = [d for d in diffs if d[0] not in RESUMABLE_CHANGES and d[0] != "name"]
        if saved.sched.name in ("cosine", "onecycle"):
            # these schedules are laid out over the total step count: more epochs would change them
            refused += [d for d in diffs if d[0] == "train.epochs"]
        if refused:
            listing = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in refused)
            raise ConfigError(f"cannot resume {run_dir} with a different config ({listing}); "
                              f"only these may change: {', '.join(RESUMABLE_CHANGES)}")
        for key, _, new in diffs:
            if key in RESUMABLE_CHANGES:
                _set_path(saved, key, new)
    return {"config": saved, "run_dir": run_dir, "ckpt": ckpt}


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    out = []
    for key in a:
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(a[key], dict) and isinstance(b.get(key), dict) and key != "kwargs":
            out.extend(_config_diff(a[key], b[key], path))
        elif a[key] != b.get(key):
            out.append((path, a[key], b.get(key)))
    return out


def _set_path(cfg: RunConfig, path: str, value) -> None:
    *parents, leaf = path.split(".")
    node = cfg
    for p in parents:
        node = getattr(node, p)
    setattr(node, leaf, copy.deepcopy(value))


def _parse_row(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        out[k] = None if v in ("", None) else (int(v) if k == "epoch" else float(v))
    return out


def _with_tensorboard(report_step, tb: TensorBoardLogger, optimizer, offset: int):
    def on_step(step: int, loss) -> None:
        report_step(step, loss)
        tb.step(offset + step, loss, optimizer.param_groups[0]["lr"])
    return on_step


def _write_plots(run_dir: Path, reporter: Reporter) -> None:
    from .plots import MissingExtra, plot_run

    try:
        written = plot_run(run_dir)
    except MissingExtra:
        reporter.info("note: curves.png and confusion.png need matplotlib (pip install 'convtrain[plot]')")
        return
    reporter.info(f"plots: {', '.join(p.name for p in written)}")


class _StopFlag:
    """First SIGINT/SIGTERM asks the loop to stop at the next step; a second one stops at once."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def is_set(self) -> bool:
        return self._event.is_set()

    def _handler(self, signum, frame) -> None:
        if self._event.is_set():
            raise KeyboardInterrupt
        self._event.set()

    def installed(self):
        flag = self

        class _Ctx:
            def __enter__(self_inner):
                self_inner.saved = {}
                if threading.current_thread() is threading.main_thread():
                    for sig in (signal.SIGINT, signal.SIGTERM):
                        self_inner.saved[sig] = signal.signal(sig, flag._handler)
                return flag

            def __exit__(self_inner, *exc):
                for sig, old in self_inner.saved.items():
                    signal.signal(sig, old)
                return False
        return _Ctx()
