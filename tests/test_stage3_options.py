"""Stage-3 options of the real-model preset: --decoder_init zero (decoding layers absent from the
stage-2 file), --training_rows, --validation_interval, and --num_epochs 0 (evaluate a fine-tuned
decoder as it is, e.g. with --simulate_perfect_encoder)."""
import json

import pandas as pd
import pytest
import torch

from test_fine_tuning import LAYER, stage3, write_csvs, write_maps
from neurosymbolic_llm.pipeline.errors import ConfigError, DataError
from neurosymbolic_llm.pipeline.maps import load_maps


def _argv(tmp_path, ckpt, enc, dec, csv, *extra):
    return ["--chpt_dir", str(ckpt), "--programs_dir", str(tmp_path), "--encoder_path", str(enc),
            "--decoder_path", str(dec), "--training_data_df_path", str(csv["train"]),
            "--val_data_df_path", str(csv["val"]), "--testing_data_df_path", str(csv["test"]),
            "--symbolic_encoding_layer", "1", "--symbolic_decoding_layers", str(LAYER), "--problem_type", "gcd,modulo",
            "--testing_problems", "gcd,modulo", "--n_samples", "4", "--eval_batch_size", "8", "--max_seq_len", "512",
            "--problem_score_threshold", "-100", "--lr_decay", "{}", *extra]


def _val_epochs(run_dir):
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["epoch"] for r in lines if "neurosymbolic/val_accuracy" in r]


def test_zero_decoder_init_trains_layers_missing_from_the_file(tiny_ckpt, tmp_path):
    enc, dec, _ = write_maps(tmp_path, tiny_ckpt, layers=(1,))  # no decoder for layer 2 in the file
    csv = write_csvs(tmp_path)
    with pytest.raises(DataError, match="no decoder for layer"):
        stage3(_argv(tmp_path, tiny_ckpt, enc, dec, csv, "--run_name", "F"))
    # 8 training rows capped to 4: one step per epoch; validation after epoch 2 (interval) and 3 (last)
    assert stage3(_argv(tmp_path, tiny_ckpt, enc, dec, csv, "--run_name", "Z", "--decoder_init", "zero",
                        "--training_rows", "4", "--num_epochs", "3", "--validation_interval", "2")) == 0
    tuned = load_maps(tmp_path / "decoders_run_post_fine_tuning_Z.pth", "decoder")
    assert list(tuned.weights) == [LAYER] and tuned.weights[LAYER].abs().sum() > 0  # moved away from zero
    steps = [json.loads(l) for l in (tmp_path / "results" / "Z" / "metrics.jsonl").read_text().splitlines()
             if "neurosymbolic/loss" in l]
    assert len(steps) == 3  # ceil(4 rows / 4 samples) x 3 epochs
    assert _val_epochs(tmp_path / "results" / "Z") == [1, 2]


def test_zero_epochs_evaluate_the_given_decoder_without_training(tiny_ckpt, tmp_path):
    enc, dec, _ = write_maps(tmp_path, tiny_ckpt, layers=(1, LAYER))
    csv = write_csvs(tmp_path)
    assert stage3(_argv(tmp_path, tiny_ckpt, enc, dec, csv, "--run_name", "E", "--num_epochs", "0",
                        "--simulate_perfect_encoder", "1")) == 0
    assert not (tmp_path / "decoders_run_post_fine_tuning_E.pth").exists()  # nothing trained, nothing saved
    res = pd.read_csv(tmp_path / "results" / "E" / "results.csv")
    assert set(res.method) == {"neurosymbolic"} and len(res) == 2
    with pytest.raises(ConfigError, match="num_epochs must be at least 0"):
        stage3(_argv(tmp_path, tiny_ckpt, enc, dec, csv, "--run_name", "E", "--num_epochs", "-1"))


def test_zero_init_does_not_replace_a_fine_tuned_decoder(tiny_ckpt, tmp_path):
    """--decoder_init zero replaces stage 2's decoders only: a fine-tuned decoder given for evaluation
    (the preset's --simulate_perfect_encoder run) is evaluated with its own weights, exactly as with
    --decoder_init file (it was once evaluated as zeros, which halved the residual instead)."""
    enc, dec, _ = write_maps(tmp_path, tiny_ckpt, layers=(1,))
    csv = write_csvs(tmp_path)
    assert stage3(_argv(tmp_path, tiny_ckpt, enc, dec, csv, "--run_name", "T", "--decoder_init", "zero",
                        "--training_rows", "4", "--num_epochs", "2")) == 0
    tuned = tmp_path / "decoders_run_post_fine_tuning_T.pth"
    ce = {}
    for init in ("zero", "file"):
        assert stage3(_argv(tmp_path, tiny_ckpt, enc, tuned, csv, "--run_name", f"E_{init}", "--num_epochs", "0",
                            "--decoder_init", init, "--simulate_perfect_encoder", "1")) == 0
        resp = pd.read_csv(tmp_path / "results" / f"E_{init}" / "responses.csv")
        ce[init] = resp.cross_entropy.to_numpy()
    assert (ce["zero"] == ce["file"]).all()
