"""The vectorised solver against plain Python integer arithmetic."""
import math
import random

import pytest
import torch

from neurosymbolic_llm.pipeline.errors import UserError
from neurosymbolic_llm.symbolic.solver import OPERATIONS, solve, solve_one
from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device")])]


def reference(name, x, y, mod):
    """Independent Python reference (written from the spec, not from solver.py)."""
    if name == "addition":
        return x + y
    if name == "multiplication":
        return x * y if mod is None else x * y % mod
    if name == "division":
        return x // y if y else 0
    if name == "modulo":
        return x % y if y else 0
    if name == "gcd":
        return math.gcd(x, y)
    if name == "lcm":
        return math.lcm(x, y) if mod is None else math.lcm(x, y) % mod
    if name == "square_mod":
        return pow(x, 2, y) if y else 0
    return {"bitwise_and": x & y, "bitwise_xor": x ^ y, "bitwise_or": x | y}[name]


def cases(hi, n=300, seed=0):
    r = random.Random(seed)
    edge = [0, 1, 2, hi - 1, hi - 2, hi // 2]
    pairs = [(a, b) for a in edge for b in edge]
    pairs += [(a, a) for a in (3, 7, 12, hi - 1)]
    pairs += [(r.randrange(hi), r.randrange(hi)) for _ in range(n)]
    return pairs


def test_table_covers_problem_types():
    # the paper's ten types in its order (the order fixes type ids and codebook atoms)
    assert PROBLEM_TYPES == ("addition", "multiplication", "division", "modulo", "gcd", "lcm", "square_mod",
                             "bitwise_and", "bitwise_xor", "bitwise_or")
    assert tuple(OPERATIONS) == PROBLEM_TYPES


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("complexity,limit,hi", [(2, True, 1000), (2, False, 1000),
                                                 (4, True, 10 ** 5), (9, True, 10 ** 10),
                                                 (2, False, 3 * 10 ** 9)])
def test_solve_matches_python(device, complexity, limit, hi):
    pairs = cases(hi)
    mod = 10 ** (complexity + 1) if limit else None
    for tid, name in enumerate(PROBLEM_TYPES):
        want = [reference(name, a, b, mod) for a, b in pairs]
        x = torch.tensor([a for a, _ in pairs], device=device)
        y = torch.tensor([b for _, b in pairs], device=device)
        got = solve(torch.full_like(x, tid), x, y, complexity=complexity, limit_solution_digits=limit)
        assert got.dtype == torch.long and got.device.type == device
        assert got.tolist() == want, name
        assert [solve_one(name, a, b, complexity=complexity, limit_solution_digits=limit)
                for a, b in pairs] == want, name


def test_mixed_batch_subset_problem_list_and_invalid_ids():
    r = random.Random(1)
    plist = ["gcd", "square_mod", "bitwise_xor"]
    B = 500
    ids = [r.randrange(len(plist)) for _ in range(B)]
    xs = [r.randrange(1000) for _ in range(B)]
    ys = [r.randrange(1000) for _ in range(B)]
    got = solve(torch.tensor(ids), torch.tensor(xs), torch.tensor(ys), problem_list=plist)
    assert got.tolist() == [reference(plist[i], a, b, 1000) for i, a, b in zip(ids, xs, ys)]
    out = solve(torch.tensor([-1, 3, 0]), torch.tensor([4, 4, 4]), torch.tensor([6, 6, 6]),
                problem_list=plist)
    assert out.tolist() == [0, 0, 2]


def test_solve_one_unknown_type():
    with pytest.raises(UserError, match="unknown problem type 'power'"):
        solve_one("power", 2, 3)
