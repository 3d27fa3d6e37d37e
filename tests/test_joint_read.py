"""An encoder that reads several layers at once (stage 2's --joint_encoder_layers, stage 3's
--symbolic_encoding_layer 3+4+5): one linear map of the layers' states concatenated in ascending
order. Checked against independent references: the read keys' parsing, stage 2's accuracy on a
synthetic store, the hook's reading against states captured by a separate probe, and the map file's
checks."""
import pandas as pd
import pytest
import torch

from neurosymbolic_llm.llama.model import ModelArgs, Transformer
from neurosymbolic_llm.pipeline.configs import InterventionOptions
from neurosymbolic_llm.pipeline.errors import ConfigError, DataError
from neurosymbolic_llm.pipeline.intervention import SymbolicIntervention
from neurosymbolic_llm.pipeline.layer_choice import best_encoding_layer, is_joint_key, read_key, read_layers
from neurosymbolic_llm.pipeline.maps import load_maps, save_maps
from neurosymbolic_llm.symbolic.engine import SymbolicEngine


def test_read_keys():
    assert read_layers(4) == (4,) and read_layers("4") == (4,) and read_layers("3+4+5") == (3, 4, 5)
    assert read_key((3, 4, 5)) == "3+4+5" and read_key([7]) == 7 and read_key("7") == 7
    for bad in ("5+4", "3+3", "a+b", "3,4", "", True):
        with pytest.raises(ConfigError):
            read_layers(bad)
    assert is_joint_key("3+4+5") and not any(map(is_joint_key, ("4", 4, "5+4", "3 + 4", "3+3", None)))
    # a joint read competes on validation; it must end before the first written layer
    acc = {3: 0.5, 4: 0.69, "3+4+5": 0.93, "4+5+6": 0.99}
    assert best_encoding_layer(acc, max_layer=5) == "3+4+5"
    assert best_encoding_layer(acc, max_layer=4) == 4
    assert best_encoding_layer({4: 0.9, "3+4": 0.9}, max_layer=8) == 4  # ties: the single layer


def test_stage2_trains_a_joint_encoder(tmp_path):
    """Synthetic states (every layer a linear image of the problem's code): the joint read of layers
    0 and 2 decodes the seen types as every layer does, sits in the table and the encoder file with
    the width of two layers, and a joint read of a layer stage 2 does not train is refused."""
    from test_encoder_training import D, V, make_cfg, write_synthetic_store

    from neurosymbolic_llm.stages.train_maps import run_training

    cfg = make_cfg(str(tmp_path), "--complexity", "1", "--joint_encoder_layers", "[2,0]")
    write_synthetic_store(cfg)
    out = run_training(cfg)
    table = pd.read_csv(tmp_path / "results" / "syn" / "encoding_accuracy.csv")
    joint = table[table["layer"].astype(str) == "0+2"]
    assert set(joint["split"]) == {"train", "val", "test"}
    assert (joint.loc[joint["seen"] == "seen", "all_accuracy"] == 1.0).all()
    enc = load_maps(out["encoders"], "encoder")
    assert enc.encoder_of("0+2").shape == (V, 2 * D) and enc.encoder_of(5).shape == (V, D)
    assert enc.reads == [0, 2, 5, "0+2"] and enc.encoder_of("2+5") is None
    assert enc.extra["val_all_accuracy"]["0+2"] == 1.0
    with pytest.raises(ConfigError, match="joint_encoder_layers"):
        run_training(make_cfg(str(tmp_path), "--complexity", "1", "--joint_encoder_layers", "[1,2]"))


def test_the_hook_reads_the_concatenated_states():
    """Enc(cat(h_1, h_2)) at the last prompt position, with h captured by a separate probe."""
    args = ModelArgs(dim=32, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=100, multiple_of=16)
    model = Transformer(args).init_weights(seed=0).eval()
    engine = SymbolicEngine(VSA_dim=64, max_digits=3, seed=4)
    g = torch.Generator().manual_seed(0)
    tok = torch.randint(0, 100, (5, 6), generator=g)
    enc = torch.randn(64, 2 * 32, generator=g)
    seen = {}
    probes = [model.register_residual_hook(l, lambda h, ctx: seen.__setitem__(ctx.layer, h.clone())) for l in (1, 2)]
    with torch.no_grad():
        model(tok)
    for p in probes:
        p.remove()
    want = torch.cat([seen[1][:, -1], seen[2][:, -1]], dim=-1) @ enc.T  # [B, V]
    opts = InterventionOptions(symbolic_encoding_layer="1+2", symbolic_decoding_layers=[3])
    iv = SymbolicIntervention(engine, enc, {3: torch.zeros(32, 64)}, opts)
    assert iv.read_layers == (1, 2) and iv.enc_layer == 2
    with iv.attached(model), torch.no_grad():
        model(tok)
    torch.testing.assert_close(iv.take_records()["vsa"], want, rtol=1e-5, atol=1e-5)
    # the decoding layer may not precede the last layer read
    with pytest.raises(ConfigError, match="must not precede"):
        InterventionOptions(symbolic_encoding_layer="1+2", symbolic_decoding_layers=[1]).validate_layers(3)
    with pytest.raises(DataError, match="cannot read the 3 layers"):
        SymbolicIntervention(engine, enc, {3: torch.zeros(32, 64)},
                             InterventionOptions(symbolic_encoding_layer="0+1+2", symbolic_decoding_layers=[3]))


def test_map_files_check_joint_reads(tmp_path):
    engine = SymbolicEngine(VSA_dim=16, max_digits=3, seed=4)
    info = {"fingerprint": "f", "dim": 8, "n_layers": 4}
    single = {1: torch.zeros(16, 8)}
    path = save_maps(tmp_path / "e.pth", "encoder", single, engine.state_dict(), info, joint={"1+3": torch.ones(16, 16)})
    assert load_maps(path, "encoder").encoder_of("1+3").sum() == 256
    for joint, match in (({"1+3": torch.ones(16, 8)}, r"layer 1\+3 has shape \(16, 8\), expected \(16, 16\)"),
                         ({"1+5": torch.ones(16, 16)}, "outside 0..4")):
        bad = save_maps(tmp_path / "b.pth", "encoder", single, engine.state_dict(), info, joint=joint)
        with pytest.raises(DataError, match=match):
            load_maps(bad, "encoder")
    data = torch.load(path, weights_only=True)
    data["joint"] = {"3+1": torch.ones(16, 16)}
    torch.save(data, tmp_path / "c.pth")
    with pytest.raises(DataError, match="joint key '3\\+1' is not increasing layer numbers"):
        load_maps(tmp_path / "c.pth", "encoder")


def test_an_artefact_with_a_joint_read_round_trips(tmp_path):
    """The encoder of k layers is [V, k D] in the artefact; a width that does not match is refused."""
    from neurosymbolic_llm.pipeline.artefact import TrainedIntervention, load_intervention, save_intervention

    engine = SymbolicEngine(VSA_dim=16, max_digits=3, seed=4)
    opts = InterventionOptions(symbolic_encoding_layer="1+3", symbolic_decoding_layers=[4])
    info = {"fingerprint": "f", "dim": 8, "n_layers": 4}
    enc = torch.randn(16, 16)
    art = TrainedIntervention(engine, enc, {4: torch.randn(8, 16)}, {}, opts,
                              {"complexity": 2, "limit_solution_digits": True, "seed": 3}, info)
    back = load_intervention(save_intervention(tmp_path / "a", art))
    assert back.options.symbolic_encoding_layer == "1+3" and torch.equal(back.encoder, enc)
    art.encoder = torch.randn(16, 8)
    with pytest.raises(DataError, match=r"encoder has shape \(16, 8\), expected \(16, 16\)"):
        save_intervention(tmp_path / "b", art)


def test_rows_curve_refits_on_fewer_rows(tmp_path):
    """rows_curve.csv: the best layer and the joint read refitted on the first n rows; at all the rows
    it is the encoding table's validation accuracy (least squares, no Adam epochs)."""
    from test_encoder_training import make_cfg, write_synthetic_store

    from neurosymbolic_llm.stages.train_maps import run_training

    cfg = make_cfg(str(tmp_path), "--complexity", "1", "--joint_encoder_layers", "[0,2]", "--training_epochs", "0",
                   "--rows_curve", "[20,100000]")
    write_synthetic_store(cfg)
    run_training(cfg)
    out = tmp_path / "results" / "syn"
    curve = pd.read_csv(out / "rows_curve.csv", dtype={"read": str})
    table = pd.read_csv(out / "encoding_accuracy.csv", dtype={"layer": str})
    val = table[(table["split"] == "val") & (table["seen"] == "seen")].set_index("layer")["all_accuracy"]
    assert set(curve["read"]) == {"0", "0+2"} and (out / "rows_curve.png").stat().st_size > 1000
    for read, part in curve.groupby("read"):
        n_train = int(table.query("split == 'train' and layer == @read")["n"].iloc[0])
        assert list(part["rows"]) == [20, n_train]  # 100000 capped at the rows there are
        assert part["all_accuracy"].iloc[-1] == pytest.approx(val[read])
        assert part["all_accuracy"].iloc[0] < part["all_accuracy"].iloc[-1]  # 20 rows cannot fit a V-wide code
