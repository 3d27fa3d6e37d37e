"""The figures as saved (results.png, gate_scores.png, encoding_accuracy.png): the figure object handed
to matplotlib's savefig is inspected, whatever function drew it. One set of method names, a fixed
order, zero bars that can be seen, legends that show the line styles and cover no data, and one
palette for seen / unseen / non-math."""
import matplotlib
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.legend import Legend

from neurosymbolic_llm.pipeline import figures
from neurosymbolic_llm.pipeline.method_table import METHODS
from neurosymbolic_llm.pipeline.gate import Gate
from neurosymbolic_llm.pipeline.results import RESULT_COLUMNS, wilson_interval, write_gate_scores, write_results


@pytest.fixture
def saved(monkeypatch):
    """The figures saved while the test runs, in order."""
    figs, original = [], Figure.savefig

    def savefig(self, *args, **kwargs):
        figs.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figs


def legends(ax) -> list[Legend]:
    return [c for c in ax.get_children() if isinstance(c, Legend)]


def assert_legends_outside(fig, ax):
    fig.canvas.draw()
    box = ax.get_window_extent()
    assert legends(ax), "no legend"
    for leg in legends(ax):
        assert not leg.get_window_extent().overlaps(box), f"legend {[t.get_text() for t in leg.texts]} covers the axes"


def results_table() -> pd.DataFrame:
    """Methods and types in a scrambled order; chain of thought solves no gcd question."""
    rows = []
    for t, seen, n in (("division", False, 10), ("lcm", True, 20), ("addition", False, 10), ("gcd", True, 20)):
        for m, acc in (("lora", 0.3), ("cot", 0.0 if t == "gcd" else 0.4), ("neurosymbolic", 0.9), ("baseline", 0.2)):
            rows.append({"method": m, "problem_type": t, "seen": seen, "n": n, "accuracy": acc, "cross_entropy": 1.0})
    return pd.DataFrame(rows)[RESULT_COLUMNS]


def bar_values(container) -> list[float]:
    return [p.get_height() for p in container.patches]


def error_segments(container) -> list[tuple[float, float]]:
    """(low, high) of every error bar of a bar container, in the order of its bars."""
    lines = container.errorbar.lines[2][0]  # the LineCollection of the vertical error lines
    return [(min(seg[:, 1]), max(seg[:, 1])) for seg in lines.get_segments()]


def test_results_png_order_names_counts_and_a_visible_zero_bar(tmp_path, saved):
    write_results(tmp_path, results_table())
    fig = saved[-1]
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    # the seen types' mean first (questions pooled), then seen, then unseen types, each in the order of
    # solver.PROBLEM_TYPES; questions per type shown
    assert ticks == ["mean of 2\nseen types\n(n=40)", "gcd\n(n=20)", "lcm\n(n=20)", "addition\n(unseen, n=10)",
                     "division\n(unseen, n=10)"]
    assert [to_rgb(t.get_color()) for t in ax.get_xticklabels()] == \
        [to_rgb("k")] + [to_rgb(figures.SEEN)] * 2 + [to_rgb(figures.UNSEEN)] * 2
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
    assert list(bars) == ["neurosymbolic", "plain model", "chain of thought", "LoRA (peft)"]  # the table's names and order
    zero = bars["chain of thought"].patches[1]  # gcd
    assert zero.get_height() == 0
    left, right, centre = zero.get_x(), zero.get_x() + zero.get_width(), zero.get_x() + zero.get_width() / 2
    strokes = [ln for ln in ax.lines if set(ln.get_ydata()) == {0}
               and min(ln.get_xdata()) <= left + 1e-9 and max(ln.get_xdata()) >= right - 1e-9]
    assert strokes and strokes[0].get_linewidth() >= 2 and to_rgb(strokes[0].get_color()) == to_rgb(zero.get_facecolor())
    assert [t for t in ax.texts if t.get_text() == "0" and t.xy[0] == pytest.approx(centre)]
    # a zero does not look negative: the axis starts at 0 and nothing is drawn outside the axes below it
    assert ax.get_ylim()[0] == 0 and all(ln.get_clip_on() for ln in ax.lines)
    assert_legends_outside(fig, ax)


def test_results_png_has_wilson_error_bars_and_the_seen_mean_group_first(tmp_path, saved):
    """Every bar has its 95% Wilson interval as an error bar (wilson_interval of solved/asked), the first
    group is the seen types' mean with the pooled interval, and the title is no list of run names."""
    write_results(tmp_path, results_table())
    ax = saved[-1].axes[0]
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
    cot = bars["chain of thought"]
    assert cot.errorbar is not None
    # chain of thought: seen mean (0.0 on gcd + 0.4 on lcm) / 2 = 20%, pooled 8 of 40; gcd 0 of 20; lcm 8 of 20
    assert bar_values(cot)[:3] == pytest.approx([20.0, 0.0, 40.0])
    for (low, high), (solved, asked) in zip(error_segments(cot)[:3], [(8, 40), (0, 20), (8, 20)]):
        lo, hi = wilson_interval(solved, asked)
        assert (low, high) == pytest.approx((100 * lo, 100 * hi))
    assert error_segments(cot)[1][0] == 0 and error_segments(cot)[1][1] > 10  # a zero's interval still shows
    assert "Comparison of runs" not in ax.get_title(loc="left") and "accuracy" in ax.get_title(loc="left")


def test_diagnostics_are_hatched_outlines_and_competitors_are_filled(tmp_path, saved):
    table = results_table()
    rap = table[table["method"] == "neurosymbolic"].assign(method="read_and_print", cross_entropy=float("nan"))
    write_results(tmp_path, pd.concat([table, rap], ignore_index=True))
    ax = saved[-1].axes[0]
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
    assert "read and print (diagnostic)" in bars
    diag = bars["read and print (diagnostic)"].patches[0]
    assert diag.get_hatch() and to_rgb(diag.get_facecolor()) == (1.0, 1.0, 1.0)
    assert to_rgb(diag.get_edgecolor()) == to_rgb(figures.METHOD_COLOURS["read_and_print"])
    assert not bars["neurosymbolic"].patches[0].get_hatch()
    assert "nan" not in (tmp_path / "results.md").read_text().lower()


def test_tick_labels_are_readable():
    assert figures.type_label("bitwise_xor") == "bitwise XOR" and figures.type_label("square_mod") == "x\u00b2 mod y"
    assert "_" not in figures.type_label("some_new_type")


def test_gate_figure_is_titled_and_uses_the_palette_in_a_fixed_order(tmp_path, saved):
    scores = pd.DataFrame({"group": ["non-math"] * 3 + ["unseen math"] * 2 + ["seen math"] * 4,
                           "problem_type": ["t"] * 9, "score": [0.1, 0.2, 0.5, 0.7, 0.9, 0.85, 0.95, 1.0, 1.1]})
    write_gate_scores(tmp_path / "R7", scores, Gate(0.8, 1.05))
    ax = saved[-1].axes[0]
    assert "run R7" in ax.get_title(loc="left") and "test prompts" in ax.get_title(loc="left")
    hists = list(ax.containers)  # one per group; the label is on its first patch
    assert [h.patches[0].get_label().split(":")[0] for h in hists] == ["seen math", "unseen math", "non-math"]
    for h, colour in zip(hists, (figures.SEEN, figures.UNSEEN, figures.NON_MATH)):
        assert to_rgb(h.patches[0].get_facecolor()) == to_rgb(colour)
    labels = [t.get_text() for leg in legends(ax) for t in leg.texts]
    assert any(s.startswith("threshold 0.8") for s in labels) and any(s.startswith("maximum 1.05") for s in labels)
    assert "seen math: n=4, gate open 75%" in labels  # 0.85, 0.95, 1.0 lie between 0.8 and 1.05
    assert_legends_outside(saved[-1], ax)
    write_gate_scores(tmp_path / "R7", scores, Gate(0.8), name="gate_validation")
    assert "validation prompts" in saved[-1].axes[0].get_title(loc="left")


def test_gate_figure_shades_the_open_band_normalises_each_group_and_says_what_the_score_is(tmp_path, saved):
    """The y-axis is the share of each group's prompts (each group's bars sum to 100 whatever its size),
    the band lower < score < upper is shaded, and a caption says what the score is."""
    scores = pd.DataFrame({"group": ["non-math"] * 3 + ["seen math"] * 12, "problem_type": ["t"] * 15,
                           "score": [3.0, 4.0, 5.0] + [0.9 + 0.01 * i for i in range(12)]})
    write_gate_scores(tmp_path / "R8", scores, Gate(0.8, 2.3))
    ax = saved[-1].axes[0]
    for h in ax.containers:
        assert sum(p.get_height() for p in h.patches) == pytest.approx(100.0)
    assert "share of the group's prompts" in ax.get_ylabel()
    bands = [p for p in ax.patches if p.get_label().startswith("gate open")]
    assert len(bands) == 1
    assert bands[0].get_x() == pytest.approx(0.8) and bands[0].get_x() + bands[0].get_width() == pytest.approx(2.3)
    assert any(t.get_text().startswith("Score: the largest dot product") for t in ax.texts)


def encoding_table() -> pd.DataFrame:
    rows = []
    for layer in range(6):
        for seen in ("seen", "unseen"):
            a = min(1.0, layer / 4) * (1.0 if seen == "seen" else 0.4)
            rows.append({"layer": layer, "split": "test", "seen": seen, "n": 30 if seen == "seen" else 12,
                         "x_accuracy": a, "y_accuracy": a, "type_accuracy": a, "all_accuracy": a, "digit_accuracy": a})
    return pd.DataFrame(rows)


def test_encoding_figure_legend_shows_dashes_and_covers_no_data(tmp_path, saved):
    from neurosymbolic_llm.stages.train_maps import plot_accuracy

    plot_accuracy(encoding_table(), tmp_path / "encoding_accuracy.png")
    fig = saved[-1]
    ax = fig.axes[0]
    assert_legends_outside(fig, ax)
    handles = {t.get_text(): (h, leg) for leg in legends(ax) for t, h in zip(leg.texts, leg.legend_handles)}
    unseen = [k for k in handles if "unseen" in k]
    assert unseen, list(handles)
    dashed_pattern = matplotlib.rcParams["lines.dashed_pattern"]
    for key in unseen:
        h, leg = handles[key]
        assert h.get_linestyle() == "--", key
        period = sum(dashed_pattern) * h.get_linewidth()  # points (lines.scale_dashes)
        assert leg.handlelength * leg.prop.get_size_in_points() >= 2 * period, f"{key}: too short to show dashes"
    seen = [k for k in handles if k.startswith("seen")]
    assert seen and handles[seen[0]][0].get_linestyle() == "-"
    assert [ln.get_linestyle() for ln in ax.lines] == ["-"] * 5 + ["--"] * 5  # seen drawn first, then unseen


def test_encoding_figure_marks_the_layer_chosen_on_validation_and_names_its_split(tmp_path, saved):
    """The marked layer is the best validation layer (x, y and type all), not the test split's best."""
    from neurosymbolic_llm.stages.train_maps import plot_accuracy

    test = encoding_table()
    val = test.assign(split="val")
    val.loc[(val["layer"] >= 4) & (val["seen"] == "seen"), "all_accuracy"] = 0.5  # the test split prefers 4-5,
    val.loc[(val["layer"] == 3) & (val["seen"] == "seen"), "all_accuracy"] = 0.99  # validation layer 3
    plot_accuracy(pd.concat([test, val], ignore_index=True), tmp_path / "encoding_accuracy.png")
    ax = saved[-1].axes[0]
    assert "test split" in ax.get_title(loc="left")
    marks = [p for p in ax.patches if p.get_x() < 3 < p.get_x() + p.get_width()]
    assert len(marks) == 1 and marks[0].get_width() < 1  # a narrow band over layer 3 only
    assert [t for t in ax.texts if t.get_text().startswith("layer 3: best on validation") and "99%" in t.get_text()]


def test_every_method_has_its_own_colour_and_none_is_a_group_colour():
    assert set(figures.METHOD_COLOURS) == set(METHODS)
    colours = list(figures.METHOD_COLOURS.values())
    assert len(set(colours)) == len(colours)
    assert not set(colours) & {figures.SEEN, figures.UNSEEN, figures.NON_MATH}
    extra = figures.method_colours(["neurosymbolic", "old_method"])
    assert extra["old_method"] not in colours
