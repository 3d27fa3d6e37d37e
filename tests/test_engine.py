"""SymbolicEngine: codebook, encode/decode round trips, problem types, persistence."""
import io
import os
import subprocess
import sys

import pytest
import torch

from neurosymbolic_llm.symbolic import vsa
from neurosymbolic_llm.pipeline.errors import EngineMismatchError, UserError
from neurosymbolic_llm.symbolic.engine import SymbolicEngine
from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device")])]
CHUNK = 10_000


@pytest.fixture(scope="module")
def eng5():
    return SymbolicEngine(VSA_dim=2048, max_digits=5)


def test_codebook_layout_and_properties(eng5):
    cb = eng5.codebook
    assert cb.dtype == torch.float64 and cb.device.type == "cpu"
    assert cb.shape == (4 + len(PROBLEM_TYPES) + 5 - 1, 2048)
    mags = torch.fft.fft(cb, dim=-1).abs()
    assert torch.allclose(mags, torch.ones_like(mags), atol=1e-9)
    gram = cb @ cb.T
    off = gram - torch.diag(torch.diag(gram))
    assert off.abs().max() < 0.1
    d = cb[3 + len(PROBLEM_TYPES)]
    assert torch.allclose(cb[4 + len(PROBLEM_TYPES)], vsa.bind(d, d))  # P_1 = D ⊛ D


def test_all_numbers_round_trip_5_digits(eng5):
    n = torch.arange(10 ** 5)
    for chunk in n.split(CHUNK):
        assert torch.equal(eng5.decode_number(eng5.encode_number(chunk)), chunk)


@pytest.mark.slow
def test_random_numbers_round_trip_10_digits():
    eng = SymbolicEngine(VSA_dim=2048, max_digits=10)
    g = torch.Generator().manual_seed(0)
    n = torch.randint(0, 10 ** 10, (100_000,), generator=g)
    n[:4] = torch.tensor([0, 1, 10 ** 10 - 1, 10 ** 9])
    for chunk in n.split(CHUNK):
        assert torch.equal(eng.decode_number(eng.encode_number(chunk)), chunk)


def _problems(B, hi, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, hi, (B,), generator=g), torch.randint(0, hi, (B,), generator=g),
            torch.randint(0, len(PROBLEM_TYPES), (B,), generator=g))


@pytest.mark.parametrize("hi", [10 ** 3, 10 ** 5])
def test_problems_decode_exactly_and_type_scores(eng5, hi):
    x, y, tp = _problems(10_000, hi, seed=1)
    S = eng5.encode_problem(x, y, tp)
    assert S.shape == (10_000, 2048) and S.dtype == torch.float32
    assert torch.equal(eng5.decode_number(S, "n1"), x)
    assert torch.equal(eng5.decode_number(S, "n2"), y)
    scores = eng5.problem_type_scores(S)
    assert scores.shape == (10_000, len(PROBLEM_TYPES))
    assert torch.equal(scores.argmax(-1), tp)
    true = scores.gather(1, tp[:, None])[:, 0]
    wrong = scores.scatter(1, tp[:, None], float("-inf")).max(-1).values
    assert wrong.max() < 0.5
    assert (true > 0.8).float().mean() >= 0.995
    names, best = eng5.decode_problem_type(S[:50])
    assert names == [PROBLEM_TYPES[i] for i in tp[:50].tolist()]
    assert torch.equal(best, true[:50])
    ids, best2 = eng5.decode_problem_type_ids(S)
    assert torch.equal(ids, tp) and torch.equal(best2, true)


def test_fast_decode_equals_unbind_then_compare(eng5):
    """Keys bind(role, P_k, V_v) give the same scores as unbinding role and position first."""
    x, y, tp = _problems(16, 10 ** 5, seed=2)
    S = eng5.encode_problem(x, y, tp).double()
    for role in (None, "n1", "n2"):
        u = S if role is None else vsa.unbind(S, eng5.codebook[{"n1": 1, "n2": 2}[role]])
        ref = torch.stack([vsa.unbind(u, eng5._positions64[k]) @ eng5._values64.T
                           for k in range(eng5.max_digits)], 1)          # [B, M, 10]
        fast = eng5.to(dtype=torch.float64).digit_scores(S, role)
        eng5.to(dtype=torch.float32)
        assert torch.allclose(fast, ref, atol=1e-9)
        digits = torch.where(ref.max(-1).values > 0.5, ref.argmax(-1), 0)
        assert torch.equal(eng5.decode_digits(S, role), digits)
    assert torch.equal(eng5.decode_digits(S, "n1"), eng5.digits(x))


def test_bf16_input_and_soft_decode(eng5):
    x, y, tp = _problems(64, 10 ** 3, seed=3)
    S = eng5.encode_problem(x, y, tp)
    assert torch.equal(eng5.decode_number(S.bfloat16(), "n1"), x)
    Sg = S.clone().requires_grad_(True)
    soft = eng5.soft_decode_number(Sg, "n2")
    assert torch.allclose(soft, y.float(), atol=0.05)
    soft.sum().backward()
    assert Sg.grad is not None and torch.isfinite(Sg.grad).all()


def test_counter_and_type_ids(eng5):
    c = eng5.encode_counter(torch.tensor([0, 1, 2]))
    x = eng5.codebook[0].float()
    assert torch.equal(c[0], torch.zeros(2048))
    assert torch.allclose(c[1], x, atol=1e-5) and torch.allclose(c[2], vsa.bind(x, x), atol=1e-5)
    assert eng5.type_ids(["gcd", "addition"]).tolist() == [4, 0]
    with pytest.raises(UserError, match="unknown problem type 'pow'"):
        eng5.type_ids(["pow"])


@pytest.mark.parametrize("device", DEVICES)
def test_device_move(device):
    eng = SymbolicEngine(VSA_dim=256, max_digits=3).to(device)
    assert eng.device.type == device and eng.codebook.device.type == "cpu"
    n = torch.arange(1000, device=device)
    out = eng.decode_number(eng.encode_number(n))
    assert out.device.type == device and torch.equal(out, n)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_no_host_sync_on_cuda():
    eng = SymbolicEngine().to("cuda")
    x = torch.randint(0, 999, (256,), device="cuda")
    tp = torch.randint(0, 10, (256,), device="cuda")
    eng.encode_problem(x, x, tp)  # warm-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        S = eng.encode_problem(x, x, tp)
        eng.decode_number(S, "n1"), eng.decode_digits(S, "n2"), eng.decode_problem_type_ids(S)
        eng.soft_decode_number(S), eng.encode_number(x)
    finally:
        torch.cuda.set_sync_debug_mode(0)


_PRINT_FP = ("import sys;"
             "from neurosymbolic_llm.symbolic.engine import SymbolicEngine;"
             "e = SymbolicEngine(VSA_dim=512, max_digits=4, seed=int(sys.argv[1]));"
             "print(e.fingerprint(), float(e.codebook.sum()), float(e.codebook[5, 7]))")


def test_codebook_same_across_processes_and_differs_by_seed():
    out = subprocess.run([sys.executable, "-c", _PRINT_FP, "4"], capture_output=True, text=True, check=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": "", "PYTHONPATH": os.environ["PYTHONPATH"]}).stdout.split()
    here = SymbolicEngine(VSA_dim=512, max_digits=4, seed=4)
    assert out == [here.fingerprint(), repr(float(here.codebook.sum())), repr(float(here.codebook[5, 7]))]
    other = SymbolicEngine(VSA_dim=512, max_digits=4, seed=5)
    assert other.fingerprint() != here.fingerprint()
    assert not torch.allclose(other.codebook, here.codebook)


def test_state_dict_round_trip_and_compatibility():
    eng = SymbolicEngine(VSA_dim=256, max_digits=3)
    buf = io.BytesIO()
    torch.save(eng.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    back = SymbolicEngine.from_state_dict(sd)
    assert back.fingerprint() == eng.fingerprint() and torch.equal(back.codebook, eng.codebook)
    eng.check_compatible(sd, "enc.pth")  # no error

    def bad(**kw):
        s = dict(eng.state_dict(), **kw)
        with pytest.raises(EngineMismatchError) as ei:
            eng.check_compatible(s, "models/enc.pth")
        assert "models/enc.pth" in str(ei.value)
        return str(ei.value)

    assert "VSA dimension is 512 there but 256 here" in bad(VSA_dim=512)
    assert "max_digits is 5 there but 3 here" in bad(max_digits=5)
    assert "problem list" in bad(possible_problems=["gcd"])
    assert "seed is 7 there but 4 here" in bad(seed=7)
    cb = eng.codebook.clone()
    cb[0, 0] += 1e-9
    assert "codebook differs" in bad(codebook=cb)
    with pytest.raises(EngineMismatchError, match="lacks seed"):
        eng.check_compatible({k: v for k, v in sd.items() if k != "seed"}, "x.pth")
    # a loaded foreign codebook is used as is, not regenerated
    foreign = dict(sd, codebook=SymbolicEngine(VSA_dim=256, max_digits=3, seed=9).codebook)
    assert not torch.equal(SymbolicEngine.from_state_dict(foreign).codebook, eng.codebook)
