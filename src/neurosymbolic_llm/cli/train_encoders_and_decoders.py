"""Stages 1 and 2 of the method, with the original command lines:

    python Programs/train_encoders_and_decoders.py --run_name R --generate_data 1 [CSV options]   # gather
    python Programs/train_encoders_and_decoders.py --run_name R --generate_data 0 [CSV options]   # train

Stage 1 writes Programs/gathered_data_R/; stage 2 writes Programs/models/{encoders,decoders}_R.pth and
Programs/results/R/encoding_accuracy.{csv,png}. Under torchrun, stage 1 splits the rows over the
data-parallel groups (docs/SCALING.md); stage 2 runs on rank 0 alone.
"""
from neurosymbolic_llm.pipeline.configs import TrainEncodersConfig
from neurosymbolic_llm.pipeline.errors import run_entry_point
from neurosymbolic_llm.pipeline.options import parse_config


def main(argv=None) -> int:
    cfg = parse_config(TrainEncodersConfig, argv, __doc__)
    from neurosymbolic_llm.pipeline.encoders_and_decoders import run  # after parsing: --help loads no torch

    return run(cfg)


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))
