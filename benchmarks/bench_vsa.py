"""Encode/decode throughput of SymbolicEngine vs a per-sample Python loop doing the same algebra.

Run: OMP_NUM_THREADS=1 python benchmarks/bench_vsa.py [--batch 10000] [--loop 300]

The loop is what a straightforward implementation does: per problem, FFT-bind each digit value to
its position and the operand to its role (encode); unbind the role, then each position, and compare
with the ten digit values one digit at a time, reading each decision back as a Python number
(decode). It runs on the first ``--loop`` problems and its rate is extrapolated; its outputs are
checked against the engine's on those problems.
"""
import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from neurosymbolic_llm.symbolic import vsa  # noqa: E402
from neurosymbolic_llm.symbolic.engine import SymbolicEngine  # noqa: E402
from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES  # noqa: E402


def loop_encode(eng, x, y, t):
    values, positions = eng.values, eng.positions
    n1, n2 = eng.roles["n1"], eng.roles["n2"]
    out = []
    for a, b, p in zip(x.tolist(), y.tolist(), t.tolist()):
        s = eng.type_atoms[p].clone()
        for role, n in ((n1, a), (n2, b)):
            num = torch.zeros_like(s)
            for k in range(eng.max_digits):
                num = num + vsa.bind(positions[k], values[(n // 10 ** k) % 10])
            s = s + vsa.bind(role, num)
        out.append(s)
    return torch.stack(out)


def loop_decode(eng, S):
    values, positions = eng.values, eng.positions
    res = []
    for s in S:
        nums = []
        for role in (eng.roles["n1"], eng.roles["n2"]):
            u = vsa.unbind(s, role)
            n = 0
            for k in range(eng.max_digits):
                sims = values @ vsa.unbind(u, positions[k])
                best, arg = sims.max(0)
                if best.item() > 0.5:
                    n += 10 ** k * int(arg)
            nums.append(n)
        res.append(nums)
    return torch.tensor(res)


def best_of(fn, reps=3):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--loop", type=int, default=300)
    ap.add_argument("--max_digits", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    eng = SymbolicEngine(VSA_dim=2048, max_digits=args.max_digits)
    g = torch.Generator().manual_seed(0)
    B, L = args.batch, args.loop
    hi = 10 ** args.max_digits
    x = torch.randint(0, hi, (B,), generator=g)
    y = torch.randint(0, hi, (B,), generator=g)
    t = torch.randint(0, len(PROBLEM_TYPES), (B,), generator=g)

    t_enc, S = best_of(lambda: eng.encode_problem(x, y, t))
    t_dec, dec = best_of(lambda: torch.stack([eng.decode_number(S, "n1"), eng.decode_number(S, "n2")], 1))
    assert torch.equal(dec, torch.stack([x, y], 1)), "engine decode is wrong"

    t0 = time.perf_counter()
    S_loop = loop_encode(eng, x[:L], y[:L], t[:L])
    tl_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    dec_loop = loop_decode(eng, S[:L])
    tl_dec = time.perf_counter() - t0
    assert torch.allclose(S_loop, S[:L], atol=1e-5), "encode outputs differ"
    assert torch.equal(dec_loop, dec[:L]), "decode outputs differ"

    rate = lambda n, s: n / s  # noqa: E731
    enc_e, enc_l = rate(B, t_enc), rate(L, tl_enc)
    dec_e, dec_l = rate(B, t_dec), rate(L, tl_dec)
    print(f"VSA_dim 2048, max_digits {args.max_digits}, threads {torch.get_num_threads()}, "
          f"engine batch {B}, loop {L} problems (outputs checked equal)")
    print(f"{'':8s}{'engine (problems/s)':>22s}{'loop (problems/s)':>20s}{'ratio':>10s}")
    print(f"{'encode':8s}{enc_e:22,.0f}{enc_l:20,.0f}{enc_e / enc_l:9.1f}x   (goal >= 20x)")
    print(f"{'decode':8s}{dec_e:22,.0f}{dec_l:20,.0f}{dec_e / dec_l:9.1f}x   (goal >= 30x)")


if __name__ == "__main__":
    main()
