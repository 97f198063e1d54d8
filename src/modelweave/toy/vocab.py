"""The small word-level tokenizer a toy checkpoint ships with.

Every toy task writes its inputs as words separated by single spaces (``"12 7 ="``): each word
is one token, so the tasks' character spans, answers with a leading space and
:func:`modelweave.tasks.batch.materialize` work on toy models exactly as on pretrained ones.
The tokenizer is a ``PreTrainedTokenizerFast`` over a ``tokenizers`` ``WordLevel`` model
(whitespace pre-tokenizer, offsets included), saved next to the weights, so ``load_model(DIR)``
finds it. ``<pad>`` and ``<bos>`` are always in the vocabulary; with ``add_bos=True`` the
tokenizer's own template starts every text with ``<bos>``, and ModelWeave's BOS rule (see
:mod:`modelweave.models.tokenization`) then prepends it as well.
"""

from __future__ import annotations

PAD, BOS = "<pad>", "<bos>"


def build_tokenizer(words: list[str], add_bos: bool = False):
    """A fast word-level tokenizer whose ids are ``words`` in order, then ``<pad>``, ``<bos>``.

    Args:
        words: the task's vocabulary (no spaces inside a word, no duplicates).
        add_bos: whether the tokenizer's special-token template prepends ``<bos>``.

    Returns:
        a ``transformers.PreTrainedTokenizerFast``; ``len(tokenizer) == len(words) + 2``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from ..tasks.toy_data import ToyModelError

    bad = next((w for i, w in enumerate(words) if not w or " " in w or w in words[:i]), None)
    if bad is not None:
        raise ToyModelError(f"toy vocabulary word {bad!r}: words must be unique, non-empty and "
                            "without spaces")
    vocab = {w: i for i, w in enumerate([*words, PAD, BOS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=PAD))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS,
                                   unk_token=PAD)
