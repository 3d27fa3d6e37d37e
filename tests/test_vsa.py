"""VSA algebra against an independent numpy (np.fft) implementation."""
import numpy as np
import pytest
import torch

from neurosymbolic_llm.symbolic import vsa

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device")])]
DTYPES = [torch.float32, torch.float64]
V = 512


def np_bind(a, b):
    return np.real(np.fft.ifft(np.fft.fft(a, axis=-1) * np.fft.fft(b, axis=-1), axis=-1))


def np_inverse(a):
    return np.concatenate([a[..., :1], a[..., 1:][..., ::-1]], axis=-1)


def np_unitary(a):
    f = np.fft.fft(a, axis=-1)
    return np.real(np.fft.ifft(f / np.abs(f), axis=-1))


@pytest.fixture
def vecs():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4, V)) / np.sqrt(V)
    b = rng.standard_normal((3, 4, V)) / np.sqrt(V)
    return a, b


def t(x, dtype, device):
    return torch.tensor(x, dtype=dtype, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bind_inverse_match_numpy(vecs, dtype, device):
    a, b = vecs
    ta, tb = t(a, dtype, device), t(b, dtype, device)
    out = vsa.bind(ta, tb)
    assert out.dtype == dtype and out.shape == ta.shape and out.device.type == device
    np.testing.assert_allclose(out.cpu().double().numpy(), np_bind(a, b), atol=1e-6)
    np.testing.assert_allclose(vsa.inverse(ta).cpu().double().numpy(), np_inverse(a), atol=1e-6)
    np.testing.assert_allclose(vsa.unbind(ta, tb).cpu().double().numpy(),
                               np_bind(a, np_inverse(b)), atol=1e-6)
    np.testing.assert_allclose(vsa.make_unitary(ta).cpu().double().numpy(), np_unitary(a), atol=1e-6)
    np.testing.assert_allclose(vsa.similarity(ta, tb).cpu().double().numpy(), (a * b).sum(-1),
                               atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_unitary_properties(vecs, dtype, device):
    a, b = vecs
    u = vsa.make_unitary(t(a, dtype, device))
    w = vsa.make_unitary(t(b, dtype, device))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    mags = torch.fft.fft(u.double(), dim=-1).abs()
    assert torch.allclose(mags, torch.ones_like(mags), atol=tol)
    assert torch.allclose(u.norm(dim=-1).double(), torch.ones(u.shape[:-1], dtype=torch.float64,
                                                              device=device), atol=tol)
    # exact inverse, identity, norm preservation, powers
    e = vsa.identity(V, dtype=dtype, device=device)
    assert torch.allclose(vsa.bind(u, vsa.inverse(u)), e.expand_as(u), atol=tol * 10)
    assert torch.allclose(vsa.unbind(vsa.bind(u, w), w), u, atol=tol * 10)
    assert torch.allclose(vsa.bind(u, e), u, atol=tol)
    assert torch.allclose(vsa.power(u, 3), vsa.bind(vsa.bind(u, u), u), atol=tol * 10)
    assert torch.allclose(vsa.power(u, 0), e.expand_as(u), atol=tol * 10)
    assert torch.allclose(vsa.power(u, -1), vsa.inverse(u), atol=tol * 10)
    # fractional powers: exact on every bin except DC/Nyquist, whose sign cannot be halved in reals
    half = vsa.power(u, 0.5)
    fh = torch.fft.rfft(vsa.bind(half, half), dim=-1)[..., 1:-1]
    fu = torch.fft.rfft(u, dim=-1)[..., 1:-1]
    assert torch.allclose(fh, fu, atol=tol * 10)


def test_transpose_identity():
    """sim(a, unbind(s, c)) == sim(bind(a, c), s) for any c: the engine's fast decoders rely on it."""
    g = torch.Generator().manual_seed(0)
    a, s, c = torch.randn(3, V, generator=g, dtype=torch.float64)
    assert torch.allclose(vsa.similarity(a, vsa.unbind(s, c)), vsa.similarity(vsa.bind(a, c), s))


def test_half_precision_upcast_and_broadcast():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, V, generator=g).bfloat16()
    b = torch.randn(V, generator=g)
    out = vsa.bind(a, b)
    assert out.dtype == torch.float32 and out.shape == (5, V)
    assert torch.allclose(out, vsa.bind(a.float(), b[None]), atol=1e-6)
    assert vsa.similarity(a, b).shape == (5,)
    with pytest.raises(TypeError):
        vsa.bind(torch.ones(4, dtype=torch.long), torch.ones(4, dtype=torch.long))
