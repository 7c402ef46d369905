"""The answer of a study: its trials as a table, tune.json, best.yaml, and two pictures.

Read from the study's database (so it covers every worker's trials, on any machine):

* ``tune.json``: the trials (params, value, best value, epochs, state, seconds, run directory),
  the best trial, the counts by state and what pruning saved (epochs not trained, in whole trials);
* ``best.yaml``: the best trial's full resolved config, runnable as ``convtrain train --config``;
* ``history.png`` (each trial's value and the best so far) and ``importances.png`` (Optuna's
  PED-ANOVA parameter importances), when matplotlib is installed.

The test set plays no part: trials are ranked on their validation metric only.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import atomic
from ..config.schema import from_dict, to_dict, to_yaml
from ..errors import MissingExtra, OutputError
from .study import StudyPlan


def trial_rows(study, epochs: int) -> list[dict]:
    """One dict per trial, by number: state, params, value, best intermediate value, epochs, seconds."""
    rows = []
    maximize = study.direction.name == "MAXIMIZE"
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        inter = list(t.intermediate_values.values())
        best = (max(inter) if maximize else min(inter)) if inter else None
        wall = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        # the training seconds of the trial's run (its epochs, as `convtrain runs` and the trial's line count
        # them); the wall time adds loading data and testing (a study written before: the wall time only)
        seconds = t.user_attrs.get("train_seconds", wall)
        state = "surplus" if t.user_attrs.get("surplus") else t.state.name.lower()
        rows.append({"number": t.number, "state": state, "params": dict(t.params),
                     "value": t.value, "best": t.value if t.value is not None else best, "epochs": len(inter),
                     "epochs_planned": (t.user_attrs.get("config") or {}).get("train", {}).get("epochs", epochs),
                     "seconds": seconds, "wall_seconds": wall, "run_dir": t.user_attrs.get("run_dir"), "host": t.user_attrs.get("host")})
    return rows


def summarize(study, plan: StudyPlan) -> dict:
    rows = trial_rows(study, plan.epochs)
    for r in rows:  # a study folder renamed or copied since: its trials are where the folder is now
        moved = plan.folder / Path(r["run_dir"]).name if r["run_dir"] else None
        if moved is not None and not Path(r["run_dir"]).is_dir() and moved.is_dir():
            r["run_dir"] = str(moved.resolve())
    by_state: dict[str, int] = {}
    for r in rows:
        by_state[r["state"]] = by_state.get(r["state"], 0) + 1
    complete = [r for r in rows if r["state"] == "complete"]
    maximize = plan.direction == "maximize"
    ranked = sorted(complete, key=lambda r: r["value"], reverse=maximize)
    pruned = [r for r in rows if r["state"] == "pruned"]
    saved = sum(max(r["epochs_planned"] - r["epochs"], 0) for r in pruned)
    trained = sum(r["epochs"] for r in rows)
    return {
        "study": plan.name, "metric": plan.metric, "direction": plan.direction, "trials_target": plan.trials,
        "finished": by_state.get("complete", 0) + by_state.get("pruned", 0), "states": by_state,
        "best": ranked[0] if ranked else None, "ranking": [r["number"] for r in ranked],
        "pruning": {"pruner": plan.pruner, "pruned_trials": len(pruned), "epochs_trained": trained,
                    "epochs_saved": saved, "trials_saved": saved / plan.epochs if plan.epochs else 0.0},
        "trials": rows,
    }


def best_config(study, summary: dict, *, portable: bool = True):
    """The best trial's resolved config (checked again by the schema), or None without a complete trial.
    ``portable``: its data section as the user gave it (best.yaml travels; CONVTRAIN_DATA_ROOT fills in the
    root where it runs); else as the trial resolved it on this machine (``--confirm`` retrains here)."""
    if summary["best"] is None:
        return None
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == summary["best"]["number"])
    raw = dict(trial.user_attrs["config"])
    raw["name"] = f"{summary['study']}-best"
    given = study.user_attrs.get("data_given")
    if portable and isinstance(given, dict):  # the data keys as the user gave them: no root from CONVTRAIN_DATA_ROOT
        searched = {k.split(".", 1)[1]: v for k, v in trial.params.items() if k.startswith("data.")}
        raw["data"] = {**given, **searched}
    return from_dict(raw, f"study {summary['study']}, trial {trial.number}")


def write_report(study, plan: StudyPlan, note=print) -> dict:
    """Write tune.json, best.yaml and the plots into the study folder; return the summary. A folder that
    cannot be written (read-only, a full disk) is one line (OutputError); the study itself is safe."""
    try:
        return _write_report(study, plan, note)
    except OSError as exc:
        raise OutputError(f"cannot write the report into {plan.folder}: {exc.strerror or exc}; the trials are safe "
                          f"in the study") from None


def _write_report(study, plan: StudyPlan, note) -> dict:
    summary = summarize(study, plan)
    folder = plan.folder
    folder.mkdir(parents=True, exist_ok=True)
    cfg = best_config(study, summary)
    if cfg is not None:
        best = summary["best"]
        header = (f"# convtrain train --config {folder / 'best.yaml'}\n# the best trial ({best['number']}) of study "
                  f"{plan.name}: {plan.metric} {best['value']:.4f}; {best['run_dir']}\n")
        atomic.write_text(folder / "best.yaml", header + _best_yaml(cfg, study))
        summary["best_yaml"] = str(folder / "best.yaml")
    summary["importances"] = _importances(study)
    try:
        summary["plots"] = [str(p) for p in write_plots(summary, folder)]
    except MissingExtra as exc:
        note(f"note: {exc}")
    atomic.write_text(folder / "tune.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _best_yaml(cfg, study) -> str:
    """best.yaml's text: the resolved config, whose data section holds only the keys the user gave (and
    the searched ones): the file travels, and the schema and CONVTRAIN_DATA_ROOT fill in the rest where it runs."""
    import yaml

    given = study.user_attrs.get("data_given")
    if not isinstance(given, dict):  # a study made before data_given was kept
        return to_yaml(cfg)
    raw = to_dict(cfg)
    space = study.user_attrs.get("space")
    searched = set(json.loads(space)) if isinstance(space, str) else set()  # Space.canonical(): key -> range
    raw["data"] = {k: v for k, v in raw["data"].items() if k in given or f"data.{k}" in searched}
    return yaml.safe_dump(raw, sort_keys=False, default_flow_style=None)


def write_plots(summary: dict, folder: Path) -> list[Path]:
    from ..artifacts.plots import _pyplot

    plt = _pyplot()
    rows = [r for r in summary["trials"] if r["best"] is not None]
    if not rows:
        return []
    out = [_history(plt, summary, rows, folder / "history.png")]
    if summary.get("importances"):
        out.append(_bars(plt, summary["importances"], summary, folder / "importances.png"))
    return out


def _history(plt, summary: dict, rows: list[dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    colors = {"complete": "tab:blue", "pruned": "tab:orange", "fail": "tab:red", "running": "tab:gray"}
    for state in colors:
        pts = [r for r in rows if r["state"] == state]
        if pts:
            ax.scatter([r["number"] for r in pts], [r["best"] for r in pts], c=colors[state], s=18, label=state)
    best, line = None, []
    maximize = summary["direction"] == "maximize"
    for r in sorted((r for r in rows if r["state"] == "complete"), key=lambda r: r["number"]):
        best = r["value"] if best is None else (max if maximize else min)(best, r["value"])
        line.append((r["number"], best))
    if line:
        ax.step([p[0] for p in line], [p[1] for p in line], where="post", color="black", label="best so far")
    ax.set_xlabel("trial")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are whole numbers: no tick at 0.5
    ax.set_ylabel(f"best {summary['metric']} (pruned: at the epoch it stopped)")
    ax.set_title(f"study {summary['study']}: optimization history")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(plt, fig, path)


def _importances(study) -> dict[str, float]:
    """PED-ANOVA importances (numpy only) over the complete trials; {} when there are too few."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 3 or not complete[0].params:
        return {}
    try:
        return optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except Exception:  # noqa: BLE001 - importances are a picture, never a reason to fail the report
        return {}


def _bars(plt, importances: dict[str, float], summary: dict, path: Path) -> Path:
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.5), dpi=100)
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (PED-ANOVA, complete trials)")
    ax.set_title(f"study {summary['study']}: parameter importances")
    fig.tight_layout()
    return _save(plt, fig, path)


def _save(plt, fig, path: Path) -> Path:
    try:
        with atomic.replacing(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
