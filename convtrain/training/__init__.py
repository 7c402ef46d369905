"""Training: the run's phases (:mod:`.runner`) around the pure loops of :mod:`.engine`, where a
run starts from (:mod:`.start`), the run-event protocol (:mod:`.events`) and its hooks (:mod:`.hooks`:
trackers and loop features such as EMA, SWA, stopping rules, kept checkpoints), signals, progress,
multi-process runs and ``--seeds``.
"""
