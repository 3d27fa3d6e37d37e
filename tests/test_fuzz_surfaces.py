"""A short, reproducible run of the fuzzers of issue 30's surfaces (tests/surface_fuzz.py): a damaged
intervention artefact loads (finite float tensors) or fails in one error line naming its folder;
a hostile questions file is read (every question shown without control characters) or fails in one
line naming the file. benchmarks/fuzz_surfaces.py runs them for longer."""
import pytest

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import surface_fuzz  # noqa: E402

EXAMPLES = 40
FAST = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    return surface_fuzz.valid_artefact(tmp_path_factory.mktemp("fuzz") / "valid")


@FAST
@given(data=st.data())
def test_damaged_artefacts_load_or_fail_in_one_line(valid, tmp_path_factory, data):
    import shutil

    folder = surface_fuzz.fresh(tmp_path_factory.getbasetemp() / "fuzz_artefact")
    shutil.copytree(valid, folder)
    how = surface_fuzz.damage_artefact(data.draw, st, folder)
    outcome, detail = surface_fuzz.load_outcome(folder)
    assert outcome in ("loaded", "error"), f"{how}: {detail}"


@FAST
@given(data=st.data())
def test_hostile_questions_files_are_read_or_refused_in_one_line(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzz_questions.txt"
    path.write_bytes(surface_fuzz.questions_bytes(data.draw, st))
    outcome, detail = surface_fuzz.questions_outcome(path)
    assert outcome in ("read", "error"), detail
