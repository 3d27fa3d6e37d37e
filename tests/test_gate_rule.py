"""The gate's rule (pipeline/gate.Gate), its readings (gate_features), its choice on calibration
readings (gate_calibration) and the intervention's decisions, each against a second implementation
written here in plain Python / numpy."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from neurosymbolic_llm.pipeline.configs import InterventionOptions
from neurosymbolic_llm.pipeline.errors import ConfigError
from neurosymbolic_llm.pipeline.gate import Gate, gate_open
from neurosymbolic_llm.pipeline.gate_calibration import auroc, balanced_rate, choose_gate, coverage_curve
from neurosymbolic_llm.pipeline.gate_features import read_problem
from neurosymbolic_llm.symbolic.engine import SymbolicEngine


def reference_open(gate, score, margin, digit):
    return gate.lower < score < gate.upper and margin >= gate.min_type_margin and digit >= gate.min_digit_margin


def test_gate_rule_matches_a_plain_python_rule_on_tensors_arrays_and_series():
    rng = np.random.default_rng(0)
    s, m, d = rng.uniform(0, 3, 200), rng.uniform(0, 1, 200), rng.uniform(0, 0.5, 200)
    gate = Gate(0.8, 1.3, 0.5, 0.1)
    want = [reference_open(gate, *v) for v in zip(s, m, d)]
    assert gate.open(torch.tensor(s), torch.tensor(m), torch.tensor(d)).tolist() == want
    assert gate.open(s, m, d).tolist() == want
    table = pd.DataFrame({"score": s, "type_margin": m, "digit_margin": d})
    assert gate.open_rows(table).tolist() == want
    assert gate_open(torch.tensor(s), 0.8, 1.3).tolist() == [0.8 < v < 1.3 for v in s]
    with pytest.raises(ValueError, match="type_margin"):
        gate.open(s)  # a margin the rule needs cannot be left out
    assert Gate(0.8).open(s).tolist() == [v > 0.8 for v in s]  # the paper's one-sided gate
    assert Gate(0.8, 1.3, 0.7).describe() == "0.8 < score < 1.3, type margin >= 0.7"
    with pytest.raises(ConfigError, match="gate_min_type_margin"):
        InterventionOptions(gate_min_type_margin=-0.1).validate_intervention()


def test_readings_match_a_numpy_reimplementation():
    engine = SymbolicEngine(VSA_dim=256, max_digits=4, seed=4)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 1000, (12,), generator=g), torch.randint(0, 1000, (12,), generator=g)
    z = engine.encode_problem(x, y, torch.randint(0, 8, (12,), generator=g)).float()
    z = z + 0.3 * torch.randn(z.shape, generator=g)  # noisy readings: margins of every size
    got = read_problem(engine, z)
    # the decoded problem beside the readings, as the engine's own decoders give it
    assert torch.equal(got["x"], engine.decode_number(z, "n1")) and torch.equal(got["y"], engine.decode_number(z, "n2"))
    assert torch.equal(got["type_id"], engine.problem_type_scores(z).argmax(-1))
    types = z.double().numpy() @ engine.type_atoms.double().numpy().T  # [N, T]
    top = -np.sort(-types, axis=1)
    assert got["score"].numpy() == pytest.approx(top[:, 0], abs=1e-4)
    assert got["type_margin"].numpy() == pytest.approx(top[:, 0] - top[:, 1], abs=1e-4)
    for i in range(len(z)):
        want = math.inf
        for role in ("n1", "n2"):
            for pos in engine.digit_scores(z[i:i + 1], role)[0].tolist():  # 4 positions x 10 digits
                s1, s2 = sorted(pos, reverse=True)[:2]
                want = min(want, min(s1 - 0.5, s1 - s2) if s1 > 0.5 else 0.5 - s1)
        assert float(got["digit_margin"][i]) == pytest.approx(want, abs=1e-4)
    clean = read_problem(engine, engine.encode_problem(x, y, torch.zeros(12, dtype=torch.long)).float())
    assert clean["digit_margin"].mean() > got["digit_margin"].mean()  # exact codes are surer than noisy ones


def test_auroc_is_the_share_of_ordered_pairs():
    rng = np.random.default_rng(1)
    pos, neg = rng.integers(0, 5, 30).astype(float), rng.integers(0, 5, 20).astype(float)
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg]
    assert auroc(pos, neg) == pytest.approx(sum(pairs) / len(pairs))


def calibration_table():
    seen = pd.DataFrame({"score": [0.9, 1.0, 1.1, 1.2], "type_margin": [0.8, 0.9, 0.75, 1.0],
                         "digit_margin": [0.1] * 4, "kind": "seen", "group": "seen math", "read_right": True})
    far = pd.DataFrame({"score": [2.0, 2.5], "type_margin": [0.9, 0.9], "digit_margin": [0.1] * 2,
                        "kind": "unknown", "group": "far", "read_right": np.nan})
    near = pd.DataFrame({"score": [1.0, 1.1, 1.15], "type_margin": [0.2, 0.5, 0.6], "digit_margin": [0.1] * 3,
                         "kind": "unknown", "group": "near", "read_right": np.nan})
    return pd.concat([seen, far, near], ignore_index=True)


def test_choice_closes_every_unknown_group_with_the_loosest_settings_that_do():
    table = calibration_table()
    gate, rate = choose_gate(table, lower=0.8)
    assert rate == 1.0 and balanced_rate(table, gate) == 1.0
    # loosest: the largest upper bound that shuts the far group (score < 2.0 excludes 2.0), the smallest
    # margin above the near one's 0.6
    assert (gate.upper, gate.min_type_margin, gate.min_digit_margin) == (2.0, 0.65, 0.0)
    for g in ("far", "near"):
        part = table[table.group == g]
        assert not any(reference_open(gate, *v) for v in zip(part.score, part.type_margin, part.digit_margin))
    curve = coverage_curve(table, gate, margins=[0.0, 0.65, 0.95])
    assert curve["coverage"].tolist() == [1.0, 1.0, 0.25]  # margins 0.8 0.9 0.75 1.0: at 0.95 only 1.0 is left
    assert curve["accuracy"].tolist() == [4 / 7, 1.0, 1.0]  # at 0: the 3 near prompts open too (score < 2.0)


@torch.no_grad()
def test_intervention_decisions_recomputed_from_its_records():
    """The hook's gate decisions equal the rule recomputed here from its recorded encoder output."""
    from neurosymbolic_llm.llama.model import ModelArgs, Transformer
    from neurosymbolic_llm.pipeline.intervention import SymbolicIntervention

    args = ModelArgs(dim=64, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=300, multiple_of=32)
    model = Transformer(args).init_weights(seed=0).eval()
    engine = SymbolicEngine(VSA_dim=64, max_digits=4, seed=4)
    g = torch.Generator().manual_seed(0)
    tok = torch.randint(0, 300, (16, 7), generator=g)
    enc = torch.randn(64, 64, generator=g) / 8
    probe = SymbolicIntervention(engine, enc, {2: torch.zeros(64, 64)}, InterventionOptions(
        symbolic_encoding_layer=1, symbolic_decoding_layers=[2], problem_score_threshold=-math.inf))
    with probe.attached(model):
        model(tok)
    rec = probe.take_records()
    types = rec["vsa"].double().numpy() @ engine.type_atoms.double().numpy().T
    top = -np.sort(-types, axis=1)
    # bounds between the readings' own values (no float32/float64 tie), so that each condition closes some
    def between(values, k):
        v = np.sort(values)
        return float((v[k - 1] + v[k]) / 2)
    lo, hi, m = between(top[:, 0], 3), between(top[:, 0], 14), between(top[:, 0] - top[:, 1], 5)
    opts = InterventionOptions(symbolic_encoding_layer=1, symbolic_decoding_layers=[2], problem_score_threshold=lo,
                               problem_score_max=hi, gate_min_type_margin=m)
    iv = SymbolicIntervention(engine, enc, {2: torch.zeros(64, 64)}, opts)
    with iv.attached(model):
        model(tok)
    got = iv.take_records()["gate"].tolist()
    want = [lo < t[0] < hi and t[0] - t[1] >= m for t in top]
    assert got == want and any(want) and not all(want)


@pytest.mark.parametrize("layers", [(2,), (0, 2)])
def test_leave_one_operation_out_readings_on_a_synthetic_store(tmp_path, layers):
    """Hidden states that are a linear image of the problem's code: an encoder refitted without one
    type reads every other type's rows exactly and never names the left-out type (one layer read, or
    two read at once)."""
    from test_encoder_training import make_cfg, write_synthetic_store

    from neurosymbolic_llm.pipeline.maps import load_maps
    from neurosymbolic_llm.stages.gate_statistics import leave_one_out_readings
    from neurosymbolic_llm.stages.train_maps import run_training

    cfg = make_cfg(str(tmp_path), "--complexity", "1")
    engine = write_synthetic_store(cfg)
    extra = load_maps(run_training(cfg)["encoders"], "encoder").extra
    assert extra["ridge"] == cfg.ridge and extra["map_init"] == "least_squares"
    got = leave_one_out_readings(engine, extra, layers)
    assert sorted(got["fold"].unique()) == [f"without {t}" for t in sorted(extra["trained_types"])]
    for held in extra["trained_types"]:
        fold = got[got["fold"] == f"without {held}"]
        unknown = fold[fold["kind"] == "unknown"]
        assert len(unknown) and set(unknown["group"]) == {f"{held} (left out)"}
        assert not unknown["read_right"].any()  # its type atom is outside what the refit can write
        assert fold.loc[fold["kind"] == "seen", "read_right"].all()
