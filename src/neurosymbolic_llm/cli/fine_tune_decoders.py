"""Stage 3: fine-tune the decoder in context, evaluate per problem type, and run the baselines.

    python Programs/fine_tune_decoders.py --run_name R --encoder_path E --decoder_path D [--test_baseline 0|1|2]
        [--training_data_df_path ... --val_data_df_path ... --testing_data_df_path ...]
    ... --lora_baseline 1 | --adapter_baseline 1 | --cot 1 | --test_on_unrelated_questions 1

Outputs in Programs/results/R/: results.csv/.md/.png, fingerprints.json, responses.csv, metrics.jsonl,
config_fine_tune.yaml, training_state.pt (and gate_scores.csv/.png), intervention/ (the evaluated
intervention as one shareable artefact: nsllm ask, docs/USAGE.md); the fine-tuned decoder beside the
input one as <decoder stem>_post_fine_tuning_R.pth (same checked file format).

Ctrl-C or SIGTERM saves the training state after the current step and ends with one line saying
where it is; rerunning the same command resumes from it (--restart 1 starts over).
"""
from neurosymbolic_llm.pipeline.configs import FineTuneConfig
from neurosymbolic_llm.pipeline.errors import run_entry_point
from neurosymbolic_llm.pipeline.options import parse_config


def main(argv=None) -> int:
    cfg = parse_config(FineTuneConfig, argv, __doc__)
    from neurosymbolic_llm.stages.fine_tune import run  # after parsing: --help loads no torch

    return run(cfg)


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))
