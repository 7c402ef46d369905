"""Training: the run's phases (:mod:`.runner`) around the pure loops of :mod:`.engine`, where a
run starts from (:mod:`.start`), and the loop features (EMA, stopping rules, kept checkpoints),
signals, progress, loggers, multi-process runs and ``--seeds``.
"""
