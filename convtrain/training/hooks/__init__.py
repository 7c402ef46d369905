"""The hooks of a training run, one module each: found by :func:`convtrain.training.events.discover`.

Every module here (a name starting with ``_`` marks a helper) defines ``build(cfg, is_main)``,
which returns a :class:`~convtrain.training.events.Hook` or None (the feature is off, or this
rank does not write); the hook's ``order`` places it in the run's list. A new tracker or loop
feature is one module here plus its schema keys (and, when it saves state in last.pt, its check
in :mod:`convtrain.artifacts.training_state`); the runner does not change.

    ema               weight EMA (train.ema): the evaluated model                 order 10
    stopping          early stopping, stop_at, max_time                            order 20
    kept_checkpoints  checkpoints/epoch-NNN.pt (keep_top_k, every_n_epochs)        order 30
    tblog, mlflowlog, wandblog   TensorBoard, MLflow, Weights & Biases (rank 0)   order 50-52
"""
