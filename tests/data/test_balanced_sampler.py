"""data.sampler: balanced (convtrain.data.batches.balanced_order): what one epoch's draws are, that
they are a pure function of (seed, epoch), and how the ranks of a distributed run share them.

Breaks tried (each failed here): the generator seeded without the epoch (every epoch the same
draws); classes chosen with the probability of their size (a plain shuffle); within a class,
images drawn with replacement instead of cycling (counts of one class's images then differ by more
than one); each rank drawing its own order from a rank-dependent seed (shards overlap); iter_from
ignoring the start step.
"""

from __future__ import annotations

import math

import torch

from convtrain.data.batches import LoaderBatches, Normalizer, SplitDataset, TensorBatches, balanced_order, shard_indices
from convtrain.data.types import Split

# a long tail: 1000 images of class 0, 100 of class 1, 10 of class 2, 3 of class 3
LABELS = torch.tensor([0] * 1000 + [1] * 100 + [2] * 10 + [3] * 3)[torch.randperm(1113, generator=torch.Generator().manual_seed(5))]


def test_an_epoch_draws_every_class_equally_often_and_a_class_images_evenly():
    order = balanced_order(LABELS, seed=0, epoch=1)
    assert len(order) == len(LABELS)
    drawn = LABELS[order]
    n = len(order)
    for c in range(4):
        k = int((drawn == c).sum())
        # each draw picks one of 4 classes at random: binomial(n, 1/4); 5 standard deviations either way
        assert abs(k - n / 4) < 5 * math.sqrt(n * 0.25 * 0.75), (c, k)
        members = (LABELS == c).nonzero().squeeze(1)
        counts = torch.bincount(order[drawn == c], minlength=len(LABELS))[members]
        assert int(counts.max() - counts.min()) <= 1, c  # cycled through: as even as can be
    assert int((drawn == 0).sum()) < 1000  # the common class is sampled without repeats


def test_the_draws_are_a_pure_function_of_seed_and_epoch():
    a = balanced_order(LABELS, seed=7, epoch=3)
    assert torch.equal(a, balanced_order(LABELS, seed=7, epoch=3))
    assert not torch.equal(a, balanced_order(LABELS, seed=7, epoch=4))
    assert not torch.equal(a, balanced_order(LABELS, seed=8, epoch=3))


def test_two_ranks_share_one_epochs_draws_without_overlap():
    """Rank r takes every 2nd draw from r: the ranks' positions are disjoint, and together they are the
    single process's draws (cut to an even number), interleaved."""
    n = len(LABELS)
    whole = shard_indices(n, True, 3, 2, 0, 1, LABELS)
    r0, r1 = (shard_indices(n, True, 3, 2, r, 2, LABELS) for r in (0, 1))
    assert len(r0) == len(r1) == n // 2
    interleaved = torch.stack([r0, r1], 1).flatten()
    assert torch.equal(interleaved, whole[: (n // 2) * 2])
    positions = [set(range(r, (n // 2) * 2, 2)) for r in (0, 1)]
    assert not positions[0] & positions[1]


def test_both_batch_iterators_follow_the_draws_and_resume_at_any_step():
    split = Split(torch.arange(len(LABELS), dtype=torch.int64).view(-1, 1, 1, 1).to(torch.uint8), LABELS)
    norm = Normalizer([0.0], [1 / 255], torch.device("cpu"))  # x * 1: the pixel values come back
    tensor = TensorBatches(split, 64, norm, shuffle=True, seed=1, balance=LABELS)
    loader = LoaderBatches(SplitDataset(split, [0.0], [1 / 255]), 64, torch.device("cpu"), shuffle=True, seed=1,
                           workers=0, balance=LABELS)
    for batches in (tensor, loader):
        batches.set_epoch(2)
        labels = torch.cat([y for _, y in batches])
        assert torch.equal(labels, LABELS[balanced_order(LABELS, 1, 2)])
        tail = torch.cat([y for _, y in batches.iter_from(5)])
        assert torch.equal(tail, labels[5 * 64:])
