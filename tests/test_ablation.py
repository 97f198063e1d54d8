"""The ablation helper (engine/ablation.py) against explicit computations on small tensors."""

import pytest
import torch

from modelweave.engine import AblationError, MeanAccumulator, ablate, reference_means, replacement
from modelweave.engine.ablation import ablation_hook, permutation, resampled, units_mask


def _values():
    """values [4, 3, 2] (prompts, positions, units), mask [4, 3]: lengths 3, 2, 3, 1."""
    values = torch.arange(24, dtype=torch.float64).view(4, 3, 2)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]])
    return values, mask


def test_zero():
    x = torch.randn(2, 3, 4)
    assert torch.equal(replacement("zero", x), torch.zeros(2, 3, 4))
    keep = torch.tensor([True, False, True, False])
    got = ablate(x, None, keep)
    assert torch.equal(got[..., ::2], x[..., ::2]) and not got[..., 1::2].any()
    assert torch.equal(ablate(x), torch.zeros_like(x))


def test_mean_per_position_by_hand():
    values, mask = _values()
    means = reference_means(values, mask, per="position")
    # position 0: all four prompts; position 1: prompts 0, 1, 2; position 2: prompts 0, 2
    want = torch.stack([values[[0, 1, 2, 3], 0].mean(0), values[[0, 1, 2], 1].mean(0),
                        values[[0, 2], 2].mean(0)])
    assert torch.allclose(means.overall, want)
    assert means.counts == {3: 2, 2: 1, 1: 1}
    got = replacement("mean", torch.zeros(5, 3, 2, dtype=torch.float64), reference=means)
    assert got.shape == (1, 3, 2) and torch.allclose(got[0], want)
    # streaming in two batches gives the same means
    acc = MeanAccumulator("position")
    acc.add(values[1:2, :2], mask[1:2, :2])  # a narrower batch first: the sums grow later
    acc.add(values[:1], mask[:1])
    acc.add(values[2:], mask[2:])
    assert torch.allclose(acc.means().overall, want)


def test_mean_without_a_mask_is_the_plain_mean_over_prompts():
    values, _ = _values()
    assert torch.allclose(reference_means(values).overall, values.mean(0))
    like = torch.zeros(4, 3, 2, dtype=torch.float64)
    got = replacement("mean", like, reference=values)
    assert torch.allclose(got, values.mean(0, keepdim=True).expand_as(like))


def test_mean_per_length_by_hand_with_fallback():
    values, mask = _values()
    means = reference_means(values, mask, per="length")
    assert torch.allclose(means.by_length[3], values[[0, 2]].mean(0))
    assert torch.allclose(means.by_length[2], values[1, :2])
    assert torch.allclose(means.by_length[1], values[3, :1])
    overall = reference_means(values, mask, per="position").overall
    assert torch.allclose(means.overall, overall)
    # a batch of prompts of lengths 2, 3 and 1, padded to width 3
    lengths = torch.tensor([2, 3, 1])
    got = means.for_batch(lengths, 3)
    assert torch.allclose(got[0, :2], values[1, :2]) and not got[0, 2].any()
    assert torch.allclose(got[1], values[[0, 2]].mean(0))
    assert torch.allclose(got[2, 0], values[3, 0]) and not got[2, 1:].any()
    # a length the reference lacks falls back to the per-position mean
    only = reference_means(values[[0, 3]], mask[[0, 3]], per="length")  # lengths 3 and 1
    fallback = only.for_batch(torch.tensor([2]), 2)[0]
    assert torch.allclose(fallback, torch.stack([values[[0, 3], 0].mean(0), values[0, 1]]))
    with pytest.raises(AblationError, match="reaches position"):
        only.for_batch(torch.tensor([4]), 4)


def test_resample_is_a_permutation_of_prompts():
    ref = torch.arange(6.0)[:, None, None].expand(6, 2, 3).clone()
    got = replacement("resample", torch.zeros(6, 2, 3), reference=ref, seed=3)
    order = got[:, 0, 0].long()
    assert sorted(order.tolist()) == list(range(6)) and order.tolist() != list(range(6))
    assert torch.equal(order, permutation(6, 3))
    assert torch.equal(got, resampled(ref, 3)) and torch.equal(got, ref[permutation(6, 3)])
    assert torch.equal(got, replacement("resample", torch.zeros(6, 2, 3), reference=ref, seed=3))


def test_keep_per_unit_and_per_prompt():
    x = torch.randn(2, 3, 4, 5)  # e.g. hook_z: [B, T, heads, d_head]
    mean = torch.randn(1, 3, 4, 5)
    keep = units_mask(4, [1, 2])
    got = ablate(x, mean, keep)
    assert torch.equal(got[:, :, 1:3], x[:, :, 1:3])
    assert torch.equal(got[:, :, [0, 3]], mean.expand_as(x)[:, :, [0, 3]])
    assert torch.equal(units_mask(4, [1, 2], kept=False), ~keep)
    rows = torch.tensor([[True, False, True, True], [False, True, True, True]])
    got = ablate(x, None, rows)
    assert not got[0, :, 1].any() and not got[1, :, 0].any()
    assert torch.equal(got[0, :, 0], x[0, :, 0]) and torch.equal(got[1, :, 1], x[1, :, 1])
    hook = ablation_hook(mean, keep)
    assert torch.equal(hook(x, None), ablate(x, mean, keep))


def test_bad_input():
    with pytest.raises(AblationError, match="kind"):
        replacement("noise", torch.zeros(1, 1, 1))
    with pytest.raises(AblationError, match="per"):
        MeanAccumulator("prompt")
    with pytest.raises(AblationError, match="reference"):
        replacement("mean", torch.zeros(1, 1, 1))
    with pytest.raises(AblationError, match="no reference"):
        MeanAccumulator().means()
