"""Checkpoints: save/load round trip, strict checks with clear messages, fingerprints, resharding."""
import json
import shutil

import pytest
import torch

from neurosymbolic_llm.llama.errors import CheckpointError, LlamaError
from neurosymbolic_llm.llama.checkpoint import (checkpoint_fingerprint, file_fingerprint, load_model,
                                    load_params, reshard, save_checkpoint, shard_dim)
from neurosymbolic_llm.llama.generation import Llama
from neurosymbolic_llm.llama.model import ModelArgs, Transformer
from neurosymbolic_llm.llama.tokenizer import default_tokenizer_path, resolve_tokenizer_path

SMALL = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512, multiple_of=16,
             norm_eps=1e-5, rope_theta=500000.0, use_scaled_rope=True)


@pytest.fixture()
def small_ckpt(tmp_path):
    model = Transformer(ModelArgs.from_params(SMALL)).init_weights(seed=5)
    return save_checkpoint(model, SMALL, tmp_path / "small"), model


@torch.no_grad()
def test_save_load_identical_logits(tiny_ckpt, tiny_params):
    ref = Transformer(ModelArgs.from_params(tiny_params)).init_weights(seed=0)
    model = load_model(tiny_ckpt, max_seq_len=128, max_batch_size=2)
    assert model.args.max_seq_len == 128 and model.args.max_batch_size == 2
    assert not any(p.requires_grad for p in model.parameters())
    assert sorted(p.name for p in tiny_ckpt.iterdir()) == ["consolidated.00.pth", "params.json",
                                                            "tokenizer.model"]
    tokens = torch.randint(0, 128000, (2, 11), generator=torch.Generator().manual_seed(0))
    pos = torch.tensor([10])
    assert torch.equal(model(tokens, output_positions=pos), ref(tokens, output_positions=pos))
    bf16 = load_model(tiny_ckpt, dtype=torch.bfloat16)
    assert bf16.output.weight.dtype == torch.bfloat16
    assert load_params(tiny_ckpt) == tiny_params


def test_save_state_dict_and_reload(small_ckpt, tmp_path):
    path, model = small_ckpt
    again = save_checkpoint(load_model(path).state_dict(), SMALL, tmp_path / "again")
    tokens = torch.arange(10)[None]
    with torch.no_grad():
        assert torch.equal(load_model(again)(tokens), model(tokens))
    assert json.loads((again / "params.json").read_text()) == SMALL


def test_fingerprints(small_ckpt, tmp_path):
    path, model = small_ckpt
    fp = checkpoint_fingerprint(path)
    assert fp == checkpoint_fingerprint(path) and len(fp) == 64
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    assert checkpoint_fingerprint(copy) == fp
    with torch.no_grad():
        model.norm.weight[0] += 1  # the final norm is stored last: changes the last MiB
    save_checkpoint(model, SMALL, copy)
    assert checkpoint_fingerprint(copy) != fp
    (copy / "params.json").write_text(json.dumps({**SMALL, "norm_eps": 1e-6}))
    f1 = file_fingerprint(copy / "params.json")
    assert f1 == file_fingerprint(copy / "params.json") != file_fingerprint(path / "params.json")


def test_reshard_split_and_merge(small_ckpt, tmp_path):
    path, model = small_ckpt
    two = reshard(path, tmp_path / "mp2", 2)
    shards = [torch.load(two / f"consolidated.{r:02d}.pth", weights_only=True) for r in range(2)]
    sd = model.state_dict()
    for k, v in sd.items():
        d = shard_dim(k)
        if d is None:
            assert torch.equal(shards[0][k], v) and torch.equal(shards[1][k], v)
        else:
            assert torch.equal(torch.cat([s[k] for s in shards], d), v), k
    assert shards[0]["layers.0.attention.wk.weight"].shape == (8, 32)  # 1 of 2 kv heads
    assert shards[0]["layers.0.attention.wo.weight"].shape == (32, 16)
    assert shards[0]["tok_embeddings.weight"].shape == (256, 32)
    one = reshard(two, tmp_path / "mp1", 1)
    merged = torch.load(one / "consolidated.00.pth", weights_only=True)
    assert merged.keys() == sd.keys() and all(torch.equal(merged[k], sd[k]) for k in sd)
    with pytest.raises(LlamaError, match="model-parallel size 3: it must divide n_heads = 4"):
        reshard(path, tmp_path / "mp3", 3)
    with pytest.raises(LlamaError, match="it must divide n_kv_heads = 2"):
        reshard(path, tmp_path / "mp4", 4)
    # a two-shard folder needs two processes
    with pytest.raises(CheckpointError, match=r"holds 2 \.pth shard\(s\) \(consolidated\.00\.pth, "
                                              r"consolidated\.01\.pth\) but the model-parallel size is 1"):
        load_model(two)


# ----------------------------------------------------------------------------- clear errors

def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint folder .*nowhere does not exist"):
        load_model(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match=r"checkpoint .*nowhere does not exist: .*a Meta folder needs"):
        Llama.build(tmp_path / "nowhere", device="cpu")


def test_missing_params(small_ckpt):
    path, _ = small_ckpt
    (path / "params.json").unlink()
    with pytest.raises(CheckpointError, match=r"small/params\.json not found"):
        Llama.build(path, device="cpu")


def test_bad_params_json(small_ckpt):
    path, _ = small_ckpt
    (path / "params.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"params\.json is not valid JSON"):
        load_model(path)
    (path / "params.json").write_text(json.dumps({"dim": 32}))
    with pytest.raises(CheckpointError, match=r"params\.json lacks the field\(s\) n_layers, n_heads, vocab_size"):
        load_model(path)


def test_missing_tokenizer(small_ckpt, tmp_path):
    path, _ = small_ckpt
    with pytest.raises(CheckpointError, match=r"tokenizer .*elsewhere/tokenizer\.model not found"):
        Llama.build(path, tokenizer_path=tmp_path / "elsewhere" / "tokenizer.model", device="cpu")


def test_folder_without_tokenizer_uses_the_packaged_one(tiny_ckpt, tmp_path):
    folder = tmp_path / "weights_only"
    shutil.copytree(tiny_ckpt, folder)
    (folder / "tokenizer.model").unlink()
    assert resolve_tokenizer_path(folder) == default_tokenizer_path()
    assert resolve_tokenizer_path(tiny_ckpt) == tiny_ckpt / "tokenizer.model"
    own = tmp_path / "own.model"
    shutil.copy(default_tokenizer_path(), own)
    assert resolve_tokenizer_path(folder, str(own)) == own
    llama = Llama.build(folder, device="cpu", max_seq_len=32, max_batch_size=1)
    assert llama.tokenizer.model_path == default_tokenizer_path()
    assert llama.tokenizer.encode("12", bos=False, eos=False) == [717]


def test_no_shard_and_too_many_shards(small_ckpt):
    path, _ = small_ckpt
    shutil.copy(path / "consolidated.00.pth", path / "consolidated.01.pth")
    with pytest.raises(CheckpointError, match=r"holds 2 \.pth shard\(s\).*expected exactly 1"):
        load_model(path)
    for p in path.glob("*.pth"):
        p.unlink()
    with pytest.raises(CheckpointError, match=r"holds 0 \.pth shard\(s\) \(none\).*expected exactly 1"):
        load_model(path)


def test_params_do_not_match_weights(small_ckpt):
    path, _ = small_ckpt
    (path / "params.json").write_text(json.dumps({**SMALL, "n_kv_heads": 4}))
    with pytest.raises(CheckpointError, match=r"tensor 'layers\.0\.attention\.wk\.weight' has shape "
                                              r"\(16, 32\) but params\.json implies \(32, 32\)"):
        load_model(path)
    (path / "params.json").write_text(json.dumps({**SMALL, "n_layers": 3}))
    with pytest.raises(CheckpointError, match=r"tensor 'layers\.2\.attention\.wq\.weight' is missing"):
        load_model(path)
    (path / "params.json").write_text(json.dumps({**SMALL, "n_layers": 1}))
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'layers\.1\.attention\.wq\.weight'"):
        load_model(path)


def test_not_a_state_dict(small_ckpt):
    path, _ = small_ckpt
    (path / "consolidated.00.pth").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"cannot read .*consolidated\.00\.pth as a torch state dict"):
        load_model(path)


def test_tokenizer_size_differs_from_vocab(small_ckpt):
    path, _ = small_ckpt  # vocab_size 512 with the real 128256-token tokenizer
    with pytest.raises(CheckpointError, match=r"tokenizer .*tokenizer\.model has 128256 tokens but "
                                              r".*params\.json says vocab_size 512"):
        Llama.build(path, device="cpu")


def test_model_parallel_needs_torchrun(small_ckpt, monkeypatch):
    path, _ = small_ckpt
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(LlamaError, match="torchrun --nproc_per_node 2"):
        load_model(path, model_parallel_size=2)
