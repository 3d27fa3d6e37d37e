"""Stages 1 and 2 of the method, with the original command lines:

    python Programs/train_encoders_and_decoders.py --run_name R --generate_data 1 [CSV options]   # gather
    python Programs/train_encoders_and_decoders.py --run_name R --generate_data 0 [CSV options]   # train

Stage 1 writes Programs/gathered_data_R/; stage 2 writes Programs/models/{encoders,decoders}_R.pth and
Programs/results/R/encoding_accuracy.{csv,png}. Under torchrun, stage 1 splits the rows over the
data-parallel groups (docs/SCALING.md); stage 2 runs on rank 0 alone.
"""
import os

from neurosymbolic_llm.pipeline.configs import TrainEncodersConfig
from neurosymbolic_llm.pipeline.errors import run_entry_point
from neurosymbolic_llm.pipeline.options import parse_config


def run(cfg: TrainEncodersConfig) -> int:
    """Stage 1 (gather) or stage 2 (train). Under torchrun, stage 1 splits the rows over the
    data-parallel groups; stage 2 (small linear maps on gathered states, no language model) runs on
    rank 0 alone and the other ranks return at once."""
    if cfg.generate_data:
        from neurosymbolic_llm.stages.gather import run_gather  # here: --help loads no torch

        run_gather(cfg)
    elif int(os.environ.get("RANK", "0")) == 0:
        from neurosymbolic_llm.stages.train_maps import run_training

        run_training(cfg)
    return 0


def main(argv=None) -> int:
    return run(parse_config(TrainEncodersConfig, argv, __doc__))


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))
