"""Sequence continuation ("1 2 3 4" -> " 5", "January, February," -> " March"), numbered
lists and induction.

Every sequence task names each item ``ITEM0``, ``ITEM1``, ... and ``END``. The wrong answer is
the last item repeated (the copying alternative). Corruption ``random``: the items are drawn at
random from the same domain (no order to continue); the number of items stays the same.
"""

from __future__ import annotations

from .base import Example, Task, choose_like, fill, register
from .words import DAYS, GROCERIES, LETTERS, MONTHS, NAMES, NOUNS, NUMBER_WORDS, VERBS_PAST


def _template(count: int, sep: str, trailing: str) -> str:
    return sep.join(f"{{ITEM{i}}}" for i in range(count)) + trailing


class _Sequence(Task):
    """Base for sequences over a domain: subclasses set ``domain`` (or override ``items``),
    the separator and whether the domain wraps around (weekdays, months)."""

    metric = "logit_diff"
    corruptions = ("random",)
    defaults = {"length": 5}
    domain: list[str] = []
    sep, trailing, answer_prefix, wraps = " ", "", " ", False

    def items(self, rng) -> list[str]:
        """``length + 1`` consecutive items (the last one is the answer)."""
        n = self.params["length"] + 1
        if self.wraps:
            start = rng.randrange(len(self.domain))
            return [self.domain[(start + i) % len(self.domain)] for i in range(n)]
        start = rng.randint(0, len(self.domain) - n)
        return self.domain[start:start + n]

    def corrupt_pool(self, item: str) -> list[str]:
        """Values a corrupted item may take."""
        return self.domain

    def corrupt_items(self, rng, items: list[str], tokenizer=None) -> list[str]:
        """Random items of the domain, not in order, each as many tokens as the one it
        replaces."""
        return [choose_like(rng, tokenizer, self.corrupt_pool(item), item, (),
                            self.item_prefix(i)) for i, item in enumerate(items[:-1])]

    def item_prefix(self, i: int) -> str:
        """The text right before item ``i`` (it changes how the item tokenizes)."""
        return " " if i and self.sep.endswith(" ") else ""

    def template(self, rng, count: int) -> str:
        """The prompt with ``{ITEM0}``.. ``{ITEM<count-1>}`` slots."""
        return _template(count, self.sep, self.trailing)

    def example(self, rng, index, tokenizer) -> Example:
        items = self.items(rng)
        shown, answer = items[:-1], items[-1]
        template = self.template(rng, len(shown))
        clean_text, spans = fill(template, {f"ITEM{i}": v for i, v in enumerate(shown)})
        corrupt = self.corrupt_items(rng, items, tokenizer)
        corrupt_text, corrupt_spans = fill(template, {f"ITEM{i}": v for i, v in
                                                      enumerate(corrupt)})
        return Example(clean_text, corrupt_text, [self.answer_prefix + answer],
                       [self.answer_prefix + shown[-1]], spans, corrupt_spans)


@register
class SeqDigits(_Sequence):
    name, description = "seq_digits", "'1 2 3 4 5' -> ' 6' (single digits)"
    domain = [str(d) for d in range(10)]


@register
class SeqNumberWords(_Sequence):
    name, description = "seq_number_words", "'one two three four' -> ' five'"
    domain = NUMBER_WORDS


@register
class SeqMonths(_Sequence):
    name, description = "seq_months", "'January, February, March, April,' -> ' May'"
    domain, sep, trailing, wraps = MONTHS, ", ", ",", True


@register
class SeqDays(_Sequence):
    name, description = "seq_days", "'Monday, Tuesday, Wednesday,' -> ' Thursday'"
    domain, sep, trailing, wraps = DAYS, ", ", ",", True
    defaults = {"length": 4}


@register
class SeqLetters(_Sequence):
    name, description = "seq_letters", "'A B C D' -> ' E'"
    domain = LETTERS


@register
class SeqInterval(_Sequence):
    """Arithmetic progressions with step ``step`` (default 2) below ``max`` (default 99)."""

    name, description = "seq_interval", "'2 4 6 8' -> ' 10' (step k)"
    defaults = {"length": 4, "step": 2, "max": 99}

    def items(self, rng) -> list[str]:
        n, step = self.params["length"] + 1, self.params["step"]
        start = rng.randint(0, self.params["max"] - step * (n - 1))
        return [str(start + step * i) for i in range(n)]

    def corrupt_pool(self, item: str) -> list[str]:
        return [str(x) for x in range(self.params["max"] + 1) if len(str(x)) == len(item)]


@register
class SeqFibonacci(_Sequence):
    name, description = "seq_fibonacci", "'1 1 2 3 5 8' -> ' 13'"
    defaults = {"length": 5}
    domain = [str(x) for x in (1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377)]

    def corrupt_pool(self, item: str) -> list[str]:
        return [str(x) for x in range(1, 400) if len(str(x)) == len(item)]


@register
class SeqAmongWords(_Sequence):
    """Items inside sentences: "Mary was born in January. John was hired in February. Anna was
    elected in" -> " March"."""

    name = "seq_among_words"
    description = "'{name} was {verb} in {month}.' sentences -> the next month"
    domain, wraps = MONTHS, True
    defaults = {"length": 3}

    def item_prefix(self, i: int) -> str:
        return " "  # every item follows "in "

    def template(self, rng, count: int) -> str:
        n = count + 1
        names, verbs = rng.sample(NAMES, n), [rng.choice(VERBS_PAST) for _ in range(n)]
        sentences = [f"{names[i]} was {verbs[i]} in {{ITEM{i}}}." for i in range(count)]
        return " ".join(sentences) + f" {names[-1]} was {verbs[-1]} in"


@register
class NumberedList(Task):
    """"1. apples\\n2. bread\\n" -> "3". Named positions: NUM0, NUM1, ... (each number), END.
    Corruption ``random``: the numbers are shuffled out of order."""

    name = "numbered_list"
    description = "'1. apples\\n2. bread\\n' -> '3'"
    corruptions = ("random",)
    defaults = {"length": 3}

    def example(self, rng, index, tokenizer) -> Example:
        n = self.params["length"]
        goods = rng.sample(GROCERIES, n)
        template = "".join(f"{{NUM{i}}}. {goods[i]}\n" for i in range(n))
        clean, spans = fill(template, {f"NUM{i}": str(i + 1) for i in range(n)})
        shuffled = [str(rng.randint(1, 9)) for _ in range(n)]
        corrupt, corrupt_spans = fill(template, {f"NUM{i}": v for i, v in enumerate(shuffled)})
        return Example(clean, corrupt, [str(n + 1)], [str(n)], spans, corrupt_spans)


@register
class Induction(Task):
    """Repeated random words: "w1 w2 ... wL w1 w2 ... wk" -> " w(k+1)". Named positions:
    PREV (the earlier occurrence of the last word), ANSWER_PREV (the earlier occurrence of the
    answer), END. Corruption ``random``: the second half is other random words, so there is
    nothing to copy. The wrong answer is another word of the first half."""

    name = "induction"
    description = "repeated random words: the second copy continues like the first"
    corruptions = ("random",)
    defaults = {"length": 8, "repeat": 4}

    def example(self, rng, index, tokenizer) -> Example:
        length, k = self.params["length"], self.params["repeat"]
        words = rng.sample(NOUNS, length + k)
        first, fresh = words[:length], words[length:]
        slots = [f"{{W{i}}}" for i in range(length)] + [f"{{R{i}}}" for i in range(k)]
        template = " ".join(slots)
        clean_values = {**{f"W{i}": w for i, w in enumerate(first)},
                        **{f"R{i}": first[i] for i in range(k)}}
        corrupt_values = {**clean_values, **{f"R{i}": fresh[i] for i in range(k)}}
        clean, spans = fill(template, clean_values)
        corrupt, corrupt_spans = fill(template, corrupt_values)
        named = {"PREV": spans[f"W{k - 1}"], "ANSWER_PREV": spans[f"W{k}"]}
        wrong = rng.choice([w for w in first if w not in (first[k], first[k - 1])])
        return Example(clean, corrupt, [" " + first[k]], [" " + wrong], named,
                       {"PREV": corrupt_spans[f"W{k - 1}"],
                        "ANSWER_PREV": corrupt_spans[f"W{k}"]})
