"""What the gate reads from the encoder's output besides the best type score: how far the best type
is ahead of the second, and how sure the weakest digit decision of the two operands is
(docs/METHOD.md, "Decoding"). pipeline/gate.py holds the rule; this module computes its inputs."""
from __future__ import annotations

import torch

from neurosymbolic_llm.symbolic.engine import DIGIT_THRESHOLD


def digit_margin(engine, z: torch.Tensor) -> torch.Tensor:
    """z [N, V] -> [N]: the least sure digit decision of operands n1 and n2. A position whose best
    digit score s1 exceeds the presence threshold t counts min(s1 - t, s1 - s2) (s2 the second
    best); an absent one counts t - s1. Negative never; near 0 where a digit was nearly read otherwise."""
    parts = []
    for role in ("n1", "n2"):
        top = engine.digit_scores(z, role).topk(2, dim=-1).values  # [N, M, 2]
        s1, s2 = top[..., 0], top[..., 1]
        present = torch.minimum(s1 - DIGIT_THRESHOLD, s1 - s2)
        parts.append(torch.where(s1 > DIGIT_THRESHOLD, present, DIGIT_THRESHOLD - s1).amin(-1))
    return torch.minimum(*parts)


def reading_confidence(engine, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """z [N, V] (the encoder's output) -> {"score", "type_margin", "digit_margin"}, each [N] in the
    engine's dtype: the best problem-type score, best minus second-best type score, digit_margin."""
    scores = engine.problem_type_scores(z)  # [N, T]
    top = scores.topk(min(2, scores.shape[-1]), dim=-1).values  # [N, 2] (one type: no runner-up)
    margin = top[:, 0] - top[:, 1] if top.shape[-1] == 2 else torch.full_like(top[:, 0], float("inf"))
    return {"score": top[:, 0], "type_margin": margin, "digit_margin": digit_margin(engine, z)}
