"""Claims of the everyday commands and the data path, each checked where the two readings differ.

Each test was written to fail on a deliberately broken version of the feature it covers (issue
#10, part 1); the break tried for each is noted in its docstring.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from convtrain.cli.app import app
from convtrain.data import batches as data
from convtrain.data.mnist import load_split
from convtrain.training import engine

runner = CliRunner()
CPU = torch.device("cpu")
AUGMENT = data.AugmentParams(degrees=15, translate=0.1, scale_min=0.9, scale_max=1.1)


# --------------------------------------------------------------------------------------------
# Augmentation changes pixels, is seeded, and is off when disabled


@pytest.fixture(scope="module")
def mnist_sample(data_root) -> data.Split:
    """64 real MNIST training images (a seeded sample: the files are sorted by label)."""
    full = load_split("mnist", data_root, train=True, download=False)
    return full.take(torch.randperm(len(full), generator=torch.Generator().manual_seed(3))[:64])


def _batches(split, *, seed=0, epoch=1, augment=None, loader="tensor"):
    bundle = data.DataBundle(split, split, split, [str(i) for i in range(10)], [0.1307], [0.3081])
    b = data.make_batches(split, bundle, loader, 16, CPU, shuffle=False, seed=seed, workers=0, augment=augment)
    b.set_epoch(epoch)
    return list(b)


def test_augmentation_disabled_leaves_pixels_untouched(mnist_sample):
    """Break tried: a default augmentation applied when augment=None: fails."""
    norm = data.Normalizer([0.1307], [0.3081], CPU)
    x = torch.cat([xb for xb, _ in _batches(mnist_sample)])
    y = torch.cat([yb for _, yb in _batches(mnist_sample)])
    assert torch.equal(x, norm(mnist_sample.images))
    assert torch.equal(y, mnist_sample.labels)


def test_augmentation_changes_pixels_and_is_seeded(mnist_sample):
    """Breaks tried: augmentation skipped (x returned as is); the generator seeded without the run seed;
    drawn from the global RNG instead of a seeded generator: each fails one assertion below."""
    plain = _batches(mnist_sample)
    first = _batches(mnist_sample, seed=5, augment=AUGMENT)
    again = _batches(mnist_sample, seed=5, augment=AUGMENT)
    other_seed = _batches(mnist_sample, seed=6, augment=AUGMENT)
    other_epoch = _batches(mnist_sample, seed=5, epoch=2, augment=AUGMENT)
    background = float(plain[0][0].min())
    for (p, py), (a, ay), (b, _), (c, _), (d, _) in zip(plain, first, again, other_seed, other_epoch):
        assert a.shape == p.shape and torch.equal(ay, py)  # same images, same labels, moved pixels
        moved = (a - p).abs().mean(dim=(1, 2, 3))
        assert (moved > 0.05).all(), moved  # every image changed (normalized units; ink is ~2.8)
        assert a.min() >= background - 1e-4  # padding is background, not black-below-background
        assert torch.equal(a, b)  # same seed, epoch and step: identical batch
        assert not torch.allclose(a, c)  # another seed: another transform
        assert not torch.allclose(a, d)  # another epoch: another transform


def test_dataloader_path_augments_like_the_tensor_path(mnist_sample):
    """Break tried: LoaderBatches seeding its generator without the step: fails."""
    fast = _batches(mnist_sample, seed=5, augment=AUGMENT)
    slow = _batches(mnist_sample, seed=5, augment=AUGMENT, loader="dataloader")
    for (a, ay), (b, by) in zip(fast, slow, strict=True):
        assert torch.equal(ay, by)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def _train_loss(tmp: Path, name: str, *extra: str) -> float:
    run = tmp / name
    result = runner.invoke(app, ["train", "--config", "configs/smoke.yaml", "--device", "cpu", "--set", "log.plots=false",
                                 "--set", "data.train_subset=640", "--set", "data.val_size=200",
                                 "--set", "data.test_subset=200", "--set", "train.max_steps_per_epoch=4",
                                 *extra, "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    return float((run / "metrics.csv").read_text().splitlines()[1].split(",")[1])


@pytest.mark.slow
def test_augmentation_setting_reaches_the_training_batches(data_root, tmp_path):
    """Through a run's recorded outputs: data.augment.enabled changes the training loss, the same
    seed repeats it exactly. Break tried: the runner never passing the augment params on (augment
    = None): the first assertion fails."""
    off = _train_loss(tmp_path, "off")
    on = _train_loss(tmp_path, "on", "--set", "data.augment.enabled=true")
    on_again = _train_loss(tmp_path, "on-again", "--set", "data.augment.enabled=true")
    assert on != off
    assert on == on_again


# --------------------------------------------------------------------------------------------
# Confusion matrix: rows are the true class, columns the predicted class


class _Always(nn.Module):
    """Predicts class ``k`` for every input (a fixed, known prediction; not a mock of convtrain)."""

    def __init__(self, k: int, num_classes: int) -> None:
        super().__init__()
        self.k, self.num_classes = k, num_classes

    def forward(self, x):
        return nn.functional.one_hot(torch.full((x.shape[0],), self.k), self.num_classes).float() * 5


def test_confusion_matrix_rows_are_true_classes_in_engine_evaluate():
    """Break tried: bincount(pred * n + true) (the transpose): fails."""
    y = torch.tensor([0] * 5 + [1] * 3 + [2] * 2 + [3] * 1)
    x = torch.zeros(len(y), 1)
    r = engine.evaluate(_Always(3, 4), [(x[:6], y[:6]), (x[6:], y[6:])], 4, CPU)
    assert r["confusion_matrix"] == [[0, 0, 0, 5], [0, 0, 0, 3], [0, 0, 0, 2], [0, 0, 0, 1]]
    assert r["per_class_accuracy"] == [0.0, 0.0, 0.0, 1.0]
    assert r["accuracy"] == pytest.approx(1 / 11)


@pytest.mark.slow
def test_confusion_matrix_rows_are_true_classes_in_eval_json(trained_run, tmp_path):
    """A trained checkpoint whose head always answers 7 (weights zeroed, bias on class 7): row i of
    the test confusion matrix holds all of class i's images in column 7.
    Break tried: the transpose in engine.evaluate: fails (row 7 would hold everything)."""
    ckpt = torch.load(trained_run / "checkpoints" / "best.pt", weights_only=True)
    state = ckpt["model"]["state_dict"]
    state["head.weight"].zero_()
    state["head.bias"].copy_(torch.nn.functional.one_hot(torch.tensor(7), 10).float() * 10)
    path = tmp_path / "always7.pt"
    torch.save(ckpt, path)
    result = runner.invoke(app, ["eval", "--checkpoint", str(path), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    counts = torch.bincount(load_split("mnist", os.environ["CONVTRAIN_DATA_ROOT"], train=False,
                                            download=False).labels, minlength=10).tolist()
    assert report["confusion_matrix"] == [[0] * 7 + [n] + [0, 0] for n in counts]
    assert report["per_class_accuracy"] == {str(c): 1.0 if c == 7 else 0.0 for c in range(10)}
    assert report["accuracy"] == pytest.approx(counts[7] / 10000)


# --------------------------------------------------------------------------------------------
# convtrain runs: newest first


def test_runs_lists_newest_first_by_time_not_by_name(trained_run, tmp_path):
    """Three runs whose names sort differently from their times (a-new, c-mid, b-old), one without
    results.json. Breaks tried: oldest first (reverse=False); sorted by name: both fail."""
    now = time.time()
    for name, age in (("b-old", 3000), ("a-new", 1000), ("c-mid", 2000)):
        run = tmp_path / name
        run.mkdir()
        for f in ("config.yaml", "metrics.csv", "results.json"):
            if not (name == "c-mid" and f == "results.json"):
                shutil.copy(trained_run / f, run / f)
        for p in [*run.iterdir(), run]:
            os.utime(p, (now - age, now - age))
    listing = runner.invoke(app, ["runs", str(tmp_path), "--json"])
    assert listing.exit_code == 0, listing.output
    found = json.loads(listing.stdout)
    assert [r["name"] for r in found] == ["a-new", "c-mid", "b-old"]
    assert [r["status"] for r in found] == ["finished", "interrupted", "finished"]
    table = runner.invoke(app, ["runs", str(tmp_path)])
    assert table.exit_code == 0
    out = table.stdout
    assert out.index("a-new") < out.index("c-mid") < out.index("b-old")


# --------------------------------------------------------------------------------------------
# predict: right answers on real digits, and --invert


@pytest.fixture(scope="module")
def labelled_digits(data_root, tmp_path_factory):
    """20 MNIST test images (seeded shuffled indices: the files are sorted by label) saved as PNG,
    read through torchvision itself, not through convtrain, with their true labels."""
    from torchvision.datasets import MNIST

    test = MNIST(str(data_root), train=False, download=False)
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(11))[:20].tolist()
    folder = tmp_path_factory.mktemp("labelled")
    labels = {}
    for i in idx:
        image, label = test[i]  # a PIL image, an int
        path = folder / f"test{i:05d}.png"
        image.save(path)
        labels[str(path)] = label
    return folder, labels


def _predict(ckpt: Path, *paths, invert: str = "auto") -> list[dict]:
    result = runner.invoke(app, ["predict", "--checkpoint", str(ckpt), *map(str, paths), "--invert", invert,
                                 "--device", "cpu", "--top-k", "10", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_predict_agrees_with_true_labels(trained_run, labelled_digits):
    """best.pt (97.8% test accuracy) on 20 real test digits as PNG files: at least 18 right.
    Break tried: preprocess.image_to_input transposing the image (permute(2, 1, 0)): fails."""
    folder, labels = labelled_digits
    preds = _predict(trained_run / "checkpoints" / "best.pt", folder)
    assert sorted(p["path"] for p in preds) == sorted(labels)
    right = sum(p["index"] == labels[p["path"]] for p in preds)
    assert right >= 18, f"{right}/20 right"


def test_invert_yes_no_auto_on_a_light_background_digit(trained_run, labelled_digits, tmp_path):
    """Dark ink on paper (the 20 digits inverted, enlarged to 84x84): `--invert yes` and `auto` read
    them right and agree exactly; `--invert no` feeds paper-white backgrounds and does clearly worse.
    Measured with the trained_run checkpoint: yes 20/20 right (mean probability of the true class
    0.98), no 12/20 (0.52). Breaks tried: auto never inverting; `yes` ignored: both fail."""
    folder, labels = labelled_digits
    best = trained_run / "checkpoints" / "best.pt"
    papers, truth = [], []
    for path, label in sorted(labels.items()):
        paper = Image.eval(Image.open(path), lambda v: 255 - v).resize((84, 84), Image.BILINEAR)
        out = tmp_path / Path(path).name
        paper.save(out)
        papers.append(out)
        truth.append(label)
    yes = _predict(best, *papers, invert="yes")
    auto = _predict(best, *papers, invert="auto")
    no = _predict(best, *papers, invert="no")

    def right(preds):
        return sum(p["index"] == t for p, t in zip(preds, truth))

    def true_prob(preds):
        return sum(next(k["prob"] for k in p["topk"] if k["index"] == t) for p, t in zip(preds, truth)) / len(truth)

    assert auto == yes
    assert right(yes) >= 18, f"--invert yes: {right(yes)}/20 right"
    assert right(no) <= right(yes) - 4, f"--invert no: {right(no)}/20 right, yes: {right(yes)}/20"
    assert true_prob(no) < true_prob(yes) - 0.2
    # and on ordinary MNIST-style files (light ink on dark), auto leaves them alone
    plain = sorted(labels)[:8]
    assert _predict(best, *plain, invert="auto") == _predict(best, *plain, invert="no")
