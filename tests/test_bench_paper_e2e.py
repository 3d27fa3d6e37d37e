"""benchmarks/bench_paper_e2e.py runs the paper's stages end to end; --tiny is the same code on the
CPU with a tiny model (the GPU run differs only in model size, dtype and row counts)."""
import pandas as pd
import pytest

import bench_paper_e2e as e2e  # benchmarks/ is on pytest's pythonpath (pyproject.toml)


def test_generation_limit_by_hand():
    """Two batches: the prefill by FLOPs, each decode step by the larger of bytes and FLOPs."""
    card = e2e.Card(peak=1e6, peak32=1e5, bandwidth=1e4)
    m = e2e.Shape(body=100, head=10, n_layers=4, dim=8, element=2, kv=3)
    t = e2e.generate_s(card, m, prompts=[5, 3, 4], generated=[2, 4, 1], budget=3, batch=2)
    prefill = 2 * (100 * 8 + 10 * 2) / 1e6 + 2 * (100 * 4 + 10 * 1) / 1e6
    # batch 1: min(3, 4) - 1 = 2 steps over S = 5 cached tokens (+ the step's), 2 rows; batch 2: none
    steps = sum(max((110 * 2 + 2 * (5 + i) * 3) / 1e4, 2 * 110 * 2 / 1e6) for i in range(2))
    assert t == pytest.approx(prefill + steps)
    full = e2e.train_s(card, m, [5], [2], every_position=True, layer=1)
    split = e2e.train_s(card, m, [5], [2], every_position=False, layer=1)
    assert full == pytest.approx(2 * 2 * (100 * 7 + 10 * 2) / 1e6)
    assert split == pytest.approx(2 * (100 * 7 + 10 * 2) / 1e6 + 2 * (100 * 3 / 4 * 3 + 10 * 2) / 1e6)


@pytest.mark.slow
def test_tiny_run_end_to_end(tmp_path, capsys):
    out = e2e.run(e2e.parse_args(["--tiny", "--work", str(tmp_path), "--lanes", "2"]))
    titles = ["CSV splits", "stage 1: gather", "stage 2: encoders/decoders", "stage 3 and baselines",
              "table (compare_runs)"]
    assert list(out["walls"]) == titles and all(w > 0 for w in out["walls"].values())
    runs = out["runs"]
    for name in ("stage1", "stage2", "e2e_ns", "e2e_adapter", "e2e_lora", "e2e_cot"):
        assert runs[name].limit > 0, name  # how it compares with the wall time is the benchmark's to print
    table = pd.read_csv(tmp_path / "results" / "e2e" / "results.csv")
    assert set(table["method"]) == {"neurosymbolic", "baseline", "adapter", "lora", "cot"}
    cot = pd.read_csv(tmp_path / "results" / "e2e_cot" / "responses.csv")
    assert len(cot) == 20  # every test question, none capped
    printed = capsys.readouterr().out
    assert "total" in printed and "share" in printed


@pytest.mark.slow
def test_tiny_train_sweep(capsys):
    """Every micro-batch x accumulation split of the paper's 8 samples, with and without the prefix split."""
    out = e2e.train_sweep(e2e.parse_args(["--tiny", "--train_sweep", "--sweep_steps", "1"]))
    assert [(r["micro"], r["accum"], r["prefix_split"]) for r in out] == [
        (m, 8 // m, s) for m in (8, 4, 2, 1) for s in (True, False)]
    assert all(r["step_s"] > 0 and r["mfu"] > 0 for r in out)  # MFU against the measured peak: the benchmark's table
    assert "fastest at the paper's 8 samples per step" in capsys.readouterr().out
