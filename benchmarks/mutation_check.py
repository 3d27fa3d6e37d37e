"""Mutation check: deliberate bugs put into the code one at a time, each expected to make the named
fast tests fail (docs/TESTING.md keeps the table).

    python benchmarks/mutation_check.py [--only N,M] [--keep]

Each mutation replaces one exact piece of one source file in a copy of the checkout (src/, tests/,
Programs/, pyproject.toml) and runs the named tests there with pytest (-x, no xdist); "caught" means
pytest failed. The unmutated copy must pass the same tests first, so a "caught" is the mutation's.
Prints a Markdown table: mutation, tests, caught, seconds. Exit code 1 when one was not caught.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

P = "src/neurosymbolic_llm/"
# (what the bug is, file, exact old text, new text, tests that must fail)
MUTATIONS = [
    ("stage 1 reads one token too early", P + "stages/gather.py", "h[:, -1, :].clone()", "h[:, -2, :].clone()",
     ["tests/test_blind_spots.py::test_stage1_reads_the_last_prompt_token_of_each_layer"]),
    ("an unparseable answer counts as correct", P + "pipeline/evaluation.py",
     '(part["parsed"] == part["expected"]).fillna(False)', '(part["parsed"] == part["expected"]).fillna(True)',
     ["tests/test_blind_spots.py::test_correct_and_accuracy_follow_parsed_equals_expected"]),
    ("a loaded artefact ignores its upper gate bound", P + "pipeline/artefact.py",
     'opts["problem_score_max"] = math.inf if opts["problem_score_max"] is None else float(opts["problem_score_max"])',
     'opts["problem_score_max"] = math.inf',
     ["tests/test_blind_spots.py::test_every_saved_setting_round_trips_and_is_used"]),
    ("the content digest reads only each file's first 4 MiB", P + "llama/identity.py",
     'for block in iter(lambda: f.read(BLOCK), b""):\n                f_hash.update(block)',
     'f_hash.update(f.read(BLOCK))',
     ["tests/test_store_identity.py::test_content_digest_sees_one_element_of_every_tensor_family"]),
    ("artefact tensors are not checked for NaN/inf", P + "pipeline/artefact_checks.py",
     "bad = non_finite_count(t)", "bad = 0",
     ["tests/test_artefact_hostile.py::test_tensors_are_finite_floating_and_of_their_shape",
      "tests/test_artefact_hostile.py::test_nothing_non_finite_is_saved"]),
    ("unknown artefact settings pass", P + "pipeline/artefact_checks.py",
     "if key not in kinds and key not in optional:", "if False:",
     ["tests/test_artefact_hostile.py::test_every_setting_is_checked_by_key_and_type"]),
    ("a missing artefact setting takes a default", P + "pipeline/artefact_checks.py",
     '        if key not in section:\n            raise bad(f"{name}.{key}", "is missing")',
     '        if key not in section:\n            continue',
     ["tests/test_artefact_hostile.py::test_every_setting_is_checked_by_key_and_type"]),
    ("the artefact's settings are written after its tensors, in place", P + "pipeline/artefact.py",
     '        text = json.dumps(data, indent=2, allow_nan=False) + "\\n"',
     '        (folder.mkdir(parents=True, exist_ok=True), (folder / TENSORS_NAME).write_bytes(blob))\n'
     '        text = json.dumps(data, indent=2, allow_nan=False) + "\\n"',
     ["tests/test_artefact_hostile.py::test_a_failed_save_keeps_the_previous_artefact"]),
    ("maps of another tokenizer are accepted", P + "pipeline/maps.py",
     '    check_tokenizer(stored, current, where)\n', '',
     ["tests/test_store_identity.py::test_tokenizer_digest_and_maps_refuse_another_tokenizer"]),
    ("a shard of another store is read", P + "pipeline/hidden_store.py", "    if tag is not None:\n",
     "    if False:\n", ["tests/test_store_identity.py::test_a_shard_of_another_store_is_refused"]),
    ("the store has no lock of its own", P + "pipeline/hidden_store.py",
     "        if not enabled:\n            return contextlib.nullcontext()",
     "        return contextlib.nullcontext()", ["tests/test_store_identity.py::test_one_writer_per_store_and_no_reader_meanwhile"]),
    ("questions split at U+2028", P + "stages/ask.py", 'text.split("\\n")', "text.splitlines()",
     ["tests/test_ask_hostile.py::test_questions_file_bom_separators_stdin_and_encoding"]),
    ("ask answers only after the last batch", P + "stages/ask.py", "    for b0 in range(0, len(questions), batch_size):",
     "    calls = [llama.generate([[1]], 1) for _ in range(len(questions))]\n"
     "    for b0 in range(0, len(questions), batch_size):",
     ["tests/test_ask_hostile.py::test_answers_stream_and_a_bad_question_is_its_own_error"]),
    ("a run's saved maps resolve against the working folder", P + "pipeline/saved_runs.py",
     "bases = [root, root.parent] if programs_dir else [Path.cwd(), root.parent]",
     "bases = [Path.cwd(), root.parent]",
     ["tests/test_artefact_hostile.py::test_a_runs_relative_maps_are_read_from_its_programs_dir"]),
    ("export overwrites the run's own artefact", P + "stages/export.py",
     "if not cfg.out and (out / artefacts.JSON_NAME).exists():", "if False:",
     ["tests/test_artefact_hostile.py::test_export_refuses_a_running_or_unfinished_stage3_and_keeps_its_artefact"]),
    ("a stray WORLD_SIZE starts a process group", P + "pipeline/distributed.py", "    if missing:\n", "    if False:\n",
     ["tests/test_ask_hostile.py::test_stray_world_size_is_an_error"]),
]


def copy_checkout(dst: Path) -> Path:
    for name in ("src", "tests", "Programs"):
        shutil.copytree(harness.ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(harness.ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


def pytest(root: Path, tests: list[str]) -> tuple[bool, float]:
    """(passed, seconds) of the tests in the copy at `root` (its own src/ first on the path)."""
    t0 = time.perf_counter()
    env = dict(harness.ENV, PYTHONPATH=str(root / "src"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:xdist", "-p", "no:cacheprovider",
                        *tests], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    return r.returncode == 0, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="mutation numbers (1-based), comma-separated")
    ap.add_argument("--keep", action="store_true", help="keep the copies")
    a = ap.parse_args(argv)
    chosen = [int(n) for n in a.only.split(",")] if a.only else range(1, len(MUTATIONS) + 1)
    work = Path(tempfile.mkdtemp(prefix="mutation_"))
    rows, missed = [], 0
    for n in chosen:
        what, rel, old, new, tests = MUTATIONS[n - 1]
        root = copy_checkout(work / f"m{n}")
        clean, _ = pytest(root, tests)
        source = (root / rel).read_text()
        if source.count(old) != 1:
            rows.append(f"| {n} | {what} | {', '.join(t.split('::')[-1] for t in tests)} | mutation no longer applies | |")
            missed += 1
            continue
        (root / rel).write_text(source.replace(old, new))
        passed, seconds = pytest(root, tests)
        caught = clean and not passed
        missed += not caught
        verdict = "yes" if caught else ("the tests fail without it" if not clean else "**no**")
        rows.append(f"| {n} | {what} | {', '.join(t.split('::')[-1] for t in tests)} | {verdict} | {seconds:.0f} |")
        print(rows[-1], flush=True)
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("\n| # | deliberate bug | tests expected to fail | caught | s |\n|---|---|---|---|---|")
    print("\n".join(rows))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
