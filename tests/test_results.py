"""Result tables, headline ratios (docs/METHOD.md, "Metrics"; pipeline/headline.py) and compare_runs."""
import math

import pandas as pd
import pytest

from neurosymbolic_llm.pipeline.evaluation import RESPONSE_COLUMNS, summarize
from neurosymbolic_llm.pipeline.results import (RESULT_COLUMNS, headline_ratios, headline_summary, markdown, wilson_interval,
                                                write_results)

# The paper's table (docs/METHOD.md): accuracy (%) of NS, standard, CoT and the "LoRA" row on the seen types.
PAPER = {
    "modulo": (98.7, 53.5, 69.7, 51.5), "multiplication": (95.6, 1.1, 25.3, 4.5), "gcd": (94.2, 62.6, 93.2, 74.5),
    "lcm": (87.3, 2.5, 10.8, 2.0), "square_mod": (58.9, 7.0, 32.7, 5.5), "bitwise_and": (91.2, 2.7, 5.5, 9.0),
    "bitwise_xor": (99.4, 6.7, 1.1, 8.0), "bitwise_or": (97.6, 4.4, 7.8, 10.5),
}
UNSEEN = {"addition": (98.2, 100.0, 78.8, 46.5), "division": (97.4, 95.2, 94.3, 72.0)}


def paper_results() -> pd.DataFrame:
    rows = []
    for seen, table in ((True, PAPER), (False, UNSEEN)):
        for t, accs in table.items():
            for m, a in zip(("neurosymbolic", "baseline", "cot", "adapter"), accs):
                rows.append({"method": m, "problem_type": t, "seen": seen, "n": 200, "accuracy": a / 100,
                             "cross_entropy": 0.2 if m == "neurosymbolic" else 1.0})
    return pd.DataFrame(rows)[RESULT_COLUMNS]


def test_headline_ratio_is_the_ratio_of_the_means():
    """times_more_solved_vs_X = mean accuracy over the seen types / X's, by hand from the paper's table."""
    r = headline_ratios(paper_results())
    ns, cot, plain = (sum(v[i] for v in PAPER.values()) for i in (0, 2, 1))  # sums of the 8 seen types (%)
    assert (ns, cot) == pytest.approx((722.9, 246.1))
    assert r["times_more_solved_vs_cot"] == pytest.approx(722.9 / 246.1)  # 2.94
    assert r["times_more_solved_vs_baseline"] == pytest.approx(ns / plain)
    assert r["lower_ce_pct_vs_cot"] == pytest.approx(100 * (1 - 0.2 / 1.0))


def test_the_readmes_smollm2_table_gives_45_6_over_10_0():
    """The README's SmolLM2 row: 45.6% against the plain model's 10.0% is 4.56x (the mean of per-type
    ratios, 6.44x, is the per_type_ratio column)."""
    acc = {"multiplication": (5, 0), "modulo": (80, 0), "gcd": (100, 65), "lcm": (0, 0), "square_mod": (50, 0),
           "bitwise_and": (65, 0), "bitwise_xor": (35, 0), "bitwise_or": (30, 15)}
    df = pd.DataFrame([{"method": m, "problem_type": t, "seen": True, "n": 20, "accuracy": a / 100, "cross_entropy": 1.0}
                       for t, pair in acc.items() for m, a in zip(("neurosymbolic", "baseline"), pair)])
    r = headline_ratios(df)
    assert r["times_more_solved_vs_baseline"] == pytest.approx((365 / 8) / (80 / 8))  # 45.625 / 10.0
    # per type with one solved question of 20 (5%) for a zero: 5/5, 80/5, 100/65, 1 (both 0), 50/5, 65/5, 35/5, 30/15
    assert r["per_type_ratio_vs_baseline"] == pytest.approx((1 + 16 + 100 / 65 + 1 + 10 + 13 + 7 + 2) / 8)
    assert "- times_more_solved_vs_baseline: 4.56 (against plain model: 45.6% / 10.0%)" in markdown(df)


def test_per_type_ratios_reproduce_the_papers_headline():
    """The paper averages per-type ratios (then over CoT and its LoRA row): 15.4x."""
    r = headline_ratios(paper_results())
    assert r["per_type_ratio_vs_cot"] == pytest.approx(16.94, abs=0.01)
    assert r["per_type_ratio_vs_adapter"] == pytest.approx(13.83, abs=0.01)
    assert r["paper_times_more_solved"] == pytest.approx(15.39, abs=0.01)
    assert r["paper_lower_ce_pct"] == pytest.approx(80.0)
    assert r["per_type_ratio_vs_baseline"] == pytest.approx(25.5, abs=0.1)
    assert r["lora_row"] == "adapter"


def test_types_both_methods_fail_count_one_question_each():
    """Identical methods give exactly 1.0, also where both solve nothing (it was 0 for such a type)."""
    df = paper_results()
    df.loc[df["problem_type"].isin(["lcm", "square_mod"]), "accuracy"] = 0.0  # nobody solves these
    same = df[df["method"] == "neurosymbolic"].assign(method="cot")
    r = headline_ratios(pd.concat([df[df["method"] == "neurosymbolic"], same], ignore_index=True))
    assert r["times_more_solved_vs_cot"] == 1.0 and r["per_type_ratio_vs_cot"] == 1.0
    # NS solved nothing, CoT one of 200: 0; both nothing: 1 (not 0); CoT nothing, NS all: 200
    t = pd.DataFrame([{"method": m, "problem_type": t, "seen": True, "n": 200, "accuracy": a, "cross_entropy": 1.0}
                      for t, (ns, cot) in {"gcd": (0.0, 0.005), "lcm": (0.0, 0.0), "modulo": (1.0, 0.0)}.items()
                      for m, a in (("neurosymbolic", ns), ("cot", cot))])
    r = headline_ratios(t)
    assert r["per_type_ratio_vs_cot"] == pytest.approx((0 + 1 + 200) / 3)
    assert r["times_more_solved_vs_cot"] == pytest.approx((1.0 / 3) / (0.005 / 3))  # the means: 200


def test_zero_accuracy_and_zero_ce_are_guarded():
    df = paper_results()
    df.loc[(df["method"] == "cot") & (df["problem_type"] == "gcd"), ["accuracy", "cross_entropy"]] = 0.0
    r = headline_ratios(df)
    # gcd vs CoT counts as if CoT solved 1 of 200; its CE term is left out of the paper's per-type mean
    assert r["per_type_ratio_vs_cot"] > 16.94 and pd.notna(r["lower_ce_pct_vs_cot"])
    assert pd.notna(r["paper_lower_ce_pct"])
    df.loc[df["method"] == "cot", "accuracy"] = 0.0  # CoT solved none of its 1,600 seen-type questions
    r = headline_ratios(df)
    assert r["times_more_solved_vs_cot"] == pytest.approx((722.9 / 800) / (1 / 1600))


def test_a_method_without_cross_entropy_gets_a_dash_and_a_footnote_never_nan():
    df = paper_results()
    rap = df[df["method"] == "neurosymbolic"].assign(method="read_and_print", cross_entropy=float("nan"))
    df = pd.concat([df, rap], ignore_index=True)
    r = headline_ratios(df)
    assert "lower_ce_pct_vs_read_and_print" not in r and "times_more_solved_vs_read_and_print" in r
    assert not any(isinstance(v, float) and math.isnan(v) for v in headline_summary(df).values())
    md = markdown(df)
    assert "nan" not in md.lower()
    assert "- (-) read and print prints the solver's answer" in md
    for key in ("times_more_solved_vs_X", "per_type_ratio_vs_X", "lower_ce_pct_vs_X", "paper_times_more_solved"):
        assert f"- {key}: " in md  # every figure printed is defined under it


def test_summary_and_files(tmp_path):
    resp = pd.DataFrame({c: [None] * 6 for c in RESPONSE_COLUMNS})
    resp["method"] = ["neurosymbolic"] * 3 + ["baseline"] * 3
    resp["problem_type"] = ["gcd", "gcd", "addition"] * 2
    resp["seen"] = [True, True, False] * 2
    resp["correct"] = [True, False, True, False, False, True]
    resp["cross_entropy"] = [0.5, 1.5, 0.1, 2.0, 3.0, 0.2]
    res = summarize(resp)
    assert list(res.columns) == RESULT_COLUMNS and len(res) == 4
    ns_gcd = res[(res["method"] == "neurosymbolic") & (res["problem_type"] == "gcd")].iloc[0]
    assert ns_gcd["n"] == 2 and ns_gcd["accuracy"] == 0.5 and ns_gcd["cross_entropy"] == 1.0
    paths = write_results(tmp_path, res)
    assert list(pd.read_csv(paths["csv"]).columns) == RESULT_COLUMNS
    md = paths["md"].read_text()
    assert "| gcd | 50.0 | 0.0 |" in md and "addition (unseen)" in md and "mean, 1 seen types" in md
    lo, hi = wilson_interval(1, 2)
    assert f"| *95% interval (Wilson), seen-type questions* | {100 * lo:.1f}-{100 * hi:.1f} | 0.0-" in md
    assert paths["png"].stat().st_size > 0
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporaries


def test_markdown_uses_the_method_tables_names_and_the_fixed_order():
    """Column names are method_table's labels (the paper's names only in a footnote); rows are the
    seen types, then the unseen ones, each in the order of solver.PROBLEM_TYPES, whatever order
    results.csv has; columns in the table's order."""
    from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES

    df = paper_results().sample(frac=1.0, random_state=3)  # rows (types, methods) in a random order
    md = markdown(df)
    assert "| problem type | neurosymbolic | plain model | chain of thought | adapter (paper's LoRA) |" in md
    assert "NS LLM |" not in md and "standard LLM |" not in md
    assert "Paper's names: neurosymbolic = NS LLM, plain model = standard LLM, chain of thought = CoT, " \
           "adapter (paper's LoRA) = LoRA." in md
    table = md.split("## Exact-match accuracy (%)")[1].split("Questions per type")[0]
    rows = [line.split(" | ")[0][2:] for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    seen = [t for t in PROBLEM_TYPES if t in PAPER]
    assert rows == seen + ["*mean, 8 seen types*", "*95% interval (Wilson), seen-type questions*"] + \
        [f"{t} (unseen)" for t in PROBLEM_TYPES if t in UNSEEN]  # the seen means right under the seen types
    lora = df[df["method"] == "adapter"].assign(method="lora")
    assert "Not in the paper: LoRA (peft)." in markdown(pd.concat([df, lora]))

PRINTS = {"test_rows": "a1b2", "n_test_rows": 2000, "model": "m0", "codebook": "c0",
          "test_questions": {"modify_question_format": False, "test_with_non_numerical_rep": False},
          "seen_types": sorted(PAPER), "seen_from": "maps"}


def test_compare_runs(tmp_path):
    from neurosymbolic_llm.pipeline.results import write_fingerprints
    from neurosymbolic_llm.stages.compare_runs import compare_runs

    df = paper_results()
    a, b = tmp_path / "results" / "R1", tmp_path / "results" / "R2"
    write_results(a, df[df["method"].isin(["neurosymbolic", "baseline"])])
    write_results(b, df[df["method"].isin(["cot", "adapter", "baseline"])])
    write_fingerprints(a, PRINTS)
    write_fingerprints(b, {**PRINTS, "codebook": None})  # CoT/adapter-fresh runs use no codebook
    written, notes, warnings = compare_runs(["R1", str(b / "results.csv")], str(tmp_path / "cmp"), str(tmp_path))
    assert warnings == []
    merged = pd.read_csv(tmp_path / "cmp" / "results.csv")
    assert len(merged) == 4 * 10 and written["csv"] == tmp_path / "cmp" / "results.csv"
    out = written["md"].read_text()
    assert "| modulo | 98.7 | 53.5 | 69.7 | 51.5 |" in out and "- paper_times_more_solved: 15.39" in out
    assert notes == ["R2: kept the earlier run's plain model"]
    assert "- per_type_ratio_vs_adapter: 13.83 (against adapter (paper's LoRA))" in out
    assert markdown(merged).count("\n| ") > 20


def test_runaway_digit_strings_parse_as_missing_not_a_crash():
    from neurosymbolic_llm.pipeline.evaluation import parsed_column
    from neurosymbolic_llm.symbolic.prompts import parse_answer

    col = parsed_column([parse_answer("42"), parse_answer("9" * 40), parse_answer("no"), parse_answer("-7")])
    assert col.tolist() == [42, pd.NA, pd.NA, -7]


def test_compare_runs_refuses_runs_made_on_other_rows(tmp_path):
    from neurosymbolic_llm.pipeline.errors import DataError
    from neurosymbolic_llm.pipeline.results import write_fingerprints
    from neurosymbolic_llm.stages.compare_runs import compare_runs

    df = paper_results()
    a, b, c = (tmp_path / "results" / r for r in ("A", "B", "C"))
    write_results(a, df[df["method"] == "neurosymbolic"])
    write_results(b, df[df["method"] == "cot"])
    write_results(c, df[df["method"] == "adapter"])
    write_fingerprints(a, PRINTS)
    write_fingerprints(b, {**PRINTS, "test_rows": "ffff", "n_test_rows": 150, "codebook": None})
    with pytest.raises(DataError, match=r"different test rows \(A: a1b2 \(2000 rows\), B: ffff \(150 rows\)\)"):
        compare_runs(["A", "B"], str(tmp_path / "cmp"), str(tmp_path))
    assert not (tmp_path / "cmp").exists()
    _, _, warnings = compare_runs(["A", "B"], str(tmp_path / "cmp"), str(tmp_path), allow_mismatch=True)
    assert warnings == ["merged despite different test rows (A: a1b2 (2000 rows), B: ffff (150 rows))"]
    assert (tmp_path / "cmp" / "results.csv").is_file() and not (tmp_path / "cmp" / "fingerprints.json").exists()
    write_fingerprints(c, {**PRINTS, "model": "m1", "codebook": "c1"})
    with pytest.raises(DataError, match="different model .*different VSA codebook"):
        compare_runs(["A", "C"], str(tmp_path / "cmp2"), str(tmp_path))
    (c / "fingerprints.json").unlink()
    with pytest.raises(DataError, match="C: no fingerprints.json"):
        compare_runs(["A", "C"], str(tmp_path / "cmp2"), str(tmp_path))


@pytest.mark.parametrize("solved,asked", [(8, 20), (0, 160), (160, 160), (37, 160)])
def test_wilson_interval_bounds_solve_the_score_equation(solved, asked):
    """Wilson's interval: the proportions p0 at which the observed share is z standard errors
    sqrt(p0 (1 - p0) / n) away; found here by bisection, independently of the closed form."""
    z, p = 1.96, solved / asked

    def root(a, b):  # the sign change of |p - p0| - z se(p0) between a and b
        f = lambda q: abs(p - q) - z * math.sqrt(q * (1 - q) / asked)
        for _ in range(100):
            m = (a + b) / 2
            a, b = (m, b) if (f(a) > 0) == (f(m) > 0) else (a, m)
        return (a + b) / 2

    lo, hi = wilson_interval(solved, asked)
    assert lo == pytest.approx(root(0.0, p) if solved else 0.0, abs=1e-9)
    assert hi == pytest.approx(root(p, 1.0) if solved < asked else 1.0, abs=1e-9)
    assert (lo == 0.0) == (solved == 0) and (hi == 1.0) == (solved == asked)  # "0.0-4.6", never "-0.0-4.6"
    if (solved, asked) == (8, 20):  # the textbook example
        assert (round(lo, 4), round(hi, 4)) == (0.2188, 0.6134)


def test_compare_runs_gives_true_operand_runs_a_diagnostic_column(tmp_path):
    """A run of the neurosymbolic method with --simulate_perfect_encoder (its config_fine_tune.yaml) is a
    column of its own: "true operands" when it only evaluated, "write side alone" when it trained so."""
    from neurosymbolic_llm.pipeline.results import write_fingerprints
    from neurosymbolic_llm.stages.compare_runs import compare_runs

    df = paper_results()
    ns = df[df["method"] == "neurosymbolic"]
    for run, extra in (("R", None), ("P", "num_epochs: 0\n"), ("W", "num_epochs: 3\n"), ("O", None)):
        write_results(tmp_path / "results" / run, df if run == "R" else ns.assign(accuracy=0.5 if run == "P" else 0.7))
        write_fingerprints(tmp_path / "results" / run, PRINTS)
        if extra:
            (tmp_path / "results" / run / "config_fine_tune.yaml").write_text(f"simulate_perfect_encoder: true\n{extra}")
    written, notes, _ = compare_runs(["R", "P", "W", "O"], str(tmp_path / "cmp"), str(tmp_path))
    merged = pd.read_csv(written["csv"])
    assert list(dict.fromkeys(merged["method"])) == ["neurosymbolic", "baseline", "cot", "adapter", "true_operands",
                                                     "write_side_alone"]
    assert (merged.loc[merged["method"] == "true_operands", "accuracy"] == 0.5).all()
    assert (merged.loc[merged["method"] == "write_side_alone", "accuracy"] == 0.7).all()
    assert "O: kept the earlier run's neurosymbolic" in notes  # an ordinary second run is not renamed
    md = written["md"].read_text()
    assert "| true operands | write side alone |" in md and "Not in the paper: true operands, write side alone." in md


def test_fingerprints_record_the_environment_and_compare_runs_warns_when_it_differs(tmp_path):
    """Trained methods differ by rounding between torch builds and CPU kernels (Programs/real/README.md,
    "Run-to-run variation"): the runs are merged, with one warning naming what differs."""
    import importlib.metadata
    import json

    from neurosymbolic_llm.pipeline.results import write_fingerprints
    from neurosymbolic_llm.stages.compare_runs import compare_runs

    df = paper_results()
    for run, cap in (("E1", "AVX512"), ("E2", "AVX2")):
        write_results(tmp_path / "results" / run, df[df["method"] == ("neurosymbolic" if run == "E1" else "cot")])
        write_fingerprints(tmp_path / "results" / run, PRINTS)
        prints = json.loads((tmp_path / "results" / run / "fingerprints.json").read_text())
        assert prints["environment"]["torch"] == importlib.metadata.version("torch")
        prints["environment"]["cpu_capability"] = cap
        (tmp_path / "results" / run / "fingerprints.json").write_text(json.dumps(prints))
    _, _, warnings = compare_runs(["E1", "E2"], str(tmp_path / "cmp"), str(tmp_path))
    assert len(warnings) == 1 and "E1: AVX512" in warnings[0] and "E2: AVX2" in warnings[0]
    assert "cpu_capability" in warnings[0] and "rounding" in warnings[0]


def test_the_per_type_ratio_table_lists_the_seen_types_in_the_tables_order():
    df = paper_results().sample(frac=1.0, random_state=5)
    md = markdown(df)
    part = md.split("## Times more solved, per seen type")[1].split("##")[0]
    rows = [line.split(" | ")[0][2:] for line in part.splitlines() if line.startswith("| ") and "---" not in line][1:]
    from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES
    assert rows == [t for t in PROBLEM_TYPES if t in PAPER]


def test_percentages_round_halves_up_whatever_the_order_of_the_sum():
    """46.25% (37 of 80) prints 46.3 in the table and in the ratio line alike."""
    from neurosymbolic_llm.pipeline.headline import percent

    assert percent(0.4625) == "46.3" and percent(0.45625) == "45.6" and percent(0.0) == "0.0" and percent(1) == "100.0"
    acc = {"gcd": (0.95, 0.5), "lcm": (0.35, 0.1), "modulo": (0.2, 0.0), "square_mod": (0.35, 0.2)}  # NS mean 0.4625
    df = pd.DataFrame([{"method": m, "problem_type": t, "seen": True, "n": 20, "accuracy": a, "cross_entropy": 1.0}
                       for t, pair in acc.items() for m, a in zip(("neurosymbolic", "baseline"), pair)])
    md = markdown(df)
    assert "| *mean, 4 seen types* | *46.3* | *20.0* |" in md and "(against plain model: 46.3% / 20.0%)" in md


@pytest.mark.parametrize("asked", [7, 20, 97, 100, 113])
def test_wilson_interval_ends_exactly_at_0_and_1(asked):
    # 97 of 97 solved gave 0.9999999999999999, an upper bound below the share itself (a negative
    # error bar, which matplotlib refuses: make demo failed on it)
    assert wilson_interval(asked, asked)[1] == 1.0 and wilson_interval(0, asked)[0] == 0.0
    lo, hi = wilson_interval(asked // 2, asked)
    assert 0.0 < lo < (asked // 2) / asked < hi < 1.0
