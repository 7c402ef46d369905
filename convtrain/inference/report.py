"""``eval --report``: a checkpoint's per-class truth on one split, computed from every image's logits.

:func:`build_report` turns an :class:`~convtrain.inference.results.Evaluation` made with ``report=True``
(which kept each image's logits, its label and the split the images came from) into a
:class:`~convtrain.inference.results.Report`: the scores of :mod:`convtrain.training.scores` (checked
against scikit-learn by the tests), the most confused pairs, the K most confident mistakes and the K
least confident correct images (each with its image and where it came from: the file of a folder, the
row of a CSV, the index in an .npz array or an MNIST file), and calibration at the checkpoint's
temperature (and without it, when the checkpoint has one). :mod:`convtrain.inference.report_files`
writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..training.scores import ECE_BINS, calibration_scores, class_scores, most_confused, top_k_accuracy
from .report_files import write_report
from .results import Evaluation, Example, Report

TOP_K = 5  # top-k accuracy is reported when a model has more classes than this


@dataclass(frozen=True)
class Outputs:
    """What ``evaluate(..., report=True)`` keeps: every image's logits as evaluated (a calibrated
    checkpoint's already divided by its temperature) and label, in the split's order, and the split
    itself (its images and their origin)."""

    logits: Tensor  # float32 [N, C], CPU: z / T
    labels: Tensor  # int64 [N]
    split: Any  # data.types.Split or a streamed split (FileSplit): .image(i), .origin

    @classmethod
    def gather(cls, pieces: list[tuple[Tensor, Tensor]], split: Any) -> Outputs:
        return cls(torch.cat([p[0] for p in pieces]), torch.cat([p[1] for p in pieces]), split)

    def report(self, ev: Evaluation, k: int) -> Report:
        return build_report(ev, k)


def build_report(ev: Evaluation, k: int = 25) -> Report:
    """The report of ``ev`` (made with ``report=True``) with ``k`` images in each gallery."""
    out: Outputs = ev.outputs
    probs = torch.softmax(out.logits.double(), dim=1)  # the logits are tempered already (evaluate's model)
    scores = class_scores(ev.confusion_matrix)
    per_class = [{"label": name, "index": i, **row} for i, (name, row) in enumerate(zip(ev.classes,
                                                                                       scores["per_class"]))]
    named = lambda i: {"label": ev.classes[i], "index": i}  # noqa: E731
    confused = [{"true": named(p["true"]), "predicted": named(p["predicted"]), "count": p["count"],
                 "rate": p["rate"]} for p in most_confused(ev.confusion_matrix, limit=20)]
    calibration = {"temperature": ev.temperature, "bins_count": ECE_BINS, **calibration_scores(probs, out.labels)}
    if ev.temperature != 1.0:
        raw = calibration_scores(torch.softmax(out.logits.double() * ev.temperature, dim=1), out.labels)
        calibration["uncalibrated"] = {key: raw[key] for key in ("ece", "mce", "nll", "brier")}
    mistakes, unsure = _galleries(probs, out, ev.classes, k)
    top = {"k": TOP_K, "accuracy": top_k_accuracy(out.logits, out.labels, TOP_K)} if len(ev.classes) > TOP_K else None
    return Report(checkpoint=ev.checkpoint, model=ev.model, dataset=ev.dataset, split=ev.split, epoch=ev.epoch,
                  classes=list(ev.classes), num_samples=ev.num_samples, temperature=ev.temperature,
                  accuracy=scores["accuracy"], balanced_accuracy=scores["balanced_accuracy"], macro=scores["macro"],
                  weighted=scores["weighted"], per_class=per_class, top_k=top,
                  confusion_matrix=ev.confusion_matrix, most_confused=confused, mistakes=mistakes,
                  least_confident_correct=unsure, calibration=calibration, writer=write_report)


def _galleries(probs: Tensor, out: Outputs, classes: list[str], k: int) -> tuple[list[Example], list[Example]]:
    """The ``k`` wrong images with the highest confidence (highest first) and the ``k`` right ones with the
    lowest (lowest first); ties in file order."""
    confidence, predicted = probs.max(1)
    wrong = (predicted != out.labels).nonzero().squeeze(1)
    right = (predicted == out.labels).nonzero().squeeze(1)
    # a stable sort on -confidence: equal confidences keep the split's order
    by_wrong = wrong[torch.sort(-confidence[wrong], stable=True).indices][:k]
    by_right = right[torch.sort(confidence[right], stable=True).indices][:k]
    make = lambda n: _example(int(n), probs, predicted, out, classes)  # noqa: E731
    return [make(n) for n in by_wrong], [make(n) for n in by_right]


def _example(n: int, probs: Tensor, predicted: Tensor, out: Outputs, classes: list[str]) -> Example:
    true, guess = int(out.labels[n]), int(predicted[n])
    origin = getattr(out.split, "origin", None)
    source = origin.describe(n) if origin is not None else {}
    return Example(position=n, label=classes[true], index=true, predicted_label=classes[guess], predicted_index=guess,
                   prob=float(probs[n, guess]), true_prob=float(probs[n, true]), source=source,
                   image=out.split.image(n))
