"""``convtrain runs diff RUN_A RUN_B``: what differs between two runs, from their files only.

The resolved configs (config.yaml) are compared key by key, the metrics (metrics.csv) epoch by
epoch (B minus A), and the final test accuracies (results.json) side by side. Read-only, through
runfiles' typed readers: a damaged file is one line naming it, never a traceback.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .. import atomic
from ..config.diff import config_diff
from ..errors import ConfigError
from . import runfiles

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "lr", "seconds", "val_macro_f1",
           "val_balanced_acc")
# results.json's final numbers, side by side (a run written before macro-F1 existed has null there)
FINAL = ("test_accuracy", "test_macro_f1", "test_balanced_accuracy")
# keys every run has a different value of, whatever its recipe
_IGNORED = ("data.root", "out_dir")


def diff_runs(run_a: str | Path, run_b: str | Path) -> dict:
    """The differences between two run directories, as plain data (what ``--json`` prints)."""
    a, b = runfiles.require_run_dir(run_a), runfiles.require_run_dir(run_b)
    config = [{"key": k, "a": va, "b": vb} for k, va, vb in
              config_diff(runfiles.read_run_config(a), runfiles.read_run_config(b), ignore=_IGNORED)]
    rows_a = {r.epoch: r for r in runfiles.read_metrics(a)}
    rows_b = {r.epoch: r for r in runfiles.read_metrics(b)}
    epochs = []
    for epoch in sorted(set(rows_a) | set(rows_b)):
        ra, rb = rows_a.get(epoch), rows_b.get(epoch)
        entry = {"epoch": epoch}
        for m in METRICS:
            va, vb = getattr(ra, m, None), getattr(rb, m, None)
            entry[m] = {"a": va, "b": vb, "delta": vb - va if va is not None and vb is not None else None}
        epochs.append(entry)
    res_a, res_b = runfiles.read_results(a), runfiles.read_results(b)
    final = {}
    for key in FINAL:
        va, vb = getattr(res_a, key, None), getattr(res_b, key, None)
        final[key] = {"a": va, "b": vb, "delta": vb - va if None not in (va, vb) else None}
    return {"a": str(a), "b": str(b), "config": config, "epochs": epochs, **final,
            "status": {"a": res_a.status if res_a else None, "b": res_b.status if res_b else None}}


def to_json(diff: dict) -> str:
    """``--json``: a diverged run's NaN or inf loss is ``null`` (JSON has no NaN; ``json.dumps`` would
    print the bare word ``NaN``, which strict parsers refuse)."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(diff), allow_nan=False)


def plot_diff(diff: dict, output: Path) -> Path:
    """Both runs' validation accuracy and loss per epoch on one picture (needs matplotlib)."""
    from .plots import _pyplot, _save_figures

    try:  # before drawing: --plot /dev/null (or a FIFO, a link) is refused, never replaced
        atomic.refuse_non_regular(output)
    except FileExistsError:
        raise ConfigError(f"--plot {output}: it exists and is not a regular file (a device, pipe or link); "
                          f"give a file name") from None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for side, style in (("a", "-o"), ("b", "-s")):
        points = [(e["epoch"], e["val_acc"][side], e["val_loss"][side]) for e in diff["epochs"]
                  if e["val_acc"][side] is not None]
        label = f"{side.upper()}: {Path(diff[side]).name}"
        axes[0].plot([p[0] for p in points], [p[1] for p in points], style, label=label)
        axes[1].plot([p[0] for p in points], [p[2] for p in points], style, label=label)
    for ax, name in zip(axes, ("validation accuracy", "validation loss")):
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    output = Path(output)
    # written like curves.png: a temporary file, then a rename (a failure leaves no half picture)
    return _save_figures(plt, {output.name: fig}, output.parent)[0]
