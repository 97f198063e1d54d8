"""Indirect object identification (Wang et al. 2022): "When Mary and John went to the store,
John gave a drink to" -> " Mary" (the indirect object, IO) rather than " John" (the subject S).

Named positions: IO, S1 (first mention of S), S2 (second mention), END.
Corruptions: ``abc`` (IO, S1 and S2 replaced by three other distinct names: no name is
repeated, so nothing identifies the IO) and ``flip_s2`` (S2 replaced by the IO name, so the
correct answer flips).
"""

from __future__ import annotations

from .base import Example, Task, TaskError, choose_like, pair, register
from .words import NAMES, OBJECTS, PLACES

# Written in ABBA order: the IO is mentioned first. BABA swaps the first two mentions.
TEMPLATES = [
    "Then, {IO} and {S1} went to the {PLACE}. {S2} gave a {OBJECT} to",
    "When {IO} and {S1} went to the {PLACE}, {S2} gave a {OBJECT} to",
    "After {IO} and {S1} went to the {PLACE}, {S2} gave a {OBJECT} to",
    "While {IO} and {S1} were working at the {PLACE}, {S2} gave a {OBJECT} to",
    "Then, {IO} and {S1} had a long argument, and afterwards {S2} said to",
    "Friends {IO} and {S1} found a {OBJECT} at the {PLACE}. {S2} gave it to",
]


def _baba(template: str) -> str:
    return template.replace("{IO} and {S1}", "{S1} and {IO}", 1)


@register
class IOI(Task):
    name = "ioi"
    description = "indirect object identification: '...John gave a drink to' -> ' Mary'"
    metric = "logit_diff"
    corruptions = ("abc", "flip_s2")
    defaults = {"template": "mixed"}

    def example(self, rng, index, tokenizer) -> Example:
        order = self.params["template"]
        if order not in ("mixed", "ABBA", "BABA"):
            raise TaskError("ioi template must be 'mixed', 'ABBA' or 'BABA'")
        if order == "mixed":
            order = "ABBA" if index % 2 == 0 else "BABA"
        template = rng.choice(TEMPLATES)
        template = template if order == "ABBA" else _baba(template)
        io, s = rng.sample(NAMES, 2)
        common = {"PLACE": rng.choice(PLACES), "OBJECT": rng.choice(OBJECTS)}
        clean = {"IO": io, "S1": s, "S2": s, **common}
        if self.corruption == "abc":
            fresh: list[str] = []
            for name in (io, s, s):  # three new names, each as long in tokens as the old one
                fresh.append(choose_like(rng, tokenizer, NAMES, name, {io, s, *fresh}))
            corrupt = {"IO": fresh[0], "S1": fresh[1], "S2": fresh[2], **common}
        else:
            corrupt = {**clean, "S2": io}
        return pair(template, clean, corrupt, [" " + io], [" " + s], order=order)
