"""``--confirm K``: is the winner better than the base config, or a lucky seed?

The base config and the top K trials' configs are each trained again with several seeds (the same
split: only the seed changes; :func:`convtrain.training.seeds.run_seeds`, into
DIR/confirm/<name>/seed-N). The winner "beats the base" when its mean test accuracy exceeds the
base's by more than the seeds' spread, the larger of the two sample standard deviations. This is
the only place a study looks at the test set, after the choice was made on validation.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from rich.console import Console

from .. import atomic
from ..config.schema import RunConfig
from ..errors import ConfigError


def confirm(study, summary: dict, base: RunConfig, k: int, seeds: list[int], folder: Path, *, console: Console,
            signals=None) -> dict:
    """Retrain the base and the top ``k`` trials with ``seeds``; write DIR/confirm.json and return it."""
    from ..training.seeds import run_seeds
    from .report import best_config

    if not summary["ranking"]:
        raise ConfigError("--confirm: the study has no complete trial to confirm")
    entries = [("base", copy.deepcopy(base))]
    for number in summary["ranking"][:k]:
        one = {**summary, "best": next(r for r in summary["trials"] if r["number"] == number)}
        cfg = best_config(study, one, portable=False)  # retrained here, with the data root the trial used
        cfg.name = f"trial-{number:03d}"
        entries.append((cfg.name, cfg))
    results = []
    for name, cfg in entries:
        console.print(f"[bold]confirm {name}[/]: seeds {', '.join(map(str, seeds))}")
        s = run_seeds(cfg, seeds, folder / "confirm" / name, console=console, signals=signals)
        t = s["test_accuracy"]
        results.append({"name": name, "mean": t["mean"], "std": t["std"], "min": t["min"], "max": t["max"],
                        "seeds": seeds, "runs": [r["run_dir"] for r in s["runs"]]})
    out = {"seeds": seeds, "entries": results, **verdict(results[0], results[1])}
    atomic.write_text(folder / "confirm.json", json.dumps(out, indent=2) + "\n")
    return out


def verdict(base: dict, winner: dict) -> dict:
    """Whether ``winner``'s mean beats ``base``'s by more than the larger sample std of the two."""
    diff = winner["mean"] - base["mean"]
    spread = max(base["std"] or 0.0, winner["std"] or 0.0)
    beats = diff > spread
    text = (f"{winner['name']} {'beats' if beats else 'does not beat'} the base config: test accuracy "
            f"{winner['mean']:.4f} vs {base['mean']:.4f} (difference {diff:+.4f}, seed spread {spread:.4f})")
    return {"winner": winner["name"], "difference": diff, "spread": spread, "beats_base": beats, "verdict": text}
