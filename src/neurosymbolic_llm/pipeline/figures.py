"""The pipeline's figures, drawn from their tables, and the one palette they share.

- `accuracy_bars`: results.png (stage 3, compare_runs), accuracy per problem type and method;
- `gate_histogram`: gate_scores.png (stage 3), gate_validation.png (gate_statistics);
- `encoding_lines`: encoding_accuracy.png (stage 2), decoding accuracy against the layer.
Each returns a matplotlib Figure; `save` writes and closes it.

Seen types, unseen types and non-math prompts have the same colour in every figure (results.png,
gate_scores.png, gate_validation.png); each method has the same colour in every results.png (a
run's and compare_runs'); seen and unseen are solid and dashed wherever lines are drawn
(encoding_accuracy.png). Legends sit outside the axes, so they never cover data.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from neurosymbolic_llm.pipeline.files import atomic_savefig
from neurosymbolic_llm.pipeline.method_table import label

SEEN, UNSEEN, NON_MATH = "#1f77b4", "#ff7f0e", "#7f7f7f"  # blue, orange, grey
# gate figures name their groups "seen math", "unseen math", "non-math" (stages/gate_statistics.py, stages/fine_tune.py)
GROUP_COLOURS = {"seen": SEEN, "unseen": UNSEEN, "non-math": NON_MATH,
                 "seen math": SEEN, "unseen math": UNSEEN}
GROUP_ORDER = ["seen math", "unseen math", "non-math"]
GROUP_LINESTYLES = {"seen": "-", "unseen": "--"}
# By method key (method_table.METHODS); none of them is a group colour.
METHOD_COLOURS = {"neurosymbolic": "#2ca02c", "baseline": "#8c564b", "cot": "#9467bd", "adapter": "#d62728",
                  "lora": "#e377c2", "read_and_print": "#17becf"}
OTHER_COLOURS = ("#bcbd22", "#000000", "#aec7e8", "#98df8a")  # methods of another version, in turn
# The quantities of encoding_accuracy.png: column of encoding_accuracy.csv -> (legend label, colour).
QUANTITIES = {"x_accuracy": ("x", "#9467bd"), "y_accuracy": ("y", "#8c564b"),
              "type_accuracy": ("problem type", "#2ca02c"), "all_accuracy": ("x, y and type all", "#000000"),
              "digit_accuracy": ("digits (mean)", "#17becf")}
DPI = 120


def pyplot():
    """matplotlib.pyplot on the file-only backend (no display is needed or opened)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def method_colours(methods: list[str]) -> dict[str, str]:
    """A colour per method key: the palette's, then OTHER_COLOURS in turn for keys it does not know."""
    unknown = [m for m in methods if m not in METHOD_COLOURS]
    return {m: METHOD_COLOURS.get(m) or OTHER_COLOURS[unknown.index(m) % len(OTHER_COLOURS)] for m in methods}


def group_colour(group: str) -> str:
    return GROUP_COLOURS.get(group, OTHER_COLOURS[0])


def legend_outside(ax, *, upper: bool = True, **kwargs):
    """A legend to the right of the axes (top or bottom aligned); the figure is saved with
    bbox_inches="tight", which widens it to hold the legend."""
    anchor, loc = ((1.02, 1.0), "upper left") if upper else ((1.02, 0.0), "lower left")
    return ax.legend(loc=loc, bbox_to_anchor=anchor, borderaxespad=0.0, **kwargs)


def save(fig, path, what: str = ""):
    """Write the figure atomically (files.atomic_savefig) with room for outside legends, and close it."""
    try:
        return atomic_savefig(fig, path, what, dpi=DPI, bbox_inches="tight")
    finally:
        pyplot().close(fig)


# ----------------------------------------------------------------------------- the figures
def accuracy_bars(accuracy: pd.DataFrame, seen: set, n_text: dict, title: str):
    """results.png. accuracy: fractions [problem types x method keys] in the order to draw (NaN: not
    evaluated); seen: the seen types; n_text: {type: "n=20"}. One bar per method and type; a zero
    gets a bar-wide stroke on the axis and the value 0 (a zero-height bar alone is invisible)."""
    plt = pyplot()
    types, methods = list(accuracy.index), list(accuracy.columns)
    colours = method_colours(methods)
    x = np.arange(len(types))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(types) + 2), 4))
    unseen_x = [i for i, t in enumerate(types) if t not in seen]
    if unseen_x:  # unseen types come last (results.type_order): one shaded span
        ax.axvspan(min(unseen_x) - 0.5, max(unseen_x) + 0.5, color=UNSEEN, alpha=0.12, lw=0, label="unseen types")
    for i, m in enumerate(methods):
        xs = x + (i - (len(methods) - 1) / 2) * width
        values = 100 * accuracy[m].to_numpy(dtype=float)
        ax.bar(xs, np.nan_to_num(values), width, color=colours[m], label=label(m))
        for xi, v in zip(xs, values):
            if v == 0 or math.isnan(v):
                if v == 0:
                    ax.plot([xi - width / 2, xi + width / 2], [0, 0], color=colours[m], lw=3, solid_capstyle="butt",
                            clip_on=False)
                ax.annotate("0" if v == 0 else "-", (xi, 0), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=7, color=colours[m] if v == 0 else NON_MATH)
    ax.set_xticks(x, [f"{t} ({n_text[t]})" if t in seen else f"{t} (unseen, {n_text[t]})" for t in types],
                  rotation=30, ha="right")
    for tick, t in zip(ax.get_xticklabels(), types):
        tick.set_color(SEEN if t in seen else UNSEEN)
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_xlim(-0.5, len(types) - 0.5)
    ax.set_title(title)
    legend_outside(ax, fontsize=8)
    return fig


def gate_histogram(scores: pd.DataFrame, gate, title: str):
    """gate_scores.png / gate_validation.png. scores: columns group, score, gate_open; groups in
    GROUP_ORDER (others after them), each in its group colour; the gate's (pipeline/gate.Gate) lower
    (dashed) and upper (dotted) bounds in the legend with its rule (margins in the x label)."""
    threshold, maximum = gate.lower, gate.upper
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    finite = scores["score"][np.isfinite(scores["score"])]
    lines = [threshold] + ([maximum] if math.isfinite(maximum) else [])
    bins = np.linspace(min(finite.min(), *lines) - 0.05, max(finite.max(), *lines) + 0.05, 40) if len(finite) else 20
    present = list(dict.fromkeys(scores["group"]))
    for group in [g for g in GROUP_ORDER if g in present] + [g for g in present if g not in GROUP_ORDER]:
        part = scores[scores["group"] == group]
        ax.hist(part["score"], bins=bins, alpha=0.55, color=group_colour(group),
                label=f"{group}: n={len(part)}, gate open {100 * part['gate_open'].mean():.0f}%")
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g} (open above)")
    if math.isfinite(maximum):
        ax.axvline(maximum, color="k", ls=":", lw=1.2, label=f"maximum {maximum:g} (open below)")
    margins = gate.describe().partition(", ")[2]
    ax.set_xlabel("max problem-type score of the prompt" + (f" (the gate also needs {margins})" if margins else ""))
    ax.set_ylabel("prompts")
    ax.set_title(title)
    legend_outside(ax, fontsize=8, handlelength=3)
    return fig


def encoding_lines(table: pd.DataFrame, title: str):
    """encoding_accuracy.png. table: the rows of one split of encoding_accuracy.csv. One colour per
    quantity (QUANTITIES), solid for seen types and dashed for unseen ones; two legends outside the
    axes, the line styles with handles long enough to show the dashes."""
    from matplotlib.lines import Line2D

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    groups = [g for g in GROUP_LINESTYLES if (table["seen"] == g).any()]
    for group in groups:
        part = table[table["seen"] == group].sort_values("layer")
        for col, (_, colour) in QUANTITIES.items():
            ax.plot(part["layer"], part[col], GROUP_LINESTYLES[group], color=colour, marker=".")
    ax.set_xlabel("layer (residual stream entering the block)")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_ylabel("share decoded right")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    quantities = [Line2D([], [], color=c, marker=".", label=name) for name, c in QUANTITIES.values()]
    ax.add_artist(legend_outside(ax, handles=quantities, title="decoded", fontsize=7, title_fontsize=7))
    styles = [Line2D([], [], color="k", ls=GROUP_LINESTYLES[g], lw=1.5,
                     label=f"{g} types (n={int(table.loc[table['seen'] == g, 'n'].iloc[0])})") for g in groups]
    if styles:
        legend = legend_outside(ax, upper=False, handles=styles, title="problem types", fontsize=7, title_fontsize=7,
                                handlelength=4.5)
        for text, group in zip(legend.get_texts(), groups):
            text.set_color(GROUP_COLOURS[group])
    return fig


def gate_coverage(curve: pd.DataFrame, gate, title: str):
    """gate_coverage.png (stages/gate_statistics.py). curve: columns min_type_margin, coverage,
    accuracy (gate_calibration.coverage_curve); the chosen minimum of `gate` marked on the curve."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(100 * curve["coverage"], 100 * curve["accuracy"], marker=".", color=SEEN, label="type-margin minimum swept")
    chosen = curve.iloc[(curve["min_type_margin"] - gate.min_type_margin).abs().argmin()]
    ax.plot([100 * chosen["coverage"]], [100 * chosen["accuracy"]], "o", ms=9, mfc="none", color="k",
            label=f"chosen: {gate.describe()}")
    ax.set_xlabel("coverage: seen-type validation questions the gate opens for (%)")
    ax.set_ylabel("accuracy: opened prompts read right (%)")
    ax.set_xlim(-2, 102)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    legend_outside(ax, fontsize=8)
    return fig
