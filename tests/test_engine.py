"""The fast patching engine equals the one-forward-per-patch loop."""

import pytest
import torch

from modelweave import Model
from modelweave.engine import base_run
from modelweave.methods import (
    GRIDS,
    SITES,
    PatchingResult,
    grid_units,
    naive_patch,
    patch_sweep,
    patch_units,
)
from modelweave.tasks import TaskError, make_batch
from tokenizers_zoo import make_tokenizer

from tiny import FAMILIES, tiny_hf_model


def tiny(family):
    tok = make_tokenizer("bytelevel")
    return Model(tiny_hf_model(family, vocab_size=len(tok)), tok)


def fast_and_naive(model, batch, grid, direction, indices=None):
    units, _ = grid_units(model, grid, batch.clean.shape[1], indices=indices)
    base_t, src_t = ((batch.corrupt, batch.clean) if direction == "denoising"
                     else (batch.clean, batch.corrupt))
    names = sorted({f"blocks.{u.layer}.{SITES[grid]}" for u in units})
    _, cache = model.run_with_cache(src_t, names)
    _, base = base_run(model, base_t, names)
    fast = patch_units(model, batch, base, cache, grid, units, max_rows=48)
    return units, fast, naive_patch(model, batch, grid, units, direction)


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_engine_equals_naive_loop(family):
    model = tiny(family)
    batch = make_batch(model, "ioi", n=4, same_length=True)
    for grid in GRIDS:
        for direction in ("denoising", "noising"):
            indices = [0, 11, 40] if grid == "neurons" else None
            units, fast, naive = fast_and_naive(model, batch, grid, direction, indices)
            diffs = [abs(fast[u] - naive[u]) for u in units]
            assert max(diffs) <= 1e-4, (grid, direction)
            spread = max(naive.values()) - min(naive.values())
            assert spread > 1e-3, (grid, direction)  # the patches do something


def test_sweep_result(tmp_path):
    model = tiny("llama")
    batch = make_batch(model, "ioi", n=4, same_length=True)
    result = patch_sweep(model, batch, "heads-by-pos")
    length = batch.clean.shape[1]
    assert result.values.shape == (3, 4, length) and result.axes == ("layer", "head", "pos")
    assert result.labels["pos"][0].startswith("0: ")
    expected = (result.raw - result.corrupt_metric) / (result.clean_metric -
                                                       result.corrupt_metric)
    assert torch.allclose(result.values, expected)
    frame = result.to_dataframe()
    assert len(frame) == 3 * 4 * length and {"layer", "head_label", "value"} <= set(frame)
    result.save(tmp_path / "r")
    loaded = PatchingResult.load(tmp_path / "r")
    assert torch.equal(loaded.values, result.values) and loaded.axes == result.axes
    assert loaded.positions == result.positions and "S2" in loaded.positions


def test_unchanged_positions_have_no_effect():
    model = tiny("gpt2")
    batch = make_batch(model, "ioi", n=4, same_length=True)
    result = patch_sweep(model, batch, "resid", layers=[0])
    same = (batch.clean == batch.corrupt).all(dim=0)
    assert same.any() and torch.all(result.raw[0, same] == result.corrupt_metric)
    assert (result.values[0, ~same].abs() > 0).any()


def test_bad_requests():
    model = tiny("llama")
    batch = make_batch(model, "ioi", n=4, same_length=True)
    with pytest.raises(TaskError, match="unknown grid"):
        patch_sweep(model, batch, "edges")
    with pytest.raises(TaskError, match="head index 4 out of range"):
        patch_sweep(model, batch, "heads", indices=[4])
    with pytest.raises(TaskError, match="layer 9 out of range"):
        patch_sweep(model, batch, "mlp", layers=[9])
    with pytest.raises(TaskError, match="direction"):
        patch_sweep(model, batch, "mlp", direction="sideways")
    ragged = make_batch(model, "ioi", n=12)
    if not ragged.same_length:
        with pytest.raises(TaskError, match="same_length=True"):
            patch_sweep(model, ragged, "mlp")


@pytest.mark.slow
@pytest.mark.xdist_group("smollm")
def test_embedded_model_heads(smollm):
    batch = make_batch(smollm, "ioi", n=4, same_length=True)
    units, _ = grid_units(smollm, "heads", batch.clean.shape[1])
    sample = [u for u in units if u.layer in (0, 15, 29)]
    names = sorted({f"blocks.{u.layer}.attn.hook_z" for u in sample})
    _, cache = smollm.run_with_cache(batch.clean, names)
    _, base = base_run(smollm, batch.corrupt, names)
    fast = patch_units(smollm, batch, base, cache, "heads", sample)
    naive = naive_patch(smollm, batch, "heads", sample)
    assert max(abs(fast[u] - naive[u]) for u in sample) <= 1e-4
