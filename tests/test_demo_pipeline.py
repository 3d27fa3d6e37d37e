"""The demo end to end, reduced: build a small demo model, run stages 1-3 through the entry scripts,
and check that the neurosymbolic route beats the plain model on seen types while the gate keeps
unseen types as they were. Slow (a few minutes on one core) but part of CI."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ROOT / "Programs"

pytestmark = pytest.mark.slow


def run(script: str, *args: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    proc = subprocess.run([sys.executable, str(PROGRAMS / script), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)  # a hung stage fails, not the suite
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def test_reduced_demo_neurosymbolic_beats_plain_model(tmp_path):
    model, data, root = tmp_path / "model", tmp_path / "data", tmp_path / "programs"
    run("demo/make_tiny_llama.py", "--preset", "reduced", "--out", str(model))
    run("demo/make_demo_data.py", "--out", str(data), "--n_train", "2000", "--n_val", "50", "--n_test", "300")
    common = ["--config", str(PROGRAMS / "demo" / "demo.yaml"), "--chpt_dir", str(model),
              "--programs_dir", str(root), "--training_data_df_path", str(data / "train.csv"),
              "--val_data_df_path", str(data / "val.csv"), "--testing_data_df_path", str(data / "test.csv")]
    run("train_encoders_and_decoders.py", *common, "--run_name", "ci", "--generate_data", "1")
    run("train_encoders_and_decoders.py", *common, "--run_name", "ci", "--generate_data", "0")
    run("fine_tune_decoders.py", *common, "--run_name", "ci_ns", "--test_baseline", "1",
        "--encoder_path", str(root / "models" / "encoders_ci.pth"),
        "--decoder_path", str(root / "models" / "decoders_ci.pth"))

    enc = pd.read_csv(root / "results" / "ci" / "encoding_accuracy.csv")
    at_2 = enc[(enc.layer == 2) & (enc.split == "test") & (enc.seen == "seen")]
    assert float(at_2.x_accuracy.iloc[0]) > 0.9 and float(at_2.y_accuracy.iloc[0]) > 0.9

    res = pd.read_csv(root / "results" / "ci_ns" / "results.csv")
    assert set(res.method) == {"neurosymbolic", "baseline"}
    acc = res.pivot(index="problem_type", columns="method", values="accuracy")
    seen = res[res.seen].problem_type.unique()
    unseen = res[~res.seen].problem_type.unique()
    assert acc.loc[seen, "neurosymbolic"].mean() > acc.loc[seen, "baseline"].mean() + 0.3, acc
    # The gate stays closed on types the encoder never saw: the plain model's answers are kept.
    assert (acc.loc[unseen, "neurosymbolic"] - acc.loc[unseen, "baseline"]).abs().max() < 0.05, acc
