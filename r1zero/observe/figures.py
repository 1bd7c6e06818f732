"""The report's figures (r1zero.observe.report): matplotlib (Agg: no display needed) line, stack and
small-multiple plots of a run's metrics, each returned as a figure for the report to write as a PNG.
A ``run`` here is r1zero.observe.report.Run (its ``series`` and ``evals``)."""
from __future__ import annotations

import io
import math
from typing import Any, Mapping, Sequence

from r1zero.observe import metrics as metric_names
from r1zero.observe.metrics import OUTCOMES


def number(v: Any) -> float | None:
    """A metric value as a finite float; None for text, booleans, NaN and infinities (not plotted)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display: a server or a CI box has none
    import matplotlib.pyplot as plt

    return plt


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)  # tight_layout already ran; "tight" bbox would draw twice
    pyplot().close(fig)
    return buf.getvalue()


def line(ax, steps, vals, label=None, **kw):
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    # Markers make a run of one or two steps visible at all.
    kw.setdefault("marker", "o" if len(steps) <= 30 else None)
    kw.setdefault("markersize", 3)
    ax.plot(steps, vals, label=label, **kw)


def small_multiples(run, keys: Sequence[str], title: str):
    plt = pyplot()
    ncols = min(4, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        line(ax, *run.series(key))
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.supxlabel("step", fontsize=9)
    # Fixed spacing: tight_layout would lay out every panel's ticks once more (seconds on a busy CPU).
    height = 2.4 * nrows  # inches: room for the title and the x label in absolute terms
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.45 / height, top=1 - 0.6 / height, hspace=0.5, wspace=0.3)
    return fig


def rewards_plot(run):
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    keys = [k for k in run.numeric_keys() if k == metric_names.REWARD or k.startswith(metric_names.REWARD_PART)]
    for k in keys:
        line(a, *run.series(k), label=k, linewidth=2.2 if k == metric_names.REWARD else 1.2)
    a.set_title("reward per reward function")
    for k, label in ((metric_names.ACCURACY, "train accuracy"), (metric_names.FORMAT_RATE, "train format rate")):
        s, v = run.series(k)
        if s:
            line(b, s, v, label=label)
    ev = [(int(r["step"]), number(r.get(metric_names.ACCURACY))) for r in run.evals if number(r.get(metric_names.ACCURACY)) is not None]
    if ev:
        b.plot([s for s, _ in ev], [v for _, v in ev], "s--", color="black", label="eval accuracy (greedy)")
    b.set_ylim(-0.03, 1.03)
    b.set_title(metric_names.ACCURACY)
    for ax in (a, b):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, keys + [metric_names.ACCURACY, metric_names.FORMAT_RATE]


# Token-length lines: the completion's and the think part's (the reasoning panel), mean and p90 alike.
LENGTH_STYLES = {metric_names.MEAN_LENGTH: dict(linewidth=2.2), metric_names.P90_LENGTH: dict(linewidth=1.5),
                  metric_names.MAX_LENGTH: dict(linewidth=1, linestyle=":", color="grey"),
                  metric_names.THINK_MEAN_LENGTH: dict(linewidth=2.2, color="#9467bd"),
                  metric_names.THINK_P90_LENGTH: dict(linewidth=1.5, color="#c5b0d5")}


def lengths_plot(run, keys: Sequence[str], title: str):
    """One line per length key of ``keys`` the run logged, in tokens, labelled by its last part."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for k in keys:
        s, v = run.series(k)
        if s:
            line(ax, s, v, label=k.split("/")[1], **LENGTH_STYLES[k])
    ax.set_xlabel("step")
    ax.set_ylabel("tokens")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def outcome_plot(table: list[dict]):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    steps = [r["step"] for r in table]
    ax.stackplot(steps, *[[r[k] for r in table] for k, _, _ in OUTCOMES],
                 labels=[label for _, label, _ in OUTCOMES], colors=[c for _, _, c in OUTCOMES], alpha=0.85)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 1)
    ax.set_xlim(min(steps), max(steps) if len(steps) > 1 else min(steps) + 1)
    ax.set_xlabel("step")
    ax.set_ylabel("share of completions")
    ax.set_title("outcome breakdown")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def share_axes(fig, ax, ylabel: str, title: str):
    """A plot of shares (0 to 1) against the step, finished: labels, grid, legend, layout."""
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def reflection_plot(shares: Mapping[int, float], threshold: float, first: int | None):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    line(ax, list(shares), list(shares.values()), label="completions with a reflection phrase", color="#9467bd")
    ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    if first is not None:
        ax.axvline(first, color="#9467bd", linestyle=":", linewidth=1.5)
        ax.annotate(f"first at step {first}", (first, threshold), xytext=(5, 8), textcoords="offset points",
                    fontsize=9, color="#9467bd")
    return share_axes(fig, ax, "share", "reflection: self-checking language")


def think_accuracy_plot(rows: list[dict]):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for key, label, style in ((metric_names.ACCURACY, "with thinking", dict(color="#9467bd", linewidth=2, marker="s")),
                              (metric_names.ACCURACY_NO_THINK, "without thinking (think part closed empty)",
                               dict(color="#555555", linestyle="--", marker="o"))):
        points = [(r["step"], r[key]) for r in rows if r[key] is not None]
        if points:
            line(ax, [p for p, _ in points], [v for _, v in points], label=label, **style)
    return share_axes(fig, ax, "eval accuracy", "accuracy with and without thinking")
