"""Gate statistics on the validation split: choose the gate (--problem_score_max,
--gate_min_type_margin, --gate_min_digit_margin) without looking at the test split.

    python Programs/gate_statistics.py --run_name R --encoder_path E --decoder_path D \
        --val_data_df_path VAL.csv [--symbolic_encoding_layer N|auto] [--problem_score_threshold T]

Reads the validation CSV's questions, canned non-math validation questions and hard negatives with
the stage-2 encoder at the encoding layer (same options as fine_tune_decoders.py), and refits the
encoder once per trained type without it (leave one operation out); prints the AUROC of each
reading, each group's open rate under the configured and the proposed gate, and writes
gate_validation.csv/.png, gate_calibration.csv, gate_open_rates.csv and gate_coverage.csv/.png in
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
