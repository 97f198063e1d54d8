"""Ground truth for influence: leave-k-out retraining.

Train a model on the whole corpus and, for each of ``R`` random subsets of ``k`` documents,
retrain it from the same starting weights, with the same recipe and seed, on the corpus without
that subset; the change of each query's completion loss (left-out minus full) is what a perfect
attribution would predict from the left-out documents' scores
(:func:`~.evaluate.leave_out_correlation`). The retrainings' own noise (a different batch
order once documents are missing) is part of what is measured: :func:`leave_out` can also
retrain the full corpus with other seeds, whose loss spread is the noise floor.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .data import Document, InfluenceError, Query, encode_queries
from .train import train_on_documents


def query_losses(model, queries: list[Query]) -> np.ndarray:
    """[Q] each completion's negative log-probability summed over its tokens (the engine's
    measurement)."""
    out = []
    hf = model.hf_model
    for ids, n_prompt in encode_queries(model, queries):
        with torch.no_grad():
            logits = hf(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
        target = torch.tensor(ids[n_prompt:])
        out.append(float(torch.nn.functional.cross_entropy(
            logits[n_prompt - 1:len(ids) - 1], target, reduction="sum")))
    return np.asarray(out)


def random_subsets(n_docs: int, k: int, n: int, seed: int = 0) -> list[list[int]]:
    """``n`` sorted random subsets of ``k`` of ``range(n_docs)``."""
    if not 0 < k < n_docs:
        raise InfluenceError(f"leave-k-out needs 0 < k < {n_docs} documents; got k = {k}")
    if n < 2:
        raise InfluenceError("leave-k-out needs at least 2 retrainings to correlate")
    rng = random.Random(seed)
    return [sorted(rng.sample(range(n_docs), k)) for _ in range(n)]


@dataclass
class LeaveOut:
    """Measured effects of leaving documents out.

    Attributes:
        subsets: [R] document indices left out of each retraining.
        full: [Q] query losses of the model trained on everything; measured: [R, Q] loss of
            each left-out model minus ``full``; noise: [S, Q] the same difference for full-corpus
            retrainings with other seeds (empty if none).
        seconds: wall time of each training (full first).
    """

    subsets: list[list[int]]
    full: np.ndarray
    measured: np.ndarray
    noise: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"subsets": self.subsets, "full": self.full.tolist(),
                "measured": self.measured.tolist(), "noise": self.noise.tolist(),
                "seconds": self.seconds}


def leave_out(base, documents: list[Document], queries: list[Query],
              subsets: list[list[int]], *, noise_seeds: tuple[int, ...] = (),
              **train) -> tuple[object, LeaveOut]:
    """Train ``base`` (a :class:`~modelweave.models.Model`, left unchanged) on ``documents``
    and on each ``documents`` minus ``subsets[r]`` with :func:`~.train.train_on_documents`
    (``train`` are its keyword arguments, the same every time). Returns the full model and the
    measured effects; ``noise_seeds`` adds full-corpus retrainings with those seeds."""
    full_run = train_on_documents(base, documents, **train)
    full = query_losses(full_run.model, queries)
    seconds = [full_run.seconds]
    measured = []
    for subset in subsets:
        drop = set(subset)
        kept = [d for j, d in enumerate(documents) if j not in drop]
        start = time.perf_counter()
        run = train_on_documents(base, kept, **train)
        measured.append(query_losses(run.model, queries) - full)
        seconds.append(time.perf_counter() - start)
    noise = []
    for s in noise_seeds:
        run = train_on_documents(base, documents, **{**train, "seed": s})
        noise.append(query_losses(run.model, queries) - full)
        seconds.append(run.seconds)
    noise_arr = np.stack(noise) if noise else np.zeros((0, len(queries)))
    return full_run.model, LeaveOut(subsets, full, np.stack(measured), noise_arr, seconds)


def small_model(texts: list[str], *, seed: int = 0, vocab_size: int = 600, d_model: int = 64,
                layers: int = 2, heads: int = 4, d_mlp: int = 256):
    """A small random Llama (``layers`` blocks, ``d_model``, tied embeddings) with a byte-level
    BPE tokenizer of ``vocab_size`` trained on ``texts`` and unit-scale embeddings (training
    changes only linear maps, so the tied embedding stays as drawn): cheap enough to retrain
    many times on a CPU for leave-k-out ground truth. Weights drawn with
    ``torch.manual_seed(seed)``."""
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from ...models import Model

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                      unk_token="<unk>", pad_token="</s>")
    config = tf.LlamaConfig(vocab_size=len(fast), hidden_size=d_model, intermediate_size=d_mlp,
                            num_hidden_layers=layers, num_attention_heads=heads,
                            num_key_value_heads=heads, tie_word_embeddings=True,
                            max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
                            pad_token_id=2)
    torch.manual_seed(seed)
    hf = tf.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # fixed (untrained) embeddings: unit scale, so logits can be large
        hf.get_input_embeddings().weight.normal_(0.0, 1.0)
    return Model(hf, fast, name=f"small-llama-{layers}x{d_model}-seed{seed}")
