"""``convtrain tune``: hyperparameter search on Optuna over ordinary training runs.

space (the YAML search space, checked against the schema), study (storage, heartbeats, the study's
identity), worker (trials as run directories, pruning through the runner's per-epoch hook, dead
trials failed, --jobs), report (table, tune.json, best.yaml, plots), confirm (--confirm K with
seeds), search (the command end to end). Imports train; train never imports tune.
"""
