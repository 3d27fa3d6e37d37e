"""The exact symbolic solver: one table, problem type -> integer function (docs/METHOD.md, "The problems
and the solver").

Each entry of ``OPERATIONS`` holds the pure-Python reference (``python``) and the vectorised torch
form (``torch``) of one problem type. Conventions (both forms):

* operands are non-negative integers;
* multiplication and lcm are reduced mod ``10**(complexity+1)`` when ``limit_solution_digits``;
* division is floor division; division, modulo and square_mod by zero give 0;
* gcd(0, 0) = lcm(0, y) = 0 (as ``math.gcd`` / ``math.lcm``).

The torch forms are int64 throughout and exact as long as the true result fits int64: reduced
products (``a*b mod m``, ``x^2 mod y``) never overflow for moduli below 2^47 (they are computed by
16-bit chunked multiply-mod); an *unreduced* product or lcm (``limit_solution_digits=False``) of
operands whose product exceeds 2^63 wraps around, where Python would give a big integer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from neurosymbolic_llm.errors import UserError, echo
from neurosymbolic_llm.symbolic.problem_types import PROBLEM_TYPES


def _mulmod(a: torch.Tensor, b: torch.Tensor, m) -> torch.Tensor:
    """``(a * b) mod m`` for int64 ``0 <= a, b`` and ``0 < m < 2^47`` without overflow."""
    a = a % m
    b = b % m
    out = torch.zeros_like(a)
    for shift in (32, 16, 0):  # b < 2^47 < 2^48: three 16-bit chunks from the top
        chunk = (b >> shift) & 0xFFFF
        out = ((out << 16) % m + (a * chunk) % m) % m
    return out


def _nz(y: torch.Tensor) -> torch.Tensor:
    """``y`` with zeros replaced by 1 (the result is masked to 0 afterwards)."""
    return torch.where(y == 0, torch.ones_like(y), y)


def _zero_if(y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return torch.where(y == 0, torch.zeros_like(r), r)


def _py_lcm(x: int, y: int) -> int:
    return 0 if x == 0 or y == 0 else x // math.gcd(x, y) * y


def _t_lcm(x, y, mod):
    g = _nz(torch.gcd(x, y))
    q = torch.div(x, g, rounding_mode="floor")
    r = q * y if mod is None else _mulmod(q, y, mod)
    return torch.where((x == 0) | (y == 0), torch.zeros_like(r), r)


@dataclass(frozen=True)
class Operation:
    """One problem type. ``python(x, y, mod)`` / ``torch(x, y, mod)``; ``mod`` is the reduction
    modulus for types with ``limited=True`` (None = no reduction) and ignored otherwise."""
    name: str
    python: Callable
    torch: Callable
    limited: bool = False


OPERATIONS: dict[str, Operation] = {op.name: op for op in [
    Operation("addition", lambda x, y, m: x + y, lambda x, y, m: x + y),
    Operation("multiplication",
              lambda x, y, m: x * y if m is None else (x * y) % m,
              lambda x, y, m: x * y if m is None else _mulmod(x, y, m), limited=True),
    Operation("division", lambda x, y, m: 0 if y == 0 else x // y,
              lambda x, y, m: _zero_if(y, torch.div(x, _nz(y), rounding_mode="floor"))),
    Operation("modulo", lambda x, y, m: 0 if y == 0 else x % y,
              lambda x, y, m: _zero_if(y, x % _nz(y))),
    Operation("gcd", lambda x, y, m: math.gcd(x, y), lambda x, y, m: torch.gcd(x, y)),
    Operation("lcm", lambda x, y, m: _py_lcm(x, y) if m is None else _py_lcm(x, y) % m,
              _t_lcm, limited=True),
    Operation("square_mod", lambda x, y, m: 0 if y == 0 else (x * x) % y,
              lambda x, y, m: _zero_if(y, _mulmod(x, x, _nz(y)))),
    Operation("bitwise_and", lambda x, y, m: x & y, lambda x, y, m: x & y),
    Operation("bitwise_xor", lambda x, y, m: x ^ y, lambda x, y, m: x ^ y),
    Operation("bitwise_or", lambda x, y, m: x | y, lambda x, y, m: x | y),
]}
if tuple(OPERATIONS) != PROBLEM_TYPES:  # one entry per problem type, in the order that fixes the ids
    raise ImportError(f"solver.OPERATIONS {tuple(OPERATIONS)} does not follow problem_types.PROBLEM_TYPES")


def solution_modulus(complexity: int = 2, limit_solution_digits: bool = True) -> int | None:
    """The modulus of multiplication and lcm answers: ``10**(complexity+1)`` or None."""
    return 10 ** (int(complexity) + 1) if limit_solution_digits else None


def _op(name: str) -> Operation:
    try:
        return OPERATIONS[name]
    except KeyError:
        raise UserError(f"unknown problem type {echo(name)} (known: {', '.join(PROBLEM_TYPES)})") from None


def solve_one(name: str, x: int, y: int, *, complexity: int = 2, limit_solution_digits: bool = True) -> int:
    """Pure-Python exact answer of one problem (the reference for CSV validation)."""
    op = _op(name)
    mod = solution_modulus(complexity, limit_solution_digits) if op.limited else None
    return int(op.python(int(x), int(y), mod))


def solve(type_ids: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *,
          problem_list: Sequence[str] = PROBLEM_TYPES, complexity: int = 2,
          limit_solution_digits: bool = True) -> torch.Tensor:
    """Vectorised exact answers: ``type_ids, x, y [B] long -> [B] long`` (device of ``x``).

    ``type_ids`` index ``problem_list``; ids outside ``[0, len(problem_list))`` give 0. Every type
    is evaluated on the whole batch and the right one is picked per row (no host sync).
    """
    x = torch.as_tensor(x).long()
    y = torch.as_tensor(y, device=x.device).long()
    ids = torch.as_tensor(type_ids, device=x.device).long()
    mod = solution_modulus(complexity, limit_solution_digits)
    results = torch.stack([_op(n).torch(x, y, mod if _op(n).limited else None) for n in problem_list])
    valid = (ids >= 0) & (ids < len(problem_list))
    picked = results.gather(0, ids.clamp(0, len(problem_list) - 1)[None])[0]
    return torch.where(valid, picked, torch.zeros_like(picked))
