"""The report's static plots (matplotlib, Agg backend), each returned as PNG bytes.

Figures are built with :class:`matplotlib.figure.Figure` directly — no pyplot, no global state — so
reports can be written from worker processes and threads. Inputs are plain arrays; every function
copes with empty data by returning ``None`` (the report then omits the figure).
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

DPI = 110
# Figure widths (inches at DPI) matching the HTML layout, so text is neither blown up nor shrunk:
WIDE_IN = 9.6  # spans the report's content width (~1050 px)
HALF_IN = 4.8  # one column of the two-column figure grid
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.titleweight": "bold", "axes.labelsize": 9,
    "legend.fontsize": 8, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
}


@dataclass(frozen=True)
class Threshold:
    """A vertical (CDF) or horizontal (curve) reference line: an SLO or an MLPerf limit."""

    label: str
    value: float
    color: str = "#d62728"
    style: str = "--"


def _width(wide: bool) -> float:
    return WIDE_IN if wide else HALF_IN


def _figure(nrows: int = 1, ncols: int = 1, width: float = WIDE_IN, height: float = 3.4) -> tuple[Figure, np.ndarray]:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height), dpi=DPI)
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def to_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _png_with_bottom_legend(fig: Figure, ax: object, ncols: int) -> bytes:
    """PNG with the axes' legend in a band of its own below the plot (never over data or labels)."""
    handles, labels = ax.get_legend_handles_labels()
    rows = (len(labels) + ncols - 1) // ncols
    band = min((0.2 * rows + 0.15) / fig.get_figheight(), 0.45)  # legend rows of ~0.2 in
    fig.legend(handles, labels, loc="lower center", ncols=ncols, frameon=False)
    fig.tight_layout(rect=(0, band, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


def cdf_panels(panels: list[tuple[str, np.ndarray, list[Threshold]]]) -> bytes | None:
    """Empirical CDFs in a two-column grid (full width), one panel per ``(title, values in ms,
    threshold lines)``.

    The x-axis covers the 0.5th–99.5th percentiles and the thresholds, on a log scale when they span
    more than a factor of 20 (an SLO of 2 s next to 10 ms TTFTs), so neither squashes the other.
    """
    panels = [(t, _finite(v), th) for t, v, th in panels if _finite(v).size]
    if not panels:
        return None
    ncols = 2 if len(panels) > 1 else 1
    nrows = (len(panels) + ncols - 1) // ncols
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(nrows, ncols, WIDE_IN, 3.1 * nrows + 0.2)
        for ax, (title, values, thresholds) in zip(axes.flat, panels):
            x = np.sort(values)
            y = np.arange(1, x.size + 1) / x.size
            if x.size > 4000:  # plot a quantile grid, not every sample
                idx = np.unique(np.linspace(0, x.size - 1, 4000).astype(int))
                x, y = x[idx], y[idx]
            ax.plot(x, y, color=PALETTE[0], lw=1.8, label="simulated")
            ax.axhline(0.99, color="#888", lw=0.7, ls=":")
            positive = values[values > 0]
            left = float(np.percentile(positive, 0.5)) if positive.size else 1e-3
            right = float(np.percentile(values, 99.5))
            for th in thresholds:
                ax.axvline(th.value, color=th.color, ls=th.style, lw=1.3, label=th.label)
                right = max(right, th.value)
                left = min(left, th.value)
            if right > 20 * max(left, 1e-9):
                ax.set_xscale("log")
                ax.set_xlim(left / 1.3, right * 1.3)
                ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            else:
                ax.set_xlim(0, right * 1.08 if right > 0 else 1.0)
            ax.set_ylim(0, 1.01)
            ax.set_title(title)
            ax.set_xlabel("ms")
            ax.set_ylabel("fraction of requests")
            if thresholds:
                ax.legend(loc="lower right", fontsize=7, framealpha=0.9)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        return to_png(fig)


def time_panels(panels: list[tuple[str, str, np.ndarray, dict[str, np.ndarray], bool]],
                wide: bool = True) -> bytes | None:
    """Time series in a grid: ``(title, y label, t seconds, {series label: values}, stacked)``."""
    panels = [p for p in panels if len(p[2]) and p[3]]
    if not panels:
        return None
    ncols = 2 if len(panels) > 1 else 1
    nrows = (len(panels) + ncols - 1) // ncols
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(nrows, ncols, _width(wide), 2.8 * nrows + 0.3)
        for ax, (title, ylabel, t, series, stacked) in zip(axes.flat, panels):
            if stacked:
                ax.stackplot(t, *series.values(), labels=list(series), alpha=0.85, colors=PALETTE)
            else:
                for label, y in series.items():
                    ax.plot(t, y, lw=1.1, label=label)
            ax.set_title(title)
            ax.set_xlabel("simulated time (s)")
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
            if len(series) > 1:
                ax.legend(loc="best", ncols=min(len(series), 3))
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        return to_png(fig)


def stacked_hbars(title: str, xlabel: str, labels: list[str], parts: dict[str, list[float]],
                  annotate_unit: str = "", wide: bool = True) -> bytes | None:
    """Horizontal stacked bars: one bar per label, one colour per part (e.g. TTFT components)."""
    if not labels or not parts:
        return None
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(1, 1, _width(wide), 0.38 * len(labels) + 1.4)
        ax = axes[0, 0]
        arrays = {name: np.nan_to_num(np.asarray(v, dtype=float)) for name, v in parts.items()}
        min_labelled = 0.06 * max(float(np.sum(list(arrays.values()), axis=0).max()), 1e-12)
        left = np.zeros(len(labels))
        for (name, vals), color in zip(arrays.items(), PALETTE):
            ax.barh(labels, vals, left=left, color=color, label=name, height=0.6)
            if annotate_unit:  # label segments wide enough to hold their number
                for i, v in enumerate(vals):
                    if v > min_labelled:
                        ax.text(left[i] + v / 2, i, f"{v:,.1f}{annotate_unit}", ha="center", va="center",
                                fontsize=7, color="white")
            left += vals
        ax.invert_yaxis()
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(axis="y", visible=False)
        return _png_with_bottom_legend(fig, ax, min(len(parts), 5))


def histograms(title: str, xlabel: str, series: dict[str, np.ndarray], bins: int = 50,
               wide: bool = False) -> bytes | None:
    """Overlaid histograms, each normalised to its own count (so a rare group stays visible next to a
    common one), e.g. iteration time of steps with and without prefill."""
    series = {k: _finite(v) for k, v in series.items() if _finite(v).size}
    if not series:
        return None
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(1, 1, _width(wide), 3.0)
        ax = axes[0, 0]
        allv = np.concatenate(list(series.values()))
        hi = float(np.percentile(allv, 99.5)) or float(allv.max()) or 1.0
        edges = np.linspace(0, hi * 1.05, bins + 1)
        for label, values in series.items():
            ax.hist(np.clip(values, 0, edges[-1]), bins=edges, alpha=0.6, label=f"{label} ({values.size:,})",
                    weights=np.full(values.size, 1.0 / values.size))
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("share of the group's iterations")
        ax.legend()
        return to_png(fig)


def curves(panels: list[tuple[str, str, dict[str, tuple[np.ndarray, np.ndarray]], list[Threshold]]],
           xlabel: str) -> bytes | None:
    """Line plots sharing an x meaning: ``(title, y label, {curve label: (x, y)}, horizontal lines)``.

    Used for latency-vs-load curves, one line per configuration.
    """
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    ncols = min(len(panels), 2)
    nrows = (len(panels) + ncols - 1) // ncols
    with matplotlib.rc_context(STYLE):
        num_lines = len(panels[0][2])
        fig, axes = _figure(nrows, ncols, WIDE_IN, 3.0 * nrows + 0.2 * ((num_lines + 1) // 2) + 0.4)
        for ax, (title, ylabel, lines, thresholds) in zip(axes.flat, panels):
            for i, (label, (x, y)) in enumerate(lines.items()):  # > 10 lines: colours repeat, dashed
                ax.plot(x, y, marker="o", ms=3.5, lw=1.3, label=label, color=PALETTE[i % len(PALETTE)],
                        ls=("-", "--", ":")[(i // len(PALETTE)) % 3])
            data_max = max((float(np.nanmax(y)) for _, y in lines.values() if np.isfinite(y).any()), default=0.0)
            for th in thresholds:
                if th.value <= 1.6 * data_max:  # draw it; else say where it is instead of flattening the data
                    ax.axhline(th.value, color=th.color, ls=th.style, lw=1.1)
                    ax.annotate(th.label, xy=(0.01, th.value), xycoords=("axes fraction", "data"), fontsize=7,
                                color=th.color, va="bottom")
                else:
                    ax.text(0.01, 0.97, f"{th.label} (above this range)", transform=ax.transAxes, fontsize=7,
                            color=th.color, va="top")
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        num_lines = len(axes.flat[0].get_legend_handles_labels()[1])
        return _png_with_bottom_legend(fig, axes.flat[0], 3 if num_lines <= 6 else 2)


def pareto(title: str, xlabel: str, ylabel: str, x: np.ndarray, y: np.ndarray, front: np.ndarray,
           marks: dict[int, str], x_limit: float | None = None, wide: bool = True) -> bytes | None:
    """Scatter of configurations with the Pareto front (low x, high y) drawn; ``marks`` puts a short
    tag (a number the report's table explains) next to chosen points.

    An SLO line far beyond the data is named in a corner note rather than drawn (it would squash the
    points into one edge).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(1, 1, _width(wide), 4.0)
        ax = axes[0, 0]
        ax.scatter(x[ok & ~front], y[ok & ~front], s=22, color="#9aa5b5", label="dominated")
        order = np.argsort(x[front])
        ax.plot(x[front][order], y[front][order], "-o", color=PALETTE[3], ms=5, lw=1.4, label="Pareto front")
        for i, tag in marks.items():
            ax.annotate(tag, (x[i], y[i]), textcoords="offset points", xytext=(5, 4), fontsize=8,
                        fontweight="bold", color=PALETTE[3])
        if x_limit is not None and x_limit <= 1.6 * float(np.nanmax(x[ok])):
            ax.axvline(x_limit, color="#d62728", ls="--", lw=1.1, label="SLO")
        elif x_limit is not None:
            ax.text(0.99, 0.02, f"SLO at {x_limit:,.0f} (beyond this range)", transform=ax.transAxes,
                    fontsize=7, color="#d62728", ha="right", va="bottom")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_xlim(0, float(np.nanmax(x[ok])) * 1.15)
        ax.set_ylim(0, float(np.nanmax(y[ok])) * 1.15)
        ax.legend(loc="lower right" if x_limit is None or x_limit <= 1.6 * float(np.nanmax(x[ok])) else "upper left")
        return to_png(fig)


def bars(title: str, xlabel: str, labels: list[str], values: Sequence[float], highlight: int | None = None,
         value_format: str = "{:,.2f}", note_missing: str = "n/a", wide: bool = False) -> bytes | None:
    """Horizontal bars, one per configuration (long labels stay readable); ``highlight`` marks the
    recommended one in green."""
    vals = np.asarray(values, dtype=float)
    if not labels or not np.isfinite(vals).any():
        return None
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(1, 1, _width(wide), 0.28 * len(labels) + 1.1)
        ax = axes[0, 0]
        colors = [PALETTE[2] if i == highlight else PALETTE[0] for i in range(len(labels))]
        pos = np.arange(len(labels))
        ax.barh(pos, np.nan_to_num(vals), color=colors, height=0.65)
        top = float(np.nanmax(vals))
        for i, v in enumerate(vals):
            text = value_format.format(v) if np.isfinite(v) else note_missing
            ax.text((v if np.isfinite(v) else 0) + 0.01 * top, i, text, ha="left", va="center", fontsize=7)
        ax.set_yticks(pos, labels, fontsize=7.5)
        ax.invert_yaxis()
        ax.set_xlim(0, top * 1.18 if top > 0 else 1)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(axis="y", visible=False)
        return to_png(fig)


def load_and_replicas(t: np.ndarray, rate: np.ndarray,
                      replicas: dict[str, np.ndarray | tuple[np.ndarray, np.ndarray]], *,
                      steps: bool = True) -> bytes | None:
    """Offered load (left axis, req/s) and replica counts (right axis) over time on one chart. A
    replica series is ``y`` on the times ``t``, or its own ``(times, y)`` (pools deciding at their own
    intervals)."""
    if not len(t):
        return None
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(1, 1, WIDE_IN, 3.4)
        ax = axes[0, 0]
        ax.plot(t, rate, lw=1.0, color="#7f7f7f", label="arrival rate (req/s)")
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel("req/s")
        ax.set_ylim(bottom=0)
        right = ax.twinx()
        right.grid(False)
        for i, (label, y) in enumerate(replicas.items()):
            ty, y = y if isinstance(y, tuple) else (t, y)
            if steps:
                right.step(ty, y, where="post", lw=1.5, color=PALETTE[i % len(PALETTE)], label=label)
            else:
                right.plot(ty, y, lw=1.5, color=PALETTE[i % len(PALETTE)], label=label)
        right.set_ylabel("replicas")
        right.set_ylim(bottom=0)
        right.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title("Load and replicas over time")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = right.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=7, framealpha=0.9)
        return to_png(fig)
