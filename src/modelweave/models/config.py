"""Architecture-independent description of a loaded model."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and structure of a model, in TransformerLens vocabulary.

    Attributes:
        architecture: the HF ``model_type`` (``"llama"``, ``"gpt2"``, ...).
        n_layers: number of transformer blocks.
        n_heads: number of query heads (the unit of attention analysis).
        n_kv_heads: number of key/value heads (``< n_heads`` with grouped-query attention).
        d_model: residual stream width.
        d_head: width of one head.
        d_mlp: MLP hidden width (number of neurons per layer).
        d_vocab: vocabulary size of the unembedding.
        parallel_attn_mlp: attention and MLP read the same residual (GPT-NeoX, Cohere); such
            blocks have no ``hook_resid_mid``.
        positional: ``"rotary"`` or ``"learned"`` (GPT-2's absolute position embedding).
        post_norm: attention and MLP outputs pass through a norm before joining the residual
            (OLMo-2); then ``attn.hook_scale``/``mlp.hook_scale`` exist and ``hook_result`` is
            each head's share at the norm's frozen scale.
    """

    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    parallel_attn_mlp: bool = False
    positional: str = "rotary"
    post_norm: bool = False

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return asdict(self)
