"""The pipeline's figures, drawn from their tables, and the one palette they share.

- `accuracy_bars`: results.png (stage 3, compare_runs), accuracy per problem type and method, the
  seen types' mean first, 95% Wilson intervals as error bars, diagnostics hatched;
- `gate_histogram`: gate_scores.png (stage 3), gate_validation.png (gate_statistics), the share of
  each group's prompts per score, the open band shaded, a caption saying what the score is;
- `encoding_lines`: encoding_accuracy.png (stage 2), decoding accuracy against the layer, the
  chosen read marked, joint reads as bars over their layers;
- `rows_curve`: rows_curve.png (stage 2, --rows_curve), validation reading against training rows;
- `gate_coverage`: gate_coverage.png (gate_statistics), coverage and accuracy against the margin.
Each returns a matplotlib Figure; `save` writes and closes it.

Seen types, unseen types and non-math prompts have the same colour in every figure (results.png,
gate_scores.png, gate_validation.png); each method has the same colour in every results.png (a
run's and compare_runs'); seen and unseen are solid and dashed wherever lines are drawn
(encoding_accuracy.png). Legends sit outside the axes, so they never cover data.
"""
from __future__ import annotations

import math
from typing import Optional

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
# Methods that are diagnostics of the neurosymbolic model's parts, not competing methods: drawn hatched.
DIAGNOSTICS = {"read_and_print", "true_operands", "write_side_alone"}
# How tick labels name the problem types (others: underscores as spaces).
TYPE_LABELS = {"square_mod": "x\u00b2 mod y", "bitwise_and": "bitwise AND", "bitwise_xor": "bitwise XOR",
               "bitwise_or": "bitwise OR", "gcd": "gcd", "lcm": "lcm"}
OPEN_BAND = "#2ca02c"  # the gate figure's shaded band where the gate opens


def type_label(problem_type: str) -> str:
    return TYPE_LABELS.get(problem_type, problem_type.replace("_", " "))


def caption(ax, text: str):
    """A small line of explanation between the title and the axes."""
    return ax.text(0.0, 1.015, text, transform=ax.transAxes, fontsize=7.5, va="bottom", ha="left", wrap=True)


def accuracy_bars(accuracy: pd.DataFrame, lower: pd.DataFrame, upper: pd.DataFrame, seen_mean: pd.DataFrame,
                  seen: set, n_text: dict, title: str, note: str = ""):
    """results.png. accuracy, lower, upper: fractions [problem types x method keys] in the order to draw
    (NaN: not evaluated), lower/upper the 95% Wilson bounds; seen_mean: [method keys x (mean, lower,
    upper, asked)], the seen types' mean and the pooled interval, drawn first as its own group; seen:
    the seen types; n_text: {type: "n=20"}; note: a caption line (e.g. the runs merged).

    Error bars are the 95% intervals; diagnostics (DIAGNOSTICS) are hatched outlines; a zero gets the
    value 0 above the axis and a stroke on it, clipped to the axes (nothing below zero)."""
    plt = pyplot()
    types, methods = list(accuracy.index), list(accuracy.columns)
    colours = method_colours(methods)
    n_seen = len([t for t in types if t in seen])
    groups = ([f"mean, {n_seen} seen types"] if n_seen else []) + types
    first = 1 if n_seen else 0
    x = np.arange(len(groups))
    width = 0.84 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.95 * len(groups) + 2.5), 4.2))
    unseen_x = [first + i for i, t in enumerate(types) if t not in seen]
    if unseen_x:  # unseen types come last (results.type_order): one shaded span
        ax.axvspan(min(unseen_x) - 0.5, max(unseen_x) + 0.5, color=UNSEEN, alpha=0.10, lw=0, label="unseen types")
    if n_seen:
        ax.axvline(0.5, color="k", lw=0.8)
    for i, m in enumerate(methods):
        xs = x + (i - (len(methods) - 1) / 2) * width
        means = [seen_mean.loc[m, "mean"]] if n_seen else []
        lows = [seen_mean.loc[m, "lower"]] if n_seen else []
        highs = [seen_mean.loc[m, "upper"]] if n_seen else []
        values = 100 * np.array(means + accuracy[m].tolist(), dtype=float)
        lo = 100 * np.array(lows + lower[m].tolist(), dtype=float)
        hi = 100 * np.array(highs + upper[m].tolist(), dtype=float)
        # clipped at 0: the seen-type mean is a mean of per-type shares, its interval the pooled one's,
        # and with unequal questions per type the two need not nest
        err = np.clip(np.nan_to_num(np.vstack([values - lo, hi - values])), 0.0, None)
        diagnostic = m in DIAGNOSTICS
        style = dict(facecolor="white", edgecolor=colours[m], hatch="////", lw=1.0) if diagnostic else \
            dict(color=colours[m])
        ax.bar(xs, np.nan_to_num(values), width, yerr=err, ecolor="#333333", error_kw=dict(lw=0.7, capsize=1.5),
               label=label(m) + (" (diagnostic)" if diagnostic else ""), **style)
        for xi, v in zip(xs, values):
            if v == 0:
                ax.plot([xi - width / 2, xi + width / 2], [0, 0], color=colours[m], lw=3, solid_capstyle="butt")
            if v == 0 or math.isnan(v):
                ax.annotate("0" if v == 0 else "-", (xi, 0), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=6.5, color=colours[m] if v == 0 else NON_MATH)
    asked = seen_mean["asked"].dropna() if n_seen else pd.Series(dtype=float)
    pooled = (f"n={int(asked.min())}" if asked.min() == asked.max() else f"n={int(asked.min())}-{int(asked.max())}") \
        if len(asked) else "n=?"
    names = ([f"mean of {n_seen}\nseen types\n({pooled})"] if n_seen else []) + \
        [f"{type_label(t)}\n({n_text[t]})" if t in seen else f"{type_label(t)}\n(unseen, {n_text[t]})" for t in types]
    ax.set_xticks(x, names, fontsize=8)
    for tick, g in zip(ax.get_xticklabels(), groups):
        tick.set_color(SEEN if g in seen else UNSEEN if g in types else "k")
        if g not in types:
            tick.set_fontweight("bold")
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_title(title, loc="left", pad=16)
    caption(ax, "Error bars: 95% Wilson intervals (the mean's: the seen-type questions pooled). "
                "Hatched: diagnostics of the method's parts, not competitors." + (f" {note}" if note else ""))
    legend_outside(ax, fontsize=8)
    return fig


# What the gate figure's score is (its caption).
GATE_SCORE = ("Score: the largest dot product of the encoder's reading of the prompt (a VSA code) with a "
              "problem-type vector, about 1 for a question read as that type. It is not normalised: prompts "
              "unlike the training questions can score far above 1, hence the upper bound.")


def gate_histogram(scores: pd.DataFrame, gate, title: str):
    """gate_scores.png / gate_validation.png. scores: columns group, score, gate_open; groups in
    GROUP_ORDER (others after them), each in its group colour and normalised to its own size (the
    y-axis is the share of the group's prompts, so a group of 35 is as visible as one of 160); the
    band where the gate's (pipeline/gate.Gate) score bounds open shaded, its lower (dashed) and upper
    (dotted) bounds in the legend, its margin minimums in the x label."""
    threshold, maximum = gate.lower, gate.upper
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    finite = scores["score"][np.isfinite(scores["score"])]
    lines = [threshold] + ([maximum] if math.isfinite(maximum) else [])
    low, high = (min(finite.min(), *lines) - 0.05, max(finite.max(), *lines) + 0.05) if len(finite) else (0.0, 1.0)
    bins = np.linspace(low, high, 40)
    ax.axvspan(threshold, maximum if math.isfinite(maximum) else high, color=OPEN_BAND, alpha=0.12, lw=0,
               label="gate open (" + (f"{threshold:g} < score < {maximum:g}" if math.isfinite(maximum)
                                      else f"score > {threshold:g}") + ")")
    present = list(dict.fromkeys(scores["group"]))
    for group in [g for g in GROUP_ORDER if g in present] + [g for g in present if g not in GROUP_ORDER]:
        part = scores[scores["group"] == group]
        ax.hist(part["score"], bins=bins, weights=np.full(len(part), 100.0 / max(len(part), 1)), alpha=0.6,
                color=group_colour(group), label=f"{group}: n={len(part)}, gate open {100 * part['gate_open'].mean():.0f}%")
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g} (open above)")
    if math.isfinite(maximum):
        ax.axvline(maximum, color="k", ls=":", lw=1.2, label=f"maximum {maximum:g} (open below)")
    ax.set_xlim(low, high)
    margins = gate.describe().partition(", ")[2]
    ax.set_xlabel("gate score of the prompt (max over problem types)"
                  + (f"; the gate also needs {margins}" if margins else ""))
    ax.set_ylabel("share of the group's prompts (%)")
    ax.set_title(title, loc="left", pad=28)
    caption(ax, GATE_SCORE)
    legend_outside(ax, fontsize=8, handlelength=3)
    return fig


def encoding_lines(table: pd.DataFrame, title: str, chosen: Optional[tuple[int, ...]] = None, chosen_text: str = "",
                   joint: Optional[dict[tuple[int, ...], float]] = None):
    """encoding_accuracy.png. table: the one-layer rows of one split of encoding_accuracy.csv (the
    title names it). One colour per quantity (QUANTITIES), solid for seen types and dashed for unseen
    ones; two legends outside the axes, the line styles with handles long enough to show the dashes;
    the chosen read (its layers, chosen_text saying how it was chosen) a vertical band with a label;
    joint reads ({layers: seen-type share with x, y and type all right}) a black bar over their layers."""
    from matplotlib.lines import Line2D

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    groups = [g for g in GROUP_LINESTYLES if (table["seen"] == g).any()]
    if chosen is not None:
        ax.axvspan(chosen[0] - 0.15, chosen[-1] + 0.15, color="#999999", alpha=0.25, lw=0)
        ax.annotate(chosen_text or f"{'+'.join(map(str, chosen))}: chosen", (chosen[-1], 0.45), xytext=(6, 0),
                    textcoords="offset points", fontsize=7.5, ha="left", va="center",
                    bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="#999999", alpha=0.9))
    for layers, acc in (joint or {}).items():
        ax.hlines(acc, layers[0] - 0.1, layers[-1] + 0.1, color="k", lw=3)
        ax.annotate(f"layers {'+'.join(map(str, layers))} at once: all {acc:.0%}", (layers[0], acc),
                    xytext=(0, 5), textcoords="offset points", fontsize=7.5, ha="left", va="bottom")
    for group in groups:
        part = table[table["seen"] == group].sort_values("layer")
        for col, (_, colour) in QUANTITIES.items():
            ax.plot(part["layer"], part[col], GROUP_LINESTYLES[group], color=colour, marker=".")
    ax.set_xlabel("layer (residual stream entering the block)")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_ylabel("share of questions decoded right")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, loc="left")
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


def rows_curve(curve: pd.DataFrame, title: str):
    """rows_curve.png (stage 2). curve: columns read, rows, all_accuracy (train_maps.rows_curve); one
    line per read, the rows on a log axis."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for read, part in curve.groupby("read", sort=False):
        what = f"layers {read} at once" if "+" in str(read) else f"layer {read}"
        ax.plot(part["rows"], part["all_accuracy"], marker="o", label=what)
        last = part.iloc[-1]
        ax.annotate(f"{last['all_accuracy']:.0%}", (last["rows"], last["all_accuracy"]), xytext=(4, 0),
                    textcoords="offset points", fontsize=7.5, va="center")
    ax.set_xscale("log")
    sizes = sorted(set(curve["rows"]))
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training rows (least squares)")
    ax.set_ylabel("validation questions read right")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, loc="left", fontsize=9)
    ax.grid(alpha=0.3)
    legend_outside(ax, fontsize=7)
    return fig
