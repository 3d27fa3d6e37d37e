"""Stages 1 and 2 of the method (METHOD §7-§8), with the original command lines:

    python Programs/train_encoders_and_decoders.py --run_name R --generate_data 1 [CSV options]   # gather
    python Programs/train_encoders_and_decoders.py --run_name R --generate_data 0 [CSV options]   # train

Stage 1 writes Programs/gathered_data_R/; stage 2 writes Programs/models/{encoders,decoders}_R.pth and
Programs/results/R/encoding_accuracy.{csv,png}. See utils/gathering.py and utils/encoder_training.py.

Under torchrun, stage 1 splits the rows over the data-parallel groups (see docs/SCALING.md); stage 2
(small linear maps on gathered states, no language model) runs on rank 0 alone, the other ranks exit.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utils.config import DataOptions, ModelOptions, RunOptions, SymbolicOptions, parse_config, register  # noqa: E402
from utils.encoder_training import EncoderTrainingOptions  # noqa: E402
from utils.errors import run_entry_point  # noqa: E402
from utils.gathering import GatherOptions  # noqa: E402


@register
@dataclass
class TrainEncodersConfig(RunOptions, ModelOptions, SymbolicOptions, DataOptions, GatherOptions, EncoderTrainingOptions):
    """Stage 1 (--generate_data 1): gather hidden states; stage 2 (--generate_data 0): train encoders and decoders."""

    config_section: ClassVar[str] = "train_encoders_and_decoders"


def main(argv=None) -> int:
    cfg = parse_config(TrainEncodersConfig, argv)
    if cfg.generate_data:
        from utils.gathering import run_gather

        run_gather(cfg)
    else:
        import os

        from utils.encoder_training import run_training

        if int(os.environ.get("RANK", "0")) != 0:  # torchrun: stage 2 is one process's work
            return 0
        run_training(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))
