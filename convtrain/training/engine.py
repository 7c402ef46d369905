"""The training and evaluation loops: pure functions that return numbers.

No file I/O, no config objects, no printing: the runner passes plain values in and decides what
to do with what comes back. Progress is reported through an optional callback.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .distributed import all_reduce_sum, broadcast_flag, earliest_bad_step
from .scores import class_scores


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite at ``(epoch, step)``."""

    def __init__(self, epoch: int, step: int, value: float) -> None:
        super().__init__(f"loss is {value} at epoch {epoch}, step {step}")
        self.epoch, self.step, self.value = epoch, step, value


@dataclass
class EpochState:
    """Running sums of one training epoch; saved in a mid-epoch checkpoint so resume is exact."""

    step: int = 0  # steps done in this epoch
    loss_sum: float = 0.0
    correct: int = 0
    samples: int = 0
    skipped: int = 0  # batches whose loss was NaN/inf and that were not applied (nonfinite="skip")
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class EpochResult:
    loss: float
    acc: float
    state: EpochState
    stopped: bool = False  # True when should_stop() asked to stop before the epoch's end


def autocast(device: torch.device, amp: str):
    """Mixed-precision context on CUDA for ``amp`` in (bf16, fp16); a no-op otherwise."""
    if device.type != "cuda" or amp == "off":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def train_one_epoch(model: nn.Module, batches: Iterator[tuple[Tensor, Tensor]], num_steps: int,
                    optimizer: torch.optim.Optimizer, scheduler, *, epoch: int, device: torch.device,
                    state: EpochState | None = None, loss: Callable | None = None, grad_clip: float | None = None,
                    nonfinite: str = "stop", amp: str = "off", scaler: torch.amp.GradScaler | None = None,
                    on_step: Callable[[int, Tensor], None] | None = None,
                    should_stop: Callable[[], bool] | None = None, accumulate: int = 1,
                    on_update: Callable[[], None] | None = None, check_every: int = 1) -> EpochResult:
    """Run ``num_steps`` batches over ``batches`` (from ``state.step``) with ``loss`` (None: cross-entropy).

    Returns mean loss and accuracy over the samples seen. Raises :class:`NonFiniteLoss` when
    ``nonfinite == "stop"`` and a loss is NaN/inf; with ``"skip"`` that batch is not applied.

    ``accumulate`` N: one optimizer step (and scheduler step, and ``on_update()``) every N batches,
    each batch's loss divided by the size of its window, so batch B x N trains like batch N*B. The
    last window of an epoch may be shorter (r < N batches): it is stepped too, its losses divided by
    r. A skipped (non-finite) batch drops its whole window. ``should_stop`` is asked only between
    windows, so a stop (and the last.pt it saves) never loses half-accumulated gradients.

    ``check_every``: the host reads the non-finite flag and the stop request every this many steps
    (the stop request only where that is also a window's start) and at the epoch's end (1: every
    step; see :class:`_DeferredCheck` for what N > 1 guarantees).
    """
    state = state or EpochState()
    model.train()
    sums = _Sums(device, state)
    every = check_every if nonfinite == "stop" else 1
    deferred = _DeferredCheck(device, epoch) if every > 1 else None
    stopped = False
    dropped = False  # a batch of the current accumulation window was skipped: the window is not applied
    for x, y in batches:
        if state.step >= num_steps:
            break
        window_start = state.step % accumulate == 0
        if window_start and state.step % every == 0 and _asked_to_stop(should_stop, device):
            stopped = True
            break
        if window_start:
            optimizer.zero_grad(set_to_none=True)
            dropped = False
        window = min(accumulate, num_steps - (state.step - state.step % accumulate))
        window_end = state.step % accumulate + 1 == window
        logits, loss_value, finite = _forward_backward(model, x, y, window, window_end, loss or F.cross_entropy, amp,
                                                       scaler, deferred, state.step + 1, device)
        if not finite:
            if nonfinite == "stop":
                raise NonFiniteLoss(epoch, state.step + 1, float(loss_value.detach()))
            state.skipped += 1
            dropped = True  # every rank agrees (broadcast_flag), so DDP ranks stay in step
        if window_end and not dropped:
            _apply_gradients(model, optimizer, scaler, grad_clip, scheduler, on_update)
        state.step += 1
        if finite:
            sums.add(loss_value, logits, y)
            if on_step is not None:
                on_step(state.step, loss_value.detach())
        if deferred is not None and state.step % every == 0:
            deferred.raise_if_bad()
    if deferred is not None:
        deferred.raise_if_bad()  # before the caller validates or saves these weights
    return sums.result(stopped)


def _asked_to_stop(should_stop: Callable[[], bool] | None, device: torch.device) -> bool:
    """Every rank gets rank 0's answer, so all of them stop at the same step."""
    return should_stop is not None and broadcast_flag(should_stop(), device)


class _Sums:
    """An epoch's loss and correct counts, summed on the device (no host read per step)."""

    def __init__(self, device: torch.device, state: EpochState) -> None:
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.state, self.start = state, time.perf_counter()

    def add(self, loss: Tensor, logits: Tensor, y: Tensor) -> None:
        n = y.shape[0]
        self.loss += loss.detach().double() * n
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.state.samples += n

    def result(self, stopped: bool) -> EpochResult:
        """Fold the sums into the epoch state (which may hold earlier steps of a resumed epoch)."""
        state = self.state
        state.loss_sum += float(self.loss)
        state.correct += int(self.correct)
        state.seconds += time.perf_counter() - self.start
        seen = max(state.samples, 1)
        return EpochResult(state.loss_sum / seen, state.correct / seen, state, stopped)


def _forward_backward(model: nn.Module, x: Tensor, y: Tensor, window: int, window_end: bool, loss_fn: Callable,
                      amp: str, scaler, deferred, step: int, device: torch.device) -> tuple[Tensor, Tensor, bool]:
    """One batch's forward and, when its loss is finite, backward (the loss divided by its window)."""
    # DDP: gradients are all-reduced on the window's last batch only (the standard use of no_sync)
    with contextlib.nullcontext() if window_end else _no_sync(model):
        with autocast(device, amp):
            logits = model(x)
            loss = loss_fn(logits, y)
        finite = _finite(loss, deferred, step, device)
        if finite:
            _backward(loss / window if window > 1 else loss, scaler)
    return logits, loss, finite


def _no_sync(model: nn.Module):
    """DDP's no_sync() (skip the gradient all-reduce of a non-final micro-batch); a no-op otherwise."""
    no_sync = getattr(model, "no_sync", None)
    return no_sync() if callable(no_sync) else contextlib.nullcontext()


def _backward(loss: Tensor, scaler: torch.amp.GradScaler | None) -> None:
    """Add this batch's gradients (through the fp16 loss scaler if any)."""
    (scaler.scale(loss) if scaler is not None else loss).backward()


class _DeferredCheck:
    """The first non-finite loss of an epoch, kept on the device until the host asks (no sync per step).

    Reading ``bool(isfinite(loss))`` every step makes Python wait for a GPU every step. With
    ``check_every`` N > 1 and ``nonfinite="stop"`` the step and value of the first NaN/inf loss are
    recorded on the device and raised at the next read (every N steps and at the epoch's end), so
    up to N-1 more steps run on weights that are then never saved: the error names the first bad
    step, and no epoch ends (validation, checkpoints) with such weights; the last good checkpoint
    is kept. ``"skip"`` keeps reading every step: a skipped batch must leave weights, optimizer
    moments and the schedule untouched, which needs the answer before the step.
    """

    def __init__(self, device: torch.device, epoch: int) -> None:
        self.epoch = epoch
        self.first_bad = torch.zeros((), dtype=torch.int64, device=device)  # 0: none yet, else its step
        self.value = torch.zeros((), dtype=torch.float32, device=device)

    def note(self, loss: Tensor, step: int) -> None:
        loss = loss.detach().float()
        first = (self.first_bad == 0) & ~torch.isfinite(loss)
        self.first_bad = torch.where(first, step, self.first_bad)
        self.value = torch.where(first, loss, self.value)

    def raise_if_bad(self) -> None:
        # the one host read; across processes every rank stops if any rank saw a bad loss, and all
        # of them name the earliest bad step of any rank
        step, value = earliest_bad_step(self.first_bad, self.value)
        if step:
            raise NonFiniteLoss(self.epoch, step, value)


def check_interval(device: torch.device, log_every: int) -> int:
    """How often train_one_epoch reads its flags: every ``train.log_every`` steps on CUDA (the progress
    line reads the loss then anyway), every step elsewhere (a CPU has no queue to drain)."""
    return log_every if device.type == "cuda" else 1


def _finite(loss: Tensor, deferred: _DeferredCheck | None, step: int, device: torch.device) -> bool:
    """Whether this batch's loss may be applied. One host sync per step: it is what lets a NaN be
    caught before it reaches the weights; with a deferred check the flag stays on the device."""
    if deferred is not None:
        deferred.note(loss, step)
        return True
    return not broadcast_flag(not bool(torch.isfinite(loss)), device)


def _apply_gradients(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                     grad_clip: float | None, scheduler=None, on_update: Callable[[], None] | None = None) -> None:
    """Optional clipping of the accumulated gradients, the optimizer step (through the scaler if any),
    then the schedule's step and ``on_update()`` (the EMA): one optimizer step's work."""
    if scaler is not None:
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    if on_update is not None:
        on_update()


@torch.inference_mode()
def evaluate(model: nn.Module, batches, num_classes: int, device: torch.device, amp: str = "off",
             chunk: int | None = None, progress: Callable[[int], None] | None = None,
             outputs: list | None = None) -> dict:
    """Loss, accuracy, per-class accuracy, macro-F1, balanced accuracy and confusion matrix over ``batches``.

    Each batch is run through the model in pieces of at most ``chunk`` images (the numbers are
    the same; on a CPU small pieces stay in cache: 10k MNIST images took 0.60 s in pieces of 64
    and 1.34 s in batches of 1000 on our 2-core test machine).

    Sums are reduced across ranks, so under DDP every sample counts once. Returns plain numbers:
    ``loss``, ``accuracy`` (fraction), ``num_samples``, ``per_class_accuracy`` (list),
    ``confusion_matrix`` (rows = true class, columns = predicted), ``macro_f1``, ``balanced_accuracy``
    (:mod:`convtrain.training.scores`), ``seconds``. ``progress`` is called with the number of batches
    done after each one (no device sync). ``outputs``: a list that gets each piece's ``(logits, labels)``
    on the CPU, in batch order (``eval --report`` reads every image's scores; one process only).
    """
    model.eval()
    start = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    for done, (xb, yb) in enumerate(batches, start=1):
        step = chunk or xb.shape[0]
        for x, y in zip(xb.split(step), yb.split(step)):
            with autocast(device, amp):
                logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
            if outputs is not None:
                outputs.append((logits.float().cpu(), y.cpu()))
            confusion += torch.bincount(y * num_classes + logits.argmax(1), minlength=num_classes * num_classes)
        if progress is not None:
            progress(done)
    all_reduce_sum(loss_sum)
    all_reduce_sum(confusion)
    cm = confusion.view(num_classes, num_classes).cpu()
    total = int(cm.sum())
    per_class_total = cm.sum(1)
    per_class = (cm.diag().double() / per_class_total.clamp(min=1)).tolist()
    scores = class_scores(cm.tolist())
    return {
        "loss": float(loss_sum) / max(total, 1),
        "accuracy": int(cm.diag().sum()) / max(total, 1),
        "num_samples": total,
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "macro_f1": scores["macro"]["f1"],
        "balanced_accuracy": scores["balanced_accuracy"],
        "seconds": time.perf_counter() - start,
    }


def eval_chunk(device: torch.device, configured: int | None) -> int | None:
    """``speed.eval_chunk``, or automatically 64 images on a CPU and whole batches elsewhere."""
    if configured is not None:
        return configured
    return 64 if device.type == "cpu" else None
