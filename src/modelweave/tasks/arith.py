"""Arithmetic prompts as Nikankin et al. (2024) build them: ``"{x}{op}{y}="``.

No spaces by default (``spaces=True`` writes ``"x op y ="`` and answers with a leading space),
zero-shot, operators ``+ - * /`` where ``/`` is integer division. Operands lie in
``[op_min, op_max)`` (``[max(op_min, 1), op_max)`` for ``/``); a prompt is legal when its
result lies in ``[0, result_max]`` (subtraction is never negative). Named positions: ``OP1``,
``OPERATOR``, ``OP2``, ``EQ`` (the last token of each).

:func:`arith_grid` enumerates every legal ``(op1, op, op2)``; the task samples from it. The
task's corruption is a random other legal prompt of the chosen operators with operands of the
same digit counts (so digit-splitting tokenizers give prompts of the same length). Keeping only
prompts the model answers correctly, and counterfactuals drawn from *correct* prompts, needs a
model: see :mod:`modelweave.analysis.heuristics.prompts`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

from .base import Example, Task, TaskError, pair, register

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv}


@dataclass(frozen=True)
class ArithPrompt:
    """One legal prompt of the grid: ``op1 operator op2 = result``."""

    op1: int
    operator: str
    op2: int

    @property
    def result(self) -> int:
        return OPS[self.operator](self.op1, self.op2)


def parse_operators(operators: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"+,-"`` or ``["+", "-"]`` -> ``("+", "-")``; a clear error for anything else."""
    ops = [o.strip() for o in operators.split(",")] if isinstance(operators, str) else list(
        operators)
    bad = [o for o in ops if o not in OPS]
    if not ops or bad:
        raise TaskError(f"unknown arithmetic operator {bad[0] if bad else ''!r}; operators are "
                        "+, -, *, / (integer division), e.g. '+,-'")
    return tuple(dict.fromkeys(ops))


def arith_grid(operators, op_min: int = 0, op_max: int = 100,
               result_max: int = 999) -> list[ArithPrompt]:
    """Every legal prompt of ``operators`` (see the module docstring), operator-major, then op1,
    then op2."""
    if not 0 <= op_min < op_max:
        raise TaskError(f"operand range [{op_min}, {op_max}) is empty or negative")
    out = []
    for op in parse_operators(operators):
        low = max(op_min, 1) if op == "/" else op_min
        for a in range(op_min, op_max):
            for b in range(low, op_max):
                r = OPS[op](a, b)
                if 0 <= r <= result_max:
                    out.append(ArithPrompt(a, op, b))
    return out


def format_prompt(p: ArithPrompt, spaces: bool = False) -> tuple[str, dict[str, str]]:
    """The template and slot values of a prompt (``fill`` them to get the text)."""
    template = "{OP1} {OPERATOR} {OP2} {EQ}" if spaces else "{OP1}{OPERATOR}{OP2}{EQ}"
    return template, {"OP1": str(p.op1), "OPERATOR": p.operator, "OP2": str(p.op2), "EQ": "="}


def make_example(p: ArithPrompt, counterfactual: ArithPrompt, spaces: bool = False,
                 end: str = "") -> Example:
    """A clean/counterfactual pair; the wrong answer is the counterfactual's result. ``end`` is
    appended to both answers (``"\n"`` teaches a fine-tuned model where a number stops)."""
    template, clean = format_prompt(p, spaces)
    _, corrupt = format_prompt(counterfactual, spaces)
    lead = " " if spaces else ""
    return pair(template, clean, corrupt, [f"{lead}{p.result}{end}"],
                [f"{lead}{counterfactual.result}{end}"], op1=p.op1, op2=p.op2, op=p.operator,
                result=p.result, cf_op1=counterfactual.op1, cf_op2=counterfactual.op2,
                cf_op=counterfactual.operator, cf_result=counterfactual.result,
                spaces=spaces)


def _shape(p: ArithPrompt) -> tuple[int, int]:
    return len(str(p.op1)), len(str(p.op2))


@register
class Arith(Task):
    """'23+45=' -> '68', as in Nikankin et al. 2024: no spaces, + - * / (integer division).

    Parameters: ``operators`` ("+,-"), operands in ``[op_min, op_max)``, results in
    ``[0, result_max]``, ``spaces``, ``end`` (appended to answers: fine-tuning with ``"\n"``
    and ``scoring="full"`` teaches where a number stops). The corruption is another legal
    prompt of the operators (any of them) with operands of the same digit counts and a
    different result."""

    name = "arith"
    description = "'23+45=' -> '68' (paper template; operators, ranges are parameters)"
    metric = "logit_diff"
    corruptions = ("counterfactual",)
    defaults = {"operators": "+", "op_min": 0, "op_max": 100, "result_max": 999,
                "spaces": False, "end": ""}

    def _grid(self) -> list[ArithPrompt]:
        key = tuple(self.params[k] for k in ("operators", "op_min", "op_max", "result_max"))
        if getattr(self, "_grid_key", None) != key:
            self._grid_key = key
            self._cached = arith_grid(self.params["operators"], *key[1:])
            if not self._cached:
                raise TaskError(f"arith: no legal prompt for {self.params}")
            self._by_shape: dict[tuple[int, int], list[ArithPrompt]] = {}
            for p in self._cached:
                self._by_shape.setdefault(_shape(p), []).append(p)
        return self._cached

    def example(self, rng, index, tokenizer) -> Example:
        grid = self._grid()
        p = rng.choice(grid)
        same = self._by_shape[_shape(p)]
        for _ in range(100):
            cf = rng.choice(same)
            if cf.result != p.result:
                break
        return make_example(p, cf, bool(self.params["spaces"]), str(self.params["end"]))
