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
from neurosymbolic_llm.pipeline.method_table import DEFAULT_MAIN, MAIN_FLAGS, METHODS, TWO_STEP_METHODS
from neurosymbolic_llm.pipeline.method_table import needs_maps as method_needs_maps
from neurosymbolic_llm.pipeline.config_files import register_schemas
from neurosymbolic_llm.pipeline.layer_choice import read_layers
from neurosymbolic_llm.pipeline.options import (SEED_MAX, DataOptions, ModelOptions, RunOptions, SymbolicOptions,
                                                  option)
from neurosymbolic_llm.symbolic.problem_types import PROBLEM_TYPES


def step_keys(option_name: str):
    """A check that every key of a {step or epoch: factor} schedule is a step, >= 0."""
    def check(schedule: dict) -> None:
        bad = [k for k in schedule if k < 0]
        if bad:
            raise ConfigError(f"option {option_name}: step {bad[0]} must be at least 0 (keys are steps or epochs)")
    return check


# ----------------------------------------------------------------------------- stages 1 and 2
@dataclass
class GatherOptions:
    """stage 1: gathering hidden states"""
    n_samples: int = option(0, "prompts per forward pass (default 0: sized for the device, 64 on cuda, 16 on cpu)", low=0)
    train_data_rounds: int = option(20000, "random training problems when no training CSV is given", low=1)
    val_data_rounds: int = option(200, "random validation problems when no validation CSV is given", low=1)
    testing_data_rounds: int = option(2000, "random test problems when no test CSV is given", low=1)
    layer_numbers: list[int] = option([], "residual layers to record, 0..n_layers (default: all)", low=0)
    save_frequency: int = option(1000, "rows per shard of gathered data (the unit of resuming)", low=1)
    gathered_data_dir: str = option("", "folder of the gathered data (default: <programs_dir>/gathered_data_<run_name>)")
    few_shot_seed: int = option(-1, "seed of the few-shot examples of each prompt (default -1: --seed)", low=-1,
                                high=SEED_MAX)


@dataclass
class EncoderTrainingOptions:
    """stage 2: training encoders and decoders"""
    training_epochs: int = option(1000, "encoder training epochs", low=0)
    decoding_epochs: int = option(1000, "decoder training epochs", low=0)
    learning_rate: float = option(1e-3, "Adam learning rate of the encoders", above=0)
    decoder_learning_rate: float = option(0.0, "Adam learning rate of the decoders (default 0: --learning_rate)", low=0)
    batch_size: int = option(512, "rows per optimiser step", low=1)
    encoder_lr_schedule: dict[int, float] = option({50: 0.5, 100: 0.5, 250: 0.1, 500: 0.4},
                                                   "{epoch: multiplier} applied to the encoder learning rate",
                                                   above=0, check=step_keys("encoder_lr_schedule"))
    decoder_lr_schedule: dict[int, float] = option({10: 0.1, 25: 0.5, 100: 0.5, 250: 0.4},
                                                   "{epoch: multiplier} applied to the decoder learning rate",
                                                   above=0, check=step_keys("decoder_lr_schedule"))
    map_init: str = option("least_squares", "initial maps: ridge least squares or PyTorch's random init",
                           choices=["least_squares", "random"])
    ridge: float = option(1e-4, "ridge of the least-squares init, relative to the mean input energy", low=0)
    patience: int = option(100, "stop early after this many epochs without a 0.1 percent better validation RMSE in any layer "
                                "(0: never; default 100)", low=0)
    weight_dtype: str = option("float32", "dtype of the trained weights (master copy and Adam state)",
                               choices=["float32", "float64"])
    joint_encoder_layers: list[int] = option([], "also train one encoder of these layers' states concatenated "
                                                 "(stage 3: --symbolic_encoding_layer 3+4+5)", low=0)
    rows_curve: list[int] = option([], "also refit the best layer's and the joint encoder on these first training "
                                       "rows: rows_curve.{csv,png}", low=1)


@dataclass
class TrainEncodersConfig(GatherOptions, EncoderTrainingOptions, ModelOptions, SymbolicOptions, DataOptions,
                          RunOptions):
    """which stage runs"""

    config_section: ClassVar[str] = "train_encoders_and_decoders"
    generate_data: bool = option(True, "1: stage 1, gather hidden states; 0: stage 2, train encoders and decoders")

    def validate(self) -> None:
        if self.complexity + 1 > self.max_digits:
            raise ConfigError(f"option complexity {self.complexity}: operands of up to {self.complexity + 1} digits do "
                              f"not fit --max_digits {self.max_digits}")


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
    encoder_path: str = option("", "stage-2 encoder file, Programs/models/encoders_<run>.pth (no default; see docs/RUNNING.md)")
    decoder_path: str = option("", "stage-2 decoder file (no default); the fine-tuned one is saved beside it")
    decoder_init: str = option("file", "where the decoders start: file (--decoder_path's maps) or zero (docs/RUNNING.md)",
                               choices=("file", "zero"))
    allow_other_weights: bool = option(False, "use maps made on other weights of the same architecture (a quantized copy; "
                                              "docs/RUNNING.md)")
    num_steps: int = option(1000, "optimizer steps per epoch with random problems (with a training CSV: ceil(rows / "
                                  "samples per step))", low=1)
    num_epochs: int = option(1, "passes over the training data (0: no training, evaluate the given maps as they are)",
                            low=0)
    n_samples: int = option(8, "micro-batch: prompts per forward in training", low=1)
    inference_to_backprop_ratio: int = option(1, "micro-batches per optimizer step (samples per step = n_samples x this)",
                                              low=1)
    prefix_split: bool = option(True, "run the prompt before its last token once without gradients (same gradients; "
                                      "docs/RUNNING.md)")
    learning_rate: float = option(1e-3, "Adam learning rate of the decoder (and skip / RMSNorm / adapter)", above=0)
    lr_decay: dict[int, float] = option(LR_DECAY_DEFAULT, "learning-rate multipliers {optimizer step: factor}, cumulative",
                                        above=0, check=step_keys("lr_decay"))
    cache_prompt_prefixes: bool = option(False, "keep the prompts' keys and values after the first epoch in memory "
                                                "(same gradients; docs/RUNNING.md)")
    validation_interval: int = option(1, "validate after every k-th epoch and after the last (0: never)", low=0)
    training_rows: int = option(0, "use the first this many rows of the training CSV (0: all)", low=0)
    validation_rows: int = option(200, "validation problems (random) / at most this many validation CSV rows (0: all; "
                                       "default 200)", low=0)
    checkpoint_every: int = option(100, "optimizer steps between saves of the training state (0: only at the end and "
                                        "on Ctrl-C; default 100)", low=0)
    restart: bool = option(False, "ignore a saved training state of this run and train from step 0 (it is replaced)")
    # science (issue 26): the write-side recipe, evaluated behind the encoder.
    train_on_true_operands: bool = option(False, "train the decoder with the true operands and type given to the solver; evaluation reads with the encoder")


MERGES = ("convex", "add", "add_rmsnorm")


@dataclass
class InterventionOptions:
    """stage 3: the neurosymbolic intervention (also the adapter's place)"""
    symbolic_encoding_layer: int | str = option(17, "residual index read by the encoder (0 = embeddings), 3+4+5 "
                                                    "(layers read at once), or auto (best on validation)", low=0)
    symbolic_decoding_layers: list[int] = option([17], "residual indices written by the decoder(s) (each >= the encoding "
                                                       "layer)", low=0)
    problem_score_threshold: float = option(0.8, "gate: intervene iff the best problem-type score exceeds this")
    problem_score_max: float = option(math.inf, "gate: and is below this (inf: the paper's one-sided gate; choose it "
                                                "with gate-statistics)")
    merge: str = option("convex", "how the decoded vector meets the residual: convex ((1-s)·dec + s·h), add, add_rmsnorm",
                        choices=MERGES)
    rms_layer: bool = option(False, "alias of --merge add_rmsnorm (the original's flag)")
    starting_skip_strength: float = option(0.5, "s of the convex merge (weight of the original state)", low=0, high=1)
    trainable_skip: bool = option(False, "train s (convex merge) together with the decoder")
    static_encoding: bool = option(True, "reuse the answer vector of the last prompt position at later written positions")
    multi_token_intervention: bool = option(False, "also write every position after the last prompt position (generated / answer positions)")
    simulate_perfect_encoder: bool = option(False, "feed the true operands and type to the solver (the gate still uses the encoder)")
    encode_counter: bool = option(False, "with --multi_token_intervention: add the counter x^t to the answer vector "
                                         "written t positions on (docs/RUNNING.md)")

    # science (issue 26): the gate's margins (pipeline/gate.py; chosen with Programs/gate_statistics.py)
    gate_min_type_margin: float = option(0.0, "gate: and the best problem-type score leads the second best by at least this (0: not checked)")
    gate_min_digit_margin: float = option(0.0, "gate: and the least sure digit decision of the operands has at least this margin (0: not checked)")

    def merge_mode(self) -> str:
        return "add_rmsnorm" if self.rms_layer else self.merge

    def validate_intervention(self) -> None:
        """Option combinations that cannot work, before any model is loaded."""
        if self.symbolic_encoding_layer != "auto":
            self.read_layers()  # a ConfigError names a malformed read
        if not self.symbolic_decoding_layers:
            raise ConfigError("--symbolic_decoding_layers is empty: give at least one residual layer to write")
        if not self.problem_score_max > self.problem_score_threshold:
            raise ConfigError(f"--problem_score_max {self.problem_score_max} must exceed --problem_score_threshold "
                              f"{self.problem_score_threshold}: the gate would never open")
        for name in ("gate_min_type_margin", "gate_min_digit_margin"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"--{name} {getattr(self, name)} must be >= 0 (0: not checked)")
        if self.encode_counter and not self.multi_token_intervention:
            raise ConfigError("--encode_counter 1 needs --multi_token_intervention 1: the counter marks the "
                              "positions after the last prompt position, which are written only then")

    def read_layers(self) -> tuple[int, ...]:
        """The residual layers the encoder reads, ascending (one, or several read at once)."""
        if self.symbolic_encoding_layer == "auto":
            raise ConfigError("--symbolic_encoding_layer auto must be resolved first (fine_tune_inputs.encoding_layer)")
        try:
            return read_layers(self.symbolic_encoding_layer)
        except ConfigError as exc:
            raise ConfigError(f"--symbolic_encoding_layer: {exc}; or auto") from None

    def validate_layers(self, n_layers: int) -> None:
        """Layer numbers against the model; an `auto` encoding layer must have been resolved first
        (fine_tune_inputs.encoding_layer)."""
        reads = self.read_layers()
        if not self.symbolic_decoding_layers:
            raise ConfigError("--symbolic_decoding_layers is empty: give at least one residual layer to write")
        if not all(0 <= l <= n_layers for l in reads):
            raise ConfigError(f"--symbolic_encoding_layer {self.symbolic_encoding_layer}: this model has residual "
                              f"layers 0..{n_layers}")
        bad = [l for l in self.symbolic_decoding_layers if not 0 <= l <= n_layers]
        if bad:
            raise ConfigError(f"--symbolic_decoding_layers {bad}: this model has residual layers 0..{n_layers}")
        if min(self.symbolic_decoding_layers) < reads[-1]:
            raise ConfigError(f"--symbolic_decoding_layers {self.symbolic_decoding_layers} must not precede "
                              f"--symbolic_encoding_layer {self.symbolic_encoding_layer} (the answer is not known yet)")


@dataclass
class EvaluationOptions:
    """stage 3: evaluation"""
    test_baseline: int = option(0, "the plain model: none (0, the neurosymbolic model only), also (1) or only (2, no "
                                   "training)", choices=(0, 1, 2), names={"none": 0, "also": 1, "only": 2})
    testing_num_steps: int = option(100, "random test problems per type = this x testing_n_samples (a test CSV is "
                                         "evaluated whole)", low=0)
    testing_n_samples: int = option(2, "see testing_num_steps (the original's test batch size)", low=1)
    modify_question_format: bool = option(False, "ask each test question in a phrasing drawn at random from a pool per "
                                                 "type (docs/RUNNING.md)")
    test_with_non_numerical_rep: bool = option(False, "write the numbers of each test question and its examples in "
                                                      "English words (docs/RUNNING.md)")
    eval_batch_size: int = option(16, "prompts per forward in evaluation", low=1)
    record_score_per_problem: int = option(2, "gate scores per question: none (0), train (1), test (2: responses.csv, "
                                              "histogram) or both (3)", choices=(0, 1, 2, 3),
                                           names={"none": 0, "train": 1, "test": 2, "both": 3})
    save_responses: bool = option(True, "write responses.csv (every evaluated question and method)")
    two_step_questions: int = option(0, "two-step questions per seen type: its first test rows, then a step using the "
                                        "answer (0: none; docs/RUNNING.md)", low=0)


LORA_TARGETS = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]


@dataclass
class BaselineOptions:
    """stage 3: baselines and gate statistics"""
    lora_baseline: bool = option(False, "train and evaluate LoRA (peft) on the frozen model instead of the neurosymbolic decoder")
    adapter_baseline: bool = option(False, "train and evaluate the paper's 'LoRA' row: an ungated Enc/Dec bottleneck at the intervention point")
    adapter_init: str = option("stage2", "adapter start: stage2 (the encoder/decoder files) or fresh (random init)", choices=("stage2", "fresh"))
    cot: bool = option(False, "evaluate chain-of-thought prompting of the plain model (no training)")
    read_and_print: bool = option(False, "also evaluate 'read and print': the solver's answer for the encoder's reading "
                                         "as the reply (docs/RUNNING.md)")
    cot_max_new_tokens: int = option(1000, "new-token budget of a chain-of-thought answer", low=1)
    test_on_unrelated_questions: bool = option(False, "gate statistics on seen math, unseen math and non-math prompts (gate_scores.csv/png)")
    lora_rank: int = option(8, "LoRA rank r", low=1)
    lora_alpha: float = option(16.0, "LoRA alpha (scaling alpha / r)", above=0)
    lora_targets: list[str] = option(LORA_TARGETS, "module names LoRA wraps", choices=LORA_TARGETS)
    lora_learning_rate: float = option(1e-4, "Adam learning rate of the LoRA parameters", above=0)
    lora_dropout: float = option(0.0, "LoRA dropout", low=0, high=0.99)


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
        if self.two_step_questions and not set(TWO_STEP_METHODS) & set(self.methods()):
            raise ConfigError(f"--two_step_questions {self.two_step_questions} asks {', '.join(TWO_STEP_METHODS)}; "
                              f"this run evaluates none of them ({', '.join(self.methods())})")
        if self.lora_baseline and not self.lora_targets:
            raise ConfigError("--lora_targets is empty: name the modules LoRA wraps (wq wk wv wo w1 w2 w3)")
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
    run: str = option("", "a run name: its saved config_fine_tune.yaml as the defaults and its intervention/ artefact "
                          "(docs/RUNNING.md)")


@dataclass
class AskOptions:
    """ask: the questions and how they are asked"""
    questions: list[str] = option([], "questions to ask, each one argument (quote them)")
    questions_file: str = option("", "a text file of questions, one per line (blank lines and lines starting with # are skipped)")
    intervention: str = option("", "an intervention artefact folder (intervention.json + intervention.safetensors); default: the run's")
    examples_type: str = option("auto", "few-shot examples of this problem type; auto: the question's own type when "
                                        "it has a dataset phrasing, else none")
    max_new_tokens: int = option(0, "new tokens per answer (0: the pipeline's budget for a bare-integer answer)", low=0)
    json: bool = option(False, "print one JSON object per question (JSON lines) instead of text (a bare flag)")


# What ask reads of stage 3's options; the others are accepted (a run's saved configuration loads)
# but not listed in --help.
_ASK_READS = {"encoder_path", "decoder_path", "decoder_init", "allow_other_weights", "eval_batch_size", "chpt_dir",
              "tokenizer_path", "max_seq_len", "dtype", "device", "programs_dir", "seed", "complexity",
              "limit_solution_digits", "run_name", *InterventionOptions.__dataclass_fields__} - {"trainable_skip"}
# The groups of stage 3 as ask, export and gate-statistics read them (no training there).
_READ_ONLY_TITLES = {
    "FineTuneOptions": "maps: the stage-2 encoder and decoder files",
    "InterventionOptions": "intervention: layers, gate and merge",
    "EvaluationOptions": "evaluation",
    "SymbolicOptions": "symbolic: the problems' number format (the VSA engine comes from the maps)",
    "DataOptions": "data: the validation split"}


@dataclass
class AskConfig(AskOptions, SavedRunOptions, FineTuneConfig):
    """ask a trained intervention questions"""
    positional_options: ClassVar[tuple] = ("questions",)
    flag_options: ClassVar[tuple] = ("json",)
    unused_options: ClassVar[tuple] = tuple(f.name for f in dataclasses.fields(FineTuneConfig) if f.name not in _ASK_READS)
    unused_reason: ClassVar[str] = "ask reads the model, the maps or artefact and the intervention's settings only"
    group_titles: ClassVar[dict] = _READ_ONLY_TITLES

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
    unused_options: ClassVar[tuple] = AskConfig.unused_options + ("eval_batch_size", "max_seq_len", "dtype", "device")
    unused_reason: ClassVar[str] = "export reads the maps and the intervention's settings only"
    group_titles: ClassVar[dict] = _READ_ONLY_TITLES

    def validate(self) -> None:
        self.validate_intervention()


# ----------------------------------------------------------------------------- gate-statistics
# What gate-statistics reads (stages/gate_statistics.py: the model, the maps, the validation split,
# the layers and the gate's bounds); stage 3's other options are accepted but not listed.
_GATE_READS = {"run_name", "programs_dir", "seed", "device", *ModelOptions.__dataclass_fields__, "complexity",
               "limit_solution_digits", "val_data_df_path", "training_data_df_path", "problem_type", "x_gt_y",
               "encoder_path", "decoder_path", "decoder_init", "allow_other_weights", "validation_rows",
               "symbolic_encoding_layer", "symbolic_decoding_layers", "problem_score_threshold", "problem_score_max",
               "eval_batch_size"}


@dataclass
class GateStatisticsConfig(FineTuneConfig):
    """gate scores on the validation split"""
    unused_options: ClassVar[tuple] = tuple(f.name for f in dataclasses.fields(FineTuneConfig)
                                        if f.name not in _GATE_READS)
    unused_reason: ClassVar[str] = "gate-statistics scores validation prompts with the stage-2 encoder; it trains nothing"
    group_titles: ClassVar[dict] = {**_READ_ONLY_TITLES, "FineTuneOptions": "maps: the stage-2 files (and the validation rows)",
                                    "InterventionOptions": "intervention: the layers and the gate's bounds",
                                    "DataOptions": "data: the validation split (and the seen types)"}


# Every command's schema: an option of any of them is known to all (config_files.py), and the
# schema that saved each stage's config_<stage>.yaml (pipeline/tracking.py).
register_schemas((TrainEncodersConfig, GatherConfig, FineTuneConfig, GateStatisticsConfig, AskConfig, ExportConfig),
                 {"gather": TrainEncodersConfig, "encoders": TrainEncodersConfig, "fine_tune": FineTuneConfig})
