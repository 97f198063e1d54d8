"""Peak memory of each method family beyond the weights, from the code paths they run.

Every model returns the bytes alive at the method's peak, split into ``activations`` (what a
pass holds: autograd's saved tensors, or one layer's transients), ``caches`` (activations kept
across passes: sender outputs, key/value caches, logits) and ``gradients`` (gradient outputs
and accumulators), with the phase the peak falls in. Shapes: ``n`` prompts, ``T`` positions,
``b`` the method's batch (prompts per pass, or rows per suffix pass for patching), ``e`` bytes
per activation element; ``L, d, H, H_kv, d_head, d_mlp, V`` from :class:`.ModelShape`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .activations import eap_saved_per_token, forward_transient_per_token, saved_per_token
from .shape import ModelShape


@dataclass
class MethodMemory:
    """Bytes a method holds at its peak, beyond weights and the runtime."""

    phase: str
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def _peak(*phases: MethodMemory) -> MethodMemory:
    return max(phases, key=lambda p: p.total)


def eval_memory(s: ModelShape, e: int, n: int, seq: int, b: int) -> MethodMemory:
    """``metrics.evaluate``: clean and corrupt logits of all ``n`` prompts are kept
    (``n T V e`` each) and the corrupt batches are concatenated at the end (a third copy);
    passes of ``b`` prompts without gradients add one layer's transients and their logits."""
    logits = n * seq * s.d_vocab * e
    b = min(b, n)
    during = MethodMemory("forward", {
        "activations": b * seq * forward_transient_per_token(s, e) + b * seq * s.d_vocab * e,
        "caches": 2 * logits})
    concat = MethodMemory("concatenate logits", {"caches": 3 * logits})
    return _peak(during, concat)


#: width (elements per token and layer) of the site each patching grid caches and patches
def _site_width(s: ModelShape, grid: str) -> int:
    return {"heads": s.n_heads * s.d_head, "heads-by-pos": s.n_heads * s.d_head,
            "neurons": s.d_mlp}.get(grid, s.d_model)


def units_per_layer(s: ModelShape, grid: str, seq: int) -> int:
    """Patches one layer of ``grid`` holds (a suffix pass never mixes layers)."""
    return {"heads": s.n_heads, "heads-by-pos": s.n_heads * seq,
            "neurons": s.d_mlp}.get(grid, seq)


def patch_memory(s: ModelShape, e: int, n: int, seq: int, rows: int,
                 grid: str = "heads", site_layers: int | None = None) -> MethodMemory:
    """Exact patching (``methods.activation_patching.patch_sweep`` on ``engine.suffix``).

    Kept for the whole sweep (all ``n`` prompts at once): source and base logits
    (``2 n T V e``), the patched site in the source run and its clone in the base run
    (``2 L' n T w e``, ``w`` the site's width, ``L'`` the grid's layers), the base run's
    residual entering every layer (``L n T d e``) and its keys and values
    (``2 L n T H_kv d_head e``). A suffix pass of ``rows`` rows (``max_rows``: copies of the
    batch, one per patch, all of one layer) holds a key/value cache for every layer, at most
    ``T`` long (``2 L rows T H_kv d_head e``), its input residual, the hook's clone of the
    site and one layer's transients (``rows T`` tokens)."""
    L, w = s.n_layers, _site_width(s, grid)
    sl = L if site_layers is None else site_layers  # layers whose sites are cached
    # a pass patches units of one layer only, each on its own copy of the batch
    rows = min(max(rows // n, 1), units_per_layer(s, grid, seq)) * n
    kept = {"logits": 2 * n * seq * s.d_vocab * e, "sites": 2 * sl * n * seq * w * e,
            "resid": L * n * seq * s.d_model * e,
            "kv": 2 * L * n * seq * s.n_kv_heads * s.d_head * e}
    base = MethodMemory("base runs", {
        "caches": sum(kept.values()) - kept["sites"] / 2,
        "activations": n * seq * forward_transient_per_token(s, e)})
    suffix = MethodMemory("suffix passes", {
        "caches": sum(kept.values()) + 2 * L * rows * seq * s.n_kv_heads * s.d_head * e,
        "activations": rows * seq * (forward_transient_per_token(s, e) + (w + s.d_model) * e)})
    return _peak(base, suffix)


def eap_memory(s: ModelShape, e: int, n: int, seq: int, b: int, steps: int = 5,
               ig: bool = True, heap: bool = False) -> MethodMemory:
    """EAP / EAP-IG scoring at its peak: the largest of :func:`eap_phases`, or with
    ``heap=True`` (CPU, glibc keeping freed memory as the CLI sets it) the phases stacked.

    The gradient pass frees its saved tensors between long-lived per-layer accumulators, and
    the later, larger blocks (receiver gradients, sender-sized copies) do not fit in those
    holes, so the heap grows past them (measured phase by phase on SmolLM2-135M: +1.0 GB
    after the first gradient pass, +0.4 GB for the totals, +0.5 GB for the differences). On
    a GPU the caching allocator is taken to reuse them (the maximum of the phases; not
    measured here).
    """
    backward, totals, differences = eap_phases(s, e, n, seq, b, steps, ig)
    if heap:  # glibc keeps the passes' freed blocks, but later and larger ones do not fit there
        return MethodMemory("differences (heap)", {
            "caches": differences.parts["caches"],
            "gradients": backward.parts["gradients"] + differences.parts["gradients"],
            "activations": backward.parts["activations"]})
    return _peak(backward, totals, differences)


def eap_phases(s: ModelShape, e: int, n: int, seq: int, b: int, steps: int = 5,
               ig: bool = True) -> tuple[MethodMemory, MethodMemory, MethodMemory]:
    """EAP / EAP-IG scoring (``circuits.eap.edge_attribution``) per chunk of ``b`` prompts,
    ``t = b T`` tokens, ``N`` senders, ``R`` receivers, ``S`` gradient runs (EAP: 1).

    Kept through the chunk: two sender-output tensors (``2 t N d e``; the docstring's
    ``2 * batch_size * pos * n_senders * d_model``), EAP-IG's clean logits (``t V e``), its
    ``S`` interpolated embeddings, and the pullbacks' q/k/v weights per query-head slot,
    float32 and scaled by the norm (``4 L d 3H d_head``, independent of the batch).
    Three phases compete for the peak:

    - gradient pass: autograd's saved tensors (:func:`.eap_saved_per_token`) plus the logits'
      gradient (``t V e``), plus the float32 accumulators of ``receiver_gradients``: per layer
      ``g_sum`` (``12 H d_head``), the MLP total (``4 d``) and per run ``12 H + 4 d``;
    - gradient totals: the accumulators plus the gradient at every receiver's input,
      float32 (``4 t R d``) and one layer's ``[3H, t, d]`` temporary;
    - differences: the receiver gradients, ``clean - corrupted`` and its active tokens
      (``2 t N d e``), their float32 copy below float32 and the sender-major float32 copy
      (``4 t N d`` each).

    Returns:
        the three phases (gradient pass, gradient totals, differences), each with its parts.
    """
    terms = eap_terms(s, e, b, seq, steps, ig)
    t = b * seq
    kept = terms["senders"] + terms["clean_logits"] + terms["ig_embeddings"] \
        + terms["pullback_weights"]
    acc, grads, copies = terms["accumulators"], terms["receiver_grads"], terms["copies"]
    backward = MethodMemory("gradient pass", {
        "caches": kept, "gradients": acc,
        "activations": t * eap_saved_per_token(s, e) + t * s.d_vocab * e})
    totals = MethodMemory("gradient totals", {
        "caches": kept, "gradients": acc + grads + terms["totals_layer"]})
    differences = MethodMemory("differences", {"caches": kept + copies, "gradients": grads})
    return backward, totals, differences


def eap_terms(s: ModelShape, e: int, b: int, seq: int, steps: int = 5,
              ig: bool = True) -> dict[str, int]:
    """The named tensors of :func:`eap_memory` for a chunk of ``b`` prompts (bytes each;
    ``t = b T`` tokens): ``senders`` (both sender-output tensors, ``2 t N d e``),
    ``clean_logits`` (EAP-IG: ``t V e``), ``ig_embeddings`` (EAP-IG's ``S`` interpolated
    inputs, ``S t d e``), ``pullback_weights``, ``accumulators`` (``receiver_gradients``'
    float32 sums), ``receiver_grads`` (float32 gradient at every receiver, ``4 t R d``),
    ``totals_layer`` (one layer's ``[3H, t, d]`` float32 temporary) and ``copies`` (the
    differences phase's sender-sized tensors). EAP's terms without IG are 0."""
    runs = steps if ig else 1
    t, L, d, h = b * seq, s.n_layers, s.d_model, s.n_heads
    senders = 2 * t * s.n_senders * d * e
    copies = t * s.n_senders * d * (2 * e + (4 if e < 4 else 0) + 4)
    return {
        "senders": senders,
        "clean_logits": t * s.d_vocab * e if ig else 0,
        "ig_embeddings": runs * t * d * e if ig else 0,
        "pullback_weights": 4 * L * d * 3 * h * s.d_head,
        "accumulators": t * (L * (12 * h * s.d_head + 4 * d) + 4 * d
                             + runs * L * (12 * h + 4 * d)),
        "receiver_grads": 4 * t * s.n_receivers * d,
        "totals_layer": 4 * t * 3 * h * d,
        "copies": copies,
    }


def faithfulness_memory(s: ModelShape, e: int, n: int, seq: int, b: int) -> MethodMemory:
    """``circuits.evaluation.CircuitEvaluator`` (the faithfulness curve ``discover`` draws):
    corrupted sender outputs of all ``n`` prompts are kept (``n T N d e``); a patched pass of
    ``b`` prompts holds the differences and their running sum (``b T (N + 1) d e``), the
    logits and one layer's transients."""
    t = min(b, n) * seq
    return MethodMemory("faithfulness curve", {
        "caches": n * seq * s.n_senders * s.d_model * e,
        "activations": t * (s.n_senders + 1) * s.d_model * e + t * s.d_vocab * e
        + t * forward_transient_per_token(s, e)})


def attribution_memory(s: ModelShape, e: int, n: int, seq: int) -> MethodMemory:
    """Attribution patching (AtP, AtP*): one forward+backward over all ``n`` prompts with the
    grid's sites kept (approximated by a plain gradient pass plus two residual-wide caches
    per layer), and a second run's logits."""
    t = n * seq
    return MethodMemory("gradient pass", {
        "activations": t * saved_per_token(s, e) + 2 * t * s.d_vocab * e,
        "caches": 2 * t * s.n_layers * s.d_model * e})
