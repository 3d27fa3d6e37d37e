"""The checkpoint-format registry (neurosymbolic_llm/llama/formats.py ``FORMATS``): a format added as
one ``CheckpointFormat`` object, with no other edit, is detected, loaded, fingerprinted and listed
in the errors; the model it loads is the one of the Meta folder it points to (the reference)."""
from pathlib import Path

import pytest
import torch

from neurosymbolic_llm.llama import formats
from neurosymbolic_llm.llama.checkpoint import META
from neurosymbolic_llm.llama.checkpoint_format import CheckpointFormat
from neurosymbolic_llm.llama.errors import CheckpointError, LlamaError
from neurosymbolic_llm.llama.formats import Checkpoint, detect_format, open_checkpoint
from neurosymbolic_llm.llama.generation import Llama


class LinkFormat(CheckpointFormat):
    """A text file ``*.ckptlink`` naming a Meta folder, read through that folder."""
    name, title = "link", "link file"
    needs = "a link file is one *.ckptlink naming a Meta folder"

    def find(self, path, names):
        return path if names is None and path.suffix == ".ckptlink" else None

    def open(self, path):
        return Checkpoint(META, Path(path.read_text().strip()))

    def args(self, ckpt, **runtime):
        return META.args(ckpt.handle(), **runtime)

    def load_model(self, ckpt, **kw):
        return META.load_model(ckpt.handle(), **kw)

    def tokenizer(self, ckpt):
        return META.tokenizer(ckpt.handle())

    def weight_samples(self, ckpt):
        return META.weight_samples(ckpt.handle())

    def tokenizer_fingerprint(self, ckpt):
        return META.tokenizer_fingerprint(ckpt.handle())


@pytest.fixture
def link(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "FORMATS", formats.FORMATS + (LinkFormat(),))
    path = tmp_path / "tiny.ckptlink"
    path.write_text(f"{tiny_ckpt}\n")
    return path


def test_the_registry_names_each_format_once():
    assert [f.name for f in formats.FORMATS] == ["hf", "meta", "gguf"]
    assert all(isinstance(f, CheckpointFormat) for f in formats.FORMATS)


def test_a_format_added_as_one_object_is_detected_and_loaded(link, tiny_ckpt, tmp_path):
    assert detect_format(link) == ("link", link)
    ours = Llama.build(link, device="cpu", max_seq_len=32, max_batch_size=2)
    ref = Llama.build(tiny_ckpt, device="cpu", max_seq_len=32, max_batch_size=2)
    x = torch.tensor([[1, 5, 9, 200, 7]])
    with torch.no_grad():
        assert torch.equal(ours.model(x), ref.model(x))
    assert ours.checkpoint_format == "link" and ours.ckpt_dir == link
    assert (ours.fingerprint, ours.tokenizer_fingerprint) == (ref.fingerprint, ref.tokenizer_fingerprint)
    assert ours.formatter.encode_dialog_prompt([{"role": "user", "content": "hi"}]) == \
        ref.formatter.encode_dialog_prompt([{"role": "user", "content": "hi"}])
    # the errors that list the formats or name their abilities include it
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no checkpoint format known: .*a link file is one \*\.ckptlink"):
        open_checkpoint(tmp_path / "empty")
    with pytest.raises(LlamaError, match=r"model parallelism needs a Meta folder; convert this link"):
        open_checkpoint(link).load_model(model_parallel_size=2)
    with pytest.raises(LlamaError, match=r"--tokenizer_path applies to Meta folders only; the link"):
        open_checkpoint(link, tokenizer_path=tiny_ckpt / "tokenizer.model").load_tokenizer()


def test_a_folder_with_an_architecture_file_is_only_that_formats(tmp_path):
    """config.json beside one .gguf: refused as an incomplete Hugging Face folder, not read as the
    GGUF (the marker rule); the same .gguf alone in a folder is read (detection opens no file)."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "model.gguf").write_bytes(b"GGUF")
    assert detect_format(folder) == ("gguf", folder / "model.gguf")
    (folder / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"mixed has config\.json but no model\.safetensors"):
        detect_format(folder)
