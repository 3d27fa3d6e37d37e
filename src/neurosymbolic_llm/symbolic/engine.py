"""The VSA codebook and the encoders/decoders of numbers and problems (docs/METHOD.md, "The
vector-symbolic code").

Codebook rows (float64 master copy on the CPU, generated from a seeded ``torch.Generator``):

    0            x      base of digit values: V_0 = e (identity), V_v = x^v
    1            n1     role of the first operand
    2            n2     role of the second operand
    3 .. 3+T-1   T_p    one atom per problem type, in the order of ``possible_problems``
    3+T          D      base of digit positions: P_0 = D
    4+T ..       P_k = D^(2^k) = P_{k-1} ⊛ P_{k-1}, k = 1 .. max_digits-1

The first 4+T rows are Gaussian draws, L2-normalised, made unitary (float64), orthogonalised by
sequential Gram-Schmidt and made unitary again. The positions are appended afterwards.

Encoding (all ``max_digits`` positions, leading zeros included):
    enc(n)       = sum_k P_k ⊛ V_{digit_k(n)}
    S(x, y, p)   = n1 ⊛ enc(x) + n2 ⊛ enc(y) + T_p

Decoding: the digit at position k of role r scores ``s_{k,v} = V_v · (S ⊛ r* ⊛ P_k*)`` (``*`` the
involution); because the involution is the transpose of binding this equals
``(r ⊛ P_k ⊛ V_v) · S``, so all scores of a batch are one matrix product with precomputed keys.
Digit = argmax_v s if max_v s > 0.5, else 0. Problem-type scores are raw dots ``T_p · S``.

Working copies of all tables live on ``engine.device`` in ``engine.dtype`` (float32 by default);
``.to(device)`` moves them. Nothing in the batched encode/decode paths synchronises with the host.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch
import torch.nn.functional as F

from neurosymbolic_llm.symbolic import vsa
from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES
from neurosymbolic_llm.errors import EngineMismatchError, UserError, echo


DIGIT_THRESHOLD = 0.5
STATE_FORMAT = "nsllm-vsa-engine"
STATE_VERSION = 1
_ROLES = (None, "n1", "n2")


def build_codebook(VSA_dim: int, max_digits: int, n_types: int, seed: int) -> torch.Tensor:
    """The codebook ``[4 + n_types + max_digits - 1, VSA_dim]`` float64 on the CPU (see module doc)."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    n_base = 4 + n_types
    base = torch.randn(n_base, VSA_dim, generator=g, dtype=torch.float64)
    base = base / base.norm(dim=-1, keepdim=True)
    base = vsa.make_unitary(base)
    for j in range(n_base - 1):  # sequential Gram-Schmidt
        u = base[j] / base[j].norm()
        rest = base[j + 1:]
        base[j + 1:] = rest - (rest @ u)[:, None] * u[None, :]
    base = vsa.make_unitary(base)
    rows = [base]
    p = base[-1]
    for _ in range(max_digits - 1):
        p = vsa.bind(p, p)
        rows.append(p[None])
    return torch.cat(rows, 0).contiguous()


class SymbolicEngine:
    """Codebook plus batched encoders/decoders. See the module docstring for the algebra."""

    def __init__(self, VSA_dim: int = 2048, max_digits: int = 5,
                 possible_problems: Sequence[str] = PROBLEM_TYPES, seed: int = 4, *,
                 _codebook: torch.Tensor | None = None):
        if VSA_dim < 8 or max_digits < 1:
            raise UserError(f"VSA engine: VSA_dim must be >= 8 and max_digits >= 1 "
                            f"(got {VSA_dim}, {max_digits})")
        if max_digits > 18:
            raise UserError(f"VSA engine: max_digits {max_digits} does not fit int64 (at most 18)")
        self.VSA_dim = int(VSA_dim)
        self.max_digits = int(max_digits)
        self.possible_problems = tuple(str(p) for p in possible_problems)
        if len(set(self.possible_problems)) != len(self.possible_problems) or not self.possible_problems:
            raise UserError(f"VSA engine: problem list must be non-empty and without repeats: "
                            f"{list(self.possible_problems)}")
        self.seed = int(seed)
        T = len(self.possible_problems)
        if _codebook is None:
            _codebook = build_codebook(self.VSA_dim, self.max_digits, T, self.seed)
        self.codebook = _codebook.detach().to("cpu", torch.float64).contiguous()
        self._type_index = {p: i for i, p in enumerate(self.possible_problems)}
        self._build_tables()
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self._place()

    # ------------------------------------------------------------------ codebook and tables
    @property
    def n_types(self) -> int:
        return len(self.possible_problems)

    def _row(self, name: str) -> torch.Tensor:
        T = self.n_types
        idx = {"x": 0, "n1": 1, "n2": 2, "D": 3 + T}[name]
        return self.codebook[idx]

    def _build_tables(self) -> None:
        """float64 CPU tables, derived from the codebook only."""
        cb, M, T, V = self.codebook, self.max_digits, self.n_types, self.VSA_dim
        x = cb[0]
        values = [vsa.identity(V, dtype=torch.float64)]
        for _ in range(9):
            values.append(vsa.bind(values[-1], x))
        self._values64 = torch.stack(values)                       # [10, V]   V_v
        self._types64 = cb[3:3 + T].clone()                         # [T, V]    T_p
        self._positions64 = torch.cat([cb[3 + T:4 + T], cb[4 + T:]])  # [M, V] P_k
        pv = vsa.bind(self._positions64[:, None, :], self._values64[None, :, :])  # [M, 10, V]
        self._pv64 = pv.reshape(M * 10, V)
        self._n1pv64 = vsa.bind(cb[1], self._pv64)
        self._n2pv64 = vsa.bind(cb[2], self._pv64)

    def _place(self) -> None:
        d, dt = self.device, self.dtype
        self.values = self._values64.to(d, dt)
        self.type_atoms = self._types64.to(d, dt)
        self.positions = self._positions64.to(d, dt)
        self.roles = {"x": self.codebook[0].to(d, dt), "n1": self.codebook[1].to(d, dt),
                      "n2": self.codebook[2].to(d, dt)}
        # Keys of the digit decoders (row k*10+v = role ⊛ P_k ⊛ V_v); also the encode tables.
        self._keys = {None: self._pv64.to(d, dt), "n1": self._n1pv64.to(d, dt),
                      "n2": self._n2pv64.to(d, dt)}
        # One embedding table for whole problems: [n1 keys; n2 keys; type atoms].
        self._problem_table = torch.cat([self._keys["n1"], self._keys["n2"], self.type_atoms])
        self._pow10 = 10 ** torch.arange(self.max_digits, device=d, dtype=torch.long)
        self._digit_offsets = torch.arange(self.max_digits, device=d, dtype=torch.long) * 10

    def to(self, device=None, dtype: torch.dtype | None = None) -> "SymbolicEngine":
        """Move the working copies (float32 by default, or ``dtype``) to ``device``; returns self."""
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            if dtype not in (torch.float32, torch.float64):
                raise ValueError(f"engine working dtype must be float32 or float64, got {dtype}")
            self.dtype = dtype
        self._place()
        return self

    # ------------------------------------------------------------------ encoding
    def digits(self, n: torch.Tensor) -> torch.Tensor:
        """Decimal digits ``[B] long -> [B, M] long``; column k is the 10^k place."""
        n = torch.as_tensor(n, device=self.device).long()
        return torch.div(n[:, None], self._pow10, rounding_mode="floor") % 10

    def encode_number(self, n: torch.Tensor) -> torch.Tensor:
        """``enc(n)`` for ``n`` ``[B]`` long in ``[0, 10^max_digits)`` -> ``[B, V]`` (engine dtype).

        Numbers outside the range are taken modulo ``10^max_digits``.
        """
        idx = self.digits(n) + self._digit_offsets
        return F.embedding_bag(idx, self._keys[None], mode="sum")

    def encode_problem(self, x: torch.Tensor, y: torch.Tensor, type_ids: torch.Tensor) -> torch.Tensor:
        """``S = n1 ⊛ enc(x) + n2 ⊛ enc(y) + T_p``: ``x, y, type_ids [B] long -> [B, V]``.

        ``type_ids`` index ``possible_problems``.
        """
        MT = self.max_digits * 10
        ix = self.digits(x) + self._digit_offsets
        iy = self.digits(y) + self._digit_offsets + MT
        it = torch.as_tensor(type_ids, device=self.device).long()[:, None] + 2 * MT
        return F.embedding_bag(torch.cat([ix, iy, it], 1), self._problem_table, mode="sum")

    def encode_counter(self, t: torch.Tensor) -> torch.Tensor:
        """Counter vector for generated-token index ``t`` ``[B]``: ``x^t`` for t >= 1, zero for t = 0."""
        t = torch.as_tensor(t, device=self.device)
        out = vsa.power(self.roles["x"], t.to(self.dtype))
        return out * (t > 0).to(out.dtype)[:, None]

    # ------------------------------------------------------------------ decoding
    def _key(self, role):
        if role not in _ROLES:
            raise ValueError(f"role must be one of {_ROLES}, got {role!r}")
        return self._keys[role]

    def _as_work(self, v: torch.Tensor) -> torch.Tensor:
        return v.to(device=self.device, dtype=self.dtype)

    def digit_scores(self, vsa_vec: torch.Tensor, role=None) -> torch.Tensor:
        """Similarities ``s_{k,v}``: ``[B, V] -> [B, M, 10]`` (one matrix product)."""
        s = self._as_work(vsa_vec) @ self._key(role).T
        return s.reshape(s.shape[0], self.max_digits, 10)

    def decode_digits(self, vsa_vec: torch.Tensor, role=None) -> torch.Tensor:
        """Hard digits ``[B, V] -> [B, M] long`` (column k = 10^k place); 0 where max score <= 0.5."""
        return self.digits_of_scores(self.digit_scores(vsa_vec, role))

    def decode_number(self, vsa_vec: torch.Tensor, role=None) -> torch.Tensor:
        """Hard decode ``[B, V] -> [B] long``; ``role`` None (a bare number), "n1" or "n2"."""
        return self.number_of_scores(self.digit_scores(vsa_vec, role))

    @staticmethod
    def digits_of_scores(scores: torch.Tensor) -> torch.Tensor:
        """The hard digit rule on digit_scores' output: ``[B, M, 10] -> [B, M] long``."""
        best, arg = scores.max(-1)
        return torch.where(best > DIGIT_THRESHOLD, arg, torch.zeros_like(arg))

    def number_of_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """The number read from digit_scores' output: ``[B, M, 10] -> [B] long``."""
        return (self.digits_of_scores(scores) * self._pow10).sum(-1)

    def soft_decode_number(self, vsa_vec: torch.Tensor, role=None, *, temperature: float = 0.01,
                           sharpness: float = 100.0) -> torch.Tensor:
        """Differentiable decode ``[B, V] -> [B]`` (engine dtype); the paper's engine has it, the
        pipeline decodes hard (gradients never pass the symbolic step).

        Per position: ``p = softmax(s / temperature)``, presence ``g = sigmoid(sharpness *
        (LSE_sharpness(s) - 0.5))`` with ``LSE_a(s) = logsumexp(a s) / a``; digit = ``g * sum_v v p_v``;
        number = ``sum_k 10^k digit_k``.
        """
        s = self.digit_scores(vsa_vec, role)
        p = torch.softmax(s / temperature, dim=-1)
        lse = torch.logsumexp(sharpness * s, dim=-1) / sharpness
        g = torch.sigmoid(sharpness * (lse - DIGIT_THRESHOLD))
        vals = torch.arange(10, device=s.device, dtype=s.dtype)
        digit = g * (p * vals).sum(-1)
        return (digit * self._pow10.to(s.dtype)).sum(-1)

    def problem_type_scores(self, vsa_vec: torch.Tensor) -> torch.Tensor:
        """Raw dots ``T_p · S``: ``[B, V] -> [B, T]`` in the order of ``possible_problems``."""
        return self._as_work(vsa_vec) @ self.type_atoms.T

    def decode_problem_type_ids(self, vsa_vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, V] -> (type ids [B] long, max score [B])`` without leaving the device."""
        best, arg = self.problem_type_scores(vsa_vec).max(-1)
        return arg, best

    def decode_problem_type(self, vsa_vec: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """``[B, V] -> (names, max score [B])``; the names need one host transfer."""
        ids, best = self.decode_problem_type_ids(vsa_vec)
        return [self.possible_problems[i] for i in ids.tolist()], best

    def type_ids(self, names: Sequence[str]) -> torch.Tensor:
        """Problem-type names -> ``[B] long`` indices into ``possible_problems`` (on the engine device)."""
        if isinstance(names, str):
            names = [names]
        out = []
        for n in names:
            try:
                out.append(self._type_index[n])
            except KeyError:
                raise UserError(f"unknown problem type {echo(n)} (this engine knows "
                                f"{', '.join(self.possible_problems)})") from None
        return torch.tensor(out, dtype=torch.long, device=self.device)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        """Codebook (float64, CPU) and settings; plain types only (``torch.load(weights_only=True)``)."""
        return {"format": STATE_FORMAT, "version": STATE_VERSION,
                "VSA_dim": self.VSA_dim, "max_digits": self.max_digits,
                "possible_problems": list(self.possible_problems), "seed": self.seed,
                "codebook": self.codebook.clone()}

    @classmethod
    def from_state_dict(cls, sd: dict) -> "SymbolicEngine":
        """Rebuild an engine from ``state_dict()`` (the stored codebook is used as is)."""
        missing = [k for k in ("VSA_dim", "max_digits", "possible_problems", "seed", "codebook")
                   if k not in sd]
        if missing:
            raise EngineMismatchError(f"VSA engine state lacks {', '.join(missing)}")
        cb = sd["codebook"]
        T = len(sd["possible_problems"])
        want = (4 + T + int(sd["max_digits"]) - 1, int(sd["VSA_dim"]))
        if tuple(cb.shape) != want:
            raise EngineMismatchError(f"VSA engine state: codebook shape {tuple(cb.shape)}, "
                                      f"expected {want} for its settings")
        return cls(sd["VSA_dim"], sd["max_digits"], sd["possible_problems"], sd["seed"], _codebook=cb)

    def fingerprint(self) -> str:
        """Short hex digest of the settings and the codebook bytes."""
        h = hashlib.sha256()
        h.update(f"{self.VSA_dim}|{self.max_digits}|{','.join(self.possible_problems)}|{self.seed}|"
                 .encode())
        h.update(self.codebook.numpy().tobytes())
        return h.hexdigest()[:16]

    def check_compatible(self, other: dict, what: str) -> None:
        """Raise ``EngineMismatchError`` naming ``what`` and the first difference with ``other``
        (a ``state_dict()``): dimension, digits, problem list, seed, codebook."""
        if not isinstance(other, dict):
            raise EngineMismatchError(f"{what}: holds no VSA engine state")
        checks = [("VSA_dim", "VSA dimension", self.VSA_dim),
                  ("max_digits", "max_digits", self.max_digits),
                  ("possible_problems", "problem list", list(self.possible_problems)),
                  ("seed", "codebook seed", self.seed)]
        for key, label, mine in checks:
            if key not in other:
                raise EngineMismatchError(f"{what}: VSA engine state lacks {key}")
            theirs = list(other[key]) if key == "possible_problems" else other[key]
            if theirs != mine:
                raise EngineMismatchError(f"{what}: {label} is {theirs} there but {mine} here")
        cb = other.get("codebook")
        if not torch.is_tensor(cb) or tuple(cb.shape) != tuple(self.codebook.shape) \
                or not torch.equal(cb.detach().to("cpu", torch.float64), self.codebook):
            raise EngineMismatchError(f"{what}: the VSA codebook differs from this engine's "
                                      f"(same settings, different vectors)")

    def __repr__(self) -> str:
        return (f"SymbolicEngine(VSA_dim={self.VSA_dim}, max_digits={self.max_digits}, "
                f"types={len(self.possible_problems)}, seed={self.seed}, device={self.device}, "
                f"fingerprint={self.fingerprint()})")
