"""The intervention artefact (pipeline/artefact.py): a bit-exact round trip of every tensor and
setting, and the refusals (another model, a mismatched or incomplete pair of files)."""
import json
import math
import shutil

import numpy as np
import pytest
import torch

from neurosymbolic_llm.llama.fingerprint import WeightSamples
from neurosymbolic_llm.pipeline.artefact import (JSON_NAME, TENSORS_NAME, TrainedIntervention, load_intervention,
                                                 save_intervention)
from neurosymbolic_llm.pipeline.configs import InterventionOptions
from neurosymbolic_llm.pipeline.errors import DataError, EngineMismatchError
from neurosymbolic_llm.pipeline.maps import model_info
from neurosymbolic_llm.symbolic.engine import SymbolicEngine

D, V = 32, 64


def samples(shift=0.0) -> WeightSamples:
    """Weight samples of a made-up model (two tensors); `shift` gives other weights."""
    arch = {"dim": D, "n_layers": 4, "norm_eps": 1e-5, "rope_frequencies": [1.0, 0.1]}
    vals = np.linspace(-1, 1, 16, dtype=np.float32) + np.float32(shift)
    return WeightSamples(arch, {"a.weight": ("F32", vals), "b.weight": ("BF16", vals[:4])})


def model(shift=0.0, dim=D):
    s = samples(shift)
    return model_info(s.digest(), dim, 4, s)


def artefact() -> TrainedIntervention:
    g = torch.Generator().manual_seed(0)
    opts = InterventionOptions(symbolic_encoding_layer=1, symbolic_decoding_layers=[1, 3], problem_score_threshold=0.7,
                               problem_score_max=math.inf, merge="add_rmsnorm", multi_token_intervention=True)
    merge = {"1": {"skip": torch.tensor(0.25), "norm.weight": torch.randn(D, generator=g)},
             "3": {"skip": torch.tensor(0.5), "norm.weight": torch.randn(D, generator=g)}}
    return TrainedIntervention(SymbolicEngine(VSA_dim=V, max_digits=3, seed=9), torch.randn(V, D, generator=g),
                               {1: torch.randn(D, V, generator=g), 3: torch.randn(D, V, generator=g)}, merge, opts,
                               {"complexity": 2, "limit_solution_digits": True, "seed": 5}, model(), "/some/model",
                               {"trained_types": ["gcd"], "run_name": "R"})


def test_round_trip_is_bit_exact(tmp_path):
    art = artefact()
    back = load_intervention(save_intervention(tmp_path / "iv", art), model_info=model())
    assert sorted(p.name for p in (tmp_path / "iv").iterdir()) == [JSON_NAME, TENSORS_NAME]
    assert torch.equal(back.encoder, art.encoder) and back.encoder.dtype == torch.float32
    assert back.decoders.keys() == art.decoders.keys()
    assert all(torch.equal(back.decoders[l], art.decoders[l]) for l in art.decoders)
    assert torch.equal(back.engine.codebook, art.engine.codebook) and back.engine.codebook.dtype == torch.float64
    assert back.engine.fingerprint() == art.engine.fingerprint()
    assert {l: sorted(sd) for l, sd in back.merge_state.items()} == {l: sorted(sd) for l, sd in art.merge_state.items()}
    assert all(torch.equal(back.merge_state[l][k], v) for l, sd in art.merge_state.items() for k, v in sd.items())
    assert back.options == art.options and math.isinf(back.options.problem_score_max)
    assert (back.prompt, back.model, back.checkpoint, back.extra) == (art.prompt, art.model, art.checkpoint, art.extra)


def test_same_weights_in_another_dtype_are_accepted(tmp_path):
    """Stored samples F32 / BF16: a bf16 copy of the same weights is the same model."""
    folder = save_intervention(tmp_path / "iv", artefact())
    s = samples()
    s.tensors["a.weight"] = ("BF16", torch.from_numpy(s.tensors["a.weight"][1]).bfloat16().float().numpy())
    load_intervention(folder, model_info=model_info(s.digest(), D, 4, s))


def test_refused_when_the_model_differs(tmp_path, capsys):
    folder = save_intervention(tmp_path / "iv", artefact())
    with pytest.raises(EngineMismatchError, match="other weights .*--allow_other_weights 1"):
        load_intervention(folder, model_info=model(shift=0.5))
    load_intervention(folder, model_info=model(shift=0.5), allow_other_weights=True)
    assert "--allow_other_weights" in capsys.readouterr().err
    with pytest.raises(EngineMismatchError, match="dim=32.*dim=48"):
        load_intervention(folder, model_info=model(dim=48), allow_other_weights=True)


def test_refused_when_the_files_do_not_belong_together(tmp_path):
    a = save_intervention(tmp_path / "a", artefact())
    other = artefact()
    other.encoder = other.encoder + 1
    b = save_intervention(tmp_path / "b", other)
    shutil.copy(b / TENSORS_NAME, a / TENSORS_NAME)
    with pytest.raises(DataError, match="sha256 differs"):
        load_intervention(a)
    (b / TENSORS_NAME).unlink()
    with pytest.raises(DataError, match=f"{TENSORS_NAME}: not found"):
        load_intervention(b)
    data = json.loads((tmp_path / "b" / JSON_NAME).read_text())
    data["intervention"]["symbolic_decoding_layers"] = [0]
    c = save_intervention(tmp_path / "c", other)
    data["tensors_sha256"] = json.loads((c / JSON_NAME).read_text())["tensors_sha256"]
    (c / JSON_NAME).write_text(json.dumps(data))
    with pytest.raises(DataError, match="must not precede"):
        load_intervention(c)
