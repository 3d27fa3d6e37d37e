"""Problem generation and CSV loading/validation."""
from pathlib import Path

import pytest

from neurosymbolic_llm.pipeline.errors import DataError
from neurosymbolic_llm.pipeline.problems_csv import load_problems_csv
from neurosymbolic_llm.symbolic import problems as P
from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES, solve_one

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CSVS = ["symbolic_math_train_10000.csv", "symbolic_math_val_100.csv"]
HEADER = "problem_type,x,y,question,solution\n"


@pytest.mark.parametrize("name", CSVS)
def test_shared_csvs_load_and_match(name):
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"{path} absent (CI keeps shared/ beside the checkout)")
    df = load_problems_csv(path, max_digits=5)
    assert list(df.columns) == list(P.COLUMNS)
    assert len(df) == sum(1 for _ in open(path)) - 1
    for row in df.itertuples():
        assert row.solution == solve_one(row.problem_type, row.x, row.y)
        assert row.question == P.question_text(row.problem_type, row.x, row.y)


def test_question_templates():
    q = P.question_text
    assert q("addition", 1, 2) == "What is 1 plus 2?"
    assert q("multiplication", 515, 424) == "What is 515 times 424 mod 1000?"
    assert q("multiplication", 5, 4, limit_solution_digits=False) == "What is 5 times 4?"
    assert q("multiplication", 5, 4, complexity=3) == "What is 5 times 4 mod 10000?"
    assert q("division", 9, 2) == "What is 9 // 2?"
    assert q("modulo", 794, 364) == "What is 794 mod 364?"
    assert q("gcd", 8, 6) == "What is the GCD of 8 and 6?"
    assert q("lcm", 984, 435) == "What is the LCM of 984 and 435 mod 1000?"
    assert q("square_mod", 732, 208) == "What is 732^2 mod 208?"
    assert q("bitwise_and", 1, 2) == "What is 1 AND 2?"
    assert q("bitwise_or", 1, 2) == "What is 1 OR 2?"
    assert q("bitwise_xor", 1, 2) == "What is 1 XOR 2?"


def test_generate_problems(tmp_path):
    df = P.generate_problems(3000, PROBLEM_TYPES, complexity=2, seed=3)
    assert list(df.columns) == list(P.COLUMNS) and len(df) == 3000
    assert not df.duplicated(["problem_type", "x", "y"]).any()
    assert (df.x > df.y).all() and df.x.max() <= 999 and df.y.min() >= 1
    assert set(df.problem_type) == set(PROBLEM_TYPES)
    assert df.equals(P.generate_problems(3000, PROBLEM_TYPES, complexity=2, seed=3))
    assert not df.equals(P.generate_problems(3000, PROBLEM_TYPES, complexity=2, seed=4))
    # round trip through a CSV
    path = tmp_path / "gen.csv"
    df.to_csv(path, index=False)
    back = load_problems_csv(path, max_digits=5)
    assert (back.solution.to_numpy() == df.solution.to_numpy()).all()
    loose = P.generate_problems(2000, ["modulo", "gcd"], complexity=1, x_gt_y=False, seed=0)
    assert (loose[loose.problem_type == "modulo"].eval("x >= y")).all()
    assert (loose[loose.problem_type == "gcd"].eval("x < y")).any()
    # small space: exactly all distinct pairs
    tiny = P.generate_problems(36, ["gcd"], complexity=0, seed=0)
    assert len(tiny) == 36 and not tiny.duplicated().any()


def _write(tmp_path, text, name="bad.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = HEADER + "addition,1,2,What is 1 plus 2?,3\ngcd,12,8,What is the GCD of 12 and 8?,4\n"


@pytest.mark.parametrize("text,needles", [
    ("", ["empty file"]),
    (HEADER, ["empty file", "no data rows"]),
    ("problem_type,x,y,question\naddition,1,2,What is 1 plus 2?\n",
     ["line 1", "missing column 'solution'"]),
    (HEADER.strip() + ",extra\naddition,1,2,q,3,0\n", ["line 1", "unexpected column 'extra'"]),
    (GOOD + "gcd,1x,8,What?,4\n", ["line 4", "data row 3", "field 'x'", "'1x' is not an integer"]),
    (GOOD + "gcd,12,8,What?,\n", ["line 4", "field 'solution'", "solution is empty"]),
    (GOOD + "power,2,3,What?,8\n", ["line 4", "field 'problem_type'", "unknown problem type 'power'"]),
    (GOOD + "gcd,123456,8,What?,8\n", ["line 4", "field 'x'", "6 digits, more than max_digits = 5"]),
    (GOOD + "gcd,12,-8,What?,4\n", ["line 4", "field 'y'", "-8 is negative"]),
    (GOOD + "gcd,12,8,What?,5\n", ["line 4", "field 'solution'", "solution 5 disagrees", "is 4"]),
    (GOOD + "gcd,12,8,What?,4,9\n", ["line 4", "expected 5 fields, found 6"]),
    (GOOD + "gcd,12,8,,4\n", ["line 4", "field 'question'", "question is empty"]),
])
def test_bad_csv_messages(tmp_path, text, needles):
    p = _write(tmp_path, text)
    with pytest.raises(DataError) as ei:
        load_problems_csv(p, max_digits=5)
    msg = str(ei.value)
    assert "bad.csv" in msg
    for n in needles:
        assert n in msg, (n, msg)


def test_bad_csv_first_row_and_count(tmp_path):
    text = GOOD + "gcd,12,8,q,5\n" + "addition,1,1,What is 1 plus 1?,2\n" + "power,1,1,q,2\n"
    with pytest.raises(DataError, match=r"line 4 .*solution 5 disagrees.*\(1 more bad rows\)"):
        load_problems_csv(_write(tmp_path, text), max_digits=5)


def test_csv_type_filter_and_missing_file(tmp_path):
    p = _write(tmp_path, GOOD, "ok.csv")
    assert len(load_problems_csv(p, max_digits=5)) == 2
    with pytest.raises(DataError, match=r"ok.csv: line 2 .*field 'problem_type'.*not among the selected"):
        load_problems_csv(p, max_digits=5, problem_types=["gcd"])
    with pytest.raises(DataError, match="no such file"):
        load_problems_csv(tmp_path / "nope.csv", max_digits=5)


def test_load_10000_rows_round_trip(tmp_path):
    # The loader's speed is a benchmark's business (benchmarks/), not a timed assertion here.
    df = P.generate_problems(10_000, complexity=2, seed=1)
    path = tmp_path / "big.csv"
    df.to_csv(path, index=False)
    back = load_problems_csv(path, max_digits=5)
    assert len(back) == 10_000
    for col in ("problem_type", "x", "y", "solution"):
        assert back[col].tolist() == df[col].tolist()


@pytest.mark.parametrize("row,needle", [
    ("gcd,12,8,What is the GCD of 12 and 9?,4", "does not contain y = 8"),
    ("gcd,12,8,What is the GCD of 112 and 8?,4", "does not contain x = 12"),
    ("addition,5,3,What is 3 plus 3?,8", "does not contain x = 5"),
])
def test_question_must_name_its_operands(tmp_path, row, needle):
    """A question whose text does not ask about the row's x and y is an error naming the row."""
    with pytest.raises(DataError, match=r"bad.csv: line 4 \(data row 3; .*field 'question'.*" + needle):
        load_problems_csv(_write(tmp_path, GOOD + row + "\n"), max_digits=5)
    ok = GOOD + "gcd,12,8,\"gcd(012, 8)?\",4\n"  # leading zeros and other phrasings are fine
    assert len(load_problems_csv(_write(tmp_path, ok, "ok.csv"), max_digits=5)) == 3


def test_number_words_and_question_variants():
    from neurosymbolic_llm.symbolic.prompts import parse_number_words

    assert P.number_words(0) == "zero" and P.number_words(15) == "fifteen"
    assert P.number_words(515) == "five hundred fifteen" and P.number_words(40) == "forty"
    assert P.number_words(1234) == "one thousand two hundred thirty-four"
    assert P.number_words(2_000_017) == "two million seventeen"
    for n in list(range(0, 2100)) + [10 ** 6, 987_654_321_012]:  # the parser is the exact inverse
        assert parse_number_words(P.number_words(n)) == n
    assert parse_number_words("Nine hundred and ninety-nine.") == 999
    assert parse_number_words("twelve apples") is None and parse_number_words("") is None
    assert parse_number_words("twenty twenty") is None and parse_number_words("hundred") is None
    sizes = {t: len(v) for t, v in P.QUESTION_VARIANTS.items()}
    assert sizes == {"addition": 10, "multiplication": 13, "division": 7, "modulo": 7, "gcd": 6, "lcm": 5,
                     "square_mod": 5, "bitwise_and": 6, "bitwise_or": 6, "bitwise_xor": 6}
    for t, pool in P.QUESTION_VARIANTS.items():
        texts = [P.question_text(t, 515, 424, variant=k) for k in range(len(pool))]
        assert len(set(texts)) == len(pool)
        assert all("515" in q and "424" in q for q in texts)
        if t in ("multiplication", "lcm"):  # every phrasing states the reduction
            assert all(q.count("mod 1000") == 1 for q in texts)
    assert P.question_text("lcm", 12, 8, words=True) == "What is the LCM of twelve and eight mod one thousand?"
