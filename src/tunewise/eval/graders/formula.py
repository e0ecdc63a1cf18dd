"""``calculate_output``: a safe arithmetic evaluator for multi graders (never Python's ``eval``).

The formula is parsed with :mod:`ast` and only these nodes are walked: numbers, the sub-graders' names,
``+ - * / // % ^ **`` (``^`` is a power, as in OpenAI's formulas), unary ``+ -``, parentheses and calls of
``min max abs floor ceil exp sqrt log round clip``. Anything else (attributes, subscripts, strings, lambdas,
comparisons, names that are not sub-graders) is refused when the grader is loaded, with the position.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping

MAX_FORMULA_CHARS = 2000
MAX_POWER = 1000.0


class FormulaError(ValueError):
    """The formula cannot be parsed or evaluated; the message says where and why."""


def _clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


FUNCTIONS: dict[str, tuple[Callable[..., float], int, int | None]] = {
    # name: (function, min args, max args or None for any)
    "min": (min, 1, None),
    "max": (max, 1, None),
    "abs": (abs, 1, 1),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "exp": (math.exp, 1, 1),
    "sqrt": (math.sqrt, 1, 1),
    "log": (math.log, 1, 2),
    "round": (lambda x, n=0: round(x, int(n)), 1, 2),
    "clip": (_clip, 3, 3),
}

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
    ast.Pow: None,
}


def _where(node: ast.AST) -> str:
    col = getattr(node, "col_offset", None)
    return f" at character {col + 1}" if col is not None else ""


def parse(formula: str, variables: set[str] | frozenset[str]) -> ast.Expression:
    """Parse and check ``formula``; every name must be in ``variables``. Raises :class:`FormulaError`."""
    if not isinstance(formula, str) or not formula.strip():
        raise FormulaError("the formula is empty")
    if len(formula) > MAX_FORMULA_CHARS:
        raise FormulaError(f"the formula is {len(formula)} characters long (at most {MAX_FORMULA_CHARS})")
    try:
        # ``^`` is a power in OpenAI's formulas; written as ``**`` it also binds like one (Python's ``^`` is
        # a bitwise operator with a lower precedence than ``+``).
        tree = ast.parse(formula.strip().replace("^", "**"), mode="eval")
    except SyntaxError as exc:
        raise FormulaError(f"it is not an arithmetic expression ({exc.msg} at character {exc.offset})") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Expression | ast.Load):
            continue
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise FormulaError(f"{node.value!r}{_where(node)} is not a number")
        elif isinstance(node, ast.Name):
            if node.id not in variables and node.id not in FUNCTIONS:
                known = ", ".join(sorted(variables)) or "none"
                raise FormulaError(f"unknown name '{node.id}'{_where(node)} (the sub-graders are: {known})")
            if node.id in FUNCTIONS and node.id not in variables:
                # A bare function name is only allowed as the callee of a call; checked below.
                pass
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BINARY:
                raise FormulaError(f"operator {type(node.op).__name__}{_where(node)} is not allowed "
                                   "(use + - * / // % ^ **)")
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.UAdd | ast.USub):
                raise FormulaError(f"operator {type(node.op).__name__}{_where(node)} is not allowed")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                raise FormulaError(f"only the functions {', '.join(FUNCTIONS)} may be called{_where(node)}")
            if node.keywords:
                raise FormulaError(f"{node.func.id}(){_where(node)} takes no keyword arguments")
            _, lo, hi = FUNCTIONS[node.func.id]
            if len(node.args) < lo or (hi is not None and len(node.args) > hi):
                count = f"{lo}" if lo == hi else f"{lo} or more" if hi is None else f"{lo} to {hi}"
                raise FormulaError(f"{node.func.id}(){_where(node)} takes {count} argument(s), "
                                   f"not {len(node.args)}")
            if any(isinstance(a, ast.Starred) for a in node.args):
                raise FormulaError(f"*arguments are not allowed{_where(node)}")
        elif isinstance(node, ast.operator | ast.unaryop):
            continue
        else:
            raise FormulaError(f"{type(node).__name__}{_where(node)} is not allowed in a formula "
                               "(numbers, sub-grader names, arithmetic and min/max/abs/... only)")
    # Bare function names used as values (``min + 1``) are refused.
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in FUNCTIONS and node.id not in variables:
            parent_ok = any(isinstance(p, ast.Call) and p.func is node for p in ast.walk(tree))
            if not parent_ok:
                raise FormulaError(f"'{node.id}'{_where(node)} is a function; call it, e.g. {node.id}(a, b)")
    return tree


def evaluate(formula: str | ast.Expression, values: Mapping[str, float]) -> float:
    """The formula's value for ``values`` (name -> number). Raises :class:`FormulaError` on a math error."""
    tree = formula if isinstance(formula, ast.Expression) else parse(formula, set(values))

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in values:
                raise FormulaError(f"no value for '{node.id}'")
            return float(values[node.id])
        if isinstance(node, ast.UnaryOp):
            x = walk(node.operand)
            return -x if isinstance(node.op, ast.USub) else x
        if isinstance(node, ast.BinOp):
            a, b = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow):
                if abs(b) > MAX_POWER:
                    raise FormulaError(f"exponent {b:g}{_where(node)} is too large")
                return float(a ** b) if not (a < 0 and b != int(b)) else _fail("a negative number to a "
                                                                                  "fractional power", node)
            return float(_BINARY[type(node.op)](a, b))
        if isinstance(node, ast.Call):
            fn = FUNCTIONS[node.func.id][0]
            return float(fn(*[walk(a) for a in node.args]))
        raise FormulaError(f"{type(node).__name__} is not allowed")

    try:
        result = walk(tree)
    except FormulaError:
        raise
    except ZeroDivisionError:
        raise FormulaError("division by zero") from None
    except (ValueError, OverflowError, TypeError) as exc:
        raise FormulaError(f"math error: {exc}") from None
    if math.isnan(result) or math.isinf(result):
        raise FormulaError(f"the result is {result}")
    return result


def _fail(what: str, node: ast.AST) -> float:
    raise FormulaError(f"{what}{_where(node)}")
