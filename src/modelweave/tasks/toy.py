"""The toy datasets as :class:`~modelweave.tasks.Task` s: clean/corrupt pairs, answers and named
positions, written in the toy vocabulary (one word per token), so evaluation, patching and
EAP-IG run on a toy checkpoint like on any built-in task (``make_batch(model, "toy_induction")``).

Examples are drawn from the *held-out* split by default (``split="train"`` or ``"all"`` for the
others; modular addition also ``"test_swap_free"`` / ``"test_swap_trained"``, the test pairs
whose swap was not / was trained, see :mod:`.toy_data`); a toy task's parameters must match the
checkpoint's (``task_params`` in its
``config.json`` under ``modelweave_toy``; :func:`task_for_model` reads them).

- ``toy_modular_addition``: ``"a b ="`` -> ``" c"``; corrupt: another ``a'`` (``corruption=b``:
  another ``b'``) with ``c' != c``, the wrong answer. Positions ``A``, ``B``, ``EQ``.
- ``toy_induction``: ``"x_1..x_L x_1..x_k"`` -> ``" x_{k+1}"`` (``k = prefix``, default
  ``L // 2``; the tokenizer adds ``<bos>``);
  corrupt: a fresh sequence ``y`` written the same way (wrong answer ``y_{k+1}``). Positions
  ``A`` (first occurrence of ``x_k``), ``B`` (first occurrence of the answer), ``END``.
- ``toy_sorting`` / ``toy_reversal``: ``"x_1..x_n : y_1..y_k"`` -> ``" y_{k+1}"``; corrupt: another
  list with a different answer. Positions ``SEP`` and ``END``.
- ``toy_parentheses``: ``"( ) ( ( ) ) :"`` -> ``" T"`` or ``" F"``; corrupt: the string with one
  character flipped (balanced <-> unbalanced where possible) so the label flips. Position ``SEP``.
"""

from __future__ import annotations

import random

import torch

from .base import Example, Task, TaskError, fill, get_task, register
from .toy_data import ToyError, balanced, checkpoint_params, make_dataset, random_balanced


def _words(tokens: list[int] | list[str]) -> list[str]:
    return [str(t) for t in tokens]


def _example(clean_slots: list[str], corrupt_slots: list[str], names: dict[int, str],
             answer: str, wrong: str, **meta) -> Example:
    """Words -> an Example whose named spans are the words at ``names`` (index -> name)."""
    template = " ".join(f"{{{names.get(i, f'W{i}')}}}" for i in range(len(clean_slots)))
    clean, spans = fill(template, {names.get(i, f"W{i}"): w for i, w in enumerate(clean_slots)})
    corrupt, cspans = fill(template, {names.get(i, f"W{i}"): w
                                      for i, w in enumerate(corrupt_slots)})
    keep = set(names.values())
    return Example(clean, corrupt, [" " + answer], [" " + wrong],
                   {k: v for k, v in spans.items() if k in keep},
                   {k: v for k, v in cspans.items() if k in keep}, meta)


class _ToyTask(Task):
    dataset = ""

    def data(self):
        params = {k: v for k, v in self.params.items() if k != "split" and k != "prefix"}
        try:
            return make_dataset(self.dataset, **params)
        except ToyError as err:
            raise TaskError(str(err)) from None

    def _torch_gen(self, rng: random.Random) -> torch.Generator:
        return torch.Generator().manual_seed(rng.randrange(2**62))


@register
class ToyModularAddition(_ToyTask):
    """'a b =' -> '(a+b) mod p' in a toy model's vocabulary."""

    name = "toy_modular_addition"
    dataset = "modular_addition"
    description = "toy: 'a b =' -> (a+b) mod p (held-out pairs by default)"
    corruptions = ("a", "b")
    defaults = {"p": 113, "frac": 0.3, "data_seed": 0, "unordered": True,
                "shuffle_labels": False, "split": "test"}

    def example(self, rng, index, tokenizer) -> Example:
        data = self.data()
        p = data.params["p"]
        try:
            pairs = data.split(self.params["split"])
        except ToyError as err:
            raise TaskError(str(err)) from None
        if not len(pairs):
            raise TaskError(f"toy_modular_addition: split {self.params['split']!r} is empty "
                            f"for {data.params}")
        a, b = pairs[rng.randrange(len(pairs))].tolist()
        while True:
            other = rng.randrange(p)
            a2, b2 = (other, b) if self.corruption == "a" else (a, other)
            if (a2 + b2) % p != (a + b) % p:
                break
        return _example([str(a), str(b), "="], [str(a2), str(b2), "="],
                        {0: "A", 1: "B", 2: "EQ"}, str((a + b) % p), str((a2 + b2) % p),
                        a=a, b=b)


@register
class ToyInduction(_ToyTask):
    """Repeated random tokens: the second occurrence of x_k predicts x_{k+1}."""

    name = "toy_induction"
    dataset = "induction"
    description = "toy: random tokens repeated; predict the token that followed last time"
    corruptions = ("resample",)
    defaults = {"vocab": 64, "length": 16, "prefix": None, "split": "test"}

    def example(self, rng, index, tokenizer) -> Example:
        data = self.data()
        n = data.params["length"]
        k = n // 2 if self.params["prefix"] is None else self.params["prefix"]
        if not 1 <= k < n:
            raise TaskError(f"toy_induction: prefix must be in [1, length), got {k}")
        gen = self._torch_gen(rng)
        while True:
            x, y = (torch.randperm(data.params["vocab"], generator=gen)[:n].tolist()
                    for _ in range(2))
            if x[k] != y[k]:
                break
        clean, corrupt = _words(x + x[:k]), _words(y + y[:k])
        return _example(clean, corrupt, {k - 1: "A", k: "B"}, str(x[k]), str(y[k]))


class _ListToyTask(_ToyTask):
    defaults = {"n": 5, "vocab": 20, "test_frac": 0.2, "prefix": 2, "split": "test"}
    corruptions = ("resample",)

    def _draw(self, data, gen):
        while True:
            inp, ans = data.item(gen)
            want = self.params["split"]
            if want == "all" or data.in_test(inp) == (want == "test"):
                return inp, ans

    def example(self, rng, index, tokenizer) -> Example:
        data = self.data()
        k = self.params["prefix"]
        if not 0 <= k < data.params["n"]:
            raise TaskError(f"{self.name}: prefix must be in [0, n), got {k}")
        gen = self._torch_gen(rng)
        inp, ans = self._draw(data, gen)
        while True:
            inp2, ans2 = self._draw(data, gen)
            if ans2[k] != ans[k]:
                break
        n = data.params["n"]
        return _example(inp + ans[:k], inp2 + ans2[:k], {n: "SEP"}, ans[k], ans2[k])


@register
class ToySorting(_ListToyTask):
    """'x_1..x_n : y_1..y_k' -> y_{k+1}, y sorted."""

    name = "toy_sorting"
    dataset = "sorting"
    description = "toy: sort a short list ('3 1 2 : 1 2' -> '3')"
    defaults = {**_ListToyTask.defaults, "unordered": True}


@register
class ToyReversal(_ListToyTask):
    """'x_1..x_n : y_1..y_k' -> y_{k+1}, y reversed."""

    name = "toy_reversal"
    dataset = "reversal"
    description = "toy: reverse a short list ('3 1 2 : 2 1' -> '3')"


@register
class ToyParentheses(_ToyTask):
    """'( ) ( ) :' -> 'T' iff balanced."""

    name = "toy_parentheses"
    dataset = "parentheses"
    description = "toy: is a string of parentheses balanced ('( ) :' -> 'T')"
    corruptions = ("flip",)
    defaults = {"n": 12, "test_frac": 0.2, "split": "test"}

    def example(self, rng, index, tokenizer) -> Example:
        data = self.data()
        gen = self._torch_gen(rng)
        n = data.params["n"]
        for _ in range(1000):
            if rng.random() < 0.5:
                chars = random_balanced(gen, n)
            else:
                chars = [rng.choice("()") for _ in range(n)]
            if self.params["split"] != "all" and data.in_test([*chars, ":"]) != (
                    self.params["split"] == "test"):
                continue
            flips = []
            for i in range(n):  # one flipped character that changes the label
                other = chars[:i] + [")" if chars[i] == "(" else "("] + chars[i + 1:]
                if balanced(other) != balanced(chars):
                    flips.append(other)
            if flips:
                corrupt = rng.choice(flips)
                label = "T" if balanced(chars) else "F"
                return _example([*chars, ":"], [*corrupt, ":"], {n: "SEP"}, label,
                                "F" if label == "T" else "T")
        raise TaskError("toy_parentheses: no example found; use an even n >= 2")


def toy_meta(model) -> dict | None:
    """The ``modelweave_toy`` entry of a model's HF config, or ``None`` when it is not a toy
    checkpoint. Written by :func:`modelweave.toy.train.train_toy`, it holds ``task`` (the toy
    dataset's name, e.g. ``"induction"``), ``task_params`` (the dataset's parameters, e.g. ``p``
    or ``length``) and ``attn_only`` (whether the model was trained without MLPs)."""
    return getattr(model.hf_model.config, "modelweave_toy", None)


def task_for_model(model) -> Task:
    """The toy task (with the checkpoint's own parameters) of a model trained by
    :func:`modelweave.toy.train.train_toy`, read from ``config.modelweave_toy``."""
    meta = toy_meta(model)
    if not meta:
        raise TaskError(f"{model.name} is not a toy checkpoint (no modelweave_toy in its config)")
    return get_task("toy_" + meta["task"], **checkpoint_params(meta["task"],
                                                                meta["task_params"]))
