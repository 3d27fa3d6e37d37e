"""Shared fixtures: a tiny random Llama 3 checkpoint in Meta layout, the real tokenizer.

- ``tiny_params``: params.json dict of a tiny Llama 3.1-style model (GQA, scaled RoPE, real vocab).
- ``tiny_ckpt``: a folder (params.json, consolidated.00.pth in float32, tokenizer.model) with
  random weights (``Transformer.init_weights(seed=0)``: logits spread over a few units).
- ``tokenizer``: the Llama 3 tokenizer from the installed llama_models package.
- ``skip_without_cuda``: a marker for tests that need CUDA; tests marked ``gpu`` are skipped too.
- ``tiny_formats``: tiny random Llamas built by transformers in the other checkpoint formats
  (tests/tiny_formats.py): {"tied"|"gqa": {"hf": folder, "model": LlamaForCausalLM, "root": folder,
  "F32"|"F16"|"Q8_0": GGUF file}}.
"""
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
# Scripts run as subprocesses import this checkout's package too, whichever copy is installed.
_SRC = str(Path(__file__).resolve().parents[1] / "src")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, os.environ.get("PYTHONPATH", "")) if p)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

skip_without_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TINY_PARAMS = {
    "dim": 64,
    "n_layers": 4,
    "n_heads": 4,
    "n_kv_heads": 2,
    "vocab_size": 128256,
    "multiple_of": 32,
    "ffn_dim_multiplier": None,
    "norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "use_scaled_rope": True,
}


# The four end-to-end tests that take most of the suite's time (seconds on the idle 2-core
# machine, `make test` with --durations, 2026-11-28). `make test` runs two pytest-xdist workers
# that are handed 2 tests each at first, then 1 at a time (--maxschedchunk 1): ordered as below,
# one worker starts with the 1st and 4th, the other with the 2nd and 3rd, and the short tests
# fill in behind them.
HEAVIEST = {
    "test_demo_pipeline.py::test_reduced_demo_neurosymbolic_beats_plain_model": 320,
    "test_real_pipeline.py::test_reduced_make_real_runs_every_stage_and_method": 225,
    "test_bench_paper_e2e.py::test_tiny_run_end_to_end": 80,
    "test_readme_commands.py::test_readme_stage_commands_run_on_a_tiny_model": 80,
}


def _heavy_first(items):
    heavy = sorted((i for i in items if i.nodeid.split("/")[-1] in HEAVIEST),
                   key=lambda i: -HEAVIEST[i.nodeid.split("/")[-1]])
    if len(heavy) == 4:
        heavy = [heavy[0], heavy[3], heavy[1], heavy[2]]  # pairs of equal sums for two workers
    rest = [i for i in items if i not in heavy]
    items[:] = heavy + rest


def pytest_collection_modifyitems(config, items):
    _heavy_first(items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_params() -> dict:
    return dict(TINY_PARAMS)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, tiny_params):
    from neurosymbolic_llm.llama.checkpoint import save_checkpoint
    from neurosymbolic_llm.llama.model import ModelArgs, Transformer

    out = tmp_path_factory.mktemp("tiny_ckpt")
    model = Transformer(ModelArgs.from_params(tiny_params)).init_weights(seed=0)
    save_checkpoint(model, tiny_params, out)
    return out


@pytest.fixture(scope="session")
def tokenizer():
    from neurosymbolic_llm.llama.tokenizer import Tokenizer, default_tokenizer_path

    return Tokenizer(default_tokenizer_path())


@pytest.fixture(scope="session")
def tiny_formats(tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    pytest.importorskip("tokenizers")
    import tiny_formats as tf

    return tf.build_all(tmp_path_factory.mktemp("formats"))
