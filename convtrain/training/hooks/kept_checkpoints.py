"""Checkpoints kept besides best.pt and last.pt (``convtrain average`` averages them: artifacts/average.py).

``checkpoint.keep_top_k: K`` keeps the K best epochs by validation accuracy (ties keep the earlier
epoch, like best.pt) and ``checkpoint.every_n_epochs: N`` every N-th epoch, each as
``RUN/checkpoints/epoch-NNN.pt`` with the weights best.pt would hold (the evaluated model: the EMA
or SWA weights when those are on). The list of kept epochs is in last.pt, so a resumed run keeps the
same files.
"""

from __future__ import annotations

import re

from ...config.schema import CheckpointConfig, RunConfig
from ..events import Hook

EPOCH_FILE = re.compile(r"epoch-(\d+)\.pt")


def epoch_file(epoch: int) -> str:
    return f"epoch-{epoch:03d}.pt"


class Kept(Hook):
    """Which epochs have an ``epoch-NNN.pt``: after each epoch's row (``on_epoch_end``) the top-k list is
    updated; inside the save (``on_checkpoint``) this epoch's file is written when wanted, and the
    files that fell out are removed once last.pt no longer lists them."""

    state_key = "kept"
    order = 30

    def __init__(self, cfg: CheckpointConfig) -> None:
        self.top_k, self.every = cfg.keep_top_k, cfg.every_n_epochs
        self.top: list[tuple[float, int]] = []  # (val_acc, epoch), best first

    @property
    def enabled(self) -> bool:
        return self.top_k > 0 or self.every is not None

    def on_epoch_end(self, row) -> None:
        self.after_epoch(row.epoch, row.val_acc)

    def on_checkpoint(self, epoch: int, files) -> None:
        if self.wanted(epoch):
            files.save(epoch_file(epoch))
        files.remove(self.stale(files.names()))

    def after_epoch(self, epoch: int, val_acc: float) -> bool:
        """Update the top-k list with this epoch; True when its file is to be written."""
        if self.top_k:  # a max_time stop's partial epoch, finished after a resume, is entered again
            entries = [*[t for t in self.top if t[1] != epoch], (val_acc, epoch)]
            self.top = sorted(entries, key=lambda t: (-t[0], t[1]))[: self.top_k]
        return self.wanted(epoch)

    def wanted(self, epoch: int) -> bool:
        return any(e == epoch for _, e in self.top) or (self.every is not None and epoch % self.every == 0)

    def stale(self, names: list[str]) -> list[str]:
        """The epoch-NNN.pt files among ``names`` that are no longer kept (they dropped out of the top k,
        or were written after the last.pt a run resumed from)."""
        if not self.enabled:
            return []  # never delete what an earlier setting kept because the feature is off now
        found = [(n, EPOCH_FILE.fullmatch(n)) for n in names]
        return [n for n, m in found if m and not self.wanted(int(m.group(1)))]

    def state_dict(self) -> list:
        return [[acc, epoch] for acc, epoch in self.top]

    def load_state_dict(self, state: list | None) -> None:
        if state is not None:
            self.top = [(float(acc), int(epoch)) for acc, epoch in state]


def build(cfg: RunConfig, is_main: bool) -> Kept:
    return Kept(cfg.checkpoint)  # always present: last.pt keeps its ``kept`` key
