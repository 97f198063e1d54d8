"""Tiny random-config models of every supported family (no download).

Weights are re-drawn at a scale that keeps activations O(1), so that parity checks at 1e-5
compare real numbers rather than near-zero ones.
"""

from __future__ import annotations

import math

import torch
import transformers as tf

VOCAB = 97
_COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
               num_attention_heads=4, max_position_embeddings=64)

#: One tiny config per shape the released checkpoints of a family take (docs/families.md lists
#: them): grouped-query ratios, tied or untied embeddings, biases, rotary style, q/k norms.
CONFIGS = {
    # q/k/v/o biases on (as Qwen2 has them), GQA 2:1, untied
    "llama": lambda: tf.LlamaConfig(**_COMMON, num_key_value_heads=2, attention_bias=True),
    # Llama-3-8B: GQA 4:1 (32 query / 8 key heads), no biases, untied
    "llama3": lambda: tf.LlamaConfig(**_COMMON, num_key_value_heads=1),
    # SmolLM2, Llama-3.2-1B: GQA, tied embeddings
    "smollm2": lambda: tf.LlamaConfig(**_COMMON, num_key_value_heads=2, tie_word_embeddings=True),
    "mistral": lambda: tf.MistralConfig(**_COMMON, num_key_value_heads=2),
    "qwen2": lambda: tf.Qwen2Config(**_COMMON, num_key_value_heads=2),
    "qwen2_sliding": lambda: tf.Qwen2Config(**_COMMON, num_key_value_heads=2,
                                            use_sliding_window=True, sliding_window=4,
                                            max_window_layers=1),
    "gpt2": lambda: tf.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4,
                                  n_positions=64, bos_token_id=0, eos_token_id=0),
    "gpt_neox": lambda: tf.GPTNeoXConfig(**_COMMON, rotary_pct=0.5, use_parallel_residual=True),
    "gpt_neox_sequential": lambda: tf.GPTNeoXConfig(**_COMMON, use_parallel_residual=False),
    "olmo": lambda: tf.OlmoConfig(**_COMMON, num_key_value_heads=4, clip_qkv=0.8),
    # OLMo-1B: tied embeddings, no clipping
    "olmo_tied": lambda: tf.OlmoConfig(**_COMMON, num_key_value_heads=4, tie_word_embeddings=True),
    # OLMo-2 32B's GQA; 7B and 13B are multi-head (olmo2_mha)
    "olmo2": lambda: tf.Olmo2Config(**_COMMON, num_key_value_heads=2),
    "olmo2_mha": lambda: tf.Olmo2Config(**_COMMON, num_key_value_heads=4),
    "cohere": lambda: tf.CohereConfig(**_COMMON, num_key_value_heads=2, logit_scale=0.5),
    "cohere_qk_norm": lambda: tf.CohereConfig(**_COMMON, num_key_value_heads=2, use_qk_norm=True,
                                              logit_scale=0.5),
    # Command R7B's shape: a global (NoPE) layer every fourth, the rest sliding-window with
    # interleaved rotary; GQA, tied embeddings, logit_scale 0.25. A window of 4 matters at the
    # test lengths.
    "cohere2": lambda: tf.Cohere2Config(**{**_COMMON, "num_hidden_layers": 4},
                                        num_key_value_heads=2, sliding_window=4,
                                        logit_scale=0.25, tie_word_embeddings=True,
                                        bos_token_id=1, eos_token_id=2),
}
FAMILIES = list(CONFIGS)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw every parameter: matrices ~ N(0, 1/fan_in), vectors around their init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p.shape[0] if "Conv1D" in name else p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif "norm" in name or "ln" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def tiny_hf_model(family: str, seed: int = 0, vocab_size: int | None = None
                  ) -> tf.PreTrainedModel:
    """A tiny random HF causal LM of ``family`` (a key of ``CONFIGS``), in eval mode."""
    torch.manual_seed(seed)
    config = CONFIGS[family]()
    if vocab_size is not None:
        config.vocab_size = vocab_size
    return randomize(tf.AutoModelForCausalLM.from_config(config), seed).eval()


def random_tokens(batch: int = 2, pos: int = 7, seed: int = 0) -> torch.Tensor:
    """[batch, pos] random token ids."""
    return torch.randint(0, VOCAB, (batch, pos), generator=torch.Generator().manual_seed(seed))


CORPUS = ["When Mary and John went to the store, John gave a drink to Mary.",
          "1 2 3 4 5 6 7 8 9 10", "January, February, March, April, May"] * 5


def tiny_tokenizer(adds_bos: bool) -> tf.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in-test; ``adds_bos`` gives it a ``<s> $A`` template,
    like Llama's, otherwise it adds nothing, like GPT-2's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                           special_tokens=[("<s>", 1)])
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                      unk_token="<unk>")


def save_tiny_model(path, family: str = "gpt2", seed: int = 0):
    """Save a tiny ``family`` model with the in-test byte-level tokenizer to ``path`` (a
    directory ``load_model`` and the CLI read); returns ``path``."""
    from tokenizers_zoo import make_tokenizer

    tok = make_tokenizer("bytelevel")
    tiny_hf_model(family, seed=seed, vocab_size=len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def lora_like_pair(seed: int = 1):
    """``(base, tuned)`` tiny llama models on the byte-level tokenizer: ``tuned`` is ``base``
    with only its attention and MLP projection weights moved (by 0.3 of each one's std), as a
    LoRA fine-tune moves them."""
    import copy

    from modelweave import Model
    from tokenizers_zoo import make_tokenizer

    tok = make_tokenizer("bytelevel")
    base = tiny_hf_model("llama", vocab_size=len(tok))
    tuned = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if (".self_attn." in name or ".mlp." in name) and name.endswith("proj.weight"):
                param.add_(0.3 * torch.randn(param.shape, generator=gen) * param.std())
    return Model(base, tok), Model(tuned, tok)
