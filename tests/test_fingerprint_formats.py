"""Fingerprints that follow the weights' content (llama/fingerprint.py): maps made on one tiny model
are accepted on its Meta, Hugging Face and GGUF F32/F16 copies and refused on its Q8_0 copy unless
--allow_other_weights, whose name the refusal gives. The copies are built by transformers and gguf
(tests/tiny_formats.py); the Meta copy by save_checkpoint from the Hugging Face load."""
import dataclasses

import pytest
import torch

from neurosymbolic_llm.llama.checkpoint import save_checkpoint
from neurosymbolic_llm.llama.fingerprint import OTHER_WEIGHTS, SAME, compare
from neurosymbolic_llm.llama.formats import open_checkpoint
from neurosymbolic_llm.pipeline.errors import EngineMismatchError
from neurosymbolic_llm.pipeline.maps import load_maps, model_info, save_maps
from neurosymbolic_llm.symbolic.engine import SymbolicEngine

RUNTIME = ("max_batch_size", "max_seq_len", "model_parallel_size")


def meta_copy(hf_folder, out, *, permute_qk=True):
    """The Hugging Face model saved in Meta's layout (q/k rows interleaved, as the loader makes them);
    permute_qk=False keeps Hugging Face's rotate-half rows: the same numbers in the wrong places."""
    ckpt = open_checkpoint(hf_folder)
    state = ckpt.load_model().state_dict()
    if not permute_qk:
        from neurosymbolic_llm.llama.hf_checkpoint import interleaved_to_rotate_half
        args = ckpt.args()
        for k in state:
            if k.endswith(("attention.wq.weight", "attention.wk.weight")):
                heads = args.n_heads if "wq" in k else args.n_kv_heads
                state[k] = interleaved_to_rotate_half(state[k], heads)
    params = {k: v for k, v in dataclasses.asdict(ckpt.args()).items() if k not in RUNTIME}
    return save_checkpoint(state, params, out)


def info_of(path):
    ckpt = open_checkpoint(path)
    args = ckpt.args()
    return model_info(ckpt.fingerprint(), args.dim, args.n_layers, ckpt.weight_samples())


@pytest.fixture(scope="module")
def copies(tiny_formats, tmp_path_factory):
    """{name: checkpoint path} of the "gqa" model (GQA, Llama 3.1 RoPE scaling, head_dim != dim/heads)."""
    t = tiny_formats["gqa"]
    root = tmp_path_factory.mktemp("fp")
    return {"hf": t["hf"], "meta": meta_copy(t["hf"], root / "meta"), "F32": t["F32"], "F16": t["F16"],
            "Q8_0": t["Q8_0"], "meta_unpermuted": meta_copy(t["hf"], root / "unpermuted", permute_qk=False)}


@pytest.fixture(scope="module")
def maps(copies, tmp_path_factory):
    """Encoder maps made on the Hugging Face copy."""
    info = info_of(copies["hf"])
    engine = SymbolicEngine(VSA_dim=32, max_digits=3)
    path = tmp_path_factory.mktemp("maps") / "enc.pth"
    return save_maps(path, "encoder", {1: torch.randn(32, info["dim"])}, engine.state_dict(), info)


@pytest.mark.parametrize("name", ["hf", "meta", "F32", "F16"])
def test_same_maps_accepted_on_every_float_copy(copies, maps, name):
    load_maps(maps, "encoder", model_info=info_of(copies[name]))


def test_float_copies_in_one_dtype_have_one_fingerprint(copies):
    fps = {n: open_checkpoint(copies[n]).fingerprint() for n in ("hf", "meta", "F32", "F16", "Q8_0")}
    assert fps["hf"] == fps["meta"] == fps["F32"] != fps["F16"] != fps["Q8_0"]


def test_quantized_copy_refused_with_the_override_named(copies, maps, capsys):
    info = info_of(copies["Q8_0"])
    with pytest.raises(EngineMismatchError, match=r"same architecture with other weights .*Q8_0.*--allow_other_weights 1"):
        load_maps(maps, "encoder", model_info=info)
    load_maps(maps, "encoder", model_info=info, allow_other_weights=True)
    assert "--allow_other_weights" in capsys.readouterr().err


def test_rows_in_the_wrong_rope_order_are_other_weights(copies):
    """The samples are taken in Meta's layout: a Meta folder holding Hugging Face's q/k row order
    (what a converter that forgot the permutation writes) is another model."""
    verdict, reason = compare(open_checkpoint(copies["hf"]).weight_samples(),
                              open_checkpoint(copies["meta_unpermuted"]).weight_samples())
    assert verdict == OTHER_WEIGHTS and "attention.w" in reason
    assert compare(open_checkpoint(copies["hf"]).weight_samples(),
                   open_checkpoint(copies["meta"]).weight_samples())[0] == SAME


def test_stage3_option_reaches_the_check(copies, maps, tmp_path):
    """--allow_other_weights on stage 3's maps (fine_tune_inputs.load_maps_for) with the Q8_0 model loaded."""
    from neurosymbolic_llm.pipeline.configs import FineTuneConfig
    from neurosymbolic_llm.pipeline.fine_tune_inputs import load_maps_for
    from neurosymbolic_llm.pipeline.runtime import build_llama

    engine = SymbolicEngine(VSA_dim=32, max_digits=3)
    dec = save_maps(tmp_path / "dec.pth", "decoder", {1: torch.zeros(64, 32)}, engine.state_dict(),
                    info_of(copies["hf"]))
    cfg = FineTuneConfig(chpt_dir=str(copies["Q8_0"]), encoder_path=str(maps), decoder_path=str(dec),
                         symbolic_encoding_layer=1, symbolic_decoding_layers=[1], max_seq_len=64)
    llama = build_llama(cfg, max_batch_size=1, device="cpu")
    with pytest.raises(EngineMismatchError, match="--allow_other_weights"):
        load_maps_for(cfg, llama)
    cfg.allow_other_weights = True
    assert load_maps_for(cfg, llama).encoder.shape == (32, 64)


def test_old_map_files_give_one_clear_line(copies, tmp_path):
    """A map file of the previous version (a fingerprint of the files, no samples)."""
    engine = SymbolicEngine(VSA_dim=32, max_digits=3)
    old = save_maps(tmp_path / "old.pth", "encoder", {1: torch.zeros(32, 64)}, engine.state_dict(),
                    model_info("0" * 64, 64, 2))
    with pytest.raises(EngineMismatchError, match="older fingerprint.*retrain.*--allow_other_weights 1"):
        load_maps(old, "encoder", model_info=info_of(copies["hf"]))
    load_maps(old, "encoder", model_info=info_of(copies["hf"]), allow_other_weights=True)


def test_a_resharded_meta_folder_is_the_same_model(copies, tmp_path):
    """Tensors split over two model-parallel shards are sampled through their shard."""
    from neurosymbolic_llm.llama.checkpoint import reshard

    two = reshard(copies["meta"], tmp_path / "mp2", 2)
    assert len(list(two.glob("consolidated.*.pth"))) == 2
    assert open_checkpoint(two).fingerprint() == open_checkpoint(copies["meta"]).fingerprint()
