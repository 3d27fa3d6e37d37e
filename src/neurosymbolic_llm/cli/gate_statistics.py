"""Gate statistics on the validation split: choose --problem_score_threshold / --problem_score_max
without looking at the test split.

    python Programs/gate_statistics.py --run_name R --encoder_path E --decoder_path D \
        --val_data_df_path VAL.csv [--symbolic_encoding_layer N|auto] [--problem_score_threshold T]

Scores the validation CSV's questions and canned non-math validation questions with the stage-2
encoder at the encoding layer (same options as fine_tune_decoders.py), prints each group's open rate
and score range and a proposed --problem_score_max, and writes gate_validation.csv/.png in
Programs/results/R/.
"""
from neurosymbolic_llm.pipeline.configs import GateStatisticsConfig
from neurosymbolic_llm.pipeline.errors import run_entry_point
from neurosymbolic_llm.pipeline.options import parse_config


def main(argv=None) -> int:
    cfg = parse_config(GateStatisticsConfig, argv, __doc__)
    from neurosymbolic_llm.stages.gate_statistics import run  # after parsing: --help loads no torch

    return run(cfg)


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))
