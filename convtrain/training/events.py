"""The run-event protocol: what a training run tells its hooks, when, and in which order.

The runner (:mod:`convtrain.training.runner`) names no tracker and no loop feature. It holds one
:class:`Hooks` list and fires the events below at fixed points of a run; each entry is a
:class:`Hook`, whose methods all do nothing until a subclass overrides them. The entries are the
modules of :mod:`convtrain.training.hooks`, found there by :func:`discover` (a new tracker or loop
feature is one module there plus its schema keys: no list to edit), plus the caller's own
(``run(..., hooks=[...])``: ``convtrain tune``'s pruner).

The events, in the order a run fires them (``run`` is the run's parts,
:class:`~convtrain.training.state.Run`)::

    setup(run)                       the model, optimizer and data exist; nothing is written yet
    load_state_dict(state)           the hook's key of last.pt's training state (None: fresh, or absent)
    on_start(run)                    the run directory exists (rank 0's; a do-nothing one elsewhere)
    each epoch:
      on_epoch_start(epoch)
      between optimizer steps:       should_stop(epoch_seconds) -> bool  (any hook, any rank: stop here)
      after each optimizer step:     on_update()
      after each batch:              on_step(global_step, loss, lr)   (loss: a 0-dim tensor on the device)
      on_train_epoch_end(epoch, complete)   steps done, before validation (complete: False for a
                                     max_time stop inside the epoch)
      eval_model(model) -> model     the weights that are validated, saved as best.pt / epoch-NNN.pt
                                     and tested (folded over the list: the trained model, or EMA's, SWA's)
      on_epoch_end(row)              the epoch's metrics row, before its checkpoints
      on_checkpoint(epoch, files)    inside the epoch's save, after best.pt, before last.pt
      state_dict()                   saved in last.pt under ``state_key``
      on_epoch_saved(row)            last.pt is written; may raise RunStopped (the run ends there)
      stop_reason(last_epoch) -> Stop | None   before the next epoch (the first hook's answer wins)
    results() -> dict                keys the hook adds to results.json
    on_finish(run)                   results.json is written (trackers upload it)
    on_end(status)                   always, last: finished / interrupted / failed / pruned

**Order.** Hooks run in the order of their ``order`` (ties: discovery order, by module name):
10-19 decide the evaluated model (EMA 10, SWA 11: before best.pt is chosen and before anything logs
a number), 20-29 stopping rules and limits, 30-39 kept checkpoints, 50-59 trackers (they see what the
hooks before them decided), 100 and up the caller's (tune's pruner, after the saves).

A hook that keeps state across ``--resume`` names its ``state_key`` and registers that key's check
in :data:`convtrain.artifacts.training_state.VALIDATORS` (below the training code, so a checkpoint
is checked without importing it). Hooks on ranks other than 0 exist too (the EMA, the stopping
rules); a hook that writes files or talks to a server returns None from ``build`` there.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

HOOK_PACKAGE = "convtrain.training.hooks"


class Stop(NamedTuple):
    """Why a run stops before ``train.epochs``: ``by`` goes into results.json's ``stopped_by``,
    ``note`` is the line the run prints."""

    by: str
    note: str


class Hook:
    """One entry of a run's hook list; every event does nothing here (see the module docstring)."""

    state_key: str | None = None  # its key in last.pt's training state; None: nothing saved
    order: int = 100  # see the module docstring: lower runs first

    def setup(self, run: Any) -> None:
        pass

    def state_dict(self) -> Any:
        return None

    def load_state_dict(self, state: Any) -> None:
        pass

    def on_start(self, run: Any) -> None:
        pass

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def on_step(self, global_step: int, loss: Any, lr: float) -> None:
        pass

    def on_update(self) -> None:
        pass

    def should_stop(self, epoch_seconds: float) -> bool:
        return False

    def on_train_epoch_end(self, epoch: int, complete: bool) -> None:
        pass

    def eval_model(self, model: Any) -> Any:
        return model

    def on_epoch_end(self, row: Any) -> None:
        pass

    def on_checkpoint(self, epoch: int, files: Any) -> None:
        pass

    def on_epoch_saved(self, row: Any) -> None:
        pass

    def stop_reason(self, last_epoch: int) -> Stop | None:
        return None

    def results(self) -> dict:
        return {}

    def on_finish(self, run: Any) -> None:
        pass

    def on_end(self, status: str) -> None:
        pass


def _overrides(hook: Hook, event: str) -> bool:
    return getattr(type(hook), event) is not getattr(Hook, event)


class Hooks:
    """The run's hooks in their order; each method fires one event on every hook."""

    def __init__(self, hooks: Iterable[Hook] = ()) -> None:
        self.hooks = sorted(hooks, key=lambda h: h.order)  # stable: equal orders keep discovery order
        # the per-batch events go only to the hooks that listen (most do not)
        self._step = [h for h in self.hooks if _overrides(h, "on_step")]
        self._update = [h for h in self.hooks if _overrides(h, "on_update")]
        self._stop = [h for h in self.hooks if _overrides(h, "should_stop")]

    def __iter__(self):
        return iter(self.hooks)

    def _fire(self, event: str, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, event)(*args)

    def setup(self, run: Any, saved: dict) -> None:
        """Give every hook the run's parts, then its saved state (``saved``: last.pt's training state, or {})."""
        self._fire("setup", run)
        for hook in self.hooks:
            if hook.state_key is not None:
                hook.load_state_dict(saved.get(hook.state_key))

    def state_dicts(self) -> dict:
        return {h.state_key: h.state_dict() for h in self.hooks if h.state_key is not None}

    def on_start(self, run: Any) -> None:
        self._fire("on_start", run)

    def on_epoch_start(self, epoch: int) -> None:
        self._fire("on_epoch_start", epoch)

    def on_step(self, global_step: int, loss: Any, lr: float) -> None:
        for hook in self._step:
            hook.on_step(global_step, loss, lr)

    def on_update(self) -> None:
        for hook in self._update:
            hook.on_update()

    def should_stop(self, epoch_seconds: float) -> bool:
        return any(hook.should_stop(epoch_seconds) for hook in self._stop)

    def on_train_epoch_end(self, epoch: int, complete: bool) -> None:
        self._fire("on_train_epoch_end", epoch, complete)

    def eval_model(self, model: Any) -> Any:
        for hook in self.hooks:
            model = hook.eval_model(model)
        return model

    def on_epoch_end(self, row: Any) -> None:
        self._fire("on_epoch_end", row)

    def on_checkpoint(self, epoch: int, files: Any) -> None:
        self._fire("on_checkpoint", epoch, files)

    def on_epoch_saved(self, row: Any) -> None:
        self._fire("on_epoch_saved", row)

    def stop_reason(self, last_epoch: int) -> Stop | None:
        return next((s for h in self.hooks if (s := h.stop_reason(last_epoch)) is not None), None)

    def results(self) -> dict:
        return {k: v for hook in self.hooks for k, v in hook.results().items()}

    def on_finish(self, run: Any) -> None:
        self._fire("on_finish", run)

    def on_end(self, status: str) -> None:
        self._fire("on_end", status)


_REGISTERED: list = []  # builders added from outside the package (register): a plug-in, a test


def register(build: Callable[[Any, bool], Hook | None]) -> Callable[[Any, bool], Hook | None]:
    """Add a hook builder from outside :mod:`convtrain.training.hooks` (your own project, a plug-in, a
    test): ``build(cfg, is_main) -> Hook | None`` is then called for every run of this process, after
    the package's own modules, exactly like theirs. Usable as a decorator; returns ``build``."""
    if build not in _REGISTERED:
        _REGISTERED.append(build)
    return build


def unregister(build: Callable[[Any, bool], Hook | None]) -> None:
    """Remove a builder :func:`register` added (a test cleaning up after itself)."""
    if build in _REGISTERED:
        _REGISTERED.remove(build)


def discover(package: str = HOOK_PACKAGE) -> list:
    """The hook modules of ``package``, by name (modules whose name starts with ``_`` are helpers).
    Each defines ``build(cfg, is_main) -> Hook | None``."""
    pkg = importlib.import_module(package)
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    return [importlib.import_module(f"{package}.{name}") for name in names]


def build(cfg: Any, is_main: bool, extra: Iterable[Hook] = ()) -> Hooks:
    """The run's hooks: every discovered module's and registered builder's (those the config turns on),
    then the caller's.

    Called before the data is read: a hook whose optional package is missing refuses the run here
    (:func:`convtrain.extras.require_extra`, exit 2), before anything is written."""
    builders = [module.build for module in discover()] + list(_REGISTERED)
    built = [hook for make in builders if (hook := make(cfg, is_main)) is not None]
    return Hooks([*built, *extra])
