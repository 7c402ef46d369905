"""The numbers of convtrain.training.scores: per-class scores against scikit-learn on random confusion
matrices (and the edge cases it defines: a class never predicted, a class with no images), ECE/MCE/NLL/
Brier against a hand computation on crafted logits, and the temperature fit.

Breaks tried (each failed here): precision and recall swapped; the macro average over the classes with
images only (sklearn averages over every label asked for); balanced accuracy over every class (a class
with no images counted as recall 0); ECE bins closed on the left ([lo, hi): a confidence of exactly
9/15 moves to the next bin); ECE as the plain mean of the bins' gaps instead of weighted by their
images; Brier divided by the number of classes; the golden-section search stepping the wrong side
(it then ends at a bound, T = 20).
"""

from __future__ import annotations

import math

import pytest
import torch

from convtrain.training.scores import (balanced_accuracy, calibration_scores, class_scores, fit_temperature,
                                       most_confused, nll_at, top_k_accuracy)

sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn checks the numbers: pip install 'convtrain[test]'")


def _predictions(seed: int, n: int, classes: int) -> tuple[list[int], list[int]]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(classes, (n,), generator=g)
    noisy = torch.where(torch.rand(n, generator=g) < 0.7, y, torch.randint(classes, (n,), generator=g))
    return y.tolist(), noisy.tolist()


def _confusion(y: list[int], p: list[int], classes: int) -> list[list[int]]:
    cm = [[0] * classes for _ in range(classes)]
    for t, q in zip(y, p):
        cm[t][q] += 1
    return cm


@pytest.mark.parametrize("seed,n,classes", [(0, 500, 10), (1, 37, 4), (2, 2000, 26)])
def test_class_scores_equal_scikit_learns_classification_report(seed, n, classes):
    y, p = _predictions(seed, n, classes)
    ours = class_scores(_confusion(y, p, classes))
    theirs = sklearn_metrics.classification_report(y, p, labels=list(range(classes)), output_dict=True,
                                                   zero_division=0)
    for c, row in enumerate(ours["per_class"]):
        for key, sk in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert row[key] == pytest.approx(theirs[str(c)][sk], abs=1e-12)
        assert row["support"] == theirs[str(c)]["support"]
    for avg in ("macro", "weighted"):
        for key, sk in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert ours[avg][key] == pytest.approx(theirs[f"{avg} avg"][sk], abs=1e-12)
    assert ours["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y, p), abs=1e-12)
    assert ours["balanced_accuracy"] == pytest.approx(sklearn_metrics.balanced_accuracy_score(y, p), abs=1e-12)


def test_a_class_never_predicted_and_a_class_without_images_score_as_scikit_learn_says():
    # class 2 is never predicted (precision 0), class 3 has no images (recall 0, left out of balanced accuracy)
    y = [0, 0, 1, 1, 2, 2, 0]
    p = [0, 1, 1, 3, 0, 1, 0]
    ours = class_scores(_confusion(y, p, 4))
    theirs = sklearn_metrics.classification_report(y, p, labels=[0, 1, 2, 3], output_dict=True, zero_division=0)
    assert [r["precision"] for r in ours["per_class"]] == pytest.approx([theirs[str(c)]["precision"] for c in range(4)])
    assert ours["macro"]["f1"] == pytest.approx(theirs["macro avg"]["f1-score"])
    with pytest.warns(UserWarning):  # sklearn warns that class 3 has no images; we leave it out silently
        assert balanced_accuracy(_confusion(y, p, 4)) == pytest.approx(sklearn_metrics.balanced_accuracy_score(y, p))


def test_most_confused_pairs_largest_first_with_their_share_of_the_true_class():
    cm = [[5, 3, 0], [1, 6, 4], [0, 4, 2]]
    assert most_confused(cm) == [{"true": 1, "predicted": 2, "count": 4, "rate": 4 / 11},
                                 {"true": 2, "predicted": 1, "count": 4, "rate": 4 / 6},
                                 {"true": 0, "predicted": 1, "count": 3, "rate": 3 / 8},
                                 {"true": 1, "predicted": 0, "count": 1, "rate": 1 / 11}]


def test_top_k_accuracy_equals_scikit_learns():
    g = torch.Generator().manual_seed(3)
    logits, y = torch.randn(300, 10, generator=g), torch.randint(10, (300,), generator=g)
    assert top_k_accuracy(logits, y, 5) == pytest.approx(
        sklearn_metrics.top_k_accuracy_score(y.numpy(), logits.numpy(), k=5, labels=list(range(10))))


def test_ece_mce_nll_and_brier_by_hand_on_crafted_probabilities():
    """Six images, two classes; the top probabilities fall in known bins of 15 (bin k holds
    (k/15, (k+1)/15]), two of them exactly on a bin's upper edge:
      0.60 = 9/15 wrong                        -> bin 8 (not 9): accuracy 0, confidence 0.6
      2/3 = 10/15 right, 0.62 right            -> bin 9: accuracy 1, confidence (2/3 + 0.62) / 2
      0.95 right, 0.95 right, 0.99 wrong       -> bin 14: accuracy 2/3, confidence (0.95 + 0.95 + 0.99) / 3
    """
    p0 = torch.tensor([0.95, 0.95, 10 / 15, 9 / 15, 0.62, 0.99], dtype=torch.float64)
    probs = torch.stack([p0, 1 - p0], 1)
    labels = torch.tensor([0, 0, 0, 1, 0, 1])
    got = calibration_scores(probs, labels)
    gap8, gap9, gap14 = 0.6, 1 - (2 / 3 + 0.62) / 2, abs(2 / 3 - (0.95 + 0.95 + 0.99) / 3)
    assert got["ece"] == pytest.approx((1 * gap8 + 2 * gap9 + 3 * gap14) / 6, abs=1e-12)
    assert got["mce"] == pytest.approx(max(gap8, gap9, gap14), abs=1e-12)
    nll = -(math.log(0.95) * 2 + math.log(2 / 3) + math.log(0.40) + math.log(0.62) + math.log(0.01)) / 6
    assert got["nll"] == pytest.approx(nll, abs=1e-9)
    brier = sum(2 * (1 - q) ** 2 for q in (0.95, 0.95, 2 / 3, 0.40, 0.62, 0.01)) / 6  # two classes: both terms equal
    assert got["brier"] == pytest.approx(brier, abs=1e-12)
    counts = [b["count"] for b in got["bins"]]
    assert (counts[8], counts[9], counts[14], sum(counts), len(counts)) == (1, 2, 3, 6, 15)
    # the same from logits: what report and calibrate feed it (softmax of log p is p)
    assert calibration_scores(torch.softmax(probs.log(), 1), labels)["nll"] == pytest.approx(nll, abs=1e-9)


def test_the_fitted_temperature_is_the_one_the_data_was_made_with():
    """Labels drawn from softmax(z / 2.5): the NLL-minimizing temperature of z is close to 2.5, and it is
    the minimum of the NLL (a little to either side is worse)."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 10, generator=g, dtype=torch.float64) * 6
    y = torch.multinomial(torch.softmax(z / 2.5, 1), 1, generator=g).squeeze(1)
    t = fit_temperature(z, y)
    assert t == pytest.approx(2.5, rel=0.05)
    assert nll_at(z, y, t) < min(nll_at(z, y, t * 1.02), nll_at(z, y, t / 1.02))
