"""The gate's rule, torch-free: the intervention writes only where the encoder's reading looks like a
question it knows. `Gate` is the one value that carries the rule's settings through the stages.

    open = lower < score < upper  and  type_margin >= min_type_margin  and  digit_margin >= min_digit_margin

score: the best problem-type score; type_margin: best minus second-best type score; digit_margin: the
least sure digit decision of the two operands (pipeline/gate_features.py computes the three). The
paper's gate is the first comparison with upper = inf and both minimums 0 (always met: the margins are
never negative). The settings are chosen on validation prompts (stages/gate_statistics.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass

READINGS = ("score", "type_margin", "digit_margin")  # the columns a table of readings has


@dataclass(frozen=True)
class Gate:
    lower: float = 0.8
    upper: float = math.inf
    min_type_margin: float = 0.0
    min_digit_margin: float = 0.0

    @classmethod
    def of(cls, opts) -> "Gate":
        """The gate of the intervention options (configs.InterventionOptions or a saved run's)."""
        return cls(float(opts.problem_score_threshold), float(opts.problem_score_max),
                   float(getattr(opts, "gate_min_type_margin", 0.0)), float(getattr(opts, "gate_min_digit_margin", 0.0)))

    @property
    def reads_margins(self) -> bool:
        return self.min_type_margin > 0 or self.min_digit_margin > 0

    def open(self, score, type_margin=None, digit_margin=None):
        """The rule, elementwise, for tensors, numpy arrays and pandas Series alike. A margin left out
        (None) must not be needed: its minimum is 0."""
        out = (score > self.lower) & (score < self.upper)
        for value, least, name in ((type_margin, self.min_type_margin, "type_margin"),
                                   (digit_margin, self.min_digit_margin, "digit_margin")):
            if value is not None:
                out = out & (value >= least)
            elif least > 0:
                raise ValueError(f"this gate needs the {name} (its minimum is {least:g})")
        return out

    def open_rows(self, table):
        """The rule on a table of readings (pandas DataFrame with a score column and, where needed,
        type_margin / digit_margin): a boolean Series."""
        return self.open(*(table[c] if c in table else None for c in READINGS))

    def describe(self) -> str:
        """The rule in words, e.g. '0.8 < score < 1.3, type margin >= 0.7'."""
        parts = [f"{self.lower:g} < score" + (f" < {self.upper:g}" if math.isfinite(self.upper) else "")]
        if self.min_type_margin > 0:
            parts.append(f"type margin >= {self.min_type_margin:g}")
        if self.min_digit_margin > 0:
            parts.append(f"digit margin >= {self.min_digit_margin:g}")
        return ", ".join(parts)


def gate_open(score, threshold: float, maximum: float = math.inf):
    """The score bounds alone, for tensors and pandas Series alike: threshold < score < maximum."""
    return Gate(threshold, maximum).open(score)
