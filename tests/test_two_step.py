"""The two-step questions (symbolic/two_step.py, stage 3's --two_step_questions): their answers are the
first step's answer changed by the follow-up, every seen type gets N of them, a stage-3 run writes
two_step.csv and two_step.md for the plain model, read and print and the neurosymbolic model, and a
negative N or a run with none of those methods is refused before anything loads."""
import re

import numpy as np
import pandas as pd
import pytest

from test_fine_tuning import stage3, write_csvs, write_maps
from test_stage3_options import _argv
from neurosymbolic_llm.pipeline.configs import FineTuneConfig
from neurosymbolic_llm.pipeline.errors import ConfigError
from neurosymbolic_llm.pipeline.options import parse_config
from neurosymbolic_llm.symbolic.problems import generate_problems
from neurosymbolic_llm.symbolic.prompts import few_shot_dialog
from neurosymbolic_llm.symbolic.solver import solve_one
from neurosymbolic_llm.symbolic.two_step import FOLLOW_UPS, two_step_rows

# The follow-ups as plain integer arithmetic, written here independently of FOLLOW_UPS.
ARITHMETIC = {"add_one": lambda v: v + 1, "double": lambda v: v * 2, "last_digit": lambda v: int(str(v)[-1])}


def test_the_answers_are_integer_arithmetic_on_the_solvers_answer():
    types = ["addition", "multiplication", "gcd", "modulo"]
    rows = pd.concat([generate_problems(7, [t], complexity=2, seed=i) for i, t in enumerate(types)], ignore_index=True)
    rows = rows.sample(frac=1, random_state=0).reset_index(drop=True)  # types interleaved
    out = two_step_rows(rows, ["gcd", "addition", "multiplication"], 5)
    assert out["problem_type"].tolist() == ["gcd"] * 5 + ["addition"] * 5 + ["multiplication"] * 5
    for t in ("gcd", "addition", "multiplication"):  # the first five rows of each type, in order
        first = rows[rows.problem_type == t].head(5)
        assert out[out.problem_type == t][["x", "y"]].values.tolist() == first[["x", "y"]].values.tolist()
        assert [q.startswith(f + " ") for q, f in zip(out[out.problem_type == t].question, first.question)] == [True] * 5
    assert out.follow_up.tolist() == [list(FOLLOW_UPS)[k % 3] for k in range(15)]
    assert set(out.follow_up) == set(ARITHMETIC)
    for r in out.itertuples():
        v = solve_one(r.problem_type, r.x, r.y, complexity=2, limit_solution_digits=True)
        assert r.first_step == v and r.solution == ARITHMETIC[r.follow_up](v), r
        assert r.question.endswith(FOLLOW_UPS[r.follow_up].text)
    assert len(two_step_rows(rows, ["gcd"], 50)) == 7  # no more than the test rows of the type


def test_the_few_shot_examples_are_two_step_questions_of_the_same_kind():
    for kind, step in ARITHMETIC.items():
        one = few_shot_dialog("addition", "q", np.random.default_rng(3))
        two = few_shot_dialog("addition", "q", np.random.default_rng(3), follow_up=kind)
        for a, b in zip(one[1:5:2], two[1:5:2]):  # the same draws, the follow-up appended
            assert b["content"] == a["content"] + " " + FOLLOW_UPS[kind].text
        assert [int(b["content"]) for b in two[2:5:2]] == [step(int(a["content"])) for a in one[2:5:2]]


def _md_cells(md: str, row: str) -> list[str]:
    line = next(l for l in md.splitlines() if l.startswith(f"| {row} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_a_stage3_run_writes_the_two_step_tables(tiny_ckpt, tmp_path, capsys):
    enc, dec, _ = write_maps(tmp_path, tiny_ckpt, layers=(1, 2))
    csv = write_csvs(tmp_path)  # seen: gcd and modulo (the training CSV's types), 2 test rows each
    assert stage3(_argv(tmp_path, tiny_ckpt, enc, dec, csv, "--run_name", "T", "--num_epochs", "0",
                        "--test_baseline", "1", "--read_and_print", "1", "--two_step_questions", "2")) == 0
    out = tmp_path / "results" / "T"
    df = pd.read_csv(out / "two_step.csv")
    assert list(df.columns) == ["method", "problem_type", "follow_up", "question", "first_step", "expected",
                                "generated", "parsed", "correct", "gate_open"]
    assert df.groupby("method").size().to_dict() == {"baseline": 4, "read_and_print": 4, "neurosymbolic": 4}
    assert set(df.problem_type) == {"gcd", "modulo"} and df.question.str.contains("result").all()
    assert df[df.method == "baseline"].gate_open.isna().all() and df[df.method != "baseline"].gate_open.notna().all()
    # correct recomputed from the columns, and the md's accuracy from the csv's correct column
    parsed = df.parsed.astype("Int64")
    assert df.correct.tolist() == (parsed == df.expected).fillna(False).tolist()
    md = (out / "two_step.md").read_text()
    header = _md_cells(md, "follow-up")
    names = {"plain model": "baseline", "read and print": "read_and_print", "neurosymbolic": "neurosymbolic"}
    assert sorted(header) == sorted(names)
    keys = [names[h] for h in header]
    cells = dict(zip(keys, _md_cells(md, "all")))
    for m in keys:
        mine = df[df.method == m]
        assert cells[m].startswith(f"{100 * mine.correct.sum() / len(mine):.1f} (") and cells[m].endswith("n=4)")
        per_kind = dict(zip(keys, _md_cells(md, "double")))[m]
        assert per_kind.startswith(f"{100 * mine[mine.follow_up == 'double'].correct.mean():.1f} (")
    # read and print prints the first step's answer where its gate is open (here: always)
    printed = df[df.method == "read_and_print"]
    assert re.search(r"Answered the first step's value", md) and printed.gate_open.astype(bool).all()
    assert "two-step questions: 4" in capsys.readouterr().out


def test_the_table_is_the_mean_of_the_correct_column_with_its_interval():
    from neurosymbolic_llm.pipeline.two_step_report import markdown

    kinds = ["add_one", "double", "last_digit"] * 3
    correct = [True, False, True, True, True, False, False, False, True]  # 5 of 9; add_one 2 of 3
    df = pd.DataFrame({"method": "neurosymbolic", "problem_type": "gcd", "follow_up": kinds, "question": "q",
                       "first_step": 7, "expected": 8, "generated": "", "parsed": [7, 3, 7, 8, 8, 1, 2, 7, 8],
                       "correct": correct, "gate_open": True})
    md = markdown(df)
    lo, hi = re.fullmatch(r"55\.6 \((\d+\.\d)-(\d+\.\d), n=9\)", _md_cells(md, "all")[0]).groups()
    assert float(lo) < 55.6 < float(hi) < 100
    assert _md_cells(md, "add_one")[0].startswith("66.7 (") and _md_cells(md, "add_one")[0].endswith("n=3)")
    firsts = [l for l in md.splitlines() if l.startswith("| all |")]
    assert firsts[1] == "| all | 33.3 |"  # parsed 7, the first step's value, three times


def test_the_option_is_checked_before_anything_loads():
    with pytest.raises(ConfigError, match="two_step_questions"):
        parse_config(FineTuneConfig, ["--two_step_questions", "-1"])
    with pytest.raises(ConfigError, match="--two_step_questions 3 asks baseline, read_and_print, neurosymbolic"):
        parse_config(FineTuneConfig, ["--two_step_questions", "3", "--cot", "1"])
    assert parse_config(FineTuneConfig, ["--two_step_questions", "3", "--cot", "1", "--test_baseline", "1"])
    assert parse_config(FineTuneConfig, []).two_step_questions == 0
