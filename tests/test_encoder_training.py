"""Stage 2 on a synthetic store whose hidden states are a fixed random linear image of the true
problem vectors: the encoders must decode exactly; files reload; a mismatched engine is refused."""
import pandas as pd
import pytest
import torch

from neurosymbolic_llm.pipeline.configs import TrainEncodersConfig
from neurosymbolic_llm.stages.train_maps import run_training, train_maps
from neurosymbolic_llm.pipeline.errors import DataError, EngineMismatchError
from neurosymbolic_llm.pipeline.rows import split_source
from neurosymbolic_llm.pipeline.hidden_store import HiddenStore
from neurosymbolic_llm.pipeline.maps import load_maps
from neurosymbolic_llm.pipeline.options import parse_config, to_dict
from neurosymbolic_llm.pipeline.runtime import make_engine
from neurosymbolic_llm.symbolic.engine import SymbolicEngine

V, D, LAYERS = 384, 400, [0, 2, 5]
ROWS = {"train": 600, "val": 60, "test": 120}


def make_cfg(root, *extra):
    return parse_config(TrainEncodersConfig, [
        "--run_name", "syn", "--programs_dir", str(root), "--VSA_dim", str(V), "--max_digits", "3",
        "--train_data_rounds", str(ROWS["train"]), "--val_data_rounds", str(ROWS["val"]),
        "--testing_data_rounds", str(ROWS["test"]), "--device", "cpu", "--generate_data", "0",
        "--training_epochs", "3", "--decoding_epochs", "3", "--batch_size", "128", *extra])


def write_synthetic_store(cfg, train_types=("gcd", "modulo", "bitwise_or"), test_extra=("addition",)):
    """Hidden state of layer l = S @ A_l (A_l [V, D] random): a linear encoder can recover S exactly."""
    from neurosymbolic_llm.symbolic.problems import generate_problems

    engine = make_engine(cfg)
    g = torch.Generator().manual_seed(0)
    A = torch.randn(len(LAYERS), V, D, generator=g) / V ** 0.5  # [L,V,D]
    store = HiddenStore(cfg.programs_dir + "/gathered_data_syn")
    identity = {"model_fingerprint": "synthetic", "tokenizer_fingerprint": "none",
                "engine_fingerprint": engine.fingerprint(), "layers": LAYERS, "dtype": "float32", "dim": D,
                "rows_per_shard": 250, "sources": {s: split_source(cfg, s) for s in ROWS},
                "prompt": {}, "model": {"fingerprint": "synthetic", "dim": D, "n_layers": 5}}
    manifest = store.open_for_writing(identity, dict(ROWS), to_dict(cfg))
    for i, (split, n) in enumerate(ROWS.items()):
        types = list(train_types) + (list(test_extra) if split == "test" else [])
        df = generate_problems(n, types, complexity=1, seed=i)  # operands < 100: 2 digits
        x, y = torch.tensor(df.x.values), torch.tensor(df.y.values)
        t = engine.type_ids(list(df.problem_type))
        S = engine.encode_problem(x, y, t)  # [n,V]
        hidden = torch.einsum("nv,lvd->nld", S, A)  # [n,L,D]
        for k in range(0, -(-n // 250)):
            sl = slice(k * 250, min(n, (k + 1) * 250))
            store.write_shard(split, k, {"hidden": hidden[sl], "targets": S[sl], "row": torch.arange(n)[sl],
                                         "type_id": t[sl], "x": x[sl], "y": y[sl]})
    store.update_progress(manifest)
    return engine


def test_synthetic_exact_decoding_and_files(tmp_path):
    cfg = make_cfg(str(tmp_path), "--complexity", "1")
    engine = write_synthetic_store(cfg)
    out = run_training(cfg)
    table = pd.read_csv(tmp_path / "results" / "syn" / "encoding_accuracy.csv")
    assert list(table.columns) == ["layer", "split", "seen", "n", "x_accuracy", "y_accuracy", "type_accuracy",
                                   "all_accuracy", "digit_accuracy"]
    assert sorted(table.layer.unique()) == LAYERS
    assert set(zip(table.split, table.seen)) == {("train", "seen"), ("val", "seen"), ("test", "seen"),
                                                 ("test", "unseen")}
    for col in ("x_accuracy", "y_accuracy", "digit_accuracy"):
        assert (table[col] == 1.0).all(), table
    # The atom of an unseen type never occurs in training, so its direction is outside what the
    # encoders were fitted on: seen types decode perfectly, unseen ones do not (as in the paper).
    seen = table.seen == "seen"
    assert (table.type_accuracy[seen] == 1.0).all() and (table.type_accuracy[~seen] < 0.5).all(), table
    assert (table.all_accuracy[seen] == 1.0).all() and (table.all_accuracy[~seen] < 0.5).all(), table
    # the encoder file carries the validation accuracy per layer, for stage 3's --symbolic_encoding_layer auto
    from neurosymbolic_llm.pipeline.maps import load_maps
    assert load_maps(out["encoders"], "encoder").extra["val_all_accuracy"] == {l: 1.0 for l in LAYERS}
    assert (tmp_path / "results" / "syn" / "encoding_accuracy.png").stat().st_size > 1000
    assert out["summary"]["encoder_val_rmse"] < [1e-3] * 3 and max(out["summary"]["encoder_val_rmse"]) < 1e-3

    info = {"fingerprint": "synthetic", "dim": D, "n_layers": 5}
    enc = load_maps(out["encoders"], "encoder", engine=engine, model_info=info)
    dec = load_maps(out["decoders"], "decoder", engine=engine, model_info=info)
    assert enc.layers == LAYERS and enc.weights[2].shape == (V, D) and dec.weights[2].shape == (D, V)
    with pytest.raises(EngineMismatchError):
        load_maps(out["encoders"], "encoder", engine=SymbolicEngine(V, 3, seed=7))
    # stage 2 with a different engine than stage 1 is refused too
    with pytest.raises(EngineMismatchError, match="another VSA engine"):
        run_training(make_cfg(str(tmp_path), "--complexity", "1", "--vsa_seed", "7"))
    with pytest.raises(DataError, match="same data options"):
        run_training(make_cfg(str(tmp_path), "--complexity", "1", "--train_data_rounds", "500"))


def test_seen_types_come_from_the_training_split(tmp_path):
    """Maps trained on data holding addition (as the public 10,000-row CSV) label addition seen, in
    stage 2's table and in stage 3, whatever --problem_type says; the map file stores the types."""
    from neurosymbolic_llm.pipeline.configs import FineTuneConfig
    from neurosymbolic_llm.pipeline.fine_tune_inputs import Maps, seen_types

    cfg = make_cfg(str(tmp_path), "--complexity", "1", "--training_epochs", "0", "--decoding_epochs", "0")
    write_synthetic_store(cfg, train_types=("addition", "gcd"), test_extra=("division",))
    out = run_training(cfg)
    table = pd.read_csv(tmp_path / "results" / "syn" / "encoding_accuracy.csv")
    assert set(zip(table.split, table.seen)) == {("train", "seen"), ("val", "seen"), ("test", "seen"),
                                                 ("test", "unseen")}
    # (before, addition counted as unseen because --problem_type leaves it out: ("train", "unseen") rows)
    enc = load_maps(out["encoders"], "encoder")
    assert enc.extra["trained_types"] == ["addition", "gcd"]
    stage3 = FineTuneConfig(encoder_path=str(out["encoders"]), problem_type=["gcd", "modulo"])
    maps = Maps(engine=None, encoding_layer=0, encoder=None, decoders={}, encoder_extra=enc.extra, decoder_extra={})
    assert seen_types(stage3, maps, None, 3) == (["addition", "gcd"],
                                                 f"the types the maps were trained on ({out['encoders']})")
    assert seen_types(stage3, None, None, 3) == (["gcd", "modulo"], "--problem_type")


def test_random_init_learns_and_schedule_applies():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(2, 16, 8, generator=g)  # [L,out,in]
    X = torch.randn(256, 2, 8, generator=g)  # [N,L,in]
    Y = torch.einsum("nli,loi->nlo", X, A)
    W, stats = train_maps("t", X, Y, X[:64], Y[:64], out_dim=16, epochs=40, lr=3e-2, schedule={20: 0.5},
                          batch=64, init="random", ridge=0.0, dtype=torch.float32, seed=0)
    hist = stats["history"]
    assert hist[18]["t_lr"] == pytest.approx(3e-2) and hist[19]["t_lr"] == pytest.approx(1.5e-2)
    assert hist[-1]["t_train_rmse"] < 0.2 * hist[0]["t_train_rmse"]
    assert max(stats["best_val_rmse"]) < 0.2 * hist[0]["t_val_rmse"]
    assert W.shape == (2, 16, 8)



def test_early_stop_says_so_and_finishes_its_bar(capsys):
    """Least squares already found the optimum of exactly linear data: no validation epoch improves,
    so the training stops after `patience` epochs, says when and why, and its bar ends full (it
    was left at 2/50, as if it hung)."""
    g = torch.Generator().manual_seed(2)
    A = torch.randn(3, 16, 8, generator=g)  # [L,out,in]
    X = torch.randn(256, 3, 8, generator=g)  # [N,L,in]
    Y = torch.einsum("nli,loi->nlo", X, A)
    _, stats = train_maps("encoder", X, Y, X[:64], Y[:64], out_dim=16, epochs=50, lr=1e-3, schedule={},
                          batch=64, init="least_squares", ridge=0.0, dtype=torch.float64, seed=0, patience=2)
    assert stats["epochs_run"] == 2
    out, err = capsys.readouterr()
    assert "encoder training (all 3 layers together) stopped early at epoch 2 of 50: no layer's validation RMSE " \
           "improved by 0.1% in the last 2 epochs" in out
    assert "2/2 " in err.replace("\r", "\n").splitlines()[-1] + " ", err[-300:]
    train_maps("encoder", X, Y, X[:64], Y[:64], out_dim=16, epochs=3, lr=1e-3, schedule={}, batch=64,
               init="least_squares", ridge=0.0, dtype=torch.float64, seed=0, patience=0)
    assert "stopped early" not in capsys.readouterr().out

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device")])]


@pytest.mark.parametrize("device", DEVICES)
def test_least_squares_recovers_a_map_under_a_large_constant_residual(device):
    """A residual like SmolLM2's (a constant vector of norm about 68 plus question-dependent parts
    of about 0.08 per dimension, Programs/real/README.md) with a small ridge: the solve must recover
    a planted map on held-out rows on every device (a float32 solve on CUDA returned noise here)."""
    from neurosymbolic_llm.stages.train_maps import apply_maps, least_squares

    g = torch.Generator().manual_seed(0)
    n, d, out = 3000, 96, 32
    const = torch.randn(d, generator=g, dtype=torch.float64)
    const *= 68 / const.norm()
    v = 0.08 * torch.randn(n, d, generator=g, dtype=torch.float64)
    v -= (v @ const)[:, None] * const / const.dot(const)  # the question-dependent part, orthogonal to it
    X = torch.stack([const + v, const + v.flip(1)], dim=1).float()  # [N, L=2, D]
    W_true = torch.randn(out, d, generator=g, dtype=torch.float64) / d ** 0.5
    Y = (v @ W_true.T).float()  # [N, out]: a function of the question-dependent part alone
    W = least_squares(X[:2500].to(device), Y[:2500].to(device), 1e-9, 1024, torch.float32).cpu()  # [L, out, D]
    pred = apply_maps(W, X[2500:])[:, 0]
    err = (pred - Y[2500:]).norm() / Y[2500:].norm()
    assert err < 1e-3, f"relative error {err:.3g} on {device}"


@pytest.mark.parametrize("device", DEVICES)
def test_least_squares_singular_layer_gets_the_pseudo_inverse(device):
    """A layer whose state is the same for every row (layer 0 when every prompt ends with the same
    token) has a singular Gram matrix without a ridge: the stage must not stop there; that layer
    gets the minimum-norm solution, which maps the common state to the mean target."""
    from neurosymbolic_llm.stages.train_maps import least_squares

    g = torch.Generator().manual_seed(1)
    n, d, out = 200, 16, 4
    varying = torch.randn(n, d, generator=g)
    same = torch.randn(d, generator=g).expand(n, d)
    X = torch.stack([varying, same], dim=1)  # [N, 2, D]
    W_true = torch.randn(out, d, generator=g)
    Y = varying @ W_true.T
    W = least_squares(X.to(device), Y.to(device), 0.0, 64, torch.float32).cpu()
    assert torch.allclose(W[0], W_true, atol=1e-4)  # the well-posed layer: exact
    assert torch.isfinite(W[1]).all()
    assert torch.allclose(W[1] @ same[0], Y.mean(0), atol=1e-4)  # least squares through one direction


@pytest.mark.parametrize("device", DEVICES)
def test_least_squares_rank_deficient_layer_with_rounded_pivots(device):
    """States confined to a random 6-dimensional subspace of 24: in floating point the Gram matrix
    is not exactly singular (its factorisation meets tiny non-zero pivots, as on any CPU's LAPACK
    path for the one-direction case above), so only a numerical rank decision gives the bounded
    minimum-norm solution; it must equal the pseudo-inverse computed independently with numpy."""
    import numpy as np

    from neurosymbolic_llm.stages.train_maps import least_squares

    g = torch.Generator().manual_seed(3)
    n, d, rank, out = 300, 24, 6, 5
    basis = torch.linalg.qr(torch.randn(d, rank, generator=g, dtype=torch.float64))[0]  # [d, rank]
    X = (torch.randn(n, rank, generator=g, dtype=torch.float64) @ basis.T)[:, None, :]  # [N, 1, d]
    Y = torch.randn(n, out, generator=g, dtype=torch.float64)
    W = least_squares(X.to(device), Y.to(device), 0.0, 64, torch.float64).cpu()[0]  # [out, d]
    x = X[:, 0].numpy()
    expected = (np.linalg.pinv(x, rcond=1e-10) @ Y.numpy()).T  # minimum-norm least squares
    assert torch.isfinite(W).all()
    assert np.allclose(W.numpy(), expected, atol=1e-8), np.abs(W.numpy() - expected).max()
