"""Models split over devices: every method on a two-part device map equals the one-device run.

How a split is tested without GPUs: the tiny model is saved and loaded again with a dict
device map whose first half is on ``"cpu"`` and whose second half is on ``"disk"`` (an offload
folder). Accelerate then does at run time exactly what it does for a two-GPU split: it attaches
an ``AlignDevicesHook`` to every placed module, which moves the module's inputs to its
execution device. For the offloaded half it does more: the weights live on the meta device
outside each module's own forward and are loaded from the offload folder only for it. So the
split model's parameters are *not* on the input device between passes, and every place that
reads a weight outside the module's own forward (``W_O`` in the ``hook_result`` hook, the
circuit wiring's per-head projections, the EAP-IG norm pullbacks, OLMo-2's post-norm gains)
must fetch it properly, or these tests fail with meta-device errors. What this cannot show: a
tensor combined across two *real* devices (both halves execute on the CPU); those moves
(``x.to(activation.device)`` in hooks, wiring and accumulators) are exercised only on a
multi-GPU machine (see docs/large_models.md).
"""

import json

import pytest
import torch
import transformers as tf

from modelweave import Model
from modelweave.circuits import edge_attribution
from modelweave.engine import Intervention, base_run, intervene, run_suffix
from modelweave.errors import ModelLoadError
from modelweave.methods import patch_sweep
from modelweave.metrics.scores import logit_diff
from modelweave.models import load_model
from modelweave.models.device_map import compact, two_part_map
from modelweave.tasks import make_batch
from tokenizers_zoo import make_tokenizer

from tiny import tiny_hf_model

FAMILIES = ["llama", "gpt2", "olmo2"]  # GQA + biases; Conv1D + tied + positions; post-norms


def split_map(hf):
    """First half of the modules on the CPU, the rest offloaded to disk (a tied unembedding
    stays with the embedding it shares its weight with)."""
    placed = two_part_map(hf.state_dict(), "cpu", "disk")
    if hf.config.tie_word_embeddings:
        placed["lm_head"] = "cpu"
    return placed


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request, tmp_path_factory):
    """(one-device model, the same weights split over cpu and disk)."""
    tok = make_tokenizer("bytelevel")
    hf = tiny_hf_model(request.param, vocab_size=len(tok))
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder / "model")
    split = load_model(folder / "model", tokenizer=tok, device_map=split_map(hf),
                       offload_folder=folder / "offload")
    return Model(hf, tok), split


def test_the_split_is_real(pair):
    single, split = pair
    assert split.device_map is not None and "disk" in split.device_map.values()
    last = split.block(split.cfg.n_layers - 1)
    assert all(p.device.type == "meta" for p in last.parameters())  # offloaded between passes
    assert split.layer_device(split.cfg.n_layers - 1) == torch.device("cpu")
    assert split.device == single.device == torch.device("cpu")


def test_run_with_cache_and_hooks_equal_one_device(pair):
    single, split = pair
    tokens = torch.randint(0, 90, (2, 7), generator=torch.Generator().manual_seed(0))
    logits_a, cache_a = single.run_with_cache(tokens)
    logits_b, cache_b = split.run_with_cache(tokens)
    torch.testing.assert_close(logits_b, logits_a, atol=1e-5, rtol=1e-5)
    assert set(cache_a) == set(cache_b)
    for name in cache_a:
        torch.testing.assert_close(cache_b[name], cache_a[name], atol=1e-5, rtol=1e-5)
    last = single.cfg.n_layers - 1
    # replace per-head results (reads W_O of an offloaded layer) and patch in cached values
    # computed on the other run
    hooks = [(f"blocks.{last}.attn.hook_result", lambda t, h: t * 0.5),
             (f"blocks.{last}.hook_resid_mid", lambda t, h: cache_a[h.name].flip(0))]
    torch.testing.assert_close(split.run_with_hooks(tokens, hooks),
                               single.run_with_hooks(tokens, hooks), atol=1e-5, rtol=1e-5)


def test_interventions_suffix_engine_and_head_grid_equal_one_device(pair):
    single, split = pair
    batch = make_batch(single, "ioi", n=4, same_length=True)
    last = single.cfg.n_layers - 1
    site = f"blocks.{last}.attn.hook_z"
    ivs = [Intervention(site, "mean", index=(1,), source="ref"),
           Intervention(f"blocks.{last}.hook_resid_pre", "add",
                        vector=tuple([0.1] * single.cfg.d_model))]
    outs = []
    for model in (single, split):
        _, ref = model.run_with_cache(batch.corrupt, [site])
        with intervene(model, ivs, sources={"ref": ref}):
            outs.append(model(batch.clean))
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)

    suffix = []
    for model in (single, split):
        _, base = base_run(model, batch.clean)
        with model.hooks([(site, lambda t, h: t * 0)]):
            suffix.append(run_suffix(model, base, last, 3))
    torch.testing.assert_close(suffix[1], suffix[0], atol=1e-5, rtol=1e-5)

    grids = [patch_sweep(model, batch, "heads") for model in (single, split)]
    torch.testing.assert_close(torch.as_tensor(grids[1].raw), torch.as_tensor(grids[0].raw),
                               atol=1e-5, rtol=1e-5)


def test_eap_ig_scores_equal_one_device(pair):
    single, split = pair
    batch = make_batch(single, "ioi", n=4, same_length=True)
    a = edge_attribution(single, batch, method="eap-ig", steps=2)
    b = edge_attribution(split, batch, method="eap-ig", steps=2)
    torch.testing.assert_close(b.scores, a.scores, atol=1e-5, rtol=1e-4)
    assert a.scores.abs().max() > 1e-3


def test_node_methods_lens_dla_and_head_roles_equal_one_device(pair):
    from modelweave.circuits import CircuitEvaluator
    from modelweave.methods import attribution_sweep
    from modelweave.methods.atp_star import atp_star
    from modelweave.methods.dla import direct_logit_attribution
    from modelweave.methods.head_roles import head_roles
    from modelweave.methods.lens import logit_lens

    single, split = pair
    batch = make_batch(single, "ioi", n=4, same_length=True)
    runs = {
        "attribution": lambda m: torch.as_tensor(attribution_sweep(m, batch, "heads").raw),
        "atp*": lambda m: atp_star(m, batch, "heads").estimate,
        "lens": lambda m: logit_lens(m, batch).answer_prob,
        "dla": lambda m: direct_logit_attribution(m, batch, neuron_layers=[1]).heads,
        "evaluator": lambda m: torch.tensor([CircuitEvaluator(m, batch).full,
                                             CircuitEvaluator(m, batch, "kl", "mean").empty]),
        "roles": lambda m: torch.stack(list(head_roles(m).scores.values())),
    }
    for name, run in runs.items():
        torch.testing.assert_close(run(split), run(single), atol=1e-5, rtol=1e-5, msg=name)
    with split.steer(torch.ones(split.cfg.d_model), layer=split.cfg.n_layers - 1):
        steered = split.generate("ab", max_new_tokens=4).tokens
    with single.steer(torch.ones(single.cfg.d_model), layer=single.cfg.n_layers - 1):
        assert torch.equal(steered, single.generate("ab", max_new_tokens=4).tokens)


def test_weight_edits_training_and_influence_refuse_offloaded_weights(pair, tmp_path):
    from modelweave.errors import ModelWeaveError
    from modelweave.methods.influence.engine import plan_influence
    from modelweave.methods.steering.ablation import ablate_weights
    from modelweave.models.finetune import finetune

    _, split = pair
    with pytest.raises(ModelWeaveError, match="ablate_direction"):
        ablate_weights(split, torch.ones(split.cfg.d_model))
    with pytest.raises(ModelWeaveError, match="one device"):
        finetune(split, "ioi", tmp_path, steps=1)
    with pytest.raises(ModelWeaveError, match="offloaded weights"):
        plan_influence(split, [], [])


def test_run_info_is_json_and_names_the_attention_implementation(pair):
    single, split = pair
    info = json.loads(json.dumps(split.run_info()))
    assert info["attn_implementation"] == split.hf_model.config._attn_implementation
    assert info["dtype"] == "float32" and info["device"] == "cpu" and info["offloaded"]
    assert set(info["device_map"].values()) == {"cpu", "disk"}
    assert single.run_info()["device_map"] is None
    assert compact({"m.embed": 0, "m.layers.0": 0, "m.layers.1": 0, "m.layers.2": 1,
                    "lm_head": 1}) == {"m.embed": "cuda:0", "m.layers.0-1": "cuda:0",
                                       "m.layers.2": "cuda:1", "lm_head": "cuda:1"}


def test_meta_split_moves_replacements_to_the_hooked_device():
    """The offloaded split above executes both halves on the CPU. Here the second half sits on
    the meta device (a real, distinct torch device that computes shapes only; combining a CPU
    with a meta tensor raises, as combining tensors of two GPUs does): hook replacements,
    interventions, steering vectors and suffix runs whose tensors were made on the input
    device must be moved to the device of the layer they are applied in."""
    from accelerate import dispatch_model
    from accelerate.hooks import remove_hook_from_module

    hf = tiny_hf_model("llama")
    hf = dispatch_model(hf, two_part_map(hf.state_dict(), "cpu", "meta"), main_device="cpu")
    remove_hook_from_module(hf)  # keep outputs on meta (they cannot be copied back)
    model = Model(hf)
    last = model.cfg.n_layers - 1
    assert model.layer_device(0).type == "cpu" and model.layer_device(last).type == "meta"
    tokens = torch.arange(1, 8)[None]
    sites = [s for s in model.sites() if s.startswith(f"blocks.{last}.")]
    _, cache = model.run_with_cache(tokens, ["blocks.0.attn.hook_z"])
    assert model.run_with_cache(tokens, sites)[1][sites[0]].device.type == "meta"
    zeros = [(s, lambda t, h: torch.zeros(t.shape)) for s in sites]  # made on the CPU
    assert model.run_with_hooks(tokens, zeros).device.type == "meta"
    ivs = [Intervention(f"blocks.{last}.attn.hook_z", "patch", source="c", index=(1,)),
           Intervention(f"blocks.{last}.hook_resid_post", "add",
                        vector=tuple([0.1] * model.cfg.d_model))]
    with intervene(model, ivs, sources={"c": {ivs[0].site: cache["blocks.0.attn.hook_z"]}}):
        assert model(tokens).device.type == "meta"
    with model.steer(torch.ones(model.cfg.d_model), layer=last, positions="last"):
        assert model(tokens).device.type == "meta"
    _, base = base_run(model, tokens)
    with model.hooks([(f"blocks.{last}.hook_resid_mid", lambda t, h: torch.zeros(t.shape))]):
        assert run_suffix(model, base, last, 3).device.type == "meta"


# bad input -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    hf = tiny_hf_model("llama")
    folder = tmp_path_factory.mktemp("saved")
    hf.save_pretrained(folder / "model")
    return hf, folder


def test_unplaced_layer_is_one_clear_error_before_any_weight_loads(saved, monkeypatch):
    hf, folder = saved
    placed = split_map(hf)
    del placed["model.layers.1"]

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(tf.AutoModelForCausalLM, "from_pretrained", no_loading)
    offload = folder / "offload-unplaced"
    with pytest.raises(ModelLoadError, match=r"no device for model\.layers\.1;.*"
                                              r"'model\.layers\.1': 0"):
        load_model(folder / "model", device_map=placed, offload_folder=offload)
    assert not offload.exists()  # nothing written
    with pytest.raises(ModelLoadError, match="names no module"):
        load_model(folder / "model", device_map={**split_map(hf), "model.decoder": 0})
    with pytest.raises(ModelLoadError, match="offload_folder"):
        load_model(folder / "model", device_map=split_map(hf))
    with pytest.raises(ModelLoadError, match="not a device"):
        load_model(folder / "model", device_map={k: "gpu7" for k in split_map(hf)})
    with pytest.raises(ModelLoadError, match="either device= or device_map="):
        load_model(folder / "model", device="cpu", device_map="auto")


def test_an_instance_is_dispatched_or_used_as_placed(saved, tmp_path):
    hf, _ = saved
    copy = tiny_hf_model("llama")
    model = load_model(copy, device_map=split_map(copy), offload_folder=tmp_path)
    assert model.run_info()["offloaded"]
    tokens = torch.arange(1, 9)[None]
    torch.testing.assert_close(model(tokens), Model(hf)(tokens), atol=1e-5, rtol=1e-5)
    again = load_model(model.hf_model)  # already dispatched: kept as it is
    assert again.device_map == model.device_map
    with pytest.raises(ModelLoadError, match="no device for lm_head"):
        load_model(tiny_hf_model("llama"), device_map={
            k: v for k, v in split_map(copy).items() if k != "lm_head"}, offload_folder=tmp_path)


# bf16: metrics and scores accumulate in float32 ---------------------------------------------
def test_bf16_metrics_and_eap_scores_are_float32_and_match_fp32():
    tok = make_tokenizer("bytelevel")
    hf = tiny_hf_model("llama", vocab_size=len(tok))
    full = Model(hf, tok)
    half = Model(tiny_hf_model("llama", vocab_size=len(tok)).to(torch.bfloat16), tok)
    batch = make_batch(full, "ioi", n=6, same_length=True)
    diff_full, diff_half = logit_diff(full(batch.clean), batch), logit_diff(half(batch.clean),
                                                                            batch)
    assert diff_half.dtype == torch.float32
    scale = diff_full.abs().max()
    assert (diff_half - diff_full).abs().max() <= 0.05 * scale
    a = edge_attribution(full, batch, method="eap-ig", steps=2)
    b = edge_attribution(half, batch, method="eap-ig", steps=2)
    assert b.scores.dtype == torch.float32
    err = (b.scores - a.scores).abs().max() / a.scores.abs().max()
    assert err < 0.05, err
    top_a, top_b = set(a.scores.flatten().topk(20).indices.tolist()), set(
        b.scores.flatten().topk(20).indices.tolist())
    assert len(top_a & top_b) >= 15
    from modelweave.circuits.gradients import receiver_gradients
    from modelweave.methods import attribution_sweep

    grads = receiver_gradients(half, batch.clean, lambda logits: logits[:, -1].float().sum())
    assert {g.dtype for _, _, g in grads} == {torch.float32}
    sweeps = [torch.as_tensor(attribution_sweep(m, batch, "heads").raw) for m in (full, half)]
    assert (sweeps[1] - sweeps[0]).abs().max() <= 0.05 * sweeps[0].abs().max()


# maps themselves: splits, checks, the compact form (configs on the meta device) -------------
def _llama_keys(layers: int) -> list[str]:
    from modelweave.models.device_map import meta_keys

    config = tf.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48,
                            num_hidden_layers=layers, num_attention_heads=4)
    return meta_keys(config)[0]


def test_two_part_map_places_whole_blocks_in_two_halves_in_order():
    from modelweave.models.device_map import check_device_map, placement_units

    keys = _llama_keys(5)
    units = placement_units(keys)
    assert units == ["model.embed_tokens", *(f"model.layers.{i}" for i in range(5)),
                     "model.norm", "lm_head"]  # one placement per decoder block
    placed = two_part_map(keys, 0, 1)
    assert list(placed) == units
    devices = list(placed.values())
    assert devices == sorted(devices) and devices.count(0) == devices.count(1) == 4
    assert check_device_map(placed, keys)["model.layers.4"] == "cuda:1"


def test_a_map_missing_layers_ten_and_up_is_refused():
    """``model.layers.1`` does not place ``model.layers.10``: prefixes match whole names."""
    from modelweave.models.device_map import check_device_map

    keys = _llama_keys(12)
    placed = {k: v for k, v in two_part_map(keys, 0, 1).items()
              if k not in ("model.layers.10", "model.layers.11")}
    with pytest.raises(ModelLoadError, match=r"no device for model\.layers\.10, "
                                              r"model\.layers\.11;"):
        check_device_map(placed, keys)


def test_compact_keeps_devices_and_gaps_apart():
    placed = {"m.embed": 0, "m.layers.0": 0, "m.layers.1": 0, "m.layers.2": 1,
              "m.layers.3": 0, "m.layers.5": 0, "lm_head": "cpu"}
    assert compact(placed) == {"m.embed": "cuda:0", "m.layers.0-1": "cuda:0",
                               "m.layers.2": "cuda:1", "m.layers.3": "cuda:0",
                               "m.layers.5": "cuda:0", "lm_head": "cpu"}


def test_execution_device_is_the_hooks_not_the_weights():
    """Accelerate's hook says where a module computes (its weights may sit elsewhere)."""
    from types import SimpleNamespace

    from modelweave.models.device_map import execution_device

    layer = torch.nn.Linear(2, 2)
    assert execution_device(layer, torch.device("meta")) == torch.device("cpu")
    layer._hf_hook = SimpleNamespace(execution_device=1)
    assert execution_device(torch.nn.Sequential(layer), torch.device("cpu")) == torch.device(
        "cuda:1")
