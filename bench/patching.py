"""Exact head x position patching on the embedded model: fast engine vs the naive loop.

IOI, 32 prompts of one length, every (layer, head, position) unit, denoising, logit diff.
The naive loop (one full forward pass of the 32 prompts per patch) is timed on a random
sample of units and extrapolated to the grid; on that sample the two must agree to 1e-4.
Where transformer-lens is installed (it is not a dependency), its patching utility is timed
the same way on a TransformerBridge around the same HF model.
FLOPs of the engine are counted analytically from the passes it ran; the matmul peak is
measured in the same run with a 2048 x 2048 fp32 matmul.

    .venv/bin/python bench/patching.py              # whole grid (~10 min on 2 cores)
    .venv/bin/python bench/patching.py --layers 0,10,20 --sample 12

``--family cohere2`` instead compares the engine on mixed layer types with a plain stack, side
by side in one run: two random-weight models of one size (SmolLM2's widths and vocabulary,
``--n-layers`` layers), one Cohere2-shaped (sliding-window layers with a ``--window`` the
prompts exceed, every fourth layer global, parallel blocks, logit scale) and one
Llama-shaped; each gets the whole heads x position grid on the engine (8 prompts) and a timed
sample of the naive loop (median per unit; both models' work interleaved so that they share
the machine's load), and the last line gives both speed-ups and their ratio (~3 min on 2
cores shared with other work; measured speedup_cohere2=8.19 speedup_llama=7.66 ratio=1.07).

    .venv/bin/python bench/patching.py --family cohere2
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from transformers.utils import logging as hf_logging

from modelweave import Model, load_model
from modelweave.engine import base_run
from modelweave.engine import suffix as suffix_module
from modelweave.methods import grid_units, naive_patch, patch_units
from modelweave.metrics.scores import metric_on_last
from modelweave.tasks import make_batch


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """Best observed fp32 matmul FLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def suffix_flops(cfg, rows: int, start_layer: int, start_pos: int, length: int) -> float:
    """Matmul FLOPs of one suffix pass (projections, attention, MLP, unembedding)."""
    s, layers = length - start_pos, cfg.n_layers - start_layer
    qo = 2 * cfg.d_model * cfg.n_heads * cfg.d_head
    kv = 2 * cfg.d_model * cfg.n_kv_heads * cfg.d_head
    mlp = 3 * cfg.d_model * cfg.d_mlp  # gated MLP: gate, up, down
    per_token = 2 * (qo + kv + mlp)
    attention = 2 * 2 * cfg.n_heads * cfg.d_head * s * (start_pos + (s + 1) / 2)
    return rows * (layers * (s * per_token + attention) + 2 * cfg.d_model * cfg.d_vocab)


def transformer_lens_per_unit(model, batch, sample) -> tuple[float, dict] | None:
    """Seconds per unit of TransformerLens's ``get_act_patch_attn_head_out_by_pos`` on the
    same weights (a TransformerBridge around the same HF model), and its raw values; None
    when transformer-lens is not installed."""
    try:
        import pandas as pd
        from transformer_lens import patching as tl_patching
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        return None
    from modelweave.models import embedded

    bridge = TransformerBridge.boot_transformers(str(embedded.cached_dir()),
                                                 hf_model=model.hf_model,
                                                 tokenizer=model.tokenizer, device="cpu")
    _, clean_cache = bridge.run_with_cache(batch.clean)

    def metric(logits):
        return metric_on_last("logit_diff", logits[:, -1], batch).mean()

    index = pd.DataFrame({"layer": [u.layer for u in sample], "pos": [u.pos for u in sample],
                          "head": [u.index for u in sample]})
    start = time.perf_counter()
    with torch.no_grad():
        values = tl_patching.get_act_patch_attn_head_out_by_pos(
            bridge, batch.corrupt, clean_cache, metric, index_df=index, index_axis_names=None)
    per_unit = (time.perf_counter() - start) / len(sample)
    return per_unit, dict(zip(sample, values.flatten().tolist(), strict=True))


def random_model(shape: str, n_layers: int, window: int, tokenizer) -> Model:
    """A random-weight model with SmolLM2-135M's widths: ``shape`` ``"llama"`` (sequential
    blocks, every layer global) or ``"cohere2"`` (parallel blocks, sliding-window layers with
    a global one every fourth, logit scale). Matrices ~ N(0, 1/fan_in) keep activations O(1)."""
    import transformers as tf

    dims = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_attention_heads=9,
                num_key_value_heads=3, num_hidden_layers=n_layers, max_position_embeddings=2048,
                tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    config = (tf.Cohere2Config(**dims, sliding_window=window, logit_scale=0.25)
              if shape == "cohere2" else tf.LlamaConfig(**dims))
    torch.manual_seed(0)
    hf = tf.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() >= 2:
                p.normal_(0, p.shape[-1] ** -0.5)
    return Model(hf.eval(), tokenizer, name=f"random-{shape}")


class Timed:
    """One model's side of the ``--family cohere2`` comparison: its batch, grid, base run and
    source cache, the engine's and the naive loop's accumulated seconds and results, and the
    start (layer, position) of every engine pass."""

    def __init__(self, model: Model, batch, sample_size: int):
        self.model, self.batch = model, batch
        self.units, _ = grid_units(model, "heads-by-pos", batch.clean.shape[1])
        self.sample = random.Random(0).sample(self.units, min(sample_size, len(self.units)))
        names = sorted({f"blocks.{u.layer}.attn.hook_z" for u in self.units})
        start = time.perf_counter()
        _, self.cache = model.run_with_cache(batch.clean, names)
        _, self.base = base_run(model, batch.corrupt, names)
        self.engine_s = time.perf_counter() - start
        self.naive_times: list[float] = []
        self.fast: dict = {}
        self.naive: dict = {}
        self.starts: list[tuple[int, int]] = []

    def engine_layer(self, layer: int) -> None:
        """The engine on every unit of ``layer`` (its chunks are per layer anyway)."""
        import modelweave.methods.activation_patching as patching

        original = suffix_module.run_suffix

        def counted(model_, base, layer_, pos, groups=1, resid=None):
            self.starts.append((layer_, pos))
            return original(model_, base, layer_, pos, groups, resid)

        units = [u for u in self.units if u.layer == layer]
        patching.run_suffix = counted
        start = time.perf_counter()
        try:
            self.fast.update(patch_units(self.model, self.batch, self.base, self.cache,
                                         "heads-by-pos", units))
        finally:
            self.engine_s += time.perf_counter() - start
            patching.run_suffix = original

    def naive_unit(self, i: int) -> None:
        """One unit of the naive loop: a full patched forward pass (what ``naive_patch`` does
        per unit; the source activations, which it computes once per call, are shared)."""
        unit, batch = self.sample[i], self.batch
        src = self.cache[f"blocks.{unit.layer}.attn.hook_z"]

        def patch(tensor, _hook):
            tensor = tensor.clone()
            tensor[:, unit.pos, unit.index] = src[:, unit.pos, unit.index]
            return tensor

        start = time.perf_counter()
        logits = self.model.run_with_hooks(batch.corrupt,
                                           [(f"blocks.{unit.layer}.attn.hook_z", patch)])
        last = logits[torch.arange(len(batch)), batch.lengths - 1]
        self.naive[unit] = metric_on_last("logit_diff", last, batch).mean().item()
        self.naive_times.append(time.perf_counter() - start)

    def summary(self) -> dict:
        """Totals for the grid; the naive loop's per-unit time is the median over the sample
        (robust to bursts of load from other processes on a shared machine)."""
        naive_s = statistics.median(self.naive_times) * len(self.units)
        return dict(units=len(self.units), engine_s=self.engine_s, naive_s=naive_s,
                    speedup=naive_s / self.engine_s, passes=len(self.starts),
                    suffix_passes=sum(layer > 0 or pos > 0 for layer, pos in self.starts),
                    diff=max(abs(self.fast[u] - self.naive[u]) for u in self.sample))


def compare_mixed(args) -> None:
    """The ``--family cohere2`` run: see the module docstring. The two models' work is
    interleaved (engine layer by layer, naive unit by unit) so that both see the same load."""
    from transformers import AutoTokenizer

    from modelweave.engine import supports_suffix
    from modelweave.models import embedded

    tokenizer = AutoTokenizer.from_pretrained(embedded.ensure_cached())
    sides = {}
    for shape in ("cohere2", "llama"):
        model = random_model(shape, args.n_layers, args.window, tokenizer)
        batch = make_batch(model, "ioi", n=3 * args.prompts, seed=0, same_length=True)
        batch = batch.select(slice(0, args.prompts))
        types = getattr(model.hf_model.config, "layer_types", None) or ["full_attention"]
        print(f"{shape}: {args.n_layers} layers ({types.count('sliding_attention')} sliding, "
              f"window {args.window}), {len(batch)} prompts x {batch.clean.shape[1]} tokens, "
              f"suffix engine {'on' if supports_suffix(model) else 'OFF'}", flush=True)
        sides[shape] = Timed(model, batch, args.sample)
    for layer in range(args.n_layers):
        for side in sides.values():
            side.engine_layer(layer)
    for i in range(args.sample):
        for side in sides.values():
            side.naive_unit(i)
    rows = {shape: side.summary() for shape, side in sides.items()}
    for shape, r in rows.items():
        print(f"{shape}: engine {r['engine_s']:.1f} s for {r['units']} units ({r['passes']} "
              f"passes, {r['suffix_passes']} from a later layer/position); naive "
              f"{r['naive_s'] / r['units']:.3f} s/unit -> {r['naive_s']:.0f} s; speedup "
              f"{r['speedup']:.2f}x; max abs diff {r['diff']:.2e}")
    mixed, plain = rows["cohere2"], rows["llama"]
    print(f"speedup_cohere2={mixed['speedup']:.2f} speedup_llama={plain['speedup']:.2f} "
          f"ratio={mixed['speedup'] / plain['speedup']:.2f} "
          f"max_abs_diff={max(mixed['diff'], plain['diff']):.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=["smollm2", "cohere2"], default="smollm2",
                        help="smollm2: the embedded model; cohere2: mixed layers vs Llama")
    parser.add_argument("--prompts", type=int, default=None,
                        help="prompts per pass (default 32; 8 with --family cohere2)")
    parser.add_argument("--layers", default=None, help="comma-separated subset of layers")
    parser.add_argument("--sample", type=int, default=None,
                        help="units timed in the naive loop (default 24; 16 with cohere2)")
    parser.add_argument("--n-layers", type=int, default=8, help="(cohere2) layers per model")
    parser.add_argument("--window", type=int, default=8, help="(cohere2) sliding window")
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    mixed = args.family == "cohere2"
    args.prompts = args.prompts or (8 if mixed else 32)
    args.sample = args.sample or (16 if mixed else 24)
    if mixed:
        compare_mixed(args)
        return
    torch.manual_seed(0)
    model = load_model("smollm2-135m")
    batch = make_batch(model, "ioi", n=3 * args.prompts, seed=0, same_length=True)
    batch = batch.select(slice(0, args.prompts))
    length = batch.clean.shape[1]
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    units, _ = grid_units(model, "heads-by-pos", length, layers)
    print(f"{len(batch)} prompts x {length} tokens, {len(units)} units "
          f"(layers {'all' if layers is None else args.layers})")

    flops = 0.0
    original = suffix_module.run_suffix

    def counted(model_, base, layer, pos, groups=1, resid=None):
        nonlocal flops
        flops += suffix_flops(model_.cfg, groups * base.tokens.shape[0], layer, pos,
                              base.length)
        return original(model_, base, layer, pos, groups, resid)

    peak = matmul_peak()
    names = sorted({f"blocks.{u.layer}.attn.hook_z" for u in units})
    start = time.perf_counter()
    _, cache = model.run_with_cache(batch.clean, names)
    _, base = base_run(model, batch.corrupt, names)
    import modelweave.methods.activation_patching as patching

    patching.run_suffix = counted
    try:
        fast = patch_units(model, batch, base, cache, "heads-by-pos", units)
    finally:
        patching.run_suffix = original
    engine_s = time.perf_counter() - start

    sample = random.Random(0).sample(units, min(args.sample, len(units)))
    start = time.perf_counter()
    naive = naive_patch(model, batch, "heads-by-pos", sample)
    per_patch = (time.perf_counter() - start) / len(sample)
    naive_s = per_patch * len(units)
    diff = max(abs(fast[u] - naive[u]) for u in sample)
    achieved = flops / engine_s
    tl = transformer_lens_per_unit(model, batch, sample)
    print(f"engine: {engine_s:.1f} s for the grid ({engine_s / len(units) * 1e3:.1f} ms/unit)")
    print(f"naive:  {per_patch:.3f} s/unit on {len(sample)} units -> {naive_s:.0f} s for the "
          "grid")
    if tl is None:
        print("TransformerLens: not installed (pip install transformer-lens to compare)")
    else:
        tl_s = tl[0] * len(units)
        tl_diff = max(abs(fast[u] - tl[1][u]) for u in sample)
        print(f"TransformerLens patching: {tl[0]:.3f} s/unit -> {tl_s:.0f} s for the grid; "
              f"engine speedup over it {tl_s / engine_s:.2f}x, max abs diff {tl_diff:.2e}")
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s; engine {achieved / 1e9:.1f} GFLOP/s "
          f"({flops / 1e12:.2f} TFLOP)")
    print(f"speedup={naive_s / engine_s:.2f} max_abs_diff={diff:.2e} "
          f"peak_fraction={achieved / peak:.2f}")


if __name__ == "__main__":
    main()
