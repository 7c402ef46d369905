from __future__ import annotations

import pytest
import torch

from convtrain.config.schema import DataConfig
from convtrain.data import batches as data
from convtrain.data.mnist import DATASETS, load_split, split_train_val
from convtrain.data.sources import build as build_data
from convtrain.errors import DataError


def _split(n=103, c=1, h=6, w=6):
    return data.Split(torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8), torch.arange(n) % 10)


def test_normalizer_matches_formula():
    imgs = torch.randint(0, 256, (4, 1, 5, 5), dtype=torch.uint8)
    norm = data.Normalizer([0.1307], [0.3081], torch.device("cpu"))
    torch.testing.assert_close(norm(imgs), (imgs.float() / 255 - 0.1307) / 0.3081)


def test_epoch_order_is_seeded_shuffled_and_complete():
    split = _split()
    norm = data.Normalizer([0.0], [1.0], torch.device("cpu"))
    b = data.TensorBatches(split, 10, norm, shuffle=True, seed=3)
    b.set_epoch(1)
    labels1 = torch.cat([y for _, y in b])
    assert sorted(labels1.tolist()) == sorted(split.labels.tolist())
    assert not torch.equal(labels1, split.labels)  # shuffled
    b.set_epoch(2)
    assert not torch.equal(torch.cat([y for _, y in b]), labels1)  # a new order each epoch
    b.set_epoch(1)
    assert torch.equal(torch.cat([y for _, y in b]), labels1)  # and reproducible
    # resuming mid-epoch yields exactly the remaining batches
    assert torch.equal(torch.cat([y for _, y in b.iter_from(4)]), labels1[40:])


@pytest.mark.parametrize("world", [2, 3])
def test_sharding_counts_each_sample_once(world):
    split = _split(n=103)
    norm = data.Normalizer([0.0], [1.0], torch.device("cpu"))
    ev = [torch.cat([y for _, y in data.TensorBatches(split, 8, norm, shuffle=False, rank=r, world_size=world)])
          for r in range(world)]
    assert sorted(torch.cat(ev).tolist()) == sorted(split.labels.tolist())  # evaluation: every sample once
    tr = [data.TensorBatches(split, 8, norm, shuffle=True, seed=1, rank=r, world_size=world) for r in range(world)]
    assert len({len(t) for t in tr}) == 1  # training: same step count on every rank
    seen = torch.cat([torch.cat([y for _, y in t]) for t in tr])
    assert len(seen) == (103 // world) * world


def test_augmentation_keeps_shape_and_changes_pixels():
    split = _split(n=16, h=28, w=28)
    norm = data.Normalizer([0.5], [0.5], torch.device("cpu"))
    params = data.AugmentParams(degrees=15, translate=0.1, scale_min=0.9, scale_max=1.1)
    plain = next(iter(data.TensorBatches(split, 16, norm, shuffle=False)))[0]
    aug = data.TensorBatches(split, 16, norm, shuffle=True, augment=params)
    x, _ = next(iter(aug))
    assert x.shape == plain.shape
    assert x.min() >= plain.min() - 1e-5  # background stays background
    x2, _ = next(iter(aug))
    torch.testing.assert_close(x, x2)  # seeded per (seed, epoch, step)


def test_train_val_split_is_disjoint_and_seeded():
    full = data.Split(torch.zeros(50, 1, 2, 2, dtype=torch.uint8), torch.arange(50))
    tr, va = split_train_val(full, 10, seed=0, train_subset=None)
    assert len(va) == 10 and len(tr) == 40
    assert not set(tr.labels.tolist()) & set(va.labels.tolist())
    tr2, va2 = split_train_val(full, 10, seed=0, train_subset=5)
    assert torch.equal(va.labels, va2.labels) and torch.equal(tr2.labels, tr.labels[:5])


def test_missing_dataset_names_files_and_fixes(tmp_path):
    cfg = DataConfig(root=str(tmp_path), download=False)
    with pytest.raises(DataError) as info:
        build_data(cfg, seed=0)
    msg = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in msg and "train-images-idx3-ubyte" in msg and "\n" not in msg
    assert "CONVTRAIN_DATA_ROOT" in msg and "--data-root" in msg


def test_truncated_dataset_file(tmp_path, data_root):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in DATASETS["mnist"].expected_files(data_root):
        blob = f.read_bytes()
        (raw / f.name).write_bytes(blob[: len(blob) // 3] if "train-images" in f.name else blob)
    with pytest.raises(DataError, match="train-images-idx3-ubyte is truncated"):
        load_split("mnist", tmp_path, train=True, download=False)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_real_datasets_load(data_root, name):
    split = load_split(name, data_root, train=False, download=False)
    assert split.images.shape == (10000, 1, 28, 28) and split.images.dtype == torch.uint8
    assert split.labels.min() == 0 and split.labels.max() == len(DATASETS[name].classes) - 1


@pytest.mark.parametrize("shuffle, rank, world", [(True, 0, 1), (True, 1, 2), (False, 0, 1), (False, 1, 3)])
def test_dataloader_path_matches_tensor_path(shuffle, rank, world):
    split = _split(n=77, h=8, w=8)
    bundle = data.DataBundle(split, split, split, [str(i) for i in range(10)], [0.3], [0.4])
    kwargs = dict(shuffle=shuffle, seed=5, rank=rank, world_size=world, workers=0)
    fast = data.make_batches(split, bundle, "tensor", 16, torch.device("cpu"), **kwargs)
    slow = data.make_batches(split, bundle, "dataloader", 16, torch.device("cpu"), **kwargs)
    for b in (fast, slow):
        b.set_epoch(3)
    assert len(fast) == len(slow)
    pairs = list(zip(fast, slow))
    assert len(pairs) == len(fast)
    for (xf, yf), (xs, ys) in pairs:
        assert torch.equal(yf, ys)  # the same samples in the same order
        torch.testing.assert_close(xf, xs)  # normalized alike (per sample vs per batch)
    resumed = [y for _, y in slow.iter_from(1)]
    assert torch.equal(torch.cat(resumed), torch.cat([ys for _, (_, ys) in pairs[1:]]))  # mid-epoch resume


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_files_decode_to_torchvisions_tensors(data_root, name):
    # start-up reads the IDX files itself instead of importing torchvision; the result must be the same
    import torchvision.datasets as tvd

    spec = DATASETS[name]
    if not all(f.is_file() for f in spec.expected_files(data_root)):
        pytest.skip(f"{name} is not under {data_root}")
    for train in (False, True):
        ref = getattr(tvd, spec.torchvision_class)(root=str(data_root), train=train, download=False)
        split = load_split(name, data_root, train, download=False)
        assert torch.equal(split.images, ref.data.unsqueeze(1)) and torch.equal(split.labels, ref.targets)
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
