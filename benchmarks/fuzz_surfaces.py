"""Fuzz issue 30's surfaces for longer than the test suite does: damaged intervention artefacts and
hostile questions files (tests/surface_fuzz.py). Prints the examples tried per surface, how many
loaded/read, how many ended in one error line, and every finding (another exception, an error of
several lines or not naming the file, a non-finite tensor loaded, a control character shown) with
the damage that caused it. Exit code 1 when there was a finding.

    python benchmarks/fuzz_surfaces.py [--examples N] [--seed S]
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import harness  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings, strategies as st  # noqa: E402

fuzz = harness.test_module("surface_fuzz")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=1000, help="examples per surface")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="fuzz_surfaces_"))
    valid = fuzz.valid_artefact(work / "valid")
    counts, findings = collections.Counter(), []
    runs = settings(max_examples=a.examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))

    @seed(a.seed)
    @runs
    @given(data=st.data())
    def artefacts(data):
        folder = fuzz.fresh(work / "ex")
        shutil.copytree(valid, folder)
        how = fuzz.damage_artefact(data.draw, st, folder)
        outcome, detail = fuzz.load_outcome(folder)
        counts["artefact", outcome] += 1
        if outcome not in ("loaded", "error"):
            findings.append(f"artefact, {how}: {detail}")

    @seed(a.seed)
    @runs
    @given(data=st.data())
    def questions(data):
        path = work / "questions.txt"
        path.write_bytes(fuzz.questions_bytes(data.draw, st))
        outcome, detail = fuzz.questions_outcome(path)
        counts["questions", outcome] += 1
        if outcome not in ("read", "error"):
            findings.append(f"questions: {detail}")

    t0 = time.perf_counter()
    artefacts()
    questions()
    for surface in ("artefact", "questions"):
        tried = sum(n for (s, _), n in counts.items() if s == surface)
        print(f"{surface}: {tried} examples, " + ", ".join(f"{o} {n}" for (s, o), n in sorted(counts.items())
                                                         if s == surface))
    print(f"{len(findings)} findings in {time.perf_counter() - t0:.0f} s")
    for f in findings[:50]:
        print(f"- {f}")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
