"""Tasks about entities and facts: entity tracking, country capitals, subject-verb agreement,
acronyms."""

from __future__ import annotations

from .base import Example, Task, choose_like, fill, n_tokens, pair, register
from .words import ACRONYM_WORDS, CAPITALS, ITEMS, LETTERS, SUBJECTS


@register
class EntityTracking(Task):
    """"Box A contains the key, Box B contains the coin, and Box C contains the ring. The coin
    is in Box" -> " B". Parameter ``boxes`` (default 3); boxes are labelled A, B, C... in
    order. Named positions: OBJ0.., BOX0.. (each object and
    its box label), QUERY (the queried object), END. Corruption ``other_object``: another
    object is queried, so the correct box changes (it is the wrong answer)."""

    name = "entity_tracking"
    description = "'Box A contains the key, ... The key is in Box' -> ' A'"
    corruptions = ("other_object",)
    defaults = {"boxes": 3}

    def example(self, rng, index, tokenizer) -> Example:
        n = self.params["boxes"]
        objects, labels = rng.sample(ITEMS, n), LETTERS[:n]
        parts = [f"Box {{BOX{i}}} contains the {{OBJ{i}}}" for i in range(n)]
        body = ", ".join(parts[:-1]) + (", and " if n > 2 else " and ") + parts[-1]
        template = body + ". The {QUERY} is in Box"
        query = rng.randrange(n)
        other_obj = choose_like(rng, tokenizer, objects, objects[query])
        other = objects.index(other_obj)
        values = {**{f"OBJ{i}": o for i, o in enumerate(objects)},
                  **{f"BOX{i}": b for i, b in enumerate(labels)}}
        return pair(template, {**values, "QUERY": objects[query]},
                    {**values, "QUERY": objects[other]}, [" " + labels[query]],
                    [" " + labels[other]])


@register
class CountryCapital(Task):
    """"The capital of France is" -> " Paris". Named positions: COUNTRY, END. Corruption
    ``other_country``; its capital is the wrong answer."""

    name = "country_capital"
    description = "'The capital of France is' -> ' Paris'"
    corruptions = ("other_country",)

    def example(self, rng, index, tokenizer) -> Example:
        country = rng.choice(sorted(CAPITALS))
        other = choose_like(rng, tokenizer, sorted(CAPITALS), country)
        return pair("The capital of {COUNTRY} is", {"COUNTRY": country}, {"COUNTRY": other},
                    [" " + CAPITALS[country]], [" " + CAPITALS[other]])


@register
class SubjectVerbAgreement(Task):
    """"The author near the cars" -> " is" (not " are"): the verb agrees with the subject, not
    the nearer attractor noun. Named positions: SUBJ, ATTR, END. Corruption ``flip_number``:
    the subject's number flips (so does the answer)."""

    name = "sva"
    description = "'The author near the cars' -> ' is' (subject-verb agreement)"
    corruptions = ("flip_number",)

    def example(self, rng, index, tokenizer) -> Example:
        subject, attractor = rng.sample(SUBJECTS, 2)
        plural, attr_plural = rng.random() < 0.5, rng.random() < 0.5
        verbs = (" are", " is") if plural else (" is", " are")
        return pair("The {SUBJ} near the {ATTR}",
                    {"SUBJ": subject[plural], "ATTR": attractor[attr_plural]},
                    {"SUBJ": subject[not plural], "ATTR": attractor[attr_plural]},
                    [verbs[0]], [verbs[1]])


@register
class Acronyms(Task):
    """"The Central Intelligence Agency (CI" -> "A". Named positions: W0, W1, W2 (the words),
    L0, L1 (the letters written so far), END. Corruption ``other_word``: the last word starts
    with another letter (that letter is the wrong answer)."""

    name = "acronyms"
    description = "'The Central Intelligence Agency (CI' -> 'A'"
    corruptions = ("other_word",)

    def example(self, rng, index, tokenizer) -> Example:
        template = "The {W0} {W1} {W2} ({L0}{L1}"
        for _ in range(50):  # prefer words whose letters the tokenizer keeps apart
            words = rng.sample(ACRONYM_WORDS, 3)
            letters = words[0][0] + words[1][0]
            if tokenizer is None or n_tokens(tokenizer, f"({letters}{words[2][0]}") == 4:
                break
        others = [w for w in ACRONYM_WORDS if w[0] != words[2][0] and w not in words]
        replacement = choose_like(rng, tokenizer, others, words[2])
        values = {"W0": words[0], "W1": words[1], "W2": words[2], "L0": words[0][0],
                  "L1": words[1][0]}
        clean, spans = fill(template, values)
        corrupt, corrupt_spans = fill(template, {**values, "W2": replacement})
        return Example(clean, corrupt, [words[2][0]], [replacement[0]], spans, corrupt_spans)

