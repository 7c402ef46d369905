"""The hooks of a training run, one module each: found by :func:`convtrain.training.events.discover`.

Every module here (a name starting with ``_`` marks a helper) defines ``build(cfg, is_main)``,
which returns a :class:`~convtrain.training.events.Hook` or None (the feature is off, or this
rank does not write); the hook's ``order`` places it in the run's list (the bands are in
:mod:`convtrain.training.events`). A new tracker or loop feature is one module here plus its
schema keys (and, when it saves state in last.pt, its check in
:mod:`convtrain.artifacts.training_state`): neither this file nor the runner changes.
"""
