"""Hostile checkpoint and tokenizer files (corrupt copies of the tiny checkpoints of
tests/tiny_formats.py and tests/conftest.py): each is refused with one CheckpointError line naming
the file and the field, before anything large is allocated; none is loaded silently wrong.

Classes: allocation before checking (counts and ids checked against the file first), exceptions
other than the one-line error, silent acceptance, a shard path escaping the folder, tensors read at
the wrong alignment; and the entry script's exit code 2 with one stderr line.
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
import torch

pytest.importorskip("gguf")

import hostile_files as hf  # noqa: E402

from neurosymbolic_llm.llama import model as model_module  # noqa: E402
from neurosymbolic_llm.llama.errors import CheckpointError  # noqa: E402
from neurosymbolic_llm.llama.formats import open_checkpoint  # noqa: E402
from neurosymbolic_llm.llama.generation import Llama  # noqa: E402

PROGRAMS = Path(__file__).resolve().parents[1] / "Programs"


def build(path):
    return Llama.build(path, device="cpu", max_seq_len=32, max_batch_size=1)


def edit_json(path: Path, change) -> Path:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))
    return path


def gguf_copy(src: Path, dst: Path, edit, **to_bytes) -> Path:
    g = hf.GGUF.parse(src.read_bytes())
    edit(g)
    dst.write_bytes(g.to_bytes(**to_bytes))
    return dst


def hf_copy(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst))


def first_shard(folder: Path) -> Path:
    return folder / json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"][
        "model.embed_tokens.weight"]


def edit_header(shard: Path, change, length=None) -> None:
    header, data = hf.safetensors_parts(shard.read_bytes())
    shard.write_bytes(hf.safetensors_bytes(change(header), data, length))


def one_line(e) -> str:
    text = str(e.value)
    assert "\n" not in text and len(text) < 700, text
    return text


# ----------------------------------------------------------------------------- allocation caps

@pytest.fixture
def few_blocks(monkeypatch):
    """Building more than 8 blocks fails the test: a loader must compare the block count with the
    tensors in the file before building the network (the tiny models have 2 or 4)."""
    built = []
    init = model_module.TransformerBlock.__init__

    def counting(self, *a, **k):
        built.append(1)
        if len(built) > 8:
            raise AssertionError("built more blocks than the file holds before checking it")
        init(self, *a, **k)

    monkeypatch.setattr(model_module.TransformerBlock, "__init__", counting)


@pytest.mark.parametrize("fmt", ["meta", "hf", "gguf"])
def test_a_block_count_beyond_the_file_fails_before_building(fmt, tiny_ckpt, tiny_formats,
                                                              tmp_path, few_blocks):
    if fmt == "meta":
        path = Path(shutil.copytree(tiny_ckpt, tmp_path / "m"))
        edit_json(path / "params.json", lambda p: p.update(n_layers=20000))
        field = r"params\.json.*20000 blocks"
    elif fmt == "hf":
        path = hf_copy(tiny_formats["tied"]["hf"], tmp_path / "h")
        edit_json(path / "config.json", lambda c: c.update(num_hidden_layers=20000))
        field = r"config\.json.*20000 blocks"
    else:
        path = gguf_copy(tiny_formats["tied"]["F32"], tmp_path / "g.gguf",
                         lambda g: g.set("llama.block_count", hf.U32, 200000))
        field = r"g\.gguf.*200000 blocks"
    with pytest.raises(CheckpointError, match=field) as e:
        build(path)
    one_line(e)


@pytest.mark.parametrize("config_vocab, bound", [(None, r"config\.json's vocab_size"),
                                                  (2 ** 31 - 1, r"twice the number of tokens")])
def test_a_huge_token_id_fails_before_allocating(config_vocab, bound, tiny_formats, tmp_path):
    """One added-token id of 30,000,000 in a 26 kB tokenizer.json: refused (by config.json's
    vocab_size, or when that is as huge, by the number of tokens) before a token table of that
    length (240 MB) is allocated."""
    folder = hf_copy(tiny_formats["tied"]["hf"], tmp_path / "h")
    edit_json(folder / "tokenizer.json", lambda t: t["added_tokens"][0].update(id=30_000_000))
    if config_vocab:
        edit_json(folder / "config.json", lambda c: c.update(vocab_size=config_vocab))
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"tokenizer\.json: added_tokens gives "
                                                  r"'<\|endoftext\|>' the id 30000000: expected an "
                                                  rf"integer in 0\.\.\d+ \({bound}\)") as e:
            open_checkpoint(folder).load_tokenizer()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    one_line(e)
    assert peak < 50e6, f"{peak / 1e6:.0f} MB allocated before the error"


# ----------------------------------------------------------------------------- exceptions -> one line

def _gguf(edit):
    return lambda t, tmp, ckpt: gguf_copy(t["tied"]["Q8_0"], tmp / "bad.gguf", edit)


def _tensor(name, **change):
    return lambda g: g.tensor(name).__dict__.update(change)


def _hf(file, change, variant="tied"):
    def make(t, tmp, ckpt):
        folder = hf_copy(t[variant]["hf"], tmp / "hf")
        edit_json(folder / file, change)
        return folder
    return make


def _header(change, length=None):
    def make(t, tmp, ckpt):
        folder = hf_copy(t["tied"]["hf"], tmp / "hf")
        edit_header(first_shard(folder), change, length)
        return folder
    return make


def _params(change):
    def make(t, tmp, ckpt):
        folder = Path(shutil.copytree(ckpt, tmp / "meta"))
        edit_json(folder / "params.json", change)
        return folder
    return make


def _drop(key):
    def change(h):
        del h["model.embed_tokens.weight"][key]
        return h
    return change


def _set_emb(**kw):
    def change(h):
        h["model.embed_tokens.weight"].update(kw)
        return h
    return change


CASES = {
    "gguf alignment 0": (_gguf(lambda g: g.set("general.alignment", hf.U32, 0)),
                         r"bad\.gguf: general\.alignment = 0 must be a positive multiple of 8"),
    "gguf zero dimension": (_gguf(_tensor("blk.0.attn_norm.weight", dims=[0])),
                            r"bad\.gguf: tensor 'blk\.0\.attn_norm\.weight' has a zero dimension"),
    "gguf head_count 0": (_gguf(lambda g: g.set("llama.attention.head_count", hf.U32, 0)),
                          r"bad\.gguf: llama\.attention\.head_count = 0 must be in 1\.\.2147483647"),
    "gguf string for a number": (_gguf(lambda g: g.set("llama.embedding_length", hf.STRING, "64")),
                                 r"bad\.gguf: llama\.embedding_length must be an integer, got '64'"),
    "safetensors header 2^40": (_header(lambda h: h, 2 ** 40),
                                r"model-00001-of-\d+\.safetensors: the header length 1099511627776 "
                                r"is larger than the file"),
    "safetensors header 2^64-1": (_header(lambda h: h, 2 ** 64 - 1),
                                  r"model-00001-of-\d+\.safetensors: the header length \d+ is larger"),
    "safetensors header a list": (_header(lambda h: [h]),
                                  r"safetensors: the safetensors header must be a JSON object, got list"),
    "safetensors bad data_offsets": (_header(_set_emb(data_offsets=[100, 4])),
                                     r"tensor 'model\.embed_tokens\.weight' has data_offsets "
                                     r"\[100, 4\]: expected \[begin, end\] inside"),
    "safetensors missing shape": (_header(_drop("shape")),
                                  r"tensor 'model\.embed_tokens\.weight' must have dtype, shape and "
                                  r"data_offsets"),
    "index weight_map value a list": (  # found by the fuzzer
        _hf("model.safetensors.index.json", lambda i: i["weight_map"].update(
            {"model.norm.weight": []})),
        r"model\.safetensors\.index\.json: weight_map gives 'model\.norm\.weight' the value \[\]: "
        r"expected a file name"),
    "index shard name too long": (  # found by the fuzzer: an OSError echoing 5,000 characters
        _hf("model.safetensors.index.json", lambda i: i["weight_map"].update(
            {"model.norm.weight": "x" * 5000})),
        r"model\.safetensors\.index\.json names the shard 'x{100,}\.\.\. \(5002 characters\), which is "
        r"not a file"),
    "config hidden_size a string": (_hf("config.json", lambda c: c.update(hidden_size="64")),
                                    r"config\.json: hidden_size must be an integer, got '64'"),
    "config rope_scaling without factor": (
        _hf("config.json", lambda c: c.update(rope_scaling={  # transformers 4's layout
            k: v for k, v in c.pop("rope_parameters").items() if k != "factor"}), "gqa"),
        r"config\.json: rope_scaling of type 'llama3' lacks 'factor'"),
    "params multiple_of 2^64": (_params(lambda p: p.update(multiple_of=2 ** 64)),
                                r"params\.json: multiple_of = 18446744073709551616 must be in "
                                r"1\.\.2147483647"),
    "params rope_freq_factors a number": (_params(lambda p: p.update(rope_freq_factors=5)),
                                          r"params\.json: rope_freq_factors must be a list of "
                                          r"numbers, got 5"),
    "params rope_theta 0": (_params(lambda p: p.update(rope_theta=0)),
                            r"params\.json: rope_theta = 0 must be a finite number > 0"),
    "params norm_eps NaN": (_params(lambda p: p.update(norm_eps=float("nan"))),
                            r"params\.json: norm_eps = nan must be a finite number > 0"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_broken_field_is_one_line_naming_file_and_field(case, tiny_formats, tiny_ckpt, tmp_path):
    make, message = CASES[case]
    path = make(tiny_formats, tmp_path, tiny_ckpt)
    with pytest.raises(CheckpointError, match=message) as e:
        build(path)
    one_line(e)


def test_a_gguf_array_longer_than_the_file_is_one_line(tiny_formats, tmp_path):
    g = hf.GGUF.parse(tiny_formats["tied"]["Q8_0"].read_bytes())
    g.item("tokenizer.ggml.token_type").value = (hf.I32, [])  # its count is then patched to 2^40
    raw = bytearray(g.to_bytes())
    key = hf._string("tokenizer.ggml.token_type") + struct.pack("<II", hf.ARRAY, hf.I32)
    at = raw.index(key) + len(key)
    raw[at:at + 8] = struct.pack("<Q", 2 ** 40)
    path = tmp_path / "long.gguf"
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"long\.gguf: corrupt GGUF header at byte \d+: the "
                                              r"array length 1099511627776 is more than") as e:
        build(path)
    one_line(e)


def test_echoed_values_are_capped(tiny_formats, tmp_path):
    path = gguf_copy(tiny_formats["tied"]["Q8_0"], tmp_path / "long.gguf",
                     lambda g: g.set("general.architecture", hf.STRING, "x" * 100_000))
    with pytest.raises(CheckpointError, match=r"long\.gguf: architecture 'x{100,}\.\.\. "
                                              r"\(100002 characters\) is not supported") as e:
        build(path)
    assert len(one_line(e)) < 500


# ----------------------------------------------------------------------------- silent acceptance

def test_overlapping_gguf_tensors_are_refused(tiny_formats, tmp_path):
    src = tiny_formats["tied"]["F32"]
    g = hf.GGUF.parse(src.read_bytes())
    second = g.tensors[1]  # token_embd's data begins at offset 0: the next tensor moved onto it
    path = gguf_copy(src, tmp_path / "o.gguf", _tensor(second.name, offset=32))
    with pytest.raises(CheckpointError, match=rf"o\.gguf: tensors 'token_embd\.weight' and "
                                              rf"'{second.name}' overlap") as e:
        build(path)
    one_line(e)


def test_a_negative_added_token_id_is_refused(tiny_formats, tmp_path):
    folder = hf_copy(tiny_formats["tied"]["hf"], tmp_path / "h")
    # <|endoftext|> is none of bos/eos/pad, so no later id check sees it: it was accepted silently
    edit_json(folder / "tokenizer.json", lambda t: t["added_tokens"][0].update(id=-3))
    with pytest.raises(CheckpointError, match=r"tokenizer\.json: added_tokens gives '<\|endoftext\|>' "
                                              r"the id -3: expected an integer in 0\.\.\d+") as e:
        build(folder)
    one_line(e)


def test_a_safetensors_shard_outside_the_folder_is_never_opened(tiny_formats, tmp_path):
    """The index names ../outside/x.safetensors, a valid shard: refused by its name."""
    folder = hf_copy(tiny_formats["tied"]["hf"], tmp_path / "deep" / "hf")
    outside = tmp_path / "deep" / "outside"
    outside.mkdir()
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["model.embed_tokens.weight"]
    shutil.move(folder / shard, outside / shard)
    for name in [n for n, f in index["weight_map"].items() if f == shard]:
        index["weight_map"][name] = f"../outside/{shard}"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json: weight_map names the "
                                              r"file '\.\./outside/.*': shard files must lie inside") as e:
        build(folder)
    one_line(e)
    index["weight_map"] = {k: "/etc/passwd" for k in index["weight_map"]}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"weight_map names the file '/etc/passwd'"):
        build(folder)


# ----------------------------------------------------------------------------- alignment

def test_gguf_alignment_is_honoured_or_refused(tiny_formats, tmp_path):
    """general.alignment = 7 (not a multiple of 8) is refused instead of reading every tensor 17
    bytes off; a file really written with alignment 64 loads the same weights as the 32-aligned
    original."""
    src = tiny_formats["tied"]["F32"]
    bad = gguf_copy(src, tmp_path / "a7.gguf", lambda g: g.set("general.alignment", hf.U32, 7))
    with pytest.raises(CheckpointError, match=r"a7\.gguf: general\.alignment = 7 must be a positive "
                                              r"multiple of 8") as e:
        build(bad)
    one_line(e)
    g = hf.GGUF.parse(src.read_bytes())
    g.set("general.alignment", hf.U32, 64)
    data, g.data = g.data, b""
    for t in g.tensors:  # re-lay the data section with 64-byte alignment
        n = len(data) if t is g.tensors[-1] else g.tensors[g.tensors.index(t) + 1].offset - t.offset
        chunk = data[t.offset:t.offset + n]
        g.data += bytes(-len(g.data) % 64)
        t.offset = len(g.data)
        g.data += chunk
    wide = tmp_path / "a64.gguf"
    wide.write_bytes(g.to_bytes(pad_to=64))
    a, b = build(src).model.state_dict(), build(wide).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- entry script

def _gather(ckpt, root):
    cmd = [sys.executable, str(PROGRAMS / "gather_hidden_states.py"), "--run_name", "t",
           "--chpt_dir", str(ckpt), "--programs_dir", str(root), "--train_data_rounds", "4",
           "--val_data_rounds", "2", "--testing_data_rounds", "2", "--VSA_dim", "128",
           "--max_digits", "4", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["gguf alignment 0", "safetensors header a list"])
def test_the_entry_script_prints_one_line_and_exits_2(case, tiny_formats, tmp_path):
    make, message = CASES[case]
    ckpt = make(tiny_formats, tmp_path, None)
    root = tmp_path / "runs"
    res = _gather(ckpt, root)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-3000:]
    assert lines[0].startswith("error: ") and re.search(message, lines[0]), lines[0]
    assert not (root / "gathered_data_t").exists()


def test_a_llama3_chat_without_bos_is_refused_at_load(tiny_formats, tmp_path):
    """Found by the fuzzer: a GGUF without tokenizer.ggml.bos_token_id loaded, then every Llama 3
    prompt began with the id None (a TypeError far from the file)."""
    path = gguf_copy(tiny_formats["gqa"]["F32"], tmp_path / "nobos.gguf",
                     lambda g: g.items.remove(g.item("tokenizer.ggml.bos_token_id")))
    with pytest.raises(CheckpointError, match=r"nobos\.gguf: the Llama 3 chat format begins with a "
                                              r"BOS token, which the tokenizer does not name") as e:
        build(path)
    one_line(e)


@pytest.mark.parametrize("type_id, dims, message", [
    (9, [32], r"tensor 'rope_freqs\.weight' has the type Q8_1: weights must be float or a "
              r"quantization the gguf package reads"),
    (28, [8], r"t\.gguf: rope_freq_factors has 8 values, expected head_dim/2 = 16")])
def test_gguf_tensor_types_the_loader_cannot_read(type_id, dims, message, tiny_formats, tmp_path):
    """rope_freqs (16 F32 values, 64 bytes) stored as Q8_1 (which the gguf package cannot
    dequantize) or as F64: one line instead of NotImplementedError."""
    path = gguf_copy(tiny_formats["gqa"]["F32"], tmp_path / "t.gguf",
                     _tensor("rope_freqs.weight", type_id=type_id, dims=dims))
    with pytest.raises(CheckpointError, match=message) as e:
        build(path)
    one_line(e)


@pytest.mark.parametrize("content", [[torch.zeros(2)], torch.zeros(3)], ids=["list", "tensor"])
def test_a_pth_without_a_state_dict_is_the_loaders_one_line_everywhere(content, tiny_ckpt, tmp_path):
    """A consolidated.00.pth holding a list (or a bare tensor): the fingerprint and reshard gave an
    AttributeError traceback; every reader now gives the loader's line naming the file."""
    from neurosymbolic_llm.llama.checkpoint import checkpoint_fingerprint, reshard
    folder = Path(shutil.copytree(tiny_ckpt, tmp_path / "m"))
    shard = folder / "consolidated.00.pth"
    torch.save(content, shard)
    readers = {"load": lambda: build(folder), "fingerprint": lambda: open_checkpoint(folder).fingerprint(),
               "checkpoint_fingerprint": lambda: checkpoint_fingerprint(folder),
               "reshard": lambda: reshard(folder, tmp_path / "resharded", 1)}
    lines = {}
    for name, read in readers.items():
        with pytest.raises(CheckpointError) as e:
            read()
        lines[name] = one_line(e)
    expected = f"{shard} must hold a state dict, got {type(content).__name__}"
    assert lines == dict.fromkeys(readers, expected)
    assert not (tmp_path / "resharded").exists()
