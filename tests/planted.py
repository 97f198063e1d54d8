"""A tiny model whose circuit is known by construction, for scoring circuit methods.

The residual stream of a 3-layer, 4-head Llama (d_model 32, random weights) is split into two
halves: subspace ``A`` (dimensions 0..15) and ``B`` (16..31).

- The *circuit* nodes (:data:`CIRCUIT_HEADS`, :data:`CIRCUIT_MLPS`) read and write ``A`` only:
  their q/k/v and MLP input weights are zero on ``B``, their o_proj slices and MLP output
  weights write nothing into ``B``.
- Every other head and MLP (the *distractors*) reads and writes ``B`` only.
- The token embedding writes both halves, so distractors see the clean/corrupt difference;
  the (untied) unembedding reads ``A`` only.

So the logits depend on the distractors only through the RMSNorm scale (the one place where
the halves meet). The ``B`` half of the embedding and the distractors' outputs are scaled by
``leak`` (0.3) so this coupling stays small: distractor edges get small but nonzero scores.

The same construction is built in other families (:data:`CONFIGS`), with what each needs to
keep the halves apart: under grouped-query attention the circuit takes whole key/value groups
(:data:`CIRCUIT_GROUPS`); with LayerNorm (Cohere, Cohere2) everything written into the residual
is zero-mean within each half, so centring does not mix them; in OLMo-2 the distractors' q/k
rows and the post-norms' ``B`` gains are scaled by ``leak`` too, since those norms' scales span
all heads (the halves still meet there, as in every norm's scale).

The planted edges are the real edges from ``input`` or a circuit node into a receiver of a
circuit node or the logits. Prompts are random token strings; the corrupted prompt is another
random string; the answer is the clean model's top token at the last position, the wrong
answer the corrupted model's (prompts where they coincide are redrawn).
"""

from __future__ import annotations

import torch
import transformers as tf

from modelweave import Model
from modelweave.circuits import Graph
from modelweave.tasks.base import Example
from modelweave.tasks.batch import TaskBatch

from tiny import randomize

D_MODEL, N_HEADS, N_LAYERS, VOCAB = 32, 4, 3, 40
N_PROMPTS, N_POS = 16, 6
#: (layer, head) of the circuit's heads, and the layers of its MLPs.
CIRCUIT_HEADS = ((0, 1), (1, 2), (2, 0))
#: With grouped-query attention (2 key/value heads) a key/value head is shared by two query
#: heads, so the circuit takes whole groups.
CIRCUIT_GROUPS = ((0, 0), (0, 1), (1, 2), (1, 3), (2, 0), (2, 1))
CIRCUIT_MLPS = (1,)
A = slice(0, D_MODEL // 2)
B = slice(D_MODEL // 2, D_MODEL)
_SHAPE = dict(vocab_size=VOCAB, hidden_size=D_MODEL, intermediate_size=48,
              num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS, max_position_embeddings=32,
              tie_word_embeddings=False)
#: Families the planted circuit is built in; the structure each adds is in its comment.
CONFIGS = {
    "llama": lambda: tf.LlamaConfig(**_SHAPE, num_key_value_heads=N_HEADS),
    # post-norms after attention and MLP, q/k norms over all heads jointly, GQA, no pre-norm
    "olmo2": lambda: tf.Olmo2Config(**_SHAPE, num_key_value_heads=2),
    # parallel blocks on one LayerNorm, per-head q/k LayerNorms, GQA
    "cohere_qk_norm": lambda: tf.CohereConfig(**_SHAPE, num_key_value_heads=2, use_qk_norm=True,
                                              logit_scale=0.5),
    # parallel blocks, GQA, sliding-window layers (window 3) and a global layer without rotary
    "cohere2": lambda: tf.Cohere2Config(**_SHAPE, num_key_value_heads=2, sliding_window=3,
                                        layer_types=["sliding_attention", "full_attention",
                                                     "sliding_attention"], logit_scale=0.5),
}


def circuit_heads(config) -> tuple[tuple[int, int], ...]:
    """The planted (layer, head) pairs for a config: whole key/value groups under GQA."""
    grouped = getattr(config, "num_key_value_heads", N_HEADS) != N_HEADS
    return CIRCUIT_GROUPS if grouped else CIRCUIT_HEADS


def _centre_halves(weight: torch.Tensor, dim: int) -> None:
    """Make what ``weight`` writes into the residual zero-mean within ``A`` and within ``B``
    (``dim``: its residual axis), so LayerNorm's centring never mixes the halves."""
    for half in (A, B):
        part = weight.narrow(dim, half.start, half.stop - half.start)
        part -= part.mean(dim, keepdim=True)


def planted_hf_model(seed: int = 0, leak: float = 0.3, family: str = "llama"
                     ) -> tf.PreTrainedModel:
    """The HF model of ``family`` (a key of :data:`CONFIGS`) with the circuit planted
    (float32, eval mode)."""
    config = CONFIGS[family]()
    with torch.random.fork_rng():  # from_config's init draws from the global generator
        hf = randomize(tf.AutoModelForCausalLM.from_config(config), seed).eval()
    d_head, heads = D_MODEL // N_HEADS, circuit_heads(config)
    groups = N_HEADS // getattr(config, "num_key_value_heads", N_HEADS)
    layer_norm = family.startswith("cohere")
    with torch.no_grad():
        for layer, block in enumerate(hf.model.layers):
            attn = block.self_attn
            for head in range(N_HEADS):
                rows = slice(head * d_head, (head + 1) * d_head)
                kv_rows = slice(head // groups * d_head, (head // groups + 1) * d_head)
                circuit = (layer, head) in heads
                other = B if circuit else A  # the half this head neither reads nor writes
                attn.q_proj.weight[rows, other] = 0
                for proj in (attn.k_proj, attn.v_proj):
                    proj.weight[kv_rows, other] = 0
                attn.o_proj.weight[other, rows] = 0
                if not circuit:
                    attn.o_proj.weight[:, rows] *= leak
                    if family == "olmo2":  # its q/k norms' scale spans every head
                        attn.q_proj.weight[rows] *= leak
                        attn.k_proj.weight[kv_rows] *= leak
            mlp, circuit = block.mlp, layer in CIRCUIT_MLPS
            other = B if circuit else A
            mlp.gate_proj.weight[:, other] = 0
            mlp.up_proj.weight[:, other] = 0
            mlp.down_proj.weight[other, :] = 0
            if not circuit:
                mlp.down_proj.weight *= leak
            if family == "olmo2":  # post-norms rescale what the distractors write
                block.post_attention_layernorm.weight[B] *= leak
                block.post_feedforward_layernorm.weight[B] *= leak
            if layer_norm:
                _centre_halves(attn.o_proj.weight, 0)
                _centre_halves(mlp.down_proj.weight, 0)
        hf.model.embed_tokens.weight[:, B] *= leak
        if layer_norm:
            _centre_halves(hf.model.embed_tokens.weight, 1)
        hf.lm_head.weight[:, B] = 0
    return hf


def planted_edges(graph: Graph, heads=CIRCUIT_HEADS) -> torch.Tensor:
    """[n_senders, n_receivers] bool: the real edges among ``input``, the circuit (``heads``
    and :data:`CIRCUIT_MLPS`) and logits."""
    senders = [0, *(graph.head(*lh) for lh in heads),
               *(graph.mlp(layer) for layer in CIRCUIT_MLPS)]
    receivers = [graph.logits_receiver, *(graph.mlp_receiver(layer) for layer in CIRCUIT_MLPS)]
    for layer, head in heads:
        first = graph.qkv_receivers(layer).start
        receivers += [first + kind * graph.n_heads + head for kind in range(3)]
    truth = torch.zeros_like(graph.real_edges)
    truth[torch.tensor(senders)[:, None], torch.tensor(receivers)[None, :]] = True
    return truth & graph.real_edges


def _prompts(model: Model, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """N_PROMPTS (clean, corrupt, answer, wrong) with different clean/corrupt predictions."""
    kept: list[tuple[torch.Tensor, ...]] = []
    while len(kept) < N_PROMPTS:
        clean = torch.randint(0, VOCAB, (N_PROMPTS, N_POS), generator=gen)
        corrupt = torch.randint(0, VOCAB, (N_PROMPTS, N_POS), generator=gen)
        answer = model.forward(clean)[:, -1].argmax(-1)
        wrong = model.forward(corrupt)[:, -1].argmax(-1)
        kept += [row for row in zip(clean, corrupt, answer, wrong, strict=True)
                 if row[2] != row[3]]
    return tuple(torch.stack(column) for column in zip(*kept[:N_PROMPTS], strict=True))


def planted_model(seed: int = 0, leak: float = 0.3, family: str = "llama"
                  ) -> tuple[Model, TaskBatch, torch.Tensor]:
    """(model, batch, truth): the planted model, 16 same-length prompts and the
    [n_senders, n_receivers] bool mask of planted edges."""
    hf = planted_hf_model(seed, leak, family)
    model = Model(hf, name=f"planted-{family}")
    clean, corrupt, answer, wrong = _prompts(model, torch.Generator().manual_seed(seed))
    n = len(clean)
    lengths = torch.full((n,), N_POS)

    def text(row: torch.Tensor) -> str:
        return " ".join(str(int(t)) for t in row)

    examples = [Example(text(c), text(x), [f" {int(a)}"], [f" {int(w)}"])
                for c, x, a, w in zip(clean, corrupt, answer, wrong, strict=True)]
    batch = TaskBatch(
        task="planted", clean=clean, corrupt=corrupt,
        mask=torch.ones(n, N_POS, dtype=torch.long), lengths=lengths,
        answer_ids=answer[:, None], wrong_ids=wrong[:, None],
        answer_tokens=[[[int(a)]] for a in answer], wrong_tokens=[[[int(w)]] for w in wrong],
        positions={"END": lengths - 1}, examples=examples)
    return model, batch, planted_edges(Graph.from_config(model.cfg), circuit_heads(hf.config))
