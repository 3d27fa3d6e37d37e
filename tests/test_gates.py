"""Programs/gate_statistics.py on the tiny checkpoint against scores computed directly (one prompt at
a time, own residual hook); the gate's choice rule is tested in test_gate_rule.py."""

import pandas as pd
import pytest
import torch
from test_fine_tuning import write_csvs, write_maps

from neurosymbolic_llm.pipeline.configs import FineTuneConfig
from neurosymbolic_llm.stages.gate_statistics import run
from neurosymbolic_llm.pipeline.options import parse_config
from neurosymbolic_llm.pipeline.runtime import build_llama


def test_gate_statistics_scores_validation_prompts_as_a_direct_forward(tiny_ckpt, tmp_path, capsys):
    from neurosymbolic_llm.pipeline.maps import load_maps
    from neurosymbolic_llm.pipeline.training import build_examples
    from neurosymbolic_llm.symbolic.engine import SymbolicEngine
    from neurosymbolic_llm.symbolic.prompts import non_math_dialog, non_math_questions

    enc, dec, _ = write_maps(tmp_path, tiny_ckpt, layers=(1, 2))
    csv = write_csvs(tmp_path)
    argv = ["--chpt_dir", str(tiny_ckpt), "--programs_dir", str(tmp_path), "--run_name", "G",
            "--encoder_path", str(enc), "--decoder_path", str(dec), "--val_data_df_path", str(csv["val"]),
            "--symbolic_encoding_layer", "1", "--symbolic_decoding_layers", "2", "--problem_type", "gcd,modulo",
            "--problem_score_threshold", "-100", "--problem_score_max", "100", "--max_seq_len", "512",
            "--eval_batch_size", "8"]
    assert run(parse_config(FineTuneConfig, argv)) == 0
    printed = capsys.readouterr().out
    assert "proposed gate:" in printed and "AUROC" in printed
    got = pd.read_csv(tmp_path / "results" / "G" / "gate_validation.csv")
    assert (tmp_path / "results" / "G" / "gate_validation.png").is_file()
    val = pd.read_csv(csv["val"])
    assert list(got["group"]) == ["seen math"] * len(val) + ["non-math"] * 21
    assert got["gate_open"].tolist() == ((got["score"] > -100) & (got["score"] < 100)).tolist()

    # the reference: each prompt alone, the residual entering block 1 read by a hook of our own
    llama = build_llama(FineTuneConfig(chpt_dir=str(tiny_ckpt), max_seq_len=512), max_batch_size=1, device="cpu")
    w1 = load_maps(enc, "encoder").weights[1]  # [V, D]
    eng = SymbolicEngine.from_state_dict(load_maps(enc, "encoder").engine_state)
    ex = build_examples(val, llama.formatter, "val", seed=42, complexity=2, limit_solution_digits=True,
                        problem_list=list(eng.possible_problems))
    prompts = list(ex.prompts) + [llama.formatter.encode_dialog_prompt(non_math_dialog(q))
                                  for _, q in non_math_questions("val")]
    seen = {}
    handle = llama.model.register_residual_hook(1, lambda h, ctx: seen.__setitem__("h", h[:, -1].clone()))
    want = []
    with torch.no_grad():
        for p in prompts:
            llama.model(torch.tensor([p]), 0)
            want.append(eng.problem_type_scores(seen["h"].float() @ w1.T).max(-1).values.item())
    handle.remove()
    assert got["score"].tolist() == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_gate_statistics_decisions_recomputed_from_its_saved_readings(tiny_ckpt, tmp_path, capsys):
    """With a type-margin minimum between the readings' own values, gate_validation.csv's decisions are
    the rule recomputed here, and gate_open_rates.csv's rates are those of the saved readings."""
    import numpy as np

    enc, dec, _ = write_maps(tmp_path, tiny_ckpt, layers=(1, 2))
    csv = write_csvs(tmp_path)
    argv = ["--chpt_dir", str(tiny_ckpt), "--programs_dir", str(tmp_path), "--encoder_path", str(enc),
            "--decoder_path", str(dec), "--val_data_df_path", str(csv["val"]), "--symbolic_encoding_layer", "1",
            "--symbolic_decoding_layers", "2", "--problem_type", "gcd,modulo", "--problem_score_threshold", "-100",
            "--problem_score_max", "100", "--max_seq_len", "512", "--eval_batch_size", "8"]
    assert run(parse_config(FineTuneConfig, argv + ["--run_name", "A"])) == 0
    first = pd.read_csv(tmp_path / "results" / "A" / "gate_validation.csv")
    margins = np.sort(first["type_margin"].to_numpy())
    cut = float((margins[len(margins) // 2 - 1] + margins[len(margins) // 2]) / 2)
    assert run(parse_config(FineTuneConfig, argv + ["--run_name", "B", "--gate_min_type_margin", str(cut)])) == 0
    got = pd.read_csv(tmp_path / "results" / "B" / "gate_validation.csv")
    want = [-100 < s < 100 and m >= cut for s, m in zip(got["score"], got["type_margin"])]
    assert got["gate_open"].tolist() == want and any(want) and not all(want)
    calib = pd.read_csv(tmp_path / "results" / "B" / "gate_calibration.csv")
    rates = pd.read_csv(tmp_path / "results" / "B" / "gate_open_rates.csv")
    for _, row in rates.iterrows():
        part = calib[(calib["kind"] == row["kind"]) & (calib["group"] == row["group"])]
        opened = [-100 < s < 100 and m >= cut for s, m in zip(part["score"], part["type_margin"])]
        assert row["n"] == len(part) and row["open: configured"] == pytest.approx(sum(opened) / len(part))
    assert "proposed gate:" in capsys.readouterr().out
