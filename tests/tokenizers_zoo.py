"""In-test tokenizers that reproduce the families' conventions, trained on the tasks' own
text so that task words exist in their vocabularies:

- ``bytelevel``: byte-level BPE, no BOS added (GPT-2, Pythia, OLMo-1).
- ``bytelevel_bos``: the same with a ``<s> $A`` template (Llama-3, Cohere: BOS added).
- ``metaspace_digits``: SentencePiece-style ``▁`` word marks, one digit per token, BOS added
  (Llama-2, Mistral).
The real SmolLM2 tokenizer (digits split, the space before a digit its own token) is tested
through the embedded model.
"""

from __future__ import annotations

import functools

import transformers as tf
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from modelweave.tasks import get_task

#: the tasks whose text trains the zoo's tokenizers: a fixed list, so that adding a task to
#: the registry does not change the vocabularies (and every test's token ids) under it
CORPUS_TASKS = ("acronyms", "arithmetic", "country_capital", "entity_tracking", "greater_than",
                "induction", "ioi", "numbered_list", "seq_among_words", "seq_days", "seq_digits",
                "seq_fibonacci", "seq_interval", "seq_letters", "seq_months", "seq_number_words",
                "sva")

KINDS = ("bytelevel", "bytelevel_bos", "metaspace_digits")


def _corpus() -> list[str]:
    texts = []
    for task in map(get_task, CORPUS_TASKS):
        for ex in task.generate(40, seed=0) + task.generate(40, seed=1):
            texts += [ex.clean + a for a in ex.answers + ex.wrong_answers] + [ex.corrupt]
    return texts


@functools.cache
def make_tokenizer(kind: str) -> tf.PreTrainedTokenizerFast:
    """A trained tokenizer of one of ``KINDS``."""
    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if kind == "metaspace_digits":
        tok.normalizer = normalizers.Sequence([])
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
            pre_tokenizers.Digits(individual_digits=True)])
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        alphabet = []
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=specials,
                                  initial_alphabet=alphabet)
    tok.train_from_iterator(_corpus(), trainer)
    if kind != "bytelevel":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                           special_tokens=[("<s>", 1)])
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                      unk_token="<unk>", pad_token="</s>")
