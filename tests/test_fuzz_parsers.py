"""A short, reproducible run of the checkpoint-parser fuzzer (tests/parser_fuzz.py): damaged copies
of the tiny Meta, Hugging Face and GGUF checkpoints either load (and run) or end in one LlamaError
line; never another exception, a hang past the timeout, or an allocation beyond the worker's
memory limit. benchmarks/fuzz_parsers.py runs the same fuzzer for longer and counts outcomes."""
import pytest

pytest.importorskip("hypothesis")
pytest.importorskip("gguf")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import parser_fuzz  # noqa: E402

EXAMPLES = 60


@pytest.fixture(scope="module")
def fuzz(tiny_ckpt, tiny_formats, tmp_path_factory):
    worker = parser_fuzz.Worker()
    yield parser_fuzz.sources(tiny_ckpt, tiny_formats), worker, tmp_path_factory.mktemp("fuzz")
    worker.close()


@pytest.mark.slow
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_damaged_checkpoints_load_or_fail_in_one_line(fuzz, data):
    corpus, worker, root = fuzz
    how, path = parser_fuzz.draw_example(data.draw, corpus, parser_fuzz.fresh_dir(root / "ex"))
    outcome = worker.run(path)
    assert outcome.kind in parser_fuzz.OK, f"{how}: {outcome.kind}: {outcome.detail}"
