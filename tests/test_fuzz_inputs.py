"""A short property-based fuzzer of the two text inputs a user writes by hand: the problems CSV
(symbolic/problems.py) and the YAML config (pipeline/options.py). Random corruptions of valid files
(bytes flipped, inserted or cut; hostile snippets spliced in) must load correctly or end in one
UserError line; never another exception (issue 19). Derandomized: the same cases on every run.
"""
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurosymbolic_llm.pipeline.configs import FineTuneConfig, TrainEncodersConfig
from neurosymbolic_llm.pipeline.errors import UserError
from neurosymbolic_llm.pipeline.options import parse_config
from neurosymbolic_llm.pipeline.problems_csv import load_problems_csv
from neurosymbolic_llm.symbolic.problems import generate_problems

PROGRAMS = Path(__file__).resolve().parents[1] / "Programs"
FUZZ = settings(derandomize=True, max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# Pieces a hostile or careless file may hold: huge and odd numbers, non-UTF-8 bytes, quotes,
# NUL, CSV and YAML syntax, YAML anchors and aliases, non-finite floats.
SNIPPETS = [b"9" * 5000, b"\xe9", b"\xff\xfe", b"\x00", b'"', b",", b"\n", b"\r", b"-", b"+", b"1e400", b".nan",
            b"nan", b"-.inf", b"&a [x, x]", b"*a", b"{", b"[", b": ", b"- ", b"\t", b"!!python/object:os.system",
            b"x" * 140_000, b"0x1F", b"\xef\xbb\xbf", b"? ", b"%YAML 1.1\n", b"---\n", b"~"]


@st.composite
def corrupted(draw, original: bytes) -> bytes:
    """`original` after 1-3 random edits: flip a byte, insert a snippet or random bytes, cut, truncate."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "snippet", "bytes", "cut", "truncate"]))
        if kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "snippet":
            data[at:at] = draw(st.sampled_from(SNIPPETS))
        elif kind == "bytes":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 20))]
        else:
            del data[at:]
    return bytes(data)


def valid_csv() -> bytes:
    return generate_problems(6, ["gcd", "modulo", "multiplication"], seed=3).to_csv(index=False).encode()


@FUZZ
@given(data=corrupted(valid_csv()))
def test_a_corrupted_problems_csv_loads_or_is_one_user_error(tmp_path, data):
    path = tmp_path / "fuzz.csv"
    path.write_bytes(data)
    try:
        df = load_problems_csv(path, max_digits=4)
    except UserError as exc:
        assert str(path) in str(exc) and len(str(exc)) < 1000
    else:
        assert list(df.columns) == ["problem_type", "x", "y", "question", "solution"] and len(df) > 0


@pytest.mark.parametrize("schema", [TrainEncodersConfig, FineTuneConfig])
def test_a_corrupted_yaml_config_loads_or_is_one_user_error(tmp_path, schema):
    original = (PROGRAMS / "demo" / "demo.yaml").read_bytes()

    @FUZZ
    @given(data=corrupted(original))
    def fuzz(data):
        path = tmp_path / "fuzz.yaml"
        path.write_bytes(data)
        try:
            parse_config(schema, ["--config", str(path)])
        except UserError as exc:
            assert len(str(exc)) < 1000

    fuzz()
