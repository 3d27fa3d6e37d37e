"""The gate's rule, torch-free: the intervention writes only where the best problem-type score lies
between the lower and the upper bound."""
from __future__ import annotations

import math


def gate_open(score, threshold: float, maximum: float = math.inf):
    """The gate's rule, for tensors and pandas Series alike: threshold < score < maximum."""
    return (score > threshold) & (score < maximum)
