"""The figures as saved (results.png, gate_scores.png, encoding_accuracy.png): the figure object handed
to matplotlib's savefig is inspected, whatever function drew it. One set of method names, a fixed
order, zero bars that can be seen, legends that show the line styles and cover no data, and one
palette for seen / unseen / non-math."""
import matplotlib
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.legend import Legend

from neurosymbolic_llm.pipeline import figures
from neurosymbolic_llm.pipeline.method_table import METHODS
from neurosymbolic_llm.pipeline.gate import Gate
from neurosymbolic_llm.pipeline.results import RESULT_COLUMNS, write_gate_scores, write_results


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


def test_results_png_order_names_counts_and_a_visible_zero_bar(tmp_path, saved):
    write_results(tmp_path, results_table())
    fig = saved[-1]
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    # seen first, then unseen, each in the order of solver.PROBLEM_TYPES; questions per type shown
    assert ticks == ["gcd (n=20)", "lcm (n=20)", "addition (unseen, n=10)", "division (unseen, n=10)"]
    assert [to_rgb(t.get_color()) for t in ax.get_xticklabels()] == \
        [to_rgb(figures.SEEN)] * 2 + [to_rgb(figures.UNSEEN)] * 2
    bars = {c.get_label(): c for c in ax.containers}
    assert list(bars) == ["neurosymbolic", "plain model", "chain of thought", "LoRA (peft)"]  # the table's names and order
    zero = bars["chain of thought"].patches[0]  # gcd
    assert zero.get_height() == 0
    left, right, centre = zero.get_x(), zero.get_x() + zero.get_width(), zero.get_x() + zero.get_width() / 2
    strokes = [ln for ln in ax.lines if set(ln.get_ydata()) == {0}
               and min(ln.get_xdata()) <= left + 1e-9 and max(ln.get_xdata()) >= right - 1e-9]
    assert strokes and strokes[0].get_linewidth() >= 2 and to_rgb(strokes[0].get_color()) == to_rgb(zero.get_facecolor())
    assert [t for t in ax.texts if t.get_text() == "0" and t.xy[0] == pytest.approx(centre)]
    assert_legends_outside(fig, ax)


def test_gate_figure_is_titled_and_uses_the_palette_in_a_fixed_order(tmp_path, saved):
    scores = pd.DataFrame({"group": ["non-math"] * 3 + ["unseen math"] * 2 + ["seen math"] * 4,
                           "problem_type": ["t"] * 9, "score": [0.1, 0.2, 0.5, 0.7, 0.9, 0.85, 0.95, 1.0, 1.1]})
    write_gate_scores(tmp_path / "R7", scores, Gate(0.8, 1.05))
    ax = saved[-1].axes[0]
    assert "run R7" in ax.get_title() and "test prompts" in ax.get_title()
    hists = list(ax.containers)  # one per group; the label is on its first patch
    assert [h.patches[0].get_label().split(":")[0] for h in hists] == ["seen math", "unseen math", "non-math"]
    for h, colour in zip(hists, (figures.SEEN, figures.UNSEEN, figures.NON_MATH)):
        assert to_rgb(h.patches[0].get_facecolor()) == to_rgb(colour)
    labels = [t.get_text() for leg in legends(ax) for t in leg.texts]
    assert any(s.startswith("threshold 0.8") for s in labels) and any(s.startswith("maximum 1.05") for s in labels)
    assert "seen math: n=4, gate open 75%" in labels  # 0.85, 0.95, 1.0 lie between 0.8 and 1.05
    assert_legends_outside(saved[-1], ax)
    write_gate_scores(tmp_path / "R7", scores, Gate(0.8), name="gate_validation")
    assert "validation prompts" in saved[-1].axes[0].get_title()


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


def test_every_method_has_its_own_colour_and_none_is_a_group_colour():
    assert set(figures.METHOD_COLOURS) == set(METHODS)
    colours = list(figures.METHOD_COLOURS.values())
    assert len(set(colours)) == len(colours)
    assert not set(colours) & {figures.SEEN, figures.UNSEEN, figures.NON_MATH}
    extra = figures.method_colours(["neurosymbolic", "old_method"])
    assert extra["old_method"] not in colours
