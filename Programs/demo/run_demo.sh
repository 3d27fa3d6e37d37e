#!/usr/bin/env bash
# `make demo`: the whole pipeline on the embedded tiny Llama, on a CPU, in minutes.
#
#   build (or reuse) the demo model -> demo CSV splits -> stage 1 (gather) -> stage 2 (encoders and
#   decoders, per layer) -> stage 3 (neurosymbolic decoder fine-tuning + plain model) and the LoRA,
#   adapter and chain-of-thought baselines on the same rows -> compare_runs (the paper's table).
#
# Everything but the model is recomputed on every call; results go to Programs/results/demo/.
# LOG_WANDB=1 (with WANDB_MODE=offline or online; the Makefile disables wandb otherwise) also logs
# every run to wandb, all in the group "demo".
# Stage-3 runs are independent of each other, so they run two at a time (one per core, one thread
# each); the log of the one in the background is in Programs/results/demo_logs/.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root

PY=${PYTHON:-.venv/bin/python}
CFG=Programs/demo/demo.yaml
MODEL=Programs/models/demo_llama
DATA=Programs/data/demo
LOGS=Programs/results/demo_logs
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE WANDB_MODE=${WANDB_MODE:-disabled} PYTHONUNBUFFERED=1

start=$SECONDS
source Programs/steps.sh

rm -rf Programs/gathered_data_demo Programs/results/demo Programs/results/demo_* \
       Programs/models/encoders_demo.pth Programs/models/decoders_demo*.pth
mkdir -p "$LOGS"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT  # no stray background run after an error or Ctrl-C

step "Demo model (built once, then reused)" $PY Programs/demo/make_tiny_llama.py --out "$MODEL"
step "Demo CSV splits" $PY Programs/demo/make_demo_data.py --out "$DATA"

CSVS=(--training_data_df_path "$DATA/train.csv" --val_data_df_path "$DATA/val.csv"
      --testing_data_df_path "$DATA/test.csv")
COMMON=(--config "$CFG" --chpt_dir "$MODEL" "${CSVS[@]}" --log_wandb "${LOG_WANDB:-0}" --wandb_group demo)
MAPS=(--encoder_path Programs/models/encoders_demo.pth --decoder_path Programs/models/decoders_demo.pth)

step "Stage 1: gather hidden states" \
    $PY Programs/train_encoders_and_decoders.py "${COMMON[@]}" --run_name demo --generate_data 1
step "Stage 2: encoders and decoders for every layer" \
    $PY Programs/train_encoders_and_decoders.py "${COMMON[@]}" --run_name demo --generate_data 0

stage3() {
    $PY Programs/fine_tune_decoders.py "${COMMON[@]}" "${MAPS[@]}" "$@"
}
printf '\n== Stage 3 and baselines in two lanes (LoRA then CoT in the background: %s)\n' "$LOGS"
{ stage3 --run_name demo_lora --lora_baseline 1 >"$LOGS/demo_lora.log" 2>&1 &&
  stage3 --run_name demo_cot --cot 1 >"$LOGS/demo_cot.log" 2>&1; } &
background=$!
step "Stage 3: neurosymbolic decoder, plain model, gate statistics" \
    stage3 --run_name demo_ns --test_baseline 1 --test_on_unrelated_questions 1
# The paper's adapter sits at the last prompt position only; both of its maps train, and the
# decoder's rate (3e-2) makes them diverge, so it gets LoRA's rate.
step "Adapter baseline (the paper's \"LoRA\" row)" \
    stage3 --run_name demo_adapter --adapter_baseline 1 --multi_token_intervention 0 --learning_rate 0.003
step "LoRA (peft) and chain-of-thought baselines (background lane)" wait_for "$background"

step "All methods in one table" \
    $PY Programs/compare_runs.py demo_ns demo_lora demo_adapter demo_cot --out Programs/results/demo \
        --log_wandb "${LOG_WANDB:-0}" --wandb_group demo
printf '\nDemo finished in %d s. Results: Programs/results/demo/ (results.{csv,md,png},\n' $((SECONDS - start))
printf 'encoding_accuracy.{csv,png}); gate figure: Programs/results/demo_ns/gate_scores.png\n'
