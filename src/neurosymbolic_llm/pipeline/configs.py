"""Every command's options, declared once (options.py turns each schema into YAML keys, flags and
--help): the option groups of each stage and the schema of each command.

This module imports no torch, so a command parses its options and prints --help before the library
behind it loads.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar, Optional

from neurosymbolic_llm.errors import ConfigError
from neurosymbolic_llm.pipeline.method_table import DEFAULT_MAIN, MAIN_FLAGS, METHODS
from neurosymbolic_llm.pipeline.method_table import needs_maps as method_needs_maps
from neurosymbolic_llm.pipeline.options import DataOptions, ModelOptions, RunOptions, SymbolicOptions, option
from neurosymbolic_llm.symbolic.problem_types import PROBLEM_TYPES


# ----------------------------------------------------------------------------- stages 1 and 2
@dataclass
class GatherOptions:
    """stage 1: gathering hidden states"""
    n_samples: int = option(0, "prompts per forward pass (default 0: sized for the device, 64 on cuda, 16 on cpu)")
    train_data_rounds: int = option(20000, "random training problems when no training CSV is given")
    val_data_rounds: int = option(200, "random validation problems when no validation CSV is given")
    testing_data_rounds: int = option(2000, "random test problems when no test CSV is given")
    layer_numbers: list[int] = option([], "residual layers to record, 0..n_layers (default: all)")
    save_frequency: int = option(1000, "rows per shard of gathered data (the unit of resuming)")
    gathered_data_dir: str = option("", "folder of the gathered data (default: <programs_dir>/gathered_data_<run_name>)")
    few_shot_seed: int = option(-1, "seed of the few-shot examples of each prompt (default -1: --seed)")


@dataclass
class EncoderTrainingOptions:
    """stage 2: training encoders and decoders"""
    training_epochs: int = option(1000, "encoder training epochs")
    decoding_epochs: int = option(1000, "decoder training epochs")
    learning_rate: float = option(1e-3, "Adam learning rate of the encoders")
    decoder_learning_rate: float = option(0.0, "Adam learning rate of the decoders (default 0: --learning_rate)")
    batch_size: int = option(512, "rows per optimiser step")
    encoder_lr_schedule: dict[int, float] = option({50: 0.5, 100: 0.5, 250: 0.1, 500: 0.4},
                                                   "{epoch: multiplier} applied to the encoder learning rate")
    decoder_lr_schedule: dict[int, float] = option({10: 0.1, 25: 0.5, 100: 0.5, 250: 0.4},
                                                   "{epoch: multiplier} applied to the decoder learning rate")
    map_init: str = option("least_squares", "initial maps: ridge least squares or PyTorch's random init",
                           choices=["least_squares", "random"])
    ridge: float = option(1e-4, "ridge of the least-squares init, relative to the mean input energy")
    patience: int = option(100, "stop a training early when no layer's validation RMSE improved by 0.1 percent for this many epochs (0: never; default 100)")
    weight_dtype: str = option("float32", "dtype of the trained weights (master copy and Adam state)",
                               choices=["float32", "float64"])


@dataclass
class TrainEncodersConfig(GatherOptions, EncoderTrainingOptions, ModelOptions, SymbolicOptions, DataOptions,
                          RunOptions):
    """which stage runs"""

    config_section: ClassVar[str] = "train_encoders_and_decoders"
    generate_data: bool = option(True, "1: stage 1, gather hidden states; 0: stage 2, train encoders and decoders")


@dataclass
class GatherConfig(TrainEncodersConfig):
    """stage 1 alone (gather_hidden_states.py)"""

    unused_options: ClassVar[tuple] = ("generate_data", *(f.name for f in dataclasses.fields(EncoderTrainingOptions)))
    unused_reason: ClassVar[str] = "gather_hidden_states.py runs stage 1 only"


# ----------------------------------------------------------------------------- stage 3
LR_DECAY_DEFAULT = {100: 0.5, 500: 0.5, 1000: 0.4, 2000: 0.1, 4000: 0.5, 6000: 0.5, 8000: 0.5}



@dataclass
class FineTuneOptions:
    """stage 3: the stage-2 maps and the training"""
    encoder_path: str = option("", "stage-2 encoder file, Programs/models/encoders_<run>.pth (no default; needed by the neurosymbolic model, the stage-2 adapter and the gate statistics)")
    decoder_path: str = option("", "stage-2 decoder file (no default); the fine-tuned one is saved beside it as <stem>_post_fine_tuning_<run>.pth")
    decoder_init: str = option("file", "where the decoders start: file (the maps of --decoder_path) or zero (zero maps instead of stage 2's, so the first write is the convex merge's s·h; the decoding layers need not be in the file, nor gathered in stage 1). A fine-tuned decoder file (written by stage 3) is always used as it is", choices=("file", "zero"))
    allow_other_weights: bool = option(False, "use encoder/decoder maps made on a model of the same architecture but other weights (a quantized or fine-tuned copy of the model they were trained on; the same weights in another format or float dtype are accepted without it), or map files of an older version whose fingerprint cannot be compared")
    num_steps: int = option(1000, "optimizer steps per epoch with random problems (with a training CSV: ceil(rows / samples per step))")
    num_epochs: int = option(1, "passes over the training data (0: no training, evaluate the given maps as they are)")
    n_samples: int = option(8, "micro-batch: prompts per forward in training")
    inference_to_backprop_ratio: int = option(1, "micro-batches per optimizer step (samples per step = n_samples x this)")
    prefix_split: bool = option(True, "methods acting only from the last prompt token on run the prompt before it once without gradients (same loss and gradients; which is faster depends on the batch: benchmarks/bench_paper_e2e.py --train_sweep)")
    learning_rate: float = option(1e-3, "Adam learning rate of the decoder (and skip / RMSNorm / adapter)")
    lr_decay: dict[int, float] = option(LR_DECAY_DEFAULT, "learning-rate multipliers {optimizer step: factor}, cumulative")
    cache_prompt_prefixes: bool = option(False, "keep what later epochs would compute again in memory after a training row's first forward (the neurosymbolic decoder and the adapter, which change nothing before the last prompt token): the prompt's keys and values of the layers from the first trained one (the decoding layer; the adapter's encoding layer) and the residual entering that layer, so later epochs run only those layers over the last prompt token and the answer; same loss and gradients (memory per row: trained layers x 2 x KV width x prompt length)")
    validation_interval: int = option(1, "validate after every k-th epoch and after the last (0: never)")
    training_rows: int = option(0, "use the first this many rows of the training CSV (0: all)")
    validation_rows: int = option(200, "validation problems (random mode) / at most this many rows of the validation CSV (0: all; default 200)")
    checkpoint_every: int = option(100, "optimizer steps between saves of the training state (results/<run>/training_state.pt; also saved at the end and on Ctrl-C/SIGTERM; 0: only then). A rerun with the same --run_name resumes from it")
    restart: bool = option(False, "ignore a saved training state of this run and train from step 0 (it is replaced)")
    # science (issue 26): the write-side recipe, evaluated behind the encoder.
    train_on_true_operands: bool = option(False, "train the decoder with the true operands and type given to the solver (the write side alone); evaluation still reads with the encoder (unlike --simulate_perfect_encoder)")


MERGES = ("convex", "add", "add_rmsnorm")


@dataclass
class InterventionOptions:
    """stage 3: the neurosymbolic intervention (also the adapter's place)"""
    symbolic_encoding_layer: int | str = option(17, "residual index read by the encoder (input of that block; 0 = embeddings), or auto: the layer whose stage-2 encoder decoded the most validation questions (x, y and type), among those not after the first decoding layer; the chosen layer is recorded in the run's config")
    symbolic_decoding_layers: list[int] = option([17], "residual indices written by the decoder(s) (each >= the encoding layer)")
    problem_score_threshold: float = option(0.8, "gate: intervene iff the best problem-type score exceeds this")
    problem_score_max: float = option(math.inf, "gate: and is below this (inf: the paper's one-sided gate). A score far above 1 comes from a state unlike the encoder's training prompts (e.g. a non-math prompt); choose it on validation prompts with Programs/gate_statistics.py")
    merge: str = option("convex", "how the decoded vector meets the residual: convex ((1-s)·dec + s·h), add (dec + h), add_rmsnorm (RMSNorm(dec + h), trainable)", choices=MERGES)
    rms_layer: bool = option(False, "alias of --merge add_rmsnorm (the original's flag)")
    starting_skip_strength: float = option(0.5, "s of the convex merge (weight of the original state)")
    trainable_skip: bool = option(False, "train s (convex merge) together with the decoder")
    static_encoding: bool = option(True, "reuse the answer vector of the last prompt position at later written positions")
    multi_token_intervention: bool = option(False, "also write every position after the last prompt position (generated / answer positions)")
    simulate_perfect_encoder: bool = option(False, "feed the true operands and type to the solver (the gate still uses the encoder)")
    encode_counter: bool = option(False, "with --multi_token_intervention: add the counter x^t to the answer vector written at the t-th position after the last prompt position (t = 1, 2, ...; nothing at t = 0), so the decoder can tell the tokens of a multi-token answer apart")

    # science (issue 26): the gate's margins (pipeline/gate.py; chosen with Programs/gate_statistics.py)
    gate_min_type_margin: float = option(0.0, "gate: and the best problem-type score leads the second best by at least this (0: not checked)")
    gate_min_digit_margin: float = option(0.0, "gate: and the least sure digit decision of the operands has at least this margin (0: not checked)")

    def merge_mode(self) -> str:
        return "add_rmsnorm" if self.rms_layer else self.merge

    def validate_intervention(self) -> None:
        """Option combinations that cannot work, before any model is loaded."""
        if isinstance(self.symbolic_encoding_layer, str) and self.symbolic_encoding_layer != "auto":
            raise ConfigError(f"--symbolic_encoding_layer {self.symbolic_encoding_layer!r}: expected a layer "
                              f"number or auto")
        if not self.problem_score_max > self.problem_score_threshold:
            raise ConfigError(f"--problem_score_max {self.problem_score_max} must exceed --problem_score_threshold "
                              f"{self.problem_score_threshold}: the gate would never open")
        for name in ("gate_min_type_margin", "gate_min_digit_margin"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"--{name} {getattr(self, name)} must be >= 0 (0: not checked)")
        if self.encode_counter and not self.multi_token_intervention:
            raise ConfigError("--encode_counter 1 needs --multi_token_intervention 1: the counter marks the "
                              "positions after the last prompt position, which are written only then")

    def validate_layers(self, n_layers: int) -> None:
        """Layer numbers against the model; an `auto` encoding layer must have been resolved first
        (fine_tune_inputs.encoding_layer)."""
        if not isinstance(self.symbolic_encoding_layer, int):
            raise ConfigError(f"--symbolic_encoding_layer {self.symbolic_encoding_layer!r}: expected a layer "
                              f"number or auto")
        if not self.symbolic_decoding_layers:
            raise ConfigError("--symbolic_decoding_layers is empty: give at least one residual layer to write")
        if not 0 <= self.symbolic_encoding_layer <= n_layers:
            raise ConfigError(f"--symbolic_encoding_layer {self.symbolic_encoding_layer}: this model has residual "
                              f"layers 0..{n_layers}")
        bad = [l for l in self.symbolic_decoding_layers if not 0 <= l <= n_layers]
        if bad:
            raise ConfigError(f"--symbolic_decoding_layers {bad}: this model has residual layers 0..{n_layers}")
        if min(self.symbolic_decoding_layers) < self.symbolic_encoding_layer:
            raise ConfigError(f"--symbolic_decoding_layers {self.symbolic_decoding_layers} must not precede "
                              f"--symbolic_encoding_layer {self.symbolic_encoding_layer} (the answer is not known yet)")


@dataclass
class EvaluationOptions:
    """stage 3: evaluation"""
    test_baseline: int = option(0, "0: the neurosymbolic model only; 1: also the plain model on the same rows; 2: the plain model only (no training)", choices=(0, 1, 2))
    testing_num_steps: int = option(100, "random test problems per type = testing_num_steps x testing_n_samples (without a test CSV; a test CSV is evaluated whole)")
    testing_n_samples: int = option(2, "see testing_num_steps (the original's test batch size)")
    modify_question_format: bool = option(False, "ask each test question in a phrasing drawn at random per question from a pool per type (bare expressions such as '515 * 424 mod 1000', commands, noun phrases) instead of the canonical one; training, validation and the few-shot examples keep the canonical phrasing")
    test_with_non_numerical_rep: bool = option(False, "write the numbers of each test question, of its few-shot examples and their answers in English words; the answer is read in digits or in words and gets --cot_max_new_tokens new tokens")
    eval_batch_size: int = option(16, "prompts per forward in evaluation")
    record_score_per_problem: int = option(2, "gate scores per question: 0 none, 1 training, 2 test (responses.csv and gate histogram), 3 both")
    save_responses: bool = option(True, "write responses.csv (every evaluated question and method)")


LORA_TARGETS = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]


@dataclass
class BaselineOptions:
    """stage 3: baselines and gate statistics"""
    lora_baseline: bool = option(False, "train and evaluate LoRA (peft) on the frozen model instead of the neurosymbolic decoder")
    adapter_baseline: bool = option(False, "train and evaluate the paper's 'LoRA' row: an ungated Enc/Dec bottleneck at the intervention point")
    adapter_init: str = option("stage2", "adapter start: stage2 (the encoder/decoder files) or fresh (random init)", choices=("stage2", "fresh"))
    cot: bool = option(False, "evaluate chain-of-thought prompting of the plain model (no training)")
    read_and_print: bool = option(False, "also evaluate 'read and print' (no training): the solver's answer for the encoder's reading is printed as the reply, no write-back (the plain model answers where the gate is closed)")
    cot_max_new_tokens: int = option(1000, "new-token budget of a chain-of-thought answer")
    test_on_unrelated_questions: bool = option(False, "gate statistics on seen math, unseen math and non-math prompts (gate_scores.csv/png)")
    lora_rank: int = option(8, "LoRA rank r")
    lora_alpha: float = option(16.0, "LoRA alpha (scaling alpha / r)")
    lora_targets: list[str] = option(LORA_TARGETS, "module names LoRA wraps")
    lora_learning_rate: float = option(1e-4, "Adam learning rate of the LoRA parameters")
    lora_dropout: float = option(0.0, "LoRA dropout")


@dataclass
class FineTuneConfig(FineTuneOptions, InterventionOptions, EvaluationOptions, BaselineOptions, ModelOptions,
                     SymbolicOptions, DataOptions, RunOptions):
    """stage 3: decoder fine-tuning in context, evaluation and baselines"""

    config_section: ClassVar[str] = "fine_tune_decoders"
    unused_options: ClassVar[tuple] = ("max_digits", "vsa_seed", "possible_problems")
    unused_reason: ClassVar[str] = "stage 3 takes the VSA engine (digits, codebook, problem list) from the map files"
    group_titles: ClassVar[dict] = {
        "SymbolicOptions": "symbolic: the problems' number format (the VSA engine itself comes from the map "
                           "files; --VSA_dim only sizes a fresh adapter run without them)"}

    def validate(self) -> None:
        if sum(bool(getattr(self, f)) for f in MAIN_FLAGS) > 1:
            raise ConfigError(f"choose at most one of {', '.join('--' + f for f in MAIN_FLAGS)} per run")
        for name in ("n_samples", "inference_to_backprop_ratio", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1")
        if self.num_epochs < 0:
            raise ConfigError("--num_epochs must be at least 0 (0: evaluate the maps as they are, no training)")
        if self.checkpoint_every < 0:
            raise ConfigError("--checkpoint_every must be >= 0 (0: save the training state only at the end and on Ctrl-C)")
        self.validate_intervention()

    def methods(self) -> list[str]:
        """Methods of this run, in evaluation order: the plain model first, then the additions (before
        LoRA changes the model), then the main method (method_table.METHODS; --test_baseline 2: the
        plain model only, with chain of thought when --cot asks for it)."""
        main = next((m.name for m in METHODS.values() if m.main and m.flag and getattr(self, m.flag)), DEFAULT_MAIN)
        extras = [m.name for m in METHODS.values() if not m.main and m.flag != "test_baseline"
                  and getattr(self, m.flag)]
        if self.test_baseline == 2:
            return ["baseline"] + extras + ([main] if not METHODS[main].trains else [])
        return (["baseline"] if self.test_baseline == 1 else []) + extras + [main]

    def trained_method(self) -> Optional[str]:
        """The method this run trains (None: nothing trains)."""
        if self.num_epochs == 0:
            return None
        return next((m for m in self.methods() if METHODS[m].trains), None)

    def trains(self) -> bool:
        return self.trained_method() is not None

    def needs_maps(self) -> bool:
        return self.test_on_unrelated_questions or any(method_needs_maps(m, self) for m in self.methods())

    def hooks_layers(self) -> bool:
        """Whether a method of this run reads or writes residual layers (the layer options must fit the model)."""
        return any(METHODS[m].hooks_layers for m in self.methods())


# ----------------------------------------------------------------------------- ask and export-intervention
@dataclass
class SavedRunOptions:
    """a saved run: its configuration as the defaults"""
    run: str = option("", "a run name (Programs/results/<run>/): its config_fine_tune.yaml gives the model, maps, layers and gate settings (command-line options override them), its intervention/ folder the artefact; a stage-2 run is followed to the one neurosymbolic stage-3 run that used its maps")


@dataclass
class AskOptions:
    """ask: the questions and how they are asked"""
    questions: list[str] = option([], "questions to ask, each one argument (quote them)")
    questions_file: str = option("", "a text file of questions, one per line (blank lines and lines starting with # are skipped)")
    intervention: str = option("", "an intervention artefact folder (intervention.json + intervention.safetensors); default: the run's")
    examples_type: str = option("auto", "few-shot examples of this problem type; auto: the question's own type when it is in one of the dataset's phrasings, otherwise no examples (the gate statistics' non-math prompt)")
    max_new_tokens: int = option(0, "new tokens per answer (0: the pipeline's budget for a bare-integer answer)")
    json: bool = option(False, "print one JSON object per question (JSON lines) instead of text (a bare flag)")


# What ask reads of stage 3's options; the others are accepted (a run's saved configuration loads)
# but not listed in --help.
_ASK_READS = {"encoder_path", "decoder_path", "decoder_init", "allow_other_weights", "eval_batch_size", "chpt_dir",
              "tokenizer_path", "max_seq_len", "dtype", "device", "programs_dir", "seed", "complexity",
              "limit_solution_digits", "run_name", *InterventionOptions.__dataclass_fields__}


@dataclass
class AskConfig(AskOptions, SavedRunOptions, FineTuneConfig):
    """ask a trained intervention questions"""
    positional_options: ClassVar[tuple] = ("questions",)
    flag_options: ClassVar[tuple] = ("json",)
    unused_options: ClassVar[tuple] = tuple(n for n in FineTuneConfig.__dataclass_fields__ if n not in _ASK_READS)
    unused_reason: ClassVar[str] = "ask reads the model, the maps or artefact and the intervention's settings only"

    def validate(self) -> None:
        self.validate_intervention()
        if self.examples_type != "auto" and self.examples_type not in PROBLEM_TYPES:
            raise ConfigError(f"--examples_type {self.examples_type}: expected auto or one of {', '.join(PROBLEM_TYPES)}")


@dataclass
class ExportOptions:
    """export: where the artefact goes"""
    out: str = option("", "the artefact folder to write (default: Programs/results/<run>/intervention/)")


@dataclass
class ExportConfig(ExportOptions, SavedRunOptions, FineTuneConfig):
    """export a run's trained intervention as one artefact"""
    unused_options: ClassVar[tuple] = AskConfig.unused_options
    unused_reason: ClassVar[str] = "export reads the maps and the intervention's settings only"

    def validate(self) -> None:
        self.validate_intervention()
