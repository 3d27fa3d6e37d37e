"""Stage 1 on its own: the options of train_encoders_and_decoders.py, always gathering.

    python Programs/gather_hidden_states.py --run_name R [--training_data_df_path T ...]
    torchrun --nproc_per_node N Programs/gather_hidden_states.py --run_name R ...   # data-parallel
"""
from neurosymbolic_llm.pipeline.configs import GatherConfig
from neurosymbolic_llm.pipeline.errors import run_entry_point
from neurosymbolic_llm.pipeline.options import parse_config


def main(argv=None) -> int:
    cfg = parse_config(GatherConfig, argv, __doc__)
    from neurosymbolic_llm.stages.gather import run_gather  # after parsing: --help loads no torch

    run_gather(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))
