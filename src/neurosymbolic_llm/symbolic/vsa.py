"""Holographic reduced representations (HRR / FHRR): the one home of the VSA algebra.

Vectors are real tensors of shape ``[..., V]`` (the last axis is the VSA dimension); every function
broadcasts over the leading axes like ordinary torch arithmetic and works on any device.

* float32 and float64 are computed in their own precision. bfloat16/float16 inputs are upcast to
  float32 (torch's FFT does not accept bfloat16), so results are float32 for them.
* ``bind`` is circular convolution, computed through the real FFT.
* ``inverse`` is the involution ``a*[k] = a[-k mod V]``: the exact inverse of a unitary vector, and the
  transpose of binding in general, so ``similarity(a, unbind(s, c)) == similarity(bind(a, c), s)``
  for every ``c`` (the engine's fast decoders rely on this identity).
* A unitary vector has every Fourier coefficient of modulus 1; it has L2 norm 1 and binding with it
  preserves norms.
* Similarity is the raw dot product (no cosine normalisation), as in the method.
"""
from __future__ import annotations

import torch

__all__ = ["bind", "unbind", "inverse", "make_unitary", "power", "identity", "similarity"]

_UPCAST = (torch.bfloat16, torch.float16)


def _real(a: torch.Tensor) -> torch.Tensor:
    """Upcast half types to float32; reject non-floating tensors."""
    if a.dtype in _UPCAST:
        return a.float()
    if not a.is_floating_point():
        raise TypeError(f"VSA vectors must be floating point, got {a.dtype}")
    return a


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _real(a), _real(b)
    if a.dtype != b.dtype:  # promote float32 + float64 -> float64
        dt = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(dt), b.to(dt)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"VSA dimensions differ: {a.shape[-1]} vs {b.shape[-1]}")
    return a, b


def bind(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Circular convolution ``a ⊛ b``: ``[..., V] x [..., V] -> [..., V]`` (broadcast leading axes)."""
    a, b = _pair(a, b)
    n = a.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(a, dim=-1) * torch.fft.rfft(b, dim=-1), n=n, dim=-1)


def inverse(a: torch.Tensor) -> torch.Tensor:
    """Involution ``[a0, a_{V-1}, ..., a1]``: ``[..., V] -> [..., V]`` (exact inverse if unitary)."""
    a = _real(a)
    return torch.cat([a[..., :1], a[..., 1:].flip(-1)], dim=-1)


def unbind(s: torch.Tensor, role: torch.Tensor) -> torch.Tensor:
    """``s ⊛ inverse(role)``: ``[..., V] x [..., V] -> [..., V]``."""
    s, role = _pair(s, role)
    n = s.shape[-1]
    # rfft(inverse(r)) == conj(rfft(r)) for real r: no need to build the involution.
    return torch.fft.irfft(torch.fft.rfft(s, dim=-1) * torch.fft.rfft(role, dim=-1).conj(), n=n, dim=-1)


def make_unitary(a: torch.Tensor) -> torch.Tensor:
    """Project onto unitary vectors: every Fourier coefficient divided by its modulus.

    ``[..., V] -> [..., V]``. Coefficients that are exactly zero become 1. The DC (and, for even V,
    Nyquist) coefficients are real, so they become ±1 and the result stays real.
    """
    a = _real(a)
    n = a.shape[-1]
    f = torch.fft.rfft(a, dim=-1)
    mag = f.abs()
    one = torch.ones((), dtype=f.dtype, device=f.device)
    f = torch.where(mag > 0, f / torch.where(mag > 0, mag, 1).to(f.dtype), one)
    return torch.fft.irfft(f, n=n, dim=-1)


def power(a: torch.Tensor, p) -> torch.Tensor:
    """``a`` bound with itself ``p`` times, computed in the Fourier domain.

    ``a``: ``[..., V]``; ``p``: a Python number or a tensor broadcastable to ``a.shape[:-1]``
    (integer or real). ``power(a, 0)`` is the identity, ``power(a, -1) == inverse(a)`` for unitary
    ``a``. Real (fractional) powers are the fractional power encoding of the method; they are
    computed as ``|F|^p * exp(i p angle(F))`` so that a unitary ``a`` gives unitary powers. For a
    non-integer ``p`` the DC/Nyquist bins of a vector where they are negative would become complex;
    the result keeps their real part (``cos(p pi)``), as any real-valued power must.
    """
    a = _real(a)
    n = a.shape[-1]
    f = torch.fft.rfft(a, dim=-1)
    if not torch.is_tensor(p):
        p = torch.tensor(p, dtype=a.dtype, device=a.device)
    p = p.to(device=a.device, dtype=a.dtype).unsqueeze(-1)
    mag, ang = f.abs(), f.angle()
    out = torch.polar(mag.pow(p), ang * p)
    return torch.fft.irfft(out, n=n, dim=-1)


def identity(dim: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The binding identity ``e = [1, 0, ..., 0]``: ``[V]``."""
    e = torch.zeros(dim, dtype=dtype, device=device)
    e[0] = 1
    return e


def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Raw dot product over the last axis: ``[..., V] x [..., V] -> [...]`` (broadcast)."""
    a, b = _pair(a, b)
    return (a * b).sum(-1)
