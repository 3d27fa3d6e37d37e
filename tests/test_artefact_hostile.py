"""Hostile artefacts (issue 30, classes 3, 4, 5, 6, 8 and 10): every hand-edited setting and tensor
is one DataError naming intervention.json / intervention.safetensors and the key; a failed save
keeps the previous artefact; export refuses a running or unfinished stage 3 and never replaces its
artefact by default; a run's saved relative paths resolve against its --programs_dir."""
import hashlib
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from neurosymbolic_llm.pipeline.artefact import (JSON_NAME, TENSORS_NAME, TrainedIntervention, load_intervention,
                                                 save_intervention)
from neurosymbolic_llm.pipeline.configs import ExportConfig, InterventionOptions
from neurosymbolic_llm.pipeline.errors import ConfigError, DataError, OutputError, RunLockedError
from neurosymbolic_llm.pipeline.locks import stage_lock
from neurosymbolic_llm.pipeline.maps import model_info, save_maps
from neurosymbolic_llm.pipeline.options import parse_config
from neurosymbolic_llm.pipeline.saved_runs import with_run_config
from neurosymbolic_llm.symbolic.engine import SymbolicEngine

D, V = 32, 64


def artefact(scale: float = 1.0) -> TrainedIntervention:
    g = torch.Generator().manual_seed(0)
    opts = InterventionOptions(symbolic_encoding_layer=1, symbolic_decoding_layers=[1, 3], problem_score_threshold=0.7,
                               problem_score_max=9.0, merge="add_rmsnorm", multi_token_intervention=True)
    merge = {l: {"skip": torch.tensor(0.5), "norm.weight": torch.randn(D, generator=g)} for l in ("1", "3")}
    return TrainedIntervention(SymbolicEngine(VSA_dim=V, max_digits=3, seed=9), scale * torch.randn(V, D, generator=g),
                               {1: torch.randn(D, V, generator=g), 3: torch.randn(D, V, generator=g)}, merge, opts,
                               {"complexity": 2, "limit_solution_digits": True, "seed": 5},
                               model_info("f" * 16, D, 4, tokenizer="t" * 64), "", {"run_name": "R"})


def edit_json(folder, edit):
    path = folder / JSON_NAME
    data = json.loads(path.read_text())
    text = edit(data)
    path.write_text(text if isinstance(text, str) else json.dumps(data))


JSON_CASES = {  # name: (edit, what the error must name)
    "missing upper gate bound": (lambda d: d["intervention"].pop("problem_score_max") and None,
                                 "intervention.problem_score_max is missing"),
    "a switch as the string false": (lambda d: d["intervention"].update(multi_token_intervention="false"),
                                     "intervention.multi_token_intervention must be true or false"),
    "true as a layer": (lambda d: d["intervention"].update(symbolic_encoding_layer=True),
                        "intervention.symbolic_encoding_layer must be a layer number"),
    "an unknown setting": (lambda d: d["intervention"].update(gate_bias=0.3), "intervention.gate_bias is unknown"),
    "an unknown section": (lambda d: d.update(intervnetion={}), "'intervnetion' is unknown"),
    "a float count": (lambda d: d["engine"].update(VSA_dim=64.0), "engine.VSA_dim must be a positive integer"),
    "a negative complexity": (lambda d: d["prompt"].update(complexity=-3), "prompt.complexity is -3"),
    "a string dim": (lambda d: d["model"].update(n_layers="4"), "model.n_layers must be a positive integer"),
    "a 5,000-digit seed": (lambda d: json.dumps(d).replace('"seed": 5', '"seed": ' + "9" * 5000),
                           "integer string conversion"),
    "100,000 nested lists": (lambda d: json.dumps(d)[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
                             "nested too deeply"),
    "NaN": (lambda d: json.dumps(d).replace('"problem_score_threshold": 0.7', '"problem_score_threshold": NaN'),
            "NaN is not a JSON number"),
}


@pytest.mark.parametrize("case", sorted(JSON_CASES))
def test_every_setting_is_checked_by_key_and_type(tmp_path, case):
    """Class 3 (and 8's JSON doors): one DataError naming intervention.json and the key."""
    folder = save_intervention(tmp_path / "iv", artefact())
    edit, names = JSON_CASES[case]
    edit_json(folder, edit)
    with pytest.raises(DataError) as err:
        load_intervention(folder)
    assert str(folder / JSON_NAME) in str(err.value) and names in str(err.value)


def edit_tensors(folder, edit):
    path = folder / TENSORS_NAME
    t = load_file(str(path))
    edit(t)
    save_file(t, str(path))
    edit_json(folder, lambda d: d.update(tensors_sha256=hashlib.sha256(path.read_bytes()).hexdigest()))


def nan_at(key, value=float("nan")):
    def edit(t):
        t[key] = t[key].clone()
        t[key].view(-1)[0] = value
    return edit


TENSOR_CASES = {
    "NaN encoder": (nan_at("encoder"), "encoder holds 1 NaN/inf"),
    "inf decoder": (nan_at("decoder.3", float("inf")), "decoder.3 holds 1 NaN/inf"),
    "NaN codebook": (nan_at("codebook"), "codebook holds 1 NaN/inf"),
    "NaN merge norm": (nan_at("merge.1.norm.weight"), "merge.1.norm.weight holds 1 NaN/inf"),
    "integer encoder": (lambda t: t.update(encoder=t["encoder"].round().long()), "encoder is torch.int64, expected torch.float32"),
    "wrong merge shape": (lambda t: t.update({"merge.3.norm.weight": torch.ones(3)}), "merge.3.norm.weight has shape"),
    "an unknown tensor": (lambda t: t.update({"decoder.2": t["decoder.1"].clone()}), "'decoder.2' is unknown"),
    "a missing decoder": (lambda t: t.pop("decoder.3"), "decoder.3 is missing"),
}


@pytest.mark.parametrize("case", sorted(TENSOR_CASES))
def test_tensors_are_finite_floating_and_of_their_shape(tmp_path, case):
    """Class 4: a NaN, an integer tensor, a wrong shape or a stray tensor is refused at load."""
    folder = save_intervention(tmp_path / "iv", artefact())
    edit, names = TENSOR_CASES[case]
    edit_tensors(folder, edit)
    with pytest.raises(DataError, match="intervention.safetensors") as err:
        load_intervention(folder)
    assert names in str(err.value)


def test_nothing_non_finite_is_saved(tmp_path):
    art = artefact()
    art.decoders[3] = art.decoders[3].clone()
    art.decoders[3][0, 0] = float("nan")
    with pytest.raises(DataError, match="decoder.3 holds 1 NaN/inf"):
        save_intervention(tmp_path / "iv", art)
    assert not (tmp_path / "iv").exists()


def test_json_output_is_strict():
    from neurosymbolic_llm.stages.ask import strict_json

    text = strict_json({"gate": {"score": float("nan"), "maximum": float("inf")}, "x": 1.5})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {"gate": {"score": None, "maximum": None},
                                                                         "x": 1.5}


def test_a_failed_save_keeps_the_previous_artefact(tmp_path):
    """Class 5: the settings of a new artefact fail to be written after its tensors were made; the
    previous artefact is untouched and still loads (the old code had replaced its tensors first)."""
    folder = save_intervention(tmp_path / "iv", artefact())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    new = artefact(scale=2.0)
    new.extra["not json"] = {1, 2}
    with pytest.raises(DataError, match="not strict JSON"):
        save_intervention(folder, new)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert torch.equal(load_intervention(folder).encoder, artefact().encoder)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".iv.lock", "iv"]  # no temporary folder left


def test_a_save_replaces_the_folder_and_hashes_what_it_wrote(tmp_path):
    folder = save_intervention(tmp_path / "iv", artefact())
    save_intervention(folder, artefact(scale=3.0))
    data = json.loads((folder / JSON_NAME).read_text())
    assert data["tensors_sha256"] == hashlib.sha256((folder / TENSORS_NAME).read_bytes()).hexdigest()
    assert torch.equal(load_intervention(folder).encoder, artefact(scale=3.0).encoder)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="holds other files"):
        save_intervention(folder, artefact())
    assert (folder / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- export (class 6, class 10)
@pytest.fixture
def saved_run(tmp_path):
    """A stage-3 run R under tmp_path/prog whose saved configuration names its maps relatively."""
    prog = tmp_path / "prog"
    art = artefact()
    info = model_info("f" * 16, D, 4)
    save_maps(prog / "models" / "encoders_m.pth", "encoder", {1: art.encoder}, art.engine.state_dict(), info)
    save_maps(prog / "models" / "decoders_m.pth", "decoder", art.decoders, art.engine.state_dict(), info)
    folder = prog / "results" / "R"
    folder.mkdir(parents=True)
    (folder / "config_fine_tune.yaml").write_text(
        "run_name: R\nencoder_path: models/encoders_m.pth\ndecoder_path: models/decoders_m.pth\n"
        "symbolic_encoding_layer: 1\nsymbolic_decoding_layers: [1, 3]\nproblem_type: [gcd]\n")
    return prog


def export(prog, *extra, cwd=None):
    from neurosymbolic_llm.stages.export import export as run_export

    old = os.getcwd()
    os.chdir(cwd or prog)
    try:
        return run_export(parse_config(ExportConfig, with_run_config(["--run", "R", "--programs_dir", str(prog),
                                                                      *extra])))
    finally:
        os.chdir(old)


def test_export_refuses_a_running_or_unfinished_stage3_and_keeps_its_artefact(saved_run, tmp_path):
    folder = saved_run / "results" / "R"
    save_intervention(folder / "intervention", artefact(scale=5.0))
    before = {p.name: p.read_bytes() for p in (folder / "intervention").iterdir()}
    with pytest.raises(ConfigError, match="holds the intervention its stage 3 evaluated"):
        export(saved_run)
    assert {p.name: p.read_bytes() for p in (folder / "intervention").iterdir()} == before
    with stage_lock(folder, "fine_tune_decoders", "R"):
        with pytest.raises(RunLockedError, match="fine_tune_decoders is already running"):
            export(saved_run, "--out", str(tmp_path / "out1"))
    (folder / "training_state.pt").write_bytes(b"state")
    with pytest.raises(ConfigError, match="stopped before the end"):
        export(saved_run, "--out", str(tmp_path / "out2"))
    (folder / "results.csv").write_text("done")
    assert export(saved_run, "--out", str(tmp_path / "out3")) == 0
    assert torch.equal(load_intervention(tmp_path / "out3").encoder, artefact().encoder)


def test_a_runs_relative_maps_are_read_from_its_programs_dir(saved_run, tmp_path):
    """Class 10: from another folder holding maps of the same relative name, --programs_dir's are used."""
    elsewhere = tmp_path / "elsewhere"
    art = artefact(scale=7.0)
    info = model_info("f" * 16, D, 4)
    save_maps(elsewhere / "models" / "encoders_m.pth", "encoder", {1: art.encoder}, art.engine.state_dict(), info)
    save_maps(elsewhere / "models" / "decoders_m.pth", "decoder", art.decoders, art.engine.state_dict(), info)
    assert export(saved_run, "--out", str(tmp_path / "out"), cwd=elsewhere) == 0
    assert torch.equal(load_intervention(tmp_path / "out").encoder, artefact().encoder)


def test_export_refuses_settings_other_than_the_fine_tuned_decoders(saved_run, tmp_path):
    """A stage-3 decoder was trained with its merge: an export with another merge is refused."""
    art = artefact()
    save_maps(saved_run / "models" / "decoders_m.pth", "decoder", art.decoders, art.engine.state_dict(),
              model_info("f" * 16, D, 4), {"fine_tuned_from": "x", "merge": "add", "merge_state": {},
                                           "symbolic_encoding_layer": 1})
    with pytest.raises(ConfigError, match="trained with --merge add, the settings say convex"):
        export(saved_run, "--out", str(tmp_path / "out"))
    assert export(saved_run, "--out", str(tmp_path / "out"), "--merge", "add") == 0
