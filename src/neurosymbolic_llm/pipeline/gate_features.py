"""What the gate reads from the encoder's output besides the best type score: how far the best type
is ahead of the second, and how sure the weakest digit decision of the two operands is
(docs/METHOD.md, "Decoding"). pipeline/gate.py holds the rule; this module computes its inputs, and
`read_problem` the decoded problem beside them from the same similarities (the hook's hot path)."""
from __future__ import annotations

import torch

from neurosymbolic_llm.symbolic.engine import DIGIT_THRESHOLD


def _least_sure_digit(scores: torch.Tensor) -> torch.Tensor:
    """digit scores [N, M, 10] -> [N]: a position whose best digit score s1 exceeds the presence
    threshold t counts min(s1 - t, s1 - s2) (s2 the second best); an absent one counts t - s1."""
    top = scores.topk(2, dim=-1).values  # [N, M, 2]
    s1, s2 = top[..., 0], top[..., 1]
    present = torch.minimum(s1 - DIGIT_THRESHOLD, s1 - s2)
    return torch.where(s1 > DIGIT_THRESHOLD, present, DIGIT_THRESHOLD - s1).amin(-1)


def read_problem(engine, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """z [N, V] (the encoder's output) -> {"score", "type_margin", "digit_margin", "type_id", "x", "y"},
    each [N]: the best problem-type score, best minus second-best type score, the least sure digit
    decision of operands n1 and n2 (never negative; near 0 where a digit was nearly read otherwise),
    and the decoded type and operands (engine.decode_number's rule), each similarity computed once."""
    types = engine.problem_type_scores(z)  # [N, T]
    top = types.topk(min(2, types.shape[-1]), dim=-1).values  # [N, 2] (one type: no runner-up)
    margin = top[:, 0] - top[:, 1] if top.shape[-1] == 2 else torch.full_like(top[:, 0], float("inf"))
    digits = {role: engine.digit_scores(z, role) for role in ("n1", "n2")}  # [N, M, 10] each
    return {"score": top[:, 0], "type_margin": margin,
            "digit_margin": torch.minimum(*(_least_sure_digit(s) for s in digits.values())),
            "type_id": types.argmax(-1),  # the first of equal scores, as the gate always took
            "x": engine.number_of_scores(digits["n1"]), "y": engine.number_of_scores(digits["n2"])}

