"""Stage 2's ridge least squares, shared by the stage (stages/train_maps.py) and the gate's
leave-one-operation-out refits (stages/gate_statistics.py)."""
from __future__ import annotations

from typing import Optional

import torch


def apply_maps(W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Per-layer linear maps: W [L, out, in], X [B, L, in] -> [B, L, out]."""
    return torch.bmm(X.transpose(0, 1).to(W.dtype), W.transpose(1, 2)).transpose(0, 1)


@torch.no_grad()
def numerical_rank_cutoff(A: torch.Tensor) -> torch.Tensor:
    """Per layer, the eigenvalue (and Cholesky pivot) below which a direction of A [L, n, n] counts as
    zero: 10 n float64-epsilons of A's largest diagonal entry, about the rounding error of factorising A."""
    eps = torch.finfo(torch.float64).eps
    return 10 * A.shape[-1] * eps * A.diagonal(dim1=1, dim2=2).amax(-1).clamp_min(1e-300)  # [L]


def least_squares(X: torch.Tensor, Y: torch.Tensor, ridge: float, batch: int, dtype: torch.dtype,
                  pre: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Ridge solution W [L, out, in] of min ||X W^T - Y||^2 per layer, accumulated over row batches.

    X [N, L, in0] (mapped first through `pre` [L, in, in0] when given), Y [N, out] or [N, L, out].
    Accumulated and solved in float64 on every device: a residual stream with a large constant part
    (SmolLM2's, Programs/real/README.md) makes the uncentred Gram matrix so ill-conditioned that a
    float32 solve returns noise. A layer whose matrix is numerically singular (every prompt's state
    alike, as at layer 0 when prompts end with the same token) gets the pseudo-inverse solution. The
    rank decision is numerical (`numerical_rank_cutoff`), never "did the factorisation hit an exact
    zero pivot": rounding makes that depend on the CPU's LAPACK path.
    """
    acc = torch.float64
    gram = cross = None
    for b in range(0, X.shape[0], batch):
        x = X[b:b + batch].to(acc)
        if pre is not None:
            x = apply_maps(pre.to(acc), x)
        xt = x.transpose(0, 1)  # [L,B,in]
        y = Y[b:b + batch].to(acc)
        y = y[None].expand(xt.shape[0], -1, -1) if y.dim() == 2 else y.transpose(0, 1)  # [L,B,out]
        g, c = xt.transpose(1, 2) @ xt, xt.transpose(1, 2) @ y  # [L,in,in], [L,in,out]
        gram, cross = (g, c) if gram is None else (gram + g, cross + c)
    scale = gram.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-12)  # [L]
    eye = torch.eye(gram.shape[-1], dtype=acc, device=gram.device)
    A = gram + ridge * scale[:, None, None] * eye
    sol = torch.empty_like(cross)  # [L,in,out]
    for layer, cutoff in enumerate(numerical_rank_cutoff(A).tolist()):
        chol, info = torch.linalg.cholesky_ex(A[layer])
        pivots = chol.diagonal() ** 2  # [in]; Schur-complement pivots of A
        if info.item() == 0 and pivots.min().item() > cutoff:
            sol[layer] = torch.cholesky_solve(cross[layer], chol)
        else:  # numerically singular: minimum-norm solution over the directions above the cut-off
            sol[layer] = torch.linalg.pinv(A[layer], hermitian=True, atol=cutoff, rtol=0.0) @ cross[layer]
    return sol.transpose(1, 2).to(dtype).contiguous()
