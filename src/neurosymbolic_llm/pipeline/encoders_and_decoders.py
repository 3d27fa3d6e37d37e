"""Stages 1 and 2 behind one entry script (train_encoders_and_decoders.py), as the original has it:
its option schema, and `run`, which dispatches on --generate_data.

gather_hidden_states.py runs stage 1 alone with `GatherConfig`: the same options and YAML section,
without those of stage 2 (accepted, so a shared preset still works, but not listed).
"""
from __future__ import annotations

import os

from neurosymbolic_llm.pipeline.configs import TrainEncodersConfig
from neurosymbolic_llm.pipeline.encoder_training import run_training
from neurosymbolic_llm.pipeline.gathering import run_gather


def run(cfg: TrainEncodersConfig) -> int:
    """Stage 1 (gather) or stage 2 (train). Under torchrun, stage 1 splits the rows over the
    data-parallel groups; stage 2 (small linear maps on gathered states, no language model) runs on
    rank 0 alone and the other ranks return at once."""
    if cfg.generate_data:
        run_gather(cfg)
    elif int(os.environ.get("RANK", "0")) == 0:
        run_training(cfg)
    return 0
