"""The training loss a run's config asks for: cross-entropy or focal loss, with class weights and
label smoothing (``train.loss``, ``train.focal_gamma``, ``train.class_weights``, ``train.label_smoothing``).

How the pieces combine, per image i of true class y:

- smoothed cross-entropy (PyTorch's definition): ``ce_i = (1 - s) * -log p_y + s * mean_c(-log p_c)``;
- focal loss (Lin et al. 2017): ``(1 - p_y)^gamma * ce_i``; gamma 0 is cross-entropy;
- a class weight multiplies the whole loss of each image *of that class* (Keras' ``class_weight``: a
  weight says how much an image counts, whatever its smoothed target), and the batch's loss is the
  weighted mean ``sum_i w_y ce_i / sum_i w_y``: with no smoothing this is exactly
  ``F.cross_entropy(logits, y, weight=w)``, and with equal weights it is the unweighted loss. (PyTorch's
  own weight + label_smoothing also weighs the smoothing term of every other class by *that* class's
  weight, so an image of a common class pulls on the rare classes' outputs harder than its own
  weight says; we keep a weight a property of the image.)

``auto`` weights are the inverse class frequency of the training split, normalized to mean 1 over the
classes: w_c = (1 / n_c) / mean_k(1 / n_k). With the weighted mean above only the ratios matter; mean 1
keeps the numbers readable (a balanced split gives every class 1). A class with no training image gets
the weight of a class with one.

Without weights, focal loss or smoothing beyond PyTorch's own, the loss is ``F.cross_entropy`` itself, so
a default run computes exactly what it always did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, did_you_mean


def class_weights(setting: str | Mapping | None, classes: Sequence[str], train_labels: Tensor) -> Tensor | None:
    """The weight of each class (in class order) for ``train.class_weights``; None for null. Names that the
    data lacks are a ConfigError naming the closest class."""
    if setting is None:
        return None
    if setting == "auto":
        counts = torch.bincount(train_labels.cpu(), minlength=len(classes)).double().clamp_min(1)
        inverse = 1.0 / counts
        return (inverse / inverse.mean()).float()
    weights = torch.ones(len(classes))
    index = {name: i for i, name in enumerate(classes)}
    for name, w in setting.items():
        if str(name) not in index:
            raise ConfigError(f"train.class_weights: the data has no class '{name}'{did_you_mean(str(name), classes)}; "
                              f"its classes are {', '.join(classes[:20])}{' ...' if len(classes) > 20 else ''}")
        weights[index[str(name)]] = float(w)
    return weights


class ClassificationLoss:
    """``loss(logits, labels)`` as the module docstring says; built by :func:`build_loss`."""

    def __init__(self, kind: str = "cross_entropy", weight: Tensor | None = None, label_smoothing: float = 0.0,
                 gamma: float = 2.0) -> None:
        self.kind, self.weight, self.smoothing, self.gamma = kind, weight, label_smoothing, gamma

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.kind == "cross_entropy" and self.weight is None:
            return F.cross_entropy(logits, labels, label_smoothing=self.smoothing)  # what every run did before
        log_p = F.log_softmax(logits.float(), dim=1)
        nll = -log_p.gather(1, labels.view(-1, 1)).squeeze(1)
        per_image = (1 - self.smoothing) * nll + self.smoothing * -log_p.mean(1) if self.smoothing else nll
        if self.kind == "focal":
            per_image = (1 - torch.exp(-nll)).pow(self.gamma) * per_image
        if self.weight is None:
            return per_image.mean()
        w = self.weight.to(logits.device)[labels]
        return (per_image * w).sum() / w.sum()


def build_loss(train_cfg, classes: Sequence[str], train_labels: Tensor,
               device: torch.device) -> tuple[ClassificationLoss, list[str]]:
    """The run's loss on ``device``, and the lines the run log says about it (none for the default)."""
    weight = class_weights(train_cfg.class_weights, classes, train_labels)
    loss = ClassificationLoss(train_cfg.loss, None if weight is None else weight.to(device),
                              train_cfg.label_smoothing, train_cfg.focal_gamma)
    notes = []
    if train_cfg.loss == "focal":
        notes.append(f"loss: focal, gamma {train_cfg.focal_gamma:g}")
    if weight is not None:
        shown = ", ".join(f"{c} {w:.3g}" for c, w in zip(classes[:12], weight.tolist()))
        notes.append(f"loss: class weights ({'auto: inverse class frequency' if train_cfg.class_weights == 'auto' else 'given'}): "
                     f"{shown}{' ...' if len(classes) > 12 else ''}")
    return loss, notes
