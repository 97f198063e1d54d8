"""Algorithmic datasets with held-out splits, as token tensors for training.

Each dataset has a word vocabulary (token id = index in ``words``; then ``<pad>``, ``<bos>``;
see :mod:`modelweave.toy.vocab`), a training stream and a fixed held-out test set. Targets are
``-100`` where no loss is taken, so one cross-entropy serves every task.

- ``modular_addition``: ``a b =`` -> ``(a + b) mod p`` (Nanda et al. 2023). The ``p**2`` pairs
  are split once by ``data_seed``: a fraction ``frac`` trains (full batch), the rest is the test
  set. Addition commutes, so with ``unordered=True`` (the default) the split is drawn over
  *unordered* pairs ``{a, b}``: ``a b`` and ``b a`` always land on the same side and no test
  pair has its swap in training. With ``unordered=False`` (the ordered split of earlier
  versions) about ``frac`` of the test pairs have their swap trained; ``split("test_swap_free")``
  and ``split("test_swap_trained")`` separate them, and training reports both accuracies.
  ``shuffle_labels=True`` (a null for the analyses: a model that can only memorise) permutes
  the answers among the training pairs, by ``data_seed``; the test answers stay true.
- ``induction``: ``<bos> x_1..x_m x_1..x_{2L-m}``, the ``x`` distinct random tokens, the
  segment length ``m`` random in ``[L, 2L-2]`` (so the repeat's offset varies and position alone
  cannot predict it); the loss and the accuracy are on the repeat (the tokens predictable only
  by induction). Train and test sequences come from disjoint random streams.
- ``sorting`` / ``reversal``: ``x_1..x_n : y_1..y_n`` with ``y`` the sorted / reversed list;
  loss on the ``y``. ``parentheses``: ``c_1..c_n :`` -> ``T`` iff the string of ``(`` and ``)``
  is balanced (half the examples are). For these three a list is held out by a hash of its
  content (``test_frac`` of all lists), so no test input is ever trained on. A sorted list
  depends only on the multiset of its input, so for ``sorting`` with ``unordered=True`` (the
  default) the hash is of the sorted input: no reordering of a test list is ever trained on.

Checkpoints written before the ``unordered`` option record no such parameter; they were
trained on the ordered split, and :func:`checkpoint_params` reads them so.

``batch(step, seed)`` depends only on its arguments, so an interrupted run that resumes at
step ``s`` sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import zlib

import torch

from ..errors import ModelWeaveError


class ToyError(ModelWeaveError):
    """An impossible toy configuration or training directory."""


class ToyModelError(ToyError, ValueError):
    """A model (or vocabulary) that a toy analysis cannot read."""


Batch = tuple[torch.Tensor, torch.Tensor]  # inputs [B, T], targets [B, T] (-100: no loss)


def _gen(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(repr(keys).encode()))


class ToyDataset:
    """Base class. Subclasses set ``name``, ``defaults`` and implement the sampling.

    Attributes:
        params: this dataset's parameters (``defaults`` overridden by the caller's).
    """

    name = ""
    defaults: dict = {}
    add_bos = False
    full_batch = False  # whether ``batch`` returns the whole training set

    def __init__(self, params: dict | None = None):
        params = dict(params or {})
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ToyError(f"toy task {self.name!r} has no parameter {sorted(unknown)[0]!r}; "
                           f"parameters: {', '.join(sorted(self.defaults))}")
        self.params = {**self.defaults, **params}
        self.validate()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"

    def validate(self) -> None:
        """Raise :class:`ToyError` for impossible parameters."""

    # vocabulary ------------------------------------------------------------------------
    @property
    def words(self) -> list[str]:
        raise NotImplementedError

    @property
    def d_vocab(self) -> int:
        return len(self.words) + 2

    @property
    def bos_id(self) -> int:
        return len(self.words) + 1

    @property
    def n_ctx(self) -> int:
        """Length of every sequence (inputs are all the same length)."""
        raise NotImplementedError

    def ids(self, words: list[str]) -> list[int]:
        index = {w: i for i, w in enumerate(self.words)}
        return [index[w] for w in words]

    # data ----------------------------------------------------------------------------
    def batch(self, step: int, seed: int, size: int) -> Batch:
        """Training inputs and targets of one step."""
        raise NotImplementedError

    def test_set(self, n: int = 1024) -> Batch:
        """The held-out inputs and targets (at most ``n`` sequences; all of them for
        modular addition)."""
        raise NotImplementedError

    def train_set(self, n: int = 1024) -> Batch:
        """Training inputs and targets to measure train accuracy on (the whole training set
        for modular addition; a fixed sample of the training stream otherwise)."""
        return self.batch(-1, 0, n)

    def eval_subsets(self) -> dict[str, Batch]:
        """Named subsets of the test set whose accuracy training reports separately (none
        here; modular addition: swap-free and swap-trained pairs)."""
        return {}


def _mod_split(p: int, frac: float, data_seed: int, unordered: bool = True
               ) -> tuple[torch.Tensor, int]:
    """Pairs [p*p, 2] in the split's order (training pairs first) and the number that train.

    Ordered: a permutation of the ``p**2`` pairs, the first ``round(frac p^2)`` train.
    Unordered: a permutation of the ``p (p + 1) / 2`` pairs ``a <= b``, each expanded to
    ``(a, b)`` and ``(b, a)`` (once when ``a == b``); unordered pairs train until at least
    ``round(frac p^2)`` ordered pairs do (so one more than asked, at most)."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    pairs = torch.stack([a.flatten(), b.flatten()], 1)
    want = int(round(frac * p * p))
    if not unordered:
        order = torch.randperm(p * p, generator=_gen(p, data_seed))
        return pairs[order], want
    low = pairs[pairs[:, 0] <= pairs[:, 1]]
    low = low[torch.randperm(len(low), generator=_gen(p, data_seed, 1))]
    size = 2 - (low[:, 0] == low[:, 1]).long()
    k = int(torch.searchsorted(size.cumsum(0), torch.tensor(want))) + 1 if want else 0
    both = torch.stack([low, low.flip(1)], 1)  # [m, 2 orders, 2]
    keep = torch.stack([torch.ones_like(size, dtype=torch.bool), size == 2], 1)
    train, test = both[:k][keep[:k]], both[k:][keep[k:]]
    return torch.cat([train, test]), len(train)


def unordered_key(pairs: torch.Tensor, p: int) -> torch.Tensor:
    """[n] an id of each pair's unordered pair ``{a, b}``: ``min * p + max``."""
    return pairs.min(1).values * p + pairs.max(1).values


class ModularAddition(ToyDataset):
    name = "modular_addition"
    defaults = {"p": 113, "frac": 0.3, "data_seed": 0, "unordered": True,
                "shuffle_labels": False}
    full_batch = True
    SPLITS = ("train", "test", "all", "test_swap_free", "test_swap_trained")

    def validate(self):
        p, frac = self.params["p"], self.params["frac"]
        if not isinstance(p, int) or p < 2:
            raise ToyError(f"modular_addition needs an integer p >= 2, got p={p!r}")
        for flag in ("unordered", "shuffle_labels"):
            if not isinstance(self.params[flag], bool):
                raise ToyError(f"modular_addition: {flag} must be true or false, got "
                               f"{self.params[flag]!r}")
        if not 0 < frac < 1 or round(frac * p * p) < 1 or self._n_train() >= p * p:
            raise ToyError(f"modular_addition: frac={frac} leaves an empty train or test split "
                           f"of the {p * p} pairs; use 0 < frac < 1")

    def _n_train(self) -> int:
        return _mod_split(self.params["p"], self.params["frac"], self.params["data_seed"],
                          self.params["unordered"])[1]

    @property
    def words(self):
        return [str(i) for i in range(self.params["p"])] + ["="]

    @property
    def n_ctx(self):
        return 3

    def split(self, which: str) -> torch.Tensor:
        """[n, 2] the (a, b) pairs of ``"train"``, ``"test"``, ``"all"``,
        ``"test_swap_free"`` (test pairs whose swap ``(b, a)`` is not a training pair: the
        whole test set when ``unordered``) or ``"test_swap_trained"`` (the others; empty when
        ``unordered``)."""
        if which not in self.SPLITS:
            raise ToyError(f"modular_addition has no split {which!r}; use "
                           f"{', '.join(self.SPLITS)}")
        p = self.params["p"]
        pairs, n = _mod_split(p, self.params["frac"], self.params["data_seed"],
                              self.params["unordered"])
        if which in ("train", "test", "all"):
            return {"train": pairs[:n], "test": pairs[n:], "all": pairs}[which]
        test = pairs[n:]
        trained = torch.zeros(p * p, dtype=torch.bool)
        trained[pairs[:n, 0] * p + pairs[:n, 1]] = True
        swap_in = trained[test[:, 1] * p + test[:, 0]]
        return test[swap_in] if which == "test_swap_trained" else test[~swap_in]

    def eval_subsets(self) -> dict[str, Batch]:
        """The non-empty test subsets training reports besides the whole test set:
        ``swap_free`` and ``swap_trained`` (see :meth:`split`)."""
        out = {}
        for name in ("swap_free", "swap_trained"):
            pairs = self.split("test_" + name)
            if len(pairs):
                out[name] = self.encode(pairs)
        return out

    def encode(self, pairs: torch.Tensor) -> Batch:
        p = self.params["p"]
        inputs = torch.cat([pairs, torch.full((len(pairs), 1), p)], 1)
        targets = torch.full_like(inputs, -100)
        targets[:, -1] = pairs.sum(1) % p
        return inputs, targets

    def batch(self, step, seed, size):
        return self.train_set()

    def test_set(self, n=1024):
        return self.encode(self.split("test"))

    def train_set(self, n=1024):
        inputs, targets = self.encode(self.split("train"))
        if self.params["shuffle_labels"]:
            gen = _gen(self.params["p"], self.params["data_seed"], 2)
            targets[:, -1] = targets[torch.randperm(len(targets), generator=gen), -1]
        return inputs, targets


class Induction(ToyDataset):
    name = "induction"
    defaults = {"vocab": 64, "length": 16}
    add_bos = True

    def validate(self):
        if self.params["length"] < 2 or self.params["vocab"] < self.params["length"]:
            raise ToyError("induction needs 2 <= length <= vocab (tokens in a sequence are "
                           f"distinct), got {self.params}")

    @property
    def words(self):
        return [str(i) for i in range(self.params["vocab"])]

    @property
    def n_ctx(self):
        return 1 + 2 * self.params["length"]

    def sample(self, gen: torch.Generator, size: int) -> Batch:
        v, n = self.params["vocab"], self.params["length"]
        total = 2 * n
        # a segment of m distinct tokens (m random in [n, 2n - 2]), then its first 2n - m
        # tokens again: the offset varies, so only induction (not position) predicts the repeat
        m = torch.randint(n, max(n + 1, total - 1), (size,), generator=gen)
        tokens = torch.rand(size, v, generator=gen).argsort(1)[:, :total]
        pos = torch.arange(total)[None]
        second = pos >= m[:, None]
        source = torch.where(second, pos - m[:, None], pos)
        body = tokens.gather(1, source)
        inputs = torch.cat([torch.full((size, 1), self.bos_id), body], 1)
        targets = torch.full_like(inputs, -100)
        # position p (1-based, content index p-1) predicts content index p; predictable when
        # the token at p-1 is itself a repeat, i.e. content index p-1 >= m
        predictable = second[:, :-1]
        targets[:, 1:-1] = torch.where(predictable, body[:, 1:], torch.full_like(body[:, 1:],
                                                                                 -100))
        return inputs, targets

    def batch(self, step, seed, size):
        return self.sample(_gen(0, seed, step), size)

    def test_set(self, n=1024):
        return self.sample(_gen(1, 0), n)  # stream 1: never a training stream


class _HashSplit(ToyDataset):
    """Lists held out by a hash of their content."""

    def item(self, gen: torch.Generator) -> tuple[list[str], list[str]]:
        """(input words, answer words) of one random example."""
        raise NotImplementedError

    def split_key(self, words: list[str]) -> list[str]:
        """What the hash is taken of (the input words; :class:`Sorting`: sorted)."""
        return words

    def in_test(self, words: list[str]) -> bool:
        key = " ".join(self.split_key(words))
        return zlib.crc32(key.encode()) % 1000 < 1000 * self.params["test_frac"]

    def _collect(self, gen: torch.Generator, size: int, test: bool) -> Batch:
        rows, targets = [], []
        while len(rows) < size:
            inp, ans = self.item(gen)
            if self.in_test(inp) != test:
                continue
            ids = self.ids(inp + ans)
            rows.append(ids[:-1] if ans else ids)
            tgt = [-100] * (len(inp) - 1) + self.ids(ans)
            targets.append(tgt)
        return torch.tensor(rows), torch.tensor(targets)

    def batch(self, step, seed, size):
        return self._collect(_gen(0, seed, step), size, test=False)

    def test_set(self, n=1024):
        return self._collect(_gen(1, 0), n, test=True)


class _ListTask(_HashSplit):
    defaults = {"n": 5, "vocab": 20, "test_frac": 0.2}

    def validate(self):
        if self.params["n"] < 2 or self.params["vocab"] < 2:
            raise ToyError(f"{self.name} needs lists of n >= 2 from vocab >= 2, got "
                           f"{self.params}")

    @property
    def words(self):
        return [str(i) for i in range(self.params["vocab"])] + [":"]

    @property
    def n_ctx(self):
        return 2 * self.params["n"]  # the last answer word is never an input

    def item(self, gen):
        xs = torch.randint(0, self.params["vocab"], (self.params["n"],), generator=gen).tolist()
        return [*map(str, xs), ":"], [str(y) for y in self.transform(xs)]

    def transform(self, xs: list[int]) -> list[int]:
        raise NotImplementedError


class Sorting(_ListTask):
    name = "sorting"
    defaults = {**_ListTask.defaults, "unordered": True}

    def split_key(self, words):
        if not self.params["unordered"]:
            return words
        return sorted(words[:-1], key=int) + words[-1:]  # the multiset, then ":"

    def transform(self, xs):
        return sorted(xs)


class Reversal(_ListTask):
    name = "reversal"

    def transform(self, xs):
        return xs[::-1]


def balanced(chars: list[str]) -> bool:
    """Whether a string of ``(`` and ``)`` is balanced."""
    depth = 0
    for c in chars:
        depth += 1 if c == "(" else -1
        if depth < 0:
            return False
    return depth == 0


def random_balanced(gen: torch.Generator, n: int) -> list[str]:
    """A random balanced string of even length ``n`` (a random walk kept >= 0 ending at 0)."""
    out, depth = [], 0
    for i in range(n):
        left = n - i
        if depth == 0:
            c = "("
        elif depth == left:
            c = ")"
        else:
            c = "(" if torch.rand((), generator=gen) < 0.5 else ")"
        depth += 1 if c == "(" else -1
        out.append(c)
    return out


class Parentheses(_HashSplit):
    name = "parentheses"
    defaults = {"n": 12, "test_frac": 0.2}

    def validate(self):
        if self.params["n"] < 2 or self.params["n"] % 2:
            raise ToyError(f"parentheses needs an even length n >= 2, got {self.params['n']}")

    @property
    def words(self):
        return ["(", ")", ":", "T", "F"]

    @property
    def n_ctx(self):
        return self.params["n"] + 1

    def item(self, gen):
        n = self.params["n"]
        if torch.rand((), generator=gen) < 0.5:
            chars = random_balanced(gen, n)
        else:  # unbalanced; half of them with as many '(' as ')' (only the order is wrong)
            while True:
                if torch.rand((), generator=gen) < 0.5:
                    chars = [["(", ")"][int(i)] for i in torch.randperm(n, generator=gen) % 2]
                else:
                    chars = [["(", ")"][int(i)] for i in torch.randint(0, 2, (n,), generator=gen)]
                if not balanced(chars):
                    break
        return [*chars, ":"], ["T" if balanced(chars) else "F"]


DATASETS: dict[str, type[ToyDataset]] = {
    cls.name: cls for cls in (ModularAddition, Induction, Sorting, Reversal, Parentheses)}


def checkpoint_params(task: str, params: dict) -> dict:
    """A checkpoint's recorded ``task_params`` as the dataset reads them: runs written before
    the ``unordered`` option were trained on the ordered split, so a missing ``unordered``
    means ``False`` (for the datasets that have the option)."""
    params = dict(params)
    if task in DATASETS and "unordered" in DATASETS[task].defaults:
        params.setdefault("unordered", False)
    return params


def make_dataset(task: str, **params) -> ToyDataset:
    """A toy dataset by name; :class:`ToyError` lists the known ones."""
    if task not in DATASETS:
        raise ToyError(f"unknown toy task {task!r}; toy tasks: {', '.join(DATASETS)}")
    return DATASETS[task](params)
