"""Tasks about numbers: greater-than (Hanna et al. 2023) and arithmetic."""

from __future__ import annotations

import operator

from .base import Example, Task, TaskError, n_tokens, pair, register, splits_digits

GT_NOUNS = ["war", "expedition", "siege", "project", "reign", "drought", "strike", "famine",
            "journey", "trial", "dynasty", "campaign", "crisis", "voyage"]


@register
class GreaterThan(Task):
    """"The war lasted from the year 1732 to the year 17" -> a year above 32.

    Answers are every two-digit year above YY, wrong answers every year at or below it; the
    default metric is the probability mass above minus the mass at or below. Tokenizers that
    write numbers one digit per token get the same question one digit later: "... to the year
    173" -> a digit above 2. Named positions: XX (century), YY (start year), END.
    Corruption ``01``: the start year becomes XX01, so nearly every year is valid."""

    name = "greater_than"
    description = "'lasted from the year 1732 to the year 17' -> a year above 32"
    metric = "prob_diff"
    corruptions = ("01",)

    def example(self, rng, index, tokenizer) -> Example:
        xx = rng.randint(11, 19)
        noun = rng.choice(GT_NOUNS)
        if splits_digits(tokenizer):
            tens, unit = rng.randint(0, 9), rng.randint(1, 8)
            template = f"The {{NOUN}} lasted from the year {{XX}}{{YY}} to the year {xx}{tens}"
            clean = {"NOUN": noun, "XX": str(xx), "YY": f"{tens}{unit}"}
            corrupt = {**clean, "YY": f"{tens}0"}
            above = [str(d) for d in range(unit + 1, 10)]
            below = [str(d) for d in range(0, unit + 1)]
            return pair(template, clean, corrupt, above, below, year=xx * 100 + tens * 10 + unit)
        years = list(range(2, 99))
        if tokenizer is not None:  # start years that tokenize like the corrupted XX01
            target = n_tokens(tokenizer, f" {xx}01")
            years = [y for y in years if n_tokens(tokenizer, f" {xx}{y:02d}") == target] or years
        yy = rng.choice(years)
        template = f"The {{NOUN}} lasted from the year {{XX}}{{YY}} to the year {xx}"
        clean = {"NOUN": noun, "XX": str(xx), "YY": f"{yy:02d}"}
        corrupt = {**clean, "YY": "01"}
        above = [f"{y:02d}" for y in range(yy + 1, 100)]
        below = [f"{y:02d}" for y in range(0, yy + 1)]
        return pair(template, clean, corrupt, above, below, year=xx * 100 + yy)


_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv}
_UNICODE = {"+": "+", "-": "−", "*": "×", "/": "÷"}


@register
class Arithmetic(Task):
    """"23 + 45 =" -> " 68". Parameters: ``op`` (+, -, *, / or mixed), operand range
    ``operand_min``/``operand_max``, result range ``result_min``/``result_max``, and
    ``symbols`` (ascii: + - * /, unicode: + − × ÷). Division is exact. Named positions: OP1,
    OPERATOR, OP2, EQ, END. Corruptions: ``random_operands`` (other operands of the same digit
    counts), ``swap_operands``, ``operator`` (another operator). The wrong answer is the
    corrupted prompt's result, or the result plus one where that is the same."""

    name = "arithmetic"
    description = "'23 + 45 =' -> ' 68' (operators and ranges are parameters)"
    metric = "logit_diff"
    corruptions = ("random_operands", "swap_operands", "operator")
    defaults = {"op": "+", "operand_min": 1, "operand_max": 50, "result_min": 0,
                "result_max": 99, "symbols": "ascii"}

    def _operands(self, rng, op: str) -> tuple[int, int, int]:
        p = self.params
        for _ in range(1000):
            a, b = rng.randint(p["operand_min"], p["operand_max"]), rng.randint(
                p["operand_min"], p["operand_max"])
            if op == "/":
                if b == 0:
                    continue
                a = a * b
            result = _OPS[op](a, b)
            if p["result_min"] <= result <= p["result_max"]:
                return a, b, result
        raise TaskError(f"arithmetic: no operands in [{p['operand_min']}, {p['operand_max']}] "
                        f"give a result in [{p['result_min']}, {p['result_max']}] for {op!r}")

    def example(self, rng, index, tokenizer) -> Example:
        ops = list(_OPS) if self.params["op"] == "mixed" else [self.params["op"]]
        if any(o not in _OPS for o in ops):
            raise TaskError("arithmetic op must be one of +, -, *, / or mixed")
        op = rng.choice(ops)
        a, b, result = self._operands(rng, op)
        symbol = (lambda o: _UNICODE[o]) if self.params["symbols"] == "unicode" else str
        template = "{OP1} {OPERATOR} {OP2} {EQ}"
        clean = {"OP1": str(a), "OPERATOR": symbol(op), "OP2": str(b), "EQ": "="}
        if self.corruption == "swap_operands":
            c_a, c_op, c_b = b, op, a
        elif self.corruption == "operator":
            c_op = rng.choice([o for o in ("+", "-") if o != op] or ["+"])
            c_a, c_b = a, b
        else:
            for _ in range(1000):
                c_a, c_b, _r = self._operands(rng, op)
                if len(str(c_a)) == len(str(a)) and len(str(c_b)) == len(str(b)):
                    break
            c_op = op
        wrong = _OPS[c_op](c_a, c_b) if c_op != "/" or c_b else result + 1
        if wrong == result:
            wrong = result + 1
        corrupt = {"OP1": str(c_a), "OPERATOR": symbol(c_op), "OP2": str(c_b), "EQ": "="}
        return pair(template, clean, corrupt, [f" {result}"], [f" {wrong}"], op=op)
