"""One stage-3 run as a value: what stages/fine_tune.py builds once (model, maps and engine, rows,
tokenised examples, tracker, output folder, the answer-token budget) and hands to its training,
evaluation, gate and output steps, instead of a dozen parameters each."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from neurosymbolic_llm.pipeline.configs import FineTuneConfig
from neurosymbolic_llm.pipeline.distributed import DistInfo
from neurosymbolic_llm.pipeline.fine_tune_inputs import Maps
from neurosymbolic_llm.pipeline.tracking import Tracker
from neurosymbolic_llm.pipeline.train_state import TrainingState
from neurosymbolic_llm.pipeline.training import Examples, Method, build_examples
from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES


@dataclass
class FineTuneRun:
    """Everything one stage-3 run works with. `cfg` is the configuration as run
    (fine_tune_inputs.used_config: the maps' encoding layer, not "auto")."""
    cfg: FineTuneConfig
    name: str                                  # the run name: results/<name>/
    out_dir: Path
    info: DistInfo
    llama: object                              # runtime.build_llama's Llama
    maps: Optional[Maps]                       # None for methods without maps (baseline, LoRA, CoT)
    maps_at_start: dict                        # fine_tune_inputs.map_fingerprints at the start
    test_rows: pd.DataFrame
    seen: list[str]                            # the problem types counted as seen, and where from
    seen_from: str
    tracker: Tracker
    budget: int                                # answer tokens of a few-shot answer (answer_token_budget)
    train_rows: Optional[pd.DataFrame] = None  # the rest: only when a method trains
    from_csv: bool = False                     # training rows from a CSV (epochs) or drawn (num_steps)
    train_ex: Optional[Examples] = None
    val_ex: Optional[Examples] = None
    state: Optional[TrainingState] = None
    two_step: Optional[pd.DataFrame] = None    # the two-step questions (symbolic/two_step.py), or None
    written: dict[str, Path] = field(default_factory=dict)  # outputs outside out_dir, for the closing lines

    @property
    def engine(self):
        """The VSA engine of the map files (never the options'), or None."""
        return self.maps.engine if self.maps is not None else None

    @property
    def problem_list(self) -> list[str]:
        return engine_problems(self.engine)

    def example_options(self) -> dict:
        return example_options(self.cfg, self.engine)

    def examples(self, rows: pd.DataFrame, split: str, **kw) -> Examples:
        return build_examples(rows, self.llama.formatter, split, **kw, **self.example_options())

    def evaluation_options(self) -> dict:
        """evaluation.evaluate's keyword arguments of this run besides the budget and the label."""
        return dict(batch_size=self.cfg.eval_batch_size, seen_types=self.seen, problem_list=self.problem_list,
                    info=self.info)

    def test_budget(self, method: Method) -> int:
        """New tokens a test answer may take: chain of thought and answers in words take longer."""
        long = method.prompt == "cot" or self.cfg.test_with_non_numerical_rep
        return self.cfg.cot_max_new_tokens if long else self.budget


def example_options(cfg: FineTuneConfig, engine) -> dict:
    """build_examples' keyword arguments of a run (seed, complexity, digits, the engine's problem list)."""
    return dict(seed=cfg.seed, complexity=cfg.complexity, limit_solution_digits=cfg.limit_solution_digits,
                problem_list=engine_problems(engine))


def engine_problems(engine) -> list[str]:
    return list(engine.possible_problems) if engine is not None else list(PROBLEM_TYPES)
