"""Configs of common checkpoints from their published hyperparameters (no download).

Each preset is the ``config.json`` fields that size the model, as released on the Hugging Face
hub by the model's authors; :func:`preset_config` builds the ``transformers`` config from them.
``modelweave plan --model llama-3-8b`` and the 7-8B table of ``docs/planner.md`` use them.
"""

from __future__ import annotations

from typing import Any

_LLAMA8 = dict(model_type="llama", hidden_size=4096, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336,
               vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0,
               dtype="bfloat16")
_AYA8 = dict(model_type="cohere", hidden_size=4096, num_hidden_layers=32,
             num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336,
             vocab_size=256000, tie_word_embeddings=True, use_qk_norm=False,
             logit_scale=0.125, dtype="float16")

#: name -> (hub id it follows, config fields)
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "smollm2-135m": ("HuggingFaceTB/SmolLM2-135M-Instruct", dict(
        model_type="llama", hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, head_dim=64, intermediate_size=1536, vocab_size=49152,
        tie_word_embeddings=True, dtype="bfloat16")),
    "smollm2-360m": ("HuggingFaceTB/SmolLM2-360M-Instruct", dict(
        model_type="llama", hidden_size=960, num_hidden_layers=32, num_attention_heads=15,
        num_key_value_heads=5, head_dim=64, intermediate_size=2560, vocab_size=49152,
        tie_word_embeddings=True, dtype="bfloat16")),
    "llama-3.2-1b": ("meta-llama/Llama-3.2-1B", dict(
        model_type="llama", hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, intermediate_size=8192, vocab_size=128256,
        tie_word_embeddings=True, dtype="bfloat16")),
    "llama-2-7b": ("meta-llama/Llama-2-7b-hf", dict(
        model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, intermediate_size=11008, vocab_size=32000,
        tie_word_embeddings=False, dtype="float16")),
    "llama-3-8b": ("meta-llama/Meta-Llama-3-8B", _LLAMA8),
    "llama-3.1-8b": ("meta-llama/Llama-3.1-8B", _LLAMA8),
    "olmo-7b": ("allenai/OLMo-7B-0724-hf", dict(
        model_type="olmo", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, intermediate_size=11008, vocab_size=50304,
        tie_word_embeddings=False, clip_qkv=8.0, dtype="float32")),
    "olmo-2-7b": ("allenai/OLMo-2-1124-7B", dict(
        model_type="olmo2", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, intermediate_size=11008, vocab_size=100352,
        tie_word_embeddings=False, dtype="float32")),
    "pythia-6.9b": ("EleutherAI/pythia-6.9b", dict(
        model_type="gpt_neox", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
        intermediate_size=16384, vocab_size=50432, rotary_pct=0.25,
        use_parallel_residual=True, tie_word_embeddings=False, dtype="float16")),
    "command-r7b": ("CohereForAI/c4ai-command-r7b-12-2024", dict(
        model_type="cohere2", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, intermediate_size=14336, vocab_size=256000,
        tie_word_embeddings=True, sliding_window=4096, logit_scale=0.25, dtype="bfloat16")),
    "aya-23-8b": ("CohereForAI/aya-23-8B", _AYA8),
    "aya-expanse-8b": ("CohereForAI/aya-expanse-8b", _AYA8),
}


def preset_config(name: str) -> Any:
    """The ``transformers`` config of preset ``name`` (a key of :data:`PRESETS`)."""
    from transformers import AutoConfig

    fields = dict(PRESETS[name][1])
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    config.name_or_path = PRESETS[name][0]
    return config
