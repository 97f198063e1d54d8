"""``model.test_prompt(prompt, answer)``: how a model does on one prompt, as TransformerLens's
``test_prompt`` shows it: the tokens, and for each answer token (teacher-forced) its rank,
probability and logit with the top-k alternatives."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import torch

from ..errors import ModelWeaveError


@dataclass
class AnswerToken:
    """One answer token at its position: ``rank`` 0 = the model's top prediction."""

    token: str
    rank: int
    prob: float
    logit: float
    top: list[tuple[str, float, float]] = field(default_factory=list)  # (token, prob, logit)


@dataclass
class PromptTest:
    """Result of :func:`test_prompt`; prints as text, displays as a table in notebooks."""

    prompt_tokens: list[str]
    answer_tokens: list[AnswerToken]

    @property
    def rank(self) -> int:
        """Rank of the answer's first token."""
        return self.answer_tokens[0].rank

    def __str__(self) -> str:
        lines = [f"Tokenized prompt: {self.prompt_tokens}",
                 f"Tokenized answer: {[a.token for a in self.answer_tokens]}"]
        for i, a in enumerate(self.answer_tokens):
            lines.append(f"Answer token {i} {a.token!r}: rank {a.rank}, logit {a.logit:.2f}, "
                         f"prob {a.prob:.2%}")
            lines += [f"  top {k}: logit {logit:5.2f} prob {prob:6.2%} token {tok!r}"
                      for k, (tok, prob, logit) in enumerate(a.top)]
        lines.append("Ranks of the answer tokens: "
                     + str([(a.token, a.rank) for a in self.answer_tokens]))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = []
        for a in self.answer_tokens:
            top = ", ".join(f"<code>{esc(repr(t))}</code> {p:.1%}" for t, p, _ in a.top)
            rows.append(f"<tr><td><code>{esc(repr(a.token))}</code></td><td>{a.rank}</td>"
                        f"<td>{a.prob:.2%}</td><td>{a.logit:.2f}</td><td>{top}</td></tr>")
        tokens = "|".join(esc(t) for t in self.prompt_tokens)
        return ("<div class='modelweave'><p>prompt tokens: <code>" + tokens + "</code></p>"
                "<table><tr><th>answer token</th><th>rank</th><th>prob</th><th>logit</th>"
                "<th>top tokens</th></tr>" + "".join(rows) + "</table></div>")


def test_prompt(model, prompt: str, answer: str, *, top_k: int = 10,
                prepend_space: bool = True) -> PromptTest:
    """Score ``answer`` as the continuation of ``prompt``, token by token (teacher-forced).

    Args:
        answer: the expected continuation; a leading space is added unless it starts with
            whitespace or ``prepend_space=False`` (as TransformerLens does).
        top_k: alternatives listed per answer token.

    Raises:
        ModelWeaveError: an empty answer, or one whose first token merges with the prompt's
            last (then say where the answer starts, usually with a space).
    """
    if not answer:
        raise ModelWeaveError("the answer is empty")
    if prepend_space and not answer[0].isspace():
        answer = " " + answer
    prompt_ids = model.to_tokens(prompt)[0].tolist()
    full_ids = model.to_tokens(prompt + answer)[0].tolist()
    if full_ids[:len(prompt_ids)] != prompt_ids or len(full_ids) == len(prompt_ids):
        raise ModelWeaveError(f"the answer {answer!r} merges with the end of the prompt when "
                              "tokenised; start it with a separator the tokenizer splits on "
                              "(usually a space)")
    answer_ids = full_ids[len(prompt_ids):]
    with torch.no_grad():
        logits = model(torch.tensor([full_ids], device=model.device))[0].float()
    out = []
    for i, token in enumerate(answer_ids):
        row = logits[len(prompt_ids) - 1 + i]
        probs = row.softmax(-1)
        rank = int((row > row[token]).sum())
        best = row.topk(min(top_k, row.shape[0]))
        top = [(model.to_string([j]), float(probs[j]), float(v))
               for v, j in zip(best.values.tolist(), best.indices.tolist(), strict=True)]
        out.append(AnswerToken(model.to_string([token]), rank, float(probs[token]),
                               float(row[token]), top))
    return PromptTest(model.to_str_tokens(prompt), out)


test_prompt.__test__ = False  # not a pytest test, despite the name
