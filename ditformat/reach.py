"""Buffer reach: how many elements each binding of a dispatch touches, from its params (ditformat/reach.json, one
rule per op), so that both verifiers refuse a dispatch that would read or write past a buffer before anything runs
(WebGPU would clamp the access and compute garbage; the WebAssembly runtime would touch a neighbour). The rules are
expressions in a small language (reach.json "_doc"), parsed here into a tree and compiled to Python (integers: exact,
floor division); web/bundle.js parses and evaluates the same expressions with BigInt and floor division. Standard library only."""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

REACH = json.loads((Path(__file__).resolve().parent / "reach.json").read_text())
_TOKEN = re.compile(r"\s*(?:([0-9]+)|(\$?[A-Za-z_][A-Za-z0-9_]*)|(.))")
FUNCTIONS = {"cdiv": 2, "max": 2, "min": 2, "eq": 2}


class ReachError(ValueError):
    """A rule cannot be evaluated for a dispatch (a divisor is 0, a param or variant value is missing)."""


@lru_cache(maxsize=None)
def parse(text: str):
    """An expression -> a tree of tuples: ("int", v), ("name", n), ("call", f, args), (op, a, b), ("neg", a)."""
    toks = [m.group(1) or m.group(2) or m.group(3) for m in _TOKEN.finditer(text) if m.group(0).strip()]
    pos = [0]

    def peek():
        return toks[pos[0]] if pos[0] < len(toks) else None

    def take(want=None):
        t = peek()
        if t is None or (want is not None and t != want):
            raise AssertionError(f"reach.json: bad expression {text!r}")
        pos[0] += 1
        return t

    def expr():
        node = term()
        while peek() in ("+", "-"):
            node = (take(), node, term())
        return node

    def term():
        node = factor()
        while peek() in ("*", "/", "%"):
            node = (take(), node, factor())
        return node

    def factor():
        t = take()
        if t == "(":
            node = expr()
            take(")")
            return node
        if t == "-":
            return ("neg", factor())
        if t.isdigit():
            return ("int", int(t))
        if t in FUNCTIONS:
            take("(")
            args = [expr()]
            while peek() == ",":
                take()
                args.append(expr())
            take(")")
            return ("call", t, tuple(args))
        return ("name", t)
    node = expr()
    if peek() is not None:
        raise AssertionError(f"reach.json: bad expression {text!r}")
    return node


def _python(node) -> str:
    """An expression tree as Python source over a dict of names (floor division and modulo are Python's)."""
    kind = node[0]
    if kind == "int":
        return str(node[1])
    if kind == "name":
        return f"_env[{node[1]!r}]"
    if kind == "neg":
        return f"(-{_python(node[1])})"
    if kind == "call":
        return f"_{node[1]}({', '.join(_python(x) for x in node[2])})"
    return f"({_python(node[1])} {'//' if kind == '/' else kind} {_python(node[2])})"


_CALLS = {"_cdiv": lambda a, b: -(-a // b), "_max": max, "_min": min, "_eq": lambda a, b: int(a == b)}


@lru_cache(maxsize=None)
def compiled(text: str):
    """The rule text compiled once (rules come from reach.json, never from a bundle)."""
    return compile(_python(parse(text)), f"<reach {text}>", "eval")


def fast_evaluate(text: str, env: dict) -> int:
    """The value of a rule expression over `env` (params, batch, variant values, lets); ReachError if it cannot."""
    try:
        return eval(compiled(text), {"__builtins__": {}, **_CALLS}, {"_env": env})
    except ZeroDivisionError:
        raise ReachError(f"division by zero in {text}") from None
    except KeyError as e:
        name = e.args[0]
        raise ReachError(f"{'variant value ' + name[1:] if name.startswith('$') else 'param ' + name} is missing "
                         f"(needed by {text})") from None


def rule(op: str) -> dict | None:
    """The reach rule of an op (candidates share their design's), None for an op the format does not know."""
    return REACH["ops"].get(REACH["aliases"].get(op, op))


def reach(kernel: dict, values: list[int], B: int, N: int, groups: list[int]) -> list[int]:
    """Elements each binding (1, 2, ...) of a dispatch of `kernel` reaches with evaluated params `values` at batch
    (B, N) and workgroup counts `groups`; ReachError if the op has no rule or a divisor is not positive."""
    r = rule(kernel["op"])
    if r is None:
        raise ReachError(f"op {str(kernel['op'])[:40]!r} is not an op of this format (no reach rule)")
    env = dict(zip(kernel["params"], values))
    env.update({"$B": B, "$N": N, "$g0": groups[0], "$g1": groups[1], "$g2": groups[2]})
    for k, v in kernel.get("variant", {}).items():
        if isinstance(v, int) and not isinstance(v, bool):
            env["$" + k] = v
    for text in r["divisors"]:
        v = fast_evaluate(text, env)
        if v <= 0:
            raise ReachError(f"{text} = {v}: a size parameter is 0")
    lets = r.get("let", {})
    for name, text in (REACH["lets"][lets] if isinstance(lets, str) else lets).items():
        env[name] = fast_evaluate(text, env)
    need = [fast_evaluate(text, env) for text in r["need"]]
    if len(need) != len(kernel["bindings"]) - 1:
        raise ReachError(f"op {kernel['op']} binds {len(need)} buffers, the kernel declares {len(kernel['bindings']) - 1}")
    return need
