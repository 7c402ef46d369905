"""Reproducibility: seeding every RNG a run touches, and ``train.deterministic``."""

from __future__ import annotations

import contextlib
import os
import random

import torch

# --------------------------------------------------------------------------------------------
# Steps of the phases


# measured on the shared 2-core CPU (article_cnn, batch 64, 6 x 20 steps each way, interleaved):
# median 193 vs 255 ms/step with and without, i.e. no cost visible under that machine's noise
DETERMINISTIC_NOTE = ("deterministic: torch.use_deterministic_algorithms(True), cuDNN benchmark off: the same "
                      "numbers on every rerun. Cost: none measurable on a CPU; on a GPU it gives up cuDNN's "
                      "fastest kernels (slower steps), and an op with no deterministic version stops the run "
                      "with an error naming it")


@contextlib.contextmanager
def deterministic(on: bool):
    """``train.deterministic``: deterministic algorithms for the run, the previous settings after it
    (tests run many trainings in one process). CUBLAS_WORKSPACE_CONFIG must be set before cuBLAS
    is first used, which is why this comes before the device is set up."""
    if not on:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
              torch.backends.cudnn.deterministic)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what PyTorch's reproducibility notes ask
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[1], before[2]


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
