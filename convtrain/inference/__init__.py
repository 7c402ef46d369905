"""Using a trained checkpoint: evaluate it, classify images (one :class:`~.predict.Predictor` for the
command line, the Python API and the server), export the model, draw what its convolutions see; and
what these return, typed (:mod:`.results`). Each reads a checkpoint through
:func:`convtrain.artifacts.checkpoint.open_checkpoint`.
"""
