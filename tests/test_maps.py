"""Encoder/decoder map files: round trip, and every mismatch named on load."""
import pytest
import torch

from neurosymbolic_llm.pipeline.errors import DataError, EngineMismatchError
from neurosymbolic_llm.pipeline.maps import linear_maps, load_maps, model_info, save_maps
from neurosymbolic_llm.symbolic.engine import SymbolicEngine


@pytest.fixture
def engine():
    return SymbolicEngine(64, 3)


def test_round_trip_and_checks(engine, tmp_path):
    w = {17: torch.randn(64, 32), 3: torch.randn(64, 32)}
    info = model_info("abc", 32, 32)
    path = save_maps(tmp_path / "enc.pth", "encoder", w, engine.state_dict(), info, {"note": "x"})
    raw = torch.load(path, weights_only=True)  # plain data, no pickled modules
    assert raw["format"] == "nsllm-maps" and raw["kind"] == "encoder" and set(raw["weights"]) == {"3", "17"}
    m = load_maps(path, "encoder", engine=engine, model_info=info)
    assert m.layers == [3, 17] and m.extra == {"note": "x"}
    assert torch.equal(m.weights[17], w[17])
    mods = linear_maps(m.weights)
    assert torch.equal(mods["17"](torch.eye(32)), w[17].T)
    assert not mods["17"].weight.requires_grad

    with pytest.raises(DataError, match="expected 'decoder'"):
        load_maps(path, "decoder")
    with pytest.raises(EngineMismatchError, match="codebook seed"):
        load_maps(path, "encoder", engine=SymbolicEngine(64, 3, seed=5))
    with pytest.raises(EngineMismatchError, match="VSA dimension"):
        load_maps(path, "encoder", engine=SymbolicEngine(128, 3))
    with pytest.raises(EngineMismatchError, match="fingerprint"):
        load_maps(path, "encoder", model_info=model_info("other", 32, 32))
    with pytest.raises(EngineMismatchError, match="dim"):
        load_maps(path, "encoder", model_info=model_info("abc", 48, 32))
    with pytest.raises(DataError, match="not found"):
        load_maps(tmp_path / "none.pth", "encoder")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable"):
        load_maps(tmp_path / "junk.pth", "encoder")


def test_shapes_checked(engine, tmp_path):
    path = save_maps(tmp_path / "dec.pth", "decoder", {1: torch.randn(64, 32)}, engine.state_dict(),
                     model_info("abc", 32, 4))
    with pytest.raises(DataError, match="shape"):
        load_maps(path, "decoder")  # a decoder is [dim, VSA_dim] = [32, 64]
