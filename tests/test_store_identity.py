"""The hidden-state store's own lock and shard tags (issue 30, class 1), and the full identities of a
model's weights and tokenizer (class 2, llama/identity.py): one changed element in any tensor family
changes the content digest; a tokenizer with two digits swapped changes the tokenizer digest, and
maps or artefacts made with another tokenizer are refused."""
import base64
import shutil

import pytest
import torch

from neurosymbolic_llm.llama.identity import content_digest, tokenizer_digest
from neurosymbolic_llm.llama.tokenizer import Tokenizer, default_tokenizer_path
from neurosymbolic_llm.pipeline.errors import DataError, EngineMismatchError, RunLockedError
from neurosymbolic_llm.pipeline.hidden_store import HiddenStore
from neurosymbolic_llm.pipeline.maps import check_model, model_info

IDENTITY = {"model_fingerprint": "m", "model_content": "c", "tokenizer_fingerprint": "t", "engine_fingerprint": "e",
            "layers": [0, 1], "dtype": "float32", "dim": 4, "rows_per_shard": 2, "sources": {}, "prompt": {},
            "model": {"fingerprint": "m", "dim": 4, "n_layers": 2}}
TOTALS = {"train": 2, "val": 2, "test": 2}


def shard(lo: int) -> dict:
    g = torch.Generator().manual_seed(lo)
    return {"hidden": torch.randn(2, 2, 4, generator=g), "targets": torch.randn(2, 8, generator=g),
            "row": torch.arange(lo, lo + 2), "type_id": torch.zeros(2, dtype=torch.long),
            "x": torch.ones(2, dtype=torch.long), "y": torch.ones(2, dtype=torch.long)}


def filled_store(root, identity=IDENTITY) -> HiddenStore:
    store = HiddenStore(root)
    manifest = store.open_for_writing(identity, TOTALS, {})
    for split in TOTALS:
        store.write_shard(split, 0, shard(0))
    store.update_progress(manifest)
    return store


def test_one_writer_per_store_and_no_reader_meanwhile(tmp_path):
    """Class 1: a second stage 1 on the same store (whatever its run name) is refused at once, and
    stage 2 does not read a store being written."""
    store = filled_store(tmp_path / "store")
    with store.writing():
        with pytest.raises(RunLockedError, match="stage 1 is writing it"):
            with HiddenStore(tmp_path / "store").writing():
                pass
        with pytest.raises(RunLockedError, match="stage 1 is still writing this store"):
            HiddenStore(tmp_path / "store").load_split("train")
    assert len(store.load_split("train")) == 2


def test_a_shard_of_another_store_is_refused(tmp_path):
    """Class 1: a shard gathered under another identity (another codebook) copied in is refused."""
    store = filled_store(tmp_path / "a")
    other = filled_store(tmp_path / "b", IDENTITY | {"engine_fingerprint": "another codebook"})
    shutil.copy(other.shard_path("val", 0), store.shard_path("val", 0))
    assert len(store.load_split("train")) == 2
    with pytest.raises(DataError, match="not a shard of this store"):
        store.load_split("val")


def test_a_resumed_store_compares_the_full_content(tmp_path):
    filled_store(tmp_path / "a")
    with pytest.raises(DataError, match="different model_content"):
        HiddenStore(tmp_path / "a").open_for_writing(IDENTITY | {"model_content": "other"}, TOTALS, {})


def test_content_digest_sees_one_element_of_every_tensor_family(tiny_ckpt, tmp_path):
    """Class 2 / blind spot: one element changed in any tensor family changes the full-content
    identity (the sampled fingerprint may miss it), and a plain copy keeps it."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_ckpt, copy)
    base = content_digest(copy)
    assert content_digest(tiny_ckpt) == base
    sd = torch.load(copy / "consolidated.00.pth", weights_only=True)
    families = sorted({".".join(p for p in k.split(".") if not p.isdigit()) for k in sd})
    assert len(families) >= 9  # embeddings, 4 attention, 3 FFN, 2 norms, the final norm, the output
    seen = set()
    for fam in families:
        key = next(k for k in sorted(sd) if ".".join(p for p in k.split(".") if not p.isdigit()) == fam)
        changed = {k: v.clone() for k, v in sd.items()}
        flat = changed[key].view(-1)
        flat[flat.numel() // 2 + 1] += 0.25  # an element away from the sampled ones' usual first places
        torch.save(changed, copy / "consolidated.00.pth")
        digest = content_digest(copy)
        assert digest != base, fam
        seen.add(digest)
    assert len(seen) == len(families)


def swapped_digits_tokenizer(tmp_path):
    lines = default_tokenizer_path().read_text().splitlines()
    one, two = (next(i for i, ln in enumerate(lines) if ln.split()[0] == base64.b64encode(d).decode())
                for d in (b"1", b"2"))
    lines[one], lines[two] = f"{lines[one].split()[0]} {lines[two].split()[1]}", f"{lines[two].split()[0]} {lines[one].split()[1]}"
    path = tmp_path / "tokenizer.model"
    path.write_text("\n".join(lines) + "\n")
    return Tokenizer(path)


def test_tokenizer_digest_and_maps_refuse_another_tokenizer(tokenizer, tmp_path):
    swapped = swapped_digits_tokenizer(tmp_path)
    assert swapped.encode("1", bos=False, eos=False) == tokenizer.encode("2", bos=False, eos=False)
    mine, theirs = tokenizer_digest(tokenizer), tokenizer_digest(swapped)
    assert mine == tokenizer_digest(Tokenizer(default_tokenizer_path())) and mine != theirs
    made = model_info("f", 4, 2, tokenizer=mine)
    assert check_model(made, model_info("f", 4, 2, tokenizer=mine), "maps") == ""
    with pytest.raises(EngineMismatchError, match="made with another tokenizer"):
        check_model(made, model_info("f", 4, 2, tokenizer=theirs), "maps", allow_other_weights=True)


def test_stage3_resume_identity_sees_an_edit_the_sampled_fingerprint_misses(tiny_ckpt, tmp_path):
    """Class 2 at stage 3: a copy with one FFN-norm element changed (one the sampled fingerprint of
    today's fingerprint.py does not read) has another training identity (what a saved training
    state must match to resume)."""
    import pandas as pd

    from neurosymbolic_llm.llama.generation import Llama
    from neurosymbolic_llm.pipeline.configs import FineTuneConfig
    from neurosymbolic_llm.stages.fine_tune import training_identity

    copy = tmp_path / "copy"
    shutil.copytree(tiny_ckpt, copy)
    sd = torch.load(copy / "consolidated.00.pth", weights_only=True)
    sd["layers.1.ffn_norm.weight"][33] += 0.5
    torch.save(sd, copy / "consolidated.00.pth")
    rows = pd.DataFrame({"problem_type": ["gcd"], "x": [12], "y": [8], "question": ["q"], "solution": [4]})
    ids = [training_identity(FineTuneConfig(), "neurosymbolic",
                             Llama.build(c, max_seq_len=64, max_batch_size=1, device="cpu", dtype=torch.float32),
                             rows, 1, {"encoder": None, "decoder": None}) for c in (tiny_ckpt, copy)]
    assert ids[0]["model_content"] != ids[1]["model_content"] and ids[0]["tokenizer"] == ids[1]["tokenizer"]
