"""What a run leaves on disk and how it is read back: checkpoints (save, load, the typed view,
the pickle scan, the training-state keys), ``convtrain average``, metrics rows, the run directory
and its lock, the typed readers of its files, the listing of runs and ``runs diff``, plots.

Nothing here imports :mod:`convtrain.training`: a loop feature registers its saved state in
:mod:`.training_state`.
"""
