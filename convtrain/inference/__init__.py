"""Using a trained checkpoint: evaluate it, classify images, export the model, draw what its
convolutions see. Each reads a checkpoint through :func:`convtrain.artifacts.checkpoint.open_checkpoint`.
"""
