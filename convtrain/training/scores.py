"""Classification scores from a confusion matrix, and calibration scores from probabilities.

The per-class definitions are scikit-learn's (``classification_report``, ``balanced_accuracy_score``),
so the numbers can be checked against it (tests/inference/test_report_numbers.py does, on a folder
dataset and on MNIST):

- precision of class c: images predicted c that are c / images predicted c (0 when none is predicted c);
- recall: images of c predicted c / images of c (0 when the split has none);
- F1: 2 precision recall / (precision + recall) (0 when both are 0);
- macro average: the plain mean over every class; weighted average: weighted by support;
- balanced accuracy: the mean recall over the classes that have images.

Calibration (Guo et al., "On Calibration of Modern Neural Networks", 2017): the confidence of an
image is its top probability. ECE sorts the images into ``bins`` equal-width bins of confidence
(``(k/B, (k+1)/B]``) and is the image-weighted mean of |accuracy - mean confidence| over the bins;
MCE is the largest such gap of a bin that holds images. NLL is the mean of -log p(true class);
Brier is the mean over images of the squared distance between the probability vector and the
one-hot truth, summed over classes (Brier's 1950 definition: 0 is perfect, 2 the worst).

Nothing here reads files or knows a model: numbers in, numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

ECE_BINS = 15


def class_scores(confusion: Sequence[Sequence[int]]) -> dict:
    """Per-class precision/recall/F1/support, their macro and weighted averages, accuracy and balanced
    accuracy of ``confusion[true][predicted]`` (a square list of counts)."""
    n = len(confusion)
    support = [sum(row) for row in confusion]
    predicted = [sum(confusion[i][j] for i in range(n)) for j in range(n)]
    rows = []
    for c in range(n):
        tp = confusion[c][c]
        precision = tp / predicted[c] if predicted[c] else 0.0
        recall = tp / support[c] if support[c] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"precision": precision, "recall": recall, "f1": f1, "support": support[c]})
    total = sum(support)
    averages = {}
    for name in ("precision", "recall", "f1"):
        averages.setdefault("macro", {})[name] = sum(r[name] for r in rows) / n if n else 0.0
        averages.setdefault("weighted", {})[name] = (sum(r[name] * r["support"] for r in rows) / total
                                                     if total else 0.0)
    present = [r["recall"] for r in rows if r["support"]]
    return {"per_class": rows, "macro": averages["macro"], "weighted": averages["weighted"],
            "accuracy": sum(confusion[i][i] for i in range(n)) / total if total else 0.0,
            "balanced_accuracy": sum(present) / len(present) if present else 0.0, "support": total}


def macro_f1(confusion: Sequence[Sequence[int]]) -> float:
    return class_scores(confusion)["macro"]["f1"]


def balanced_accuracy(confusion: Sequence[Sequence[int]]) -> float:
    return class_scores(confusion)["balanced_accuracy"]


def most_confused(confusion: Sequence[Sequence[int]], limit: int = 10) -> list[dict]:
    """The largest off-diagonal counts, largest first (ties: by true, then predicted class): ``true``,
    ``predicted`` (class indices), ``count`` and ``rate`` (the share of the true class's images)."""
    n = len(confusion)
    pairs = [(confusion[i][j], i, j) for i in range(n) for j in range(n) if i != j and confusion[i][j]]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [{"true": i, "predicted": j, "count": c, "rate": c / sum(confusion[i])} for c, i, j in pairs[:limit]]


def top_k_accuracy(logits: Tensor, labels: Tensor, k: int) -> float:
    """The share of images whose true class is among the ``k`` highest scores."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return float((top == labels.view(-1, 1)).any(1).double().mean()) if len(labels) else 0.0


# --------------------------------------------------------------------------------------------
# Calibration


def reliability_bins(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width confidence bin ``(lo, hi]``: its images, their accuracy and mean confidence
    (None for an empty bin)."""
    confidence, predicted = probs.double().max(1)
    correct = (predicted == labels).double()
    out = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (confidence > lo) & (confidence <= hi)
        count = int(inside.sum())
        out.append({"lo": lo, "hi": hi, "count": count,
                    "accuracy": float(correct[inside].mean()) if count else None,
                    "confidence": float(confidence[inside].mean()) if count else None})
    return out


def calibration_scores(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> dict:
    """ECE, MCE, NLL and Brier (see the module docstring) of ``probs`` [N, C] for ``labels`` [N], and the
    reliability diagram's bins."""
    table = reliability_bins(probs, labels, bins)
    n = max(len(labels), 1)
    gaps = [(b["count"], abs(b["accuracy"] - b["confidence"])) for b in table if b["count"]]
    p = probs.double()
    truth = p.gather(1, labels.view(-1, 1)).squeeze(1)
    onehot = torch.zeros_like(p).scatter_(1, labels.view(-1, 1), 1.0)
    return {"ece": sum(c * g for c, g in gaps) / n, "mce": max((g for _, g in gaps), default=0.0),
            "nll": float(-truth.clamp_min(1e-300).log().mean()) if len(labels) else 0.0,
            "brier": float((p - onehot).square().sum(1).mean()) if len(labels) else 0.0,
            "bins": table}


def nll_at(logits: Tensor, labels: Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(logits / temperature), in float64."""
    return float(torch.nn.functional.cross_entropy(logits.double() / temperature, labels))


def fit_temperature(logits: Tensor, labels: Tensor, low: float = 0.05, high: float = 20.0,
                    steps: int = 100) -> float:
    """The temperature T in [low, high] that minimizes the NLL of softmax(logits / T) (temperature
    scaling, Guo et al. 2017): a golden-section search over log T. The NLL is convex in 1/T, so it has
    one minimum and the search finds it; deterministic, in float64, no learning rate to tune."""
    logits, labels = logits.double(), labels.long()
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll_at(logits, labels, math.exp(c)), nll_at(logits, labels, math.exp(d))
    for _ in range(steps):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll_at(logits, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll_at(logits, labels, math.exp(d))
    return math.exp((a + b) / 2)
