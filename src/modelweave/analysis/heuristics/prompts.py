"""Arithmetic prompts for the heuristic-neuron analysis, tokenizer-aware.

The pipeline (Nikankin et al. 2024, §2): legal prompts ``"{x}{op}{y}="`` of a grid
(:func:`modelweave.tasks.arith.arith_grid`); only those the model answers correctly by greedy
decoding are kept; each kept prompt gets a counterfactual drawn from the other correct
prompts, of any of the chosen operators.

Tokenizers differ in how they write numbers:

- one token per number (Llama-3, OLMo-2 up to 999): the answer is one token, the unit of
  analysis;
- one token per digit (SmolLM2, Llama-2): the unit is answer token ``step`` (default 0, the
  first), with the earlier answer tokens teacher-forced: the prompt becomes
  ``"12+34=" + "4"`` for ``step=1``.

"Correct" means every answer token is the argmax given the correct earlier ones (what greedy
decoding produces) and, with ``check_end=True``, the next token after the answer does not
continue the number (does not start with a digit).

Counterfactuals must have the same token length as the prompt (so named positions align) and a
different unit token; prompts without such a partner are dropped (``ArithBatch.dropped``).

Fine-tunes are analysed on prompts they were not trained on: ``exclude`` (default ``None``)
reads the operand triples a fine-tune recorded in its folder
(:func:`modelweave.models.finetune.training_operands`; nothing for a model without that file)
and removes them from the grid *before* sampling, for the prompts, their counterfactuals and
the key-map grid alike. Give a set of ``(op1, op, op2)`` (or :class:`ArithPrompt`) to choose
it yourself, ``()`` for none. The count is ``batch.dropped[EXCLUDED]``
(``"excluded (training prompts of the fine-tune)"``).
"""

from __future__ import annotations

import random
from collections import Counter

import torch

from ...metrics.evaluate import run_batched
from ...models import Model
from ...models.finetune import EXCLUDED, training_operands
from ...tasks import TaskBatch, TaskError, materialize
from ...tasks.arith import ArithPrompt, arith_grid, make_example, parse_operators

POSITIONS = ("OP1", "OPERATOR", "OP2", "EQ")


def _base_batch(model: Model, prompts: list[ArithPrompt], spaces: bool) -> TaskBatch:
    """Every prompt tokenised with its answer's tokens (``answer_tokens``), clean = corrupt."""
    if model.tokenizer is None:
        raise TaskError("arithmetic prompts need a model with a tokenizer")
    policy = model.tokenization
    examples = [make_example(p, p, spaces) for p in prompts]
    return materialize("arith", examples, model.tokenizer,
                       policy.bos_token_id if policy.prepend_bos else None,
                       policy.pad_token_id, scoring="full")


def _digit_tokens(model: Model) -> torch.Tensor:
    """[vocab] True for tokens whose text starts with a digit (a number continuing)."""
    tok = model.tokenizer
    vocab = model.cfg.d_vocab
    texts = tok.convert_ids_to_tokens(list(range(min(vocab, len(tok)))))
    out = torch.zeros(vocab, dtype=torch.bool)
    for i, text in enumerate(texts):
        out[i] = bool(text) and text[0].isdigit()
    return out


def answered_correctly(model: Model, batch: TaskBatch, *, check_end: bool = True,
                       batch_size: int = 64) -> torch.Tensor:
    """[N] True where greedy decoding gives the whole answer (``batch.answer_tokens``)."""
    rows, spans = [], []
    for i in range(len(batch)):
        prompt = batch.clean[i, : batch.lengths[i]].tolist()
        answer = batch.answer_tokens[i][0]
        rows.append(prompt + answer)
        spans.append((len(prompt) - 1, answer))
    width = max(map(len, rows))
    pad = model.tokenization.pad_token_id
    tokens = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    ok = torch.zeros(len(rows), dtype=torch.bool)
    digits = _digit_tokens(model) if check_end else None
    for start in range(0, len(rows), batch_size):
        part = slice(start, start + batch_size)
        top = run_batched(model, tokens[part].to(model.device), mask[part].to(model.device),
                          batch_size).argmax(-1).cpu()
        for j, i in enumerate(range(start, min(start + batch_size, len(rows)))):
            first, answer = spans[i]
            got = top[j, first: first + len(answer)].tolist()
            good = got == answer
            if good and check_end:
                good = not bool(digits[top[j, first + len(answer)]])
            ok[i] = good
    return ok


def _unit(batch: TaskBatch, i: int, step: int) -> int | None:
    answer = batch.answer_tokens[i][0]
    return answer[step] if len(answer) > step else None


def _rows(batch: TaskBatch, index: list[int], step: int) -> list[list[int]]:
    return [batch.clean[i, : batch.lengths[i]].tolist() + batch.answer_tokens[i][0][:step]
            for i in index]


def _assemble(batch: TaskBatch, index: list[int], partner: list[int], step: int, pad: int,
              dropped: dict) -> TaskBatch:
    """The analysis batch: prompts ``index`` with counterfactuals ``partner`` (teacher-forced
    to ``step``)."""
    clean, corrupt = _rows(batch, index, step), _rows(batch, partner, step)
    lengths = torch.tensor([len(r) for r in clean])
    width = int(lengths.max())

    def pad_rows(rows):
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows])

    positions = {n: batch.positions[n][index] for n in POSITIONS}
    positions["END"] = lengths - 1
    examples = [make_example(_prompt(batch, i), _prompt(batch, c),
                             bool(batch.examples[i].meta.get("spaces", False)))
                for i, c in zip(index, partner, strict=True)]
    return TaskBatch(
        task="arith", clean=pad_rows(clean), corrupt=pad_rows(corrupt),
        mask=(torch.arange(width)[None] < lengths[:, None]).long(), lengths=lengths,
        answer_ids=torch.tensor([[_unit(batch, i, step)] for i in index]),
        wrong_ids=torch.tensor([[_unit(batch, c, step)] for c in partner]),
        answer_tokens=[[batch.answer_tokens[i][0][step:]] for i in index],
        wrong_tokens=[[batch.answer_tokens[c][0][step:]] for c in partner],
        positions=positions, examples=examples, dropped=dict(dropped))


def _prompt(batch: TaskBatch, i: int) -> ArithPrompt:
    meta = batch.examples[i].meta
    return ArithPrompt(meta["op1"], meta["op"], meta["op2"])


def _excluded(model: Model, exclude) -> set[tuple[int, str, int]]:
    """The ``(op1, op, op2)`` triples to leave out (module docstring)."""
    if exclude is None:
        return training_operands(model)
    return {(p.op1, p.operator, p.op2) if isinstance(p, ArithPrompt) else
            (int(p[0]), str(p[1]), int(p[2])) for p in exclude}


def _legal(op: str, op_min: int, op_max: int, bound: int,
           skip: set[tuple[int, str, int]], dropped: Counter) -> list[ArithPrompt]:
    """The grid of ``op`` without the ``skip`` triples (counted in ``dropped``); a clear
    error when nothing is left."""
    grid = arith_grid(op, op_min, op_max, bound)
    if not skip:
        return grid
    kept = [p for p in grid if (p.op1, p.operator, p.op2) not in skip]
    dropped[EXCLUDED] += len(grid) - len(kept)
    if grid and not kept:
        raise TaskError(f"all {len(grid)} legal prompts of {op!r} with operands in "
                        f"[{op_min}, {op_max}) are training prompts of the fine-tune "
                        f"({len(skip)} recorded): no prompt is left to analyse; widen the "
                        "grid (op_max)")
    return kept


def arithmetic_batch(model: Model, operators="+", *, op_min: int = 0, op_max: int = 100,
                     result_max: int | None = None, n: int | None = 200,
                     counterfactual_operators=None, step: int = 0, spaces: bool = False,
                     check_end: bool = True, require_correct: bool = True, seed: int = 0,
                     batch_size: int = 64, exclude=None) -> TaskBatch:
    """Correctly answered prompts of ``operators`` with counterfactuals, as a TaskBatch.

    Args:
        operators: ``"+,-"`` or a list; the prompts' operators.
        op_min, op_max: operands in ``[op_min, op_max)``; results in ``[0, result_max]``
            (default: the largest result of the grid; give the largest single-token number for
            whole-number tokenizers).
        n: prompts drawn (without replacement) from the grid before the correctness filter
            (``None``: the whole grid). Fewer survive.
        counterfactual_operators: operators the counterfactual pool draws from (default: the
            same as ``operators``; the paper uses all four).
        step: which answer token is the unit (earlier ones teacher-forced).
        require_correct: ``False`` skips the correctness filter (benchmarks, untrained models).
        exclude: prompts never used (module docstring; default: the fine-tune's training
            prompts recorded in the model's folder).

    Returns:
        a TaskBatch: ``clean`` the prompts, ``corrupt`` the counterfactuals, ``answers`` the
        unit token of r, ``wrong_ids`` that of r'; positions OP1, OPERATOR, OP2, EQ, END;
        ``examples[i].meta`` holds op1, op2, op, result (and ``cf_*`` of the counterfactual);
        ``dropped`` counts prompts lost to each filter (``EXCLUDED``: training prompts left
        out of the grid before sampling).
    """
    ops = parse_operators(operators)
    cf_ops = parse_operators(counterfactual_operators or ops)
    bound = 10 ** 9 if result_max is None else result_max
    rng = random.Random(f"arith:{seed}")
    skip, excluded = _excluded(model, exclude), Counter()
    pools = {}
    for op in dict.fromkeys(ops + cf_ops):
        grid = _legal(op, op_min, op_max, bound, skip, excluded)
        pools[op] = grid if n is None or len(grid) <= n else rng.sample(grid, n)
    prompts = [p for op in dict.fromkeys(ops + cf_ops) for p in pools[op]]
    if not prompts:
        raise TaskError(f"no legal prompt for operators {','.join(ops)} with operands in "
                        f"[{op_min}, {op_max}) and results up to {result_max}")
    base = _base_batch(model, prompts, spaces)
    ok = (answered_correctly(model, base, check_end=check_end, batch_size=batch_size)
          if require_correct else torch.ones(len(base), dtype=torch.bool))
    dropped = Counter(base.dropped) + excluded
    dropped["answered incorrectly"] += int((~ok).sum())
    units = [_unit(base, i, step) for i in range(len(base))]
    dropped[f"answer has no token {step}"] += sum(u is None for u in units)
    correct = [i for i in range(len(base)) if ok[i] and units[i] is not None]
    pool: dict[int, list[int]] = {}
    for i in correct:
        if base.examples[i].meta["op"] in cf_ops:
            pool.setdefault(int(base.lengths[i]), []).append(i)
    index, partner = [], []
    for i in correct:
        if base.examples[i].meta["op"] not in ops:
            continue
        options = [c for c in pool.get(int(base.lengths[i]), []) if units[c] != units[i]]
        if not options:
            dropped["no correct counterfactual of the same length"] += 1
            continue
        index.append(i)
        partner.append(rng.choice(options))
    if not index:
        raise TaskError(f"no prompt of {','.join(ops)} is answered correctly (with a "
                        f"counterfactual) among {len(base)}: {dict(dropped)}; fine-tune the "
                        "model first or widen the grid")
    return _assemble(base, index, partner, step, model.tokenization.pad_token_id,
                     {k: v for k, v in dropped.items() if v})


def grid_batch(model: Model, operator: str, *, op_min: int = 0, op_max: int = 100,
               result_max: int | None = None, fraction: float = 1.0, n: int | None = None,
               step: int = 0, spaces: bool = False, seed: int = 0,
               exclude=None) -> TaskBatch:
    """Every legal prompt of one operator (or a random ``fraction`` of them, or at most ``n``
    random ones), correct or not, without ``exclude`` (default: the fine-tune's training
    prompts; counted in ``dropped[EXCLUDED]``),
    teacher-forced to ``step`` with the true answer: the grid that key maps are read on.
    ``clean == corrupt``; ``answers`` is the true answer's unit token."""
    (op,) = parse_operators(operator)
    if not 0 < fraction <= 1:
        raise TaskError(f"fraction must be in (0, 1], got {fraction}")
    excluded: Counter = Counter()
    prompts = _legal(op, op_min, op_max, 10 ** 9 if result_max is None else result_max,
                     _excluded(model, exclude), excluded)
    keep = max(1, int(len(prompts) * fraction))
    if n is not None:
        keep = min(keep, n)
    if keep < len(prompts):
        prompts = random.Random(f"grid:{seed}").sample(prompts, keep)
    if not prompts:
        raise TaskError(f"no legal prompt for {op!r} with operands in [{op_min}, {op_max})")
    base = _base_batch(model, prompts, spaces)
    index = [i for i in range(len(base)) if _unit(base, i, step) is not None]
    if not index:
        raise TaskError(f"no answer of the grid has a token {step}")
    return _assemble(base, index, index, step, model.tokenization.pad_token_id,
                     dict(Counter(base.dropped) + excluded))
