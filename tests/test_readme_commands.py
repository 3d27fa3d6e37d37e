"""Every command line of the README's per-stage section ("Running it on Llama 3.1 8B Instruct"), run
as printed on a tiny model with the demo's config and small CSVs.

The command lines are read from README.md itself, so the README cannot drift from what runs. What
the test changes: `python Programs/X.py` runs X.py of this checkout with this interpreter; the
placeholders `[csv options]`, `[same csv options]` and `[same options]` become the options they
stand for; and every pipeline script gets `--config Programs/demo/demo.yaml` (after the README's
`--config Programs/configs/paper.yaml`, so it replaces it), the tiny checkpoint
and a Programs folder in a temporary directory (which is also the working directory, so the
README's relative paths `train.csv` and `Programs/models/encoders_R.pth` point into it).
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from neurosymbolic_llm.symbolic.problems import generate_problems

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ROOT / "Programs"

pytestmark = pytest.mark.slow


def readme_commands() -> list[list[str]]:
    """The `python Programs/...` lines of the per-stage section, continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Running it on Llama 3.1 8B Instruct", 1)[1].split("\n## ", 1)[0]
    block = section.split("Then the three stages", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = re.sub(r"\\\n\s*", " ", block).splitlines()
    commands = [line.split("#", 1)[0] for line in lines if line.startswith("python Programs/")]
    return [shlex.split(c.replace("[", "'[").replace("]", "]'")) for c in commands]


def expand(argv: list[str], csv: list[str], same: list[str]) -> list[str]:
    out = []
    for a in argv:
        out += {"[csv options]": csv, "[same csv options]": csv, "[same options]": same}.get(a, [a])
    return out


def test_readme_stage_commands_run_on_a_tiny_model(tiny_ckpt, tmp_path):
    commands = readme_commands()
    scripts = [c[1] for c in commands]
    assert scripts == ["Programs/train_encoders_and_decoders.py"] * 2 + ["Programs/gate_statistics.py"] + [
        "Programs/fine_tune_decoders.py"] * 4 + ["Programs/compare_runs.py"], scripts
    assert all("--config" in c for c in commands[:4]), "the 8B commands use the paper's settings"
    # a few rows of two seen types (and, in the test split, two of each of them and of one unseen type),
    # as the README's train/val/test.csv
    generate_problems(16, ["gcd", "modulo"], seed=1).to_csv(tmp_path / "train.csv", index=False)
    generate_problems(4, ["gcd", "modulo"], seed=2).to_csv(tmp_path / "val.csv", index=False)
    pd.concat([generate_problems(2, [t], seed=3) for t in ("gcd", "modulo", "addition")]).to_csv(
        tmp_path / "test.csv", index=False)
    csv = commands[0][commands[0].index("--training_data_df_path"):]
    stage3 = commands[3]
    same = expand(stage3[stage3.index("--config"):], csv, [])
    programs = tmp_path / "Programs"
    small = ["--config", str(PROGRAMS / "demo" / "demo.yaml"), "--chpt_dir", str(tiny_ckpt),
             "--programs_dir", str(programs), "--problem_type", "gcd,modulo",
             "--testing_problems", "gcd,modulo,addition"]
    sizes = {"Programs/train_encoders_and_decoders.py": ["--training_epochs", "5", "--decoding_epochs", "5",
                                                         "--n_samples", "16"],
             "Programs/fine_tune_decoders.py": ["--n_samples", "8", "--eval_batch_size", "8",
                                                "--cot_max_new_tokens", "8"],
             "Programs/gate_statistics.py": ["--eval_batch_size", "8"]}
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    for argv in commands:
        script, args = argv[1], expand(argv[2:], csv, same)
        extra = ["--programs_dir", str(programs)] if script.endswith("compare_runs.py") else small + sizes[script]
        proc = subprocess.run([sys.executable, str(ROOT / script), *args, *extra], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(argv)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"

    assert (programs / "gathered_data_R" / "manifest.json").is_file()
    assert (programs / "models" / "encoders_R.pth").is_file()
    assert (programs / "models" / "decoders_R_post_fine_tuning_R.pth").is_file()
    for run, methods in (("R", {"neurosymbolic", "baseline"}), ("R_lora", {"lora"}),
                         ("R_adapter", {"adapter"}), ("R_cot", {"cot"})):
        res = pd.read_csv(programs / "results" / run / "results.csv")
        assert set(res["method"]) == methods, run
        assert sorted(res["problem_type"].unique()) == ["addition", "gcd", "modulo"], run
    merged = pd.read_csv(programs / "results" / "compare_R_R_lora_R_adapter_R_cot" / "results.csv")
    assert set(merged["method"]) == {"neurosymbolic", "baseline", "lora", "adapter", "cot"}
    gates = pd.read_csv(programs / "results" / "R_gate" / "gate_validation.csv")
    assert set(gates["group"]) == {"seen math", "non-math"} and (gates["group"] == "non-math").sum() == 21
