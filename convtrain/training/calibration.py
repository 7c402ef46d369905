"""Temperature scaling: one number T that makes a model's probabilities mean what they say.

The model's logits on the validation split (images it was not trained on) are divided by the T that
minimizes their negative log-likelihood (:func:`convtrain.training.scores.fit_temperature`); the
predicted class (the argmax) is the same for every T > 0, so accuracy never changes. What T did is
measured on the test split, which plays no part in the fit: ECE and NLL before and after.

Used at the end of a run (``train.calibrate``: :mod:`convtrain.training.hooks.calibrate`) and on a
saved checkpoint (``convtrain calibrate``: :func:`convtrain.inference.calibrate.calibrate_checkpoint`);
both save the record :func:`fit` returns in the checkpoint (:func:`convtrain.artifacts.checkpoint.with_calibration`).
Everything here runs in one process, without collectives (under DDP, rank 0 alone calibrates).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.batches import make_batches
from ..data.types import DataBundle
from .scores import calibration_scores, fit_temperature, nll_at


@torch.inference_mode()
def logits_of(model: nn.Module, batches, device: torch.device) -> tuple[Tensor, Tensor]:
    """Every image's logits (float32, CPU) and label, in the batches' order."""
    model.eval()
    found, labels = [], []
    for x, y in batches:
        found.append(model(x.to(device)).float().cpu())
        labels.append(y.cpu())
    return torch.cat(found), torch.cat(labels)


def split_batches(split, bundle: DataBundle, batch_size: int, device: torch.device, workers: int = 0):
    """One split in file order, normalized with the bundle's mean/std, for this process alone."""
    resident = bundle.tensor_resident
    return make_batches(split.to(device) if resident else split, bundle, "tensor" if resident else "dataloader",
                        batch_size, device, shuffle=False, workers=workers)


def fit(val: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor] | None) -> dict:
    """The temperature fitted on ``val``'s (logits, labels) and the before/after numbers; ``test`` (or None)
    is only measured. The record a calibrated checkpoint holds under ``calibration``."""
    logits, labels = val
    t = fit_temperature(logits, labels)
    record = {"temperature": t, "fitted_on": "val", "val_images": len(labels),
              "val_nll_before": nll_at(logits, labels, 1.0), "val_nll_after": nll_at(logits, labels, t)}
    if test is not None:
        logits, labels = test
        before = calibration_scores(torch.softmax(logits.double(), 1), labels)
        after = calibration_scores(torch.softmax(logits.double() / t, 1), labels)
        record.update({"test_images": len(labels), "test_accuracy": float((logits.argmax(1) == labels).double().mean()),
                       "test_ece_before": before["ece"], "test_ece_after": after["ece"],
                       "test_nll_before": before["nll"], "test_nll_after": after["nll"]})
    return record


def summary(record: dict) -> str:
    """One line for people: the temperature, and ECE / NLL on the test split before and after."""
    line = (f"calibration: temperature {record['temperature']:.4f} (fitted on {record['val_images']} validation "
            f"images: NLL {record['val_nll_before']:.4f} -> {record['val_nll_after']:.4f})")
    if "test_ece_before" in record:
        line += (f"; test split ({record['test_images']} images): ECE {record['test_ece_before']:.4f} -> "
                 f"{record['test_ece_after']:.4f}, NLL {record['test_nll_before']:.4f} -> "
                 f"{record['test_nll_after']:.4f}, accuracy {record['test_accuracy']:.4f} (unchanged)")
    return line
