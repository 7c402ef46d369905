"""train.loss, train.focal_gamma and train.class_weights (convtrain.training.losses): what each
combination computes, against PyTorch's own losses where they define the same thing.

Breaks tried (each failed here): the weighted loss divided by the batch size instead of the sum of
the weights (no longer F.cross_entropy(weight=)); the smoothing term weighted by each class's own
weight (PyTorch's weight + label_smoothing: unequal to the per-image weighting when the weights
differ); auto weights not normalized (mean 1); focal's factor (1 - p) without the power; a class
name the data lacks silently ignored.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convtrain.config.load import load_config
from convtrain.errors import ConfigError
from convtrain.training.losses import ClassificationLoss, build_loss, class_weights

CLASSES = ["cat", "dog", "eel", "fox"]


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(32, 4, generator=g) * 3, torch.randint(4, (32,), generator=g)


def test_the_default_loss_is_pytorchs_cross_entropy_bit_for_bit(batch):
    logits, y = batch
    for s in (0.0, 0.1):
        assert torch.equal(ClassificationLoss(label_smoothing=s)(logits, y), F.cross_entropy(logits, y, label_smoothing=s))


def test_class_weights_without_smoothing_are_pytorchs_weighted_cross_entropy(batch):
    logits, y = batch
    w = torch.tensor([0.5, 2.0, 1.0, 3.0])
    assert ClassificationLoss(weight=w)(logits, y) == pytest.approx(float(F.cross_entropy(logits, y, weight=w)), rel=1e-6)


def test_with_smoothing_a_weight_scales_each_images_whole_smoothed_loss(batch):
    """Equal weights give the unweighted smoothed loss; unequal ones the weighted mean of each image's
    smoothed loss (its own class's weight), which is not PyTorch's weight + label_smoothing."""
    logits, y = batch
    smoothed = F.cross_entropy(logits, y, label_smoothing=0.1, reduction="none")
    assert ClassificationLoss(weight=torch.full((4,), 2.5), label_smoothing=0.1)(logits, y) == \
        pytest.approx(float(smoothed.mean()), rel=1e-6)
    w = torch.tensor([0.5, 2.0, 1.0, 3.0])
    ours = ClassificationLoss(weight=w, label_smoothing=0.1)(logits, y)
    assert ours == pytest.approx(float((smoothed * w[y]).sum() / w[y].sum()), rel=1e-6)
    assert abs(float(ours) - float(F.cross_entropy(logits, y, weight=w, label_smoothing=0.1))) > 1e-3


def test_focal_loss_is_cross_entropy_scaled_by_one_minus_p_true_to_the_gamma(batch):
    logits, y = batch
    ce = F.cross_entropy(logits, y, reduction="none")
    p_true = torch.softmax(logits, 1).gather(1, y.view(-1, 1)).squeeze(1)
    assert ClassificationLoss("focal", gamma=0.0)(logits, y) == pytest.approx(float(ce.mean()), rel=1e-6)
    assert ClassificationLoss("focal", gamma=2.0)(logits, y) == pytest.approx(
        float(((1 - p_true) ** 2 * ce).mean()), rel=1e-5)
    w = torch.tensor([0.5, 2.0, 1.0, 3.0])
    assert ClassificationLoss("focal", weight=w, gamma=1.5)(logits, y) == pytest.approx(
        float(((1 - p_true) ** 1.5 * ce * w[y]).sum() / w[y].sum()), rel=1e-5)


def test_auto_weights_are_inverse_class_frequency_with_mean_one():
    labels = torch.tensor([0] * 600 + [1] * 60 + [2] * 6 + [3] * 600)
    w = class_weights("auto", CLASSES, labels)
    inverse = torch.tensor([1 / 600, 1 / 60, 1 / 6, 1 / 600])
    assert torch.allclose(w, (inverse / inverse.mean()).float())
    assert float(w.mean()) == pytest.approx(1.0) and float(w[2] / w[0]) == pytest.approx(100.0)
    assert torch.equal(class_weights("auto", CLASSES, torch.tensor([0, 1, 2, 3] * 5)), torch.ones(4))


def test_weights_by_name_leave_the_other_classes_at_one_and_refuse_a_name_the_data_lacks():
    assert class_weights({"eel": 4.0, "dog": 0.5}, CLASSES, torch.tensor([0])).tolist() == [1.0, 0.5, 4.0, 1.0]
    with pytest.raises(ConfigError, match=r"train.class_weights: the data has no class 'dgo' \(did you mean 'dog'\?\)"):
        class_weights({"dgo": 2.0}, CLASSES, torch.tensor([0]))


def test_the_config_refuses_zero_negative_and_non_numeric_weights_and_a_negative_gamma():
    for value, said in (("{dog: 0}", "class 'dog' has 0"), ("{dog: -1.5}", "class 'dog' has -1.5"),
                        ("{dog: x}", "class 'dog' has 'x'"), ("often", "must be null, auto or a mapping"),
                        ("{}", "must name at least one class")):
        with pytest.raises(ConfigError, match=f"'train.class_weights' .*{said}"):
            load_config(None, [f"train.class_weights={value}"])
    with pytest.raises(ConfigError, match="'train.focal_gamma' must be >= 0"):
        load_config(None, ["train.focal_gamma=-0.5"])
    # MNIST's class names are digits: YAML reads `5: 10` with a number as key, which names class "5"
    assert load_config(None, ["train.class_weights={5: 10, 6: 2.5}"]).train.class_weights == {"5": 10, "6": 2.5}


def test_build_loss_says_what_it_uses_and_nothing_for_the_default():
    labels = torch.tensor([0] * 10 + [1] * 2 + [2] * 2 + [3] * 2)
    cfg = load_config(None, [])
    loss, notes = build_loss(cfg.train, CLASSES, labels, torch.device("cpu"))
    assert notes == [] and loss.weight is None and loss.kind == "cross_entropy"
    cfg = load_config(None, ["train.class_weights=auto", "train.loss=focal", "train.focal_gamma=1"])
    loss, notes = build_loss(cfg.train, CLASSES, labels, torch.device("cpu"))
    assert notes[0] == "loss: focal, gamma 1" and notes[1].startswith("loss: class weights (auto: inverse class frequency)")
    assert loss.weight.tolist() == pytest.approx([0.25, 1.25, 1.25, 1.25])  # 1/n over its mean 0.4
