"""Arithmetic test fixtures: tokenizers that write numbers as one token (Llama-3 style) or one
digit per token (SmolLM2 / Llama-2 style), and an oracle model that answers by rule."""

from __future__ import annotations

import re

import torch
import transformers as tf
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors

from modelweave.models import Model
from modelweave.tasks.arith import OPS

SPECIALS = ["<unk>", "<s>", "</s>"]
SYMBOLS = ["+", "-", "*", "/", "=", " ", "\n"]


def arith_tokenizer(kind: str) -> tf.PreTrainedTokenizerFast:
    """``"number"``: every integer 0..999 is one token, BOS added (Llama-3 style);
    ``"digit"``: one token per digit, no BOS (SmolLM2 style)."""
    numbers = [str(i) for i in range(1000)] if kind == "number" else [str(i) for i in range(10)]
    vocab = {t: i for i, t in enumerate(SPECIALS + SYMBOLS + numbers)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    pattern = r"\d{1,3}|\D" if kind == "number" else r"\d|\D"
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    if kind == "number":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                      eos_token="</s>", pad_token="</s>")


_PROMPT = re.compile(r"^(\d+)([-+*/])(\d+)=(\d*)$")


class OracleModel(Model):
    """Answers ``a op b =`` with the true result, except where ``wrong(a, op, b)`` (then the
    result plus one); after the answer it predicts ``=`` (not a digit). Logits are one-hot * 10
    at every position whose prefix is a prompt plus part of an answer."""

    def __init__(self, hf_model, tokenizer, wrong=lambda a, op, b: False):
        super().__init__(hf_model, tokenizer)
        self.wrong = wrong
        self.vocab = tokenizer.get_vocab()

    def forward(self, inputs, *, attention_mask=None, grad=False):
        tokens, mask = self._prepare(inputs, attention_mask)
        mask = torch.ones_like(tokens) if mask is None else mask
        logits = torch.zeros(*tokens.shape, self.cfg.d_vocab)
        for i, row in enumerate(tokens.tolist()):
            pieces = self.tokenizer.convert_ids_to_tokens(row[: int(mask[i].sum())])
            text = ""
            for p, piece in enumerate(pieces):
                text += "" if piece in SPECIALS else piece
                match = _PROMPT.match(text)
                if not match:
                    continue
                a, op, b, typed = int(match[1]), match[2], int(match[3]), match[4]
                answer = str(OPS[op](a, b) + (1 if self.wrong(a, op, b) else 0))
                rest = answer[len(typed):] if answer.startswith(typed) else ""
                nxt = "=" if not rest else (rest[0] if len(self.vocab) < 100 else rest)
                logits[i, p, self.vocab.get(nxt, self.vocab["="])] = 10.0
        return logits

    __call__ = forward


def train_arith_model(out=None, kind: str = "number", operators: str = "+,-", op_max: int = 10,
                      steps: int = 300, save_every: int | None = None, seed: int = 0):
    """A tiny Llama trained (all weights, Adam) to answer every ``a op b =`` prompt of the
    grid and then write a newline; returns the Model. With ``out`` and ``save_every``, saves
    HF checkpoints ``out/checkpoints/step-N`` on the way (as ``modelweave finetune`` does)."""
    from pathlib import Path

    from modelweave.tasks import materialize
    from modelweave.tasks.arith import arith_grid, make_example

    from tiny import tiny_hf_model

    tok = arith_tokenizer(kind)
    hf = tiny_hf_model("llama", seed=seed, vocab_size=len(tok))
    model = Model(hf, tok)
    policy = model.tokenization
    examples = [make_example(p, p, end="\n") for p in arith_grid(operators, 0, op_max)]
    batch = materialize("arith", examples, tok, policy.bos_token_id if policy.prepend_bos
                        else None, policy.pad_token_id, scoring="full")
    rows = [batch.clean[i, : batch.lengths[i]].tolist() + batch.answer_tokens[i][0]
            for i in range(len(batch))]
    width = max(map(len, rows))
    tokens = torch.tensor([r + [policy.pad_token_id] * (width - len(r)) for r in rows])
    targets = torch.full_like(tokens, -100)
    for i, r in enumerate(rows):
        start = int(batch.lengths[i]) - 1
        targets[i, start: len(r) - 1] = tokens[i, start + 1: len(r)]
    mask = (targets != -100) | (torch.arange(width)[None] <= batch.lengths[:, None])
    opt = torch.optim.Adam(hf.parameters(), lr=1e-2)
    hf.train()
    torch.manual_seed(seed)
    for step in range(steps):
        with torch.enable_grad():
            logits = hf(input_ids=tokens, attention_mask=mask.long()).logits
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1),
                                                     targets[:, :-1].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        if out is not None and save_every and (step + 1) % save_every == 0:
            folder = Path(out) / "checkpoints" / f"step-{step + 1}"
            hf.save_pretrained(folder)
            tok.save_pretrained(folder)
    hf.eval()
    return Model(hf, tok)
