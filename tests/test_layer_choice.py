"""--symbolic_encoding_layer auto: stage 2 measures, per layer, the validation questions whose x, y and
type all decode right (all_accuracy, stored in the encoder file); stage 3 picks the best layer not
after the first decoding layer and records it in the run's config_fine_tune.yaml."""
import pandas as pd
import pytest
import torch
import yaml

from neurosymbolic_llm.pipeline.configs import FineTuneConfig
from neurosymbolic_llm.pipeline.layer_choice import best_encoding_layer
from neurosymbolic_llm.stages.train_maps import encoding_accuracy
from neurosymbolic_llm.pipeline.errors import ConfigError, DataError
from neurosymbolic_llm.pipeline.hidden_store import SplitData
from neurosymbolic_llm.pipeline.options import parse_config
from neurosymbolic_llm.symbolic.engine import SymbolicEngine


def test_best_layer_is_the_most_accurate_one_not_after_the_first_decoding_layer():
    acc = {0: 0.0, 2: 0.4, 4: 0.7, 6: 0.7, 8: 0.5, 17: 0.9}
    assert best_encoding_layer(acc, max_layer=16) == 4  # 17 is better but would be read after writing at 16
    assert best_encoding_layer(acc, max_layer=17) == 17
    assert best_encoding_layer(acc, max_layer=5) == 4
    assert best_encoding_layer({"3": 0.2, "1": 0.2}, max_layer=3) == 1  # ties: the earliest layer
    with pytest.raises(DataError, match="no encoder layer .* at or before layer 1"):
        best_encoding_layer({2: 0.5, 4: 0.7}, max_layer=1)


def test_stage2_best_layer_is_chosen_on_validation_not_test():
    """Layer 2 decodes the test split best, layer 5 the validation split: stage 2 names layer 5 (it
    named 2, chosen on the test split), with the test split's figure beside it."""
    from neurosymbolic_llm.stages.train_maps import best_layer_line

    rows = []
    for layer, val, test in ((0, 0.1, 0.1), (2, 0.6, 0.95), (5, 0.9, 0.7), (7, 0.9, 0.5)):
        for split, acc in (("train", 1.0), ("val", val), ("test", test)):
            row = {"layer": layer, "split": split, "seen": "seen", "n": 10, "x_accuracy": acc, "y_accuracy": acc,
                   "type_accuracy": acc, "all_accuracy": acc, "digit_accuracy": acc}
            rows += [row, {**row, "seen": "unseen", "all_accuracy": float(layer == 0)}]  # unseen types never choose
    layer, line = best_layer_line(pd.DataFrame(rows))
    assert layer == 5  # ties (5 and 7) go to the earliest, as --symbolic_encoding_layer auto
    assert line == "best layer on validation: 5 (seen types, x, y and type all decoded: 0.90; test split: 0.70)"
    no_val = pd.DataFrame([r for r in rows if r["split"] != "val"])
    assert best_layer_line(no_val)[0] is None

def test_auto_parses_and_other_words_are_refused():
    cfg = parse_config(FineTuneConfig, ["--symbolic_encoding_layer", "auto"])
    assert cfg.symbolic_encoding_layer == "auto"
    cfg = parse_config(FineTuneConfig, ["--symbolic_encoding_layer", "4"])
    assert cfg.symbolic_encoding_layer == 4 and isinstance(cfg.symbolic_encoding_layer, int)
    with pytest.raises(ConfigError, match="expected a layer number or layers joined by .+.*; or auto"):
        parse_config(FineTuneConfig, ["--symbolic_encoding_layer", "best"])


def test_all_accuracy_counts_questions_with_x_y_and_type_all_right():
    engine = SymbolicEngine(VSA_dim=1024, max_digits=4, seed=4)  # clean codes decode exactly at this size
    n = 40
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(1, 1000, (n,), generator=g), torch.randint(1, 1000, (n,), generator=g)
    t = torch.randint(0, 10, (n,), generator=g)
    wrong_x, wrong_t = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
    wrong_x[:10], wrong_t[5:15] = True, True  # rows 5-9 have both wrong: 15 rows with something wrong
    # The "hidden state" of layer 0 is the problem code itself, of another problem where marked;
    # layer 1 holds nothing. The encoder is the identity.
    shown_x = torch.where(wrong_x, (x % 999) + 1, x)
    shown_t = torch.where(wrong_t, (t + 1) % 10, t)
    code = engine.encode_problem(shown_x, y, shown_t).float()
    hidden = torch.stack([code, torch.zeros_like(code)], dim=1)  # [N, 2 layers, V]
    data = SplitData(hidden=hidden, targets=engine.encode_problem(x, y, t).float(), row=torch.arange(n),
                     type_id=t, x=x, y=y)
    W = torch.stack([torch.eye(1024), torch.eye(1024)])
    names = list(engine.possible_problems)
    seen = [names[i] for i in range(10)]  # every type seen: one row per layer
    rows = pd.DataFrame(encoding_accuracy(engine, W, data, [0, 1], "val", seen, n_digits=3))
    at0, at1 = rows[rows.layer == 0].iloc[0], rows[rows.layer == 1].iloc[0]
    assert at0.x_accuracy == pytest.approx(30 / 40) and at0.type_accuracy == pytest.approx(30 / 40)
    assert at0.y_accuracy == 1.0 and at0.all_accuracy == pytest.approx(25 / 40)
    assert at1.all_accuracy == 0.0


def test_stage3_resolves_auto_from_the_encoder_file_and_records_it(tiny_ckpt, tmp_path):
    from test_fine_tuning import LAYER, stage3, write_csvs, write_maps

    from neurosymbolic_llm.pipeline.maps import load_maps, save_maps

    enc, dec, _ = write_maps(tmp_path, tiny_ckpt, layers=(1, 2, 3))
    m = load_maps(enc, "encoder")
    save_maps(enc, "encoder", m.weights, m.engine_state, m.model_info,
              {**m.extra, "val_all_accuracy": {1: 0.6, 2: 0.3, 3: 0.9}})
    csv = write_csvs(tmp_path)
    argv = ["--chpt_dir", str(tiny_ckpt), "--programs_dir", str(tmp_path), "--run_name", "A", "--test_baseline", "2",
            "--encoder_path", str(enc), "--decoder_path", str(dec), "--testing_data_df_path", str(csv["test"]),
            "--symbolic_encoding_layer", "auto", "--symbolic_decoding_layers", str(LAYER),
            "--testing_problems", "gcd", "--problem_type", "gcd", "--test_on_unrelated_questions", "1",
            "--max_seq_len", "512"]
    assert stage3(argv) == 0
    config = yaml.safe_load((tmp_path / "results" / "A" / "config_fine_tune.yaml").read_text())
    assert config["symbolic_encoding_layer"] == 1  # layer 3 is better but after the decoding layer 2

    save_maps(enc, "encoder", m.weights, m.engine_state, m.model_info, m.extra)  # an older file: no accuracies
    with pytest.raises(DataError, match="no validation accuracy per layer"):
        stage3(argv)
