"""Figure functions: the data stage and the notebooks call these; none of them computes science.

Every function takes arrays/tables that a pipeline stage wrote and returns a matplotlib Figure
(or draws into an Axes); `save` writes it atomically at print resolution. The only statistics
here are display aids: KDE lines over histograms, medians and quartiles in summaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.axis
import matplotlib.image
import matplotlib.patches
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from timesnet_gen import registry  # noqa: E402
from timesnet_gen.atomic import staged_file  # noqa: E402

# Screen resolution: figures are read on screen and live in git (figures/ stays under 3 MB).
DPI = 110
COMPONENT_NAMES = ("E", "N", "U")
SOURCE_COLOURS = registry.source_colours()  # Real, then each generator's Gen and Recon
SOURCES = tuple(SOURCE_COLOURS)
GENERATED = registry.generated_labels()  # what the records and intensity figures compare
MARKERS = {registry.REAL: "o", **{g.gen_label: g.marker for g in registry.GENERATORS}}


def save(fig: plt.Figure, path: str | Path, dpi: float = DPI) -> Path:
    """Write a PNG at screen resolution via a temporary file, then close the figure.

    The PNG is stored with a 256-colour adaptive palette: line plots look the same and the
    file is about a third of the RGBA size, so figures/ stays small enough for git."""
    import io

    from PIL import Image

    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.load()
        dpi_info = image.info.get("dpi", (dpi, dpi))
        paletted = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    with staged_file(path) as tmp:
        paletted.save(tmp, format="PNG", optimize=True, dpi=dpi_info)
    return path


def log_axes(ax: plt.Axes) -> None:
    """Log-log axes with plain numbers (1, 2, 5, 10 Hz) rather than powers of ten."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([1, 2, 5, 10, 20]))
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))


class _PlainLogFormatter(matplotlib.ticker.LogFormatter):
    """matplotlib's choice of which log ticks to label, written as plain numbers (0.02, 3, 40)."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def plain_log(axis: matplotlib.axis.Axis) -> None:
    """Log-scaled axis labelled 0.1, 1, 10 (and 2, 3, 5 within a short range), not 10^x."""
    axis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def plot_record(ax: plt.Axes, record: np.ndarray, fs: float = 100.0, title: str = "",
                color: str = "black") -> None:
    """Three components (3, T) in cm/s^2, offset vertically, E N U from top."""
    t = np.arange(record.shape[1]) / fs
    step = 1.2 * float(np.abs(record).max() or 1.0)
    for i, (name, trace) in enumerate(zip(COMPONENT_NAMES, record)):
        ax.plot(t, trace - i * step, lw=0.4, color=color)
        ax.text(t[-1] * 1.01, -i * step, name, va="center", fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(t[0], t[-1])
    ax.set_xlabel("Time (s)")
    ax.set_title(title, fontsize=9)
    ax.text(0.01, 0.97, f"peak {np.abs(record).max():.3g} cm/s$^2$", transform=ax.transAxes,
            va="top", fontsize=7)


def plot_hvsr_curves(ax: plt.Axes, freqs: np.ndarray, curves: np.ndarray, grid: np.ndarray,
                     median: np.ndarray, f0_true: float | None = None) -> None:
    """Every record's HVSR (thin), the station median (thick), the true f0 (dashed)."""
    for curve in curves:
        ax.plot(freqs, curve, lw=0.3, color="0.7")
    ax.plot(grid, median, lw=1.8, color="black", label="median")
    if f0_true is not None and np.isfinite(f0_true):
        ax.axvline(f0_true, ls="--", color="tab:red", lw=1, label=f"true f0 {f0_true:.2f} Hz")
    log_axes(ax)
    ax.set_xlim(freqs[0], freqs[-1])
    ax.set_xlabel("Frequency (Hz)")
    ax.set_ylabel("H/V")
    ax.legend(fontsize=7, loc="upper right")


def plot_f0_histogram(ax: plt.Axes, f0_values: np.ndarray, edges: np.ndarray,
                      f0_true: float | None = None) -> None:
    ax.hist(f0_values[np.isfinite(f0_values)], bins=edges, color="0.5", edgecolor="white")
    if f0_true is not None and np.isfinite(f0_true):
        ax.axvline(f0_true, ls="--", color="tab:red", lw=1)
    med = np.nanmedian(f0_values)
    ax.axvline(med, color="black", lw=1)
    ax.set_xlabel("f0 (Hz)")
    ax.set_ylabel("records")
    ax.set_title(f"median f0 {med:.2f} Hz", fontsize=8)


def corpus_overview(stations: list[str], examples: list[np.ndarray], hvsr_freqs: np.ndarray,
                    curves: list[np.ndarray], grid: np.ndarray, medians: list[np.ndarray],
                    f0_values: list[np.ndarray], f0_true: list[float], edges: np.ndarray,
                    fs: float = 100.0) -> plt.Figure:
    """Per target station: an example record, its station's HVSR curves, the f0 histogram."""
    fig, axes = plt.subplots(len(stations), 3, figsize=(13, 2.6 * len(stations)),
                             gridspec_kw={"width_ratios": [1.6, 1, 1]}, squeeze=False)
    for row, station in enumerate(stations):
        plot_record(axes[row, 0], examples[row], fs, f"station {station}: example record")
        plot_hvsr_curves(axes[row, 1], hvsr_freqs, curves[row], grid, medians[row], f0_true[row])
        plot_f0_histogram(axes[row, 2], f0_values[row], edges, f0_true[row])
    fig.suptitle("Synthetic corpus: target stations (HVSR with the paper's protocol)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Figure 1: per target station, f0 distributions (top) and median HVSR curves (bottom)


def _line_style(source: str) -> str:
    """Reconstructions dotted, everything else solid (colours come from SOURCE_COLOURS)."""
    return ":" if source.endswith("Recon") else "-"


def f0_kde(values: np.ndarray, x: np.ndarray) -> np.ndarray | None:
    """Gaussian KDE of f0 values (Hz) at x (1/Hz); None below 2 distinct values.

    Scott's bandwidth std * n^(-1/5), i.e. scipy.stats.gaussian_kde in 1-D (without importing
    scipy.stats, which costs a notebook kernel about a second).
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(np.unique(values)) < 2:
        return None
    bw = values.std(ddof=1) * len(values) ** (-0.2)
    z = (np.asarray(x, dtype=np.float64)[:, None] - values[None, :]) / bw  # (len(x), n)
    return np.exp(-0.5 * z**2).mean(axis=1) / (bw * np.sqrt(2 * np.pi))


def plot_f0_distributions(ax: plt.Axes, f0_by_source: dict[str, np.ndarray], edges: np.ndarray,
                          f0_true: float | None = None) -> None:
    """f0 histograms as probabilities per bin (sum 1, protocol step 8) with KDE lines.

    The KDE is drawn as density x bin width so that it reads on the same probability axis.
    """
    edges = np.asarray(edges, dtype=np.float64)
    x = np.linspace(edges[0], edges[-1], 800)
    width = float(np.mean(np.diff(edges)))
    for source, values in f0_by_source.items():
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        colour, style = SOURCE_COLOURS.get(source, "0.4"), _line_style(source)
        counts, _ = np.histogram(values, bins=edges)
        label = f"{source} (n={len(values)})"
        if counts.sum() == 0:
            ax.plot([], [], color=colour, ls=style, label=f"{source} (no f0 in band)")
            continue
        prob = counts / counts.sum()
        ax.stairs(prob, edges, fill=True, color=colour, alpha=0.10)
        ax.stairs(prob, edges, color=colour, lw=0.8, ls=style)
        kde = f0_kde(values, x)
        if kde is None:  # a single distinct value: no bandwidth, the bars say it all
            ax.plot([], [], color=colour, ls=style, label=label)
        else:
            ax.plot(x, kde * width, color=colour, lw=1.6, ls=style, label=label)
    if f0_true is not None and np.isfinite(f0_true):
        ax.axvline(f0_true, ls="--", color="0.3", lw=1.2, label=f"true f0 {f0_true:.2f} Hz")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("f0 (Hz)")
    ax.set_ylabel("probability per bin (KDE: density x bin width)")
    ax.legend(fontsize=7, loc="upper right", ncol=2)


def plot_median_hvsr(ax: plt.Axes, grid: np.ndarray, medians: dict[str, np.ndarray],
                     f0_true: float | None = None) -> None:
    """Median HVSR per source (log H/V) on the protocol's linear 1-20 Hz grid."""
    for source, median in medians.items():
        if np.asarray(median).shape != np.asarray(grid).shape:
            raise ValueError(f"median HVSR of {source} has shape {np.shape(median)}, "
                             f"grid has {np.shape(grid)}")
        ax.plot(grid, median, color=SOURCE_COLOURS.get(source, "0.4"), ls=_line_style(source),
                lw=1.6, label=source)
    if f0_true is not None and np.isfinite(f0_true):
        ax.axvline(f0_true, ls="--", color="0.3", lw=1.2, label=f"true f0 {f0_true:.2f} Hz")
    ax.set_yscale("log")
    plain_log(ax.yaxis)
    ax.set_xlim(grid[0], grid[-1])
    ax.set_xlabel("Frequency (Hz)")
    ax.set_ylabel("median H/V")
    ax.grid(True, which="both", lw=0.3, color="0.85")
    ax.legend(fontsize=7, loc="upper right", ncol=2)


def combined_station(station: str, f0_by_source: dict[str, np.ndarray], edges: np.ndarray,
                     grid: np.ndarray, medians: dict[str, np.ndarray],
                     f0_true: float | None = None) -> plt.Figure:
    """The paper's combined figure for one station: f0 distributions over median HVSR curves."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7.5), sharex=True)
    plot_f0_distributions(top, f0_by_source, edges, f0_true)
    top.set_xlabel("")
    top.set_title("f0 distribution (histogram and KDE)", fontsize=10)
    plot_median_hvsr(bottom, grid, medians, f0_true)
    bottom.set_title("median HVSR", fontsize=10)
    fig.suptitle(f"Station {station}: real, generated and reconstructed records")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Figure 2: similarity matrices


@dataclass
class MatrixPanel:
    """One similarity matrix (values 0-1) with its row/column labels and title."""

    matrix: np.ndarray
    row_labels: list[str]
    col_labels: list[str]
    title: str
    xlabel: str = ""
    ylabel: str = ""


def _group_edges(labels: list[str]) -> list[float]:
    """Positions between consecutive labels whose station (first word) changes."""
    stations = [label.split()[0] if label.split() else "" for label in labels]
    return [i - 0.5 for i in range(1, len(stations)) if stations[i] != stations[i - 1]]


def plot_similarity(ax: plt.Axes, panel: MatrixPanel, annotate: bool = True
                    ) -> matplotlib.image.AxesImage:
    """Grey-scale matrix (vmin 0, vmax 1; darker = more similar) with station blocks outlined."""
    m = np.asarray(panel.matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape != (len(panel.row_labels), len(panel.col_labels)):
        raise ValueError(f"{panel.title!r}: matrix shape {m.shape} does not match "
                         f"{len(panel.row_labels)} row and {len(panel.col_labels)} column labels")
    image = ax.imshow(m, cmap="Greys", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(m.shape[1]), panel.col_labels, rotation=90, fontsize=7)
    ax.set_yticks(range(m.shape[0]), panel.row_labels, fontsize=7)
    for pos in _group_edges(panel.row_labels):
        ax.axhline(pos, color="tab:red", lw=0.6)
    for pos in _group_edges(panel.col_labels):
        ax.axvline(pos, color="tab:red", lw=0.6)
    if annotate:
        size = max(4.0, min(9.0, 80.0 / max(m.shape)))
        for (i, j), value in np.ndenumerate(m):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=size,
                        color="white" if value > 0.55 else "black")
    ax.set_title(panel.title, fontsize=10)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    return image


def similarity_figure(panels: list[MatrixPanel], ncols: int = 2, suptitle: str = "",
                      panel_size: float = 6.5) -> plt.Figure:
    """Matrices side by side on one shared 0-1 grey scale (one colour bar)."""
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols + 1.5, panel_size * nrows),
                             squeeze=False, layout="constrained")
    image = None
    for ax, panel in zip(axes.flat, panels):
        image = plot_similarity(ax, panel)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="similarity 1 - JS distance (base 2)")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


# --------------------------------------------------------------------------------------------
# Figure 4: real vs generated waveforms and their Fourier amplitude spectra


def waveform_comparison(station: str, records: dict[str, np.ndarray], titles: dict[str, str],
                        fas_freqs: np.ndarray, fas: dict[str, np.ndarray],
                        median_freqs: np.ndarray | None = None,
                        median_fas: dict[str, np.ndarray] | None = None,
                        fs: float = 100.0) -> plt.Figure:
    """Left: one record (3, T) cm/s^2 per source. Middle: their smoothed FAS (3, F) cm/s per
    component. Right: the station's median smoothed FAS per source (when given)."""
    n = len(records)
    fig = plt.figure(figsize=(14, 2.4 * max(n, 3)))
    spec = fig.add_gridspec(max(n, 3), 3, width_ratios=[1.7, 1, 1])
    for row, (source, record) in enumerate(records.items()):
        ax = fig.add_subplot(spec[row, 0])
        plot_record(ax, record, fs, titles.get(source, source), SOURCE_COLOURS.get(source, "k"))
    for c, name in enumerate(COMPONENT_NAMES):
        ax = fig.add_subplot(spec[c, 1])
        for source, spectrum in fas.items():
            if spectrum.shape != (3, len(fas_freqs)):
                raise ValueError(f"FAS of {source} has shape {spectrum.shape}, expected "
                                 f"(3, {len(fas_freqs)})")
            ax.plot(fas_freqs, spectrum[c], color=SOURCE_COLOURS.get(source, "k"), lw=1.2,
                    label=source)
        log_axes(ax)
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([0.1, 0.2, 0.5, 1, 2, 5, 10, 20]))
        ax.set_ylabel("FAS (cm/s)")
        ax.set_title(f"component {name}: smoothed Fourier amplitude", fontsize=9)
        ax.grid(True, which="major", lw=0.3, color="0.85")
        if c == 0:
            ax.legend(fontsize=7)
        if c == 2:
            ax.set_xlabel("Frequency (Hz)")
    if median_fas:
        ax = fig.add_subplot(spec[:, 2])
        for source, spectrum in median_fas.items():
            ax.plot(median_freqs, spectrum, color=SOURCE_COLOURS.get(source, "k"), lw=1.4,
                    ls=_line_style(source), label=source)
        log_axes(ax)
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([0.1, 0.2, 0.5, 1, 2, 5, 10, 20]))
        ax.set_xlabel("Frequency (Hz)")
        ax.set_ylabel("median FAS (cm/s)")
        ax.set_title(f"station {station}: median smoothed FAS of all records\n"
                     "horizontal (geometric mean of E and N)", fontsize=9)
        ax.grid(True, which="major", lw=0.3, color="0.85")
        ax.legend(fontsize=7)
    fig.suptitle(f"Station {station}: real vs generated records (E, N, U)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Figure 5: intensity-measure distributions


@dataclass
class Measure:
    """A column of the records table to draw, its axis label (with units) and scale."""

    column: str
    label: str
    log: bool = True


def plot_grouped_boxes(ax: plt.Axes, table: pd.DataFrame, measure: Measure, stations: list[str],
                       sources: tuple[str, ...] = GENERATED) -> int:
    """Box plots of one measure per station (groups) and source (colours); returns boxes drawn.

    Non-finite values, and non-positive ones on a log axis, are left out.
    """
    width = 0.8 / len(sources)
    drawn = 0
    for i, station in enumerate(stations):
        for k, source in enumerate(sources):
            rows = (table["station"] == station) & (table["source"] == source)
            values = table.loc[rows, measure.column].to_numpy(dtype=np.float64)
            values = values[np.isfinite(values) & ((values > 0) | (not measure.log))]
            if len(values) == 0:
                continue
            pos = i - 0.4 + width * (k + 0.5)
            box = ax.boxplot(values, positions=[pos], widths=width * 0.85, patch_artist=True,
                             showfliers=True, flierprops={"markersize": 2},
                             medianprops={"color": "black"}, manage_ticks=False)
            box["boxes"][0].set(facecolor=SOURCE_COLOURS.get(source, "0.5"), alpha=0.6)
            drawn += 1
    ax.set_xticks(range(len(stations)), stations)
    ax.set_xlim(-0.6, len(stations) - 0.4)
    ax.set_xlabel("station")
    ax.set_ylabel(measure.label)
    if measure.log:
        ax.set_yscale("log")
        plain_log(ax.yaxis)
    ax.grid(True, axis="y", which="major", lw=0.3, color="0.85")
    return drawn


def intensity_distributions(table: pd.DataFrame, stations: list[str], measures: list[Measure],
                            sources: tuple[str, ...] = GENERATED, ncols: int = 3) -> plt.Figure:
    """One panel per measure; per station one box per source."""
    missing = [m.column for m in measures if m.column not in table.columns]
    if missing:
        raise KeyError(f"records table has no column(s) {missing}")
    nrows = -(-(len(measures) + 1) // ncols)  # one spare slot for the legend
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), squeeze=False)
    flat = list(axes.flat)
    for ax, measure in zip(flat, measures):
        plot_grouped_boxes(ax, table, measure, stations, sources)
    for ax in flat[len(measures):]:
        ax.set_axis_off()
    handles = [matplotlib.patches.Patch(facecolor=SOURCE_COLOURS.get(s, "0.5"), alpha=0.6, label=s)
               for s in sources]
    flat[len(measures)].legend(handles=handles, loc="center", fontsize=10, title="records")
    fig.suptitle("Ground-motion intensity measures per station: real vs generated")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Figure 6: training curves


def plot_losses(ax: plt.Axes, losses: pd.DataFrame, title: str, ylabel: str = "loss") -> int:
    """Every loss column of a losses.tsv table (epoch, ...) against epoch; returns lines drawn."""
    if "epoch" not in losses.columns:
        raise KeyError(f"{title}: losses table has no 'epoch' column (has {list(losses.columns)})")
    # loss terms only: not bookkeeping columns (phase, seconds)
    columns = [c for c in losses.columns if c not in ("epoch", "phase", "seconds")
               and pd.api.types.is_numeric_dtype(losses[c])]
    epoch = losses["epoch"].to_numpy()
    if "phase" in losses.columns:  # several phases in one table: epochs run on across them
        epoch = np.arange(1, len(losses) + 1)
        phases = losses["phase"].astype(str).to_numpy()
        for i in np.flatnonzero(phases[1:] != phases[:-1]):
            ax.axvline(epoch[i] + 0.5, color="0.6", lw=0.8, ls="--")
            ax.text(epoch[i] + 0.5, 1.0, f" {phases[i + 1]}", transform=ax.get_xaxis_transform(),
                    va="top", fontsize=7, color="0.4")
    positive = True
    for column in columns:
        values = losses[column].to_numpy(dtype=np.float64)
        positive &= bool(np.all(values[np.isfinite(values)] > 0))
        ax.plot(epoch, values, marker="o", ms=2.5, lw=1.2,
                label=column.replace("_loss", "").replace("_", " "))
    if positive and columns:  # losses span decades: log scale unless a column touches 0
        ax.set_yscale("log")
        plain_log(ax.yaxis)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", lw=0.3, color="0.85")
    ax.legend(fontsize=8)
    return len(columns)


def training_curves(panels: dict[str, pd.DataFrame], ylabels: dict[str, str] | None = None
                    ) -> plt.Figure:
    """One panel per training run (title -> losses table), side by side."""
    ylabels = ylabels or {}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for ax, (title, losses) in zip(axes[0], panels.items()):
        plot_losses(ax, losses, title, ylabels.get(title, "loss"))
    fig.suptitle("Training curves")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Figure 7: recovered f0 against the true site f0


def ground_truth_f0(summary: pd.DataFrame, targets: list[str], tolerance: float = 0.05,
                    sources: tuple[str, ...] = GENERATED) -> plt.Figure:
    """Median f0 (with quartile bars) per station and source against the true site f0 (Hz).

    `summary` has columns station, source, f0_true_hz, f0_median_hz, f0_q25_hz, f0_q75_hz.
    The 1:1 line and the +-tolerance band are drawn; legends count stations inside the band.
    """
    known = summary[np.isfinite(summary["f0_true_hz"].to_numpy(dtype=np.float64))]
    fig, ax = plt.subplots(figsize=(6.5, 6.5))
    values = known[["f0_true_hz", "f0_median_hz", "f0_q25_hz", "f0_q75_hz"]].to_numpy(float)
    finite = values[np.isfinite(values)]
    lo = min(1.0, finite.min() * 0.9) if finite.size else 1.0
    hi = max(20.0, finite.max() * 1.1) if finite.size else 20.0
    line = np.geomspace(lo, hi, 100)
    ax.fill_between(line, line * (1 - tolerance), line * (1 + tolerance), color="0.85",
                    label=f"±{tolerance:.0%} band")
    ax.plot(line, line, color="0.4", lw=0.8, label="1:1")
    for source in sources:
        rows = known[known["source"] == source]
        if rows.empty:
            continue
        x, y = rows["f0_true_hz"].to_numpy(float), rows["f0_median_hz"].to_numpy(float)
        err = np.abs(np.vstack([y - rows["f0_q25_hz"].to_numpy(float),
                                rows["f0_q75_hz"].to_numpy(float) - y]))
        inside = int(np.sum(np.abs(y / x - 1) <= tolerance))
        colour = SOURCE_COLOURS.get(source, "0.4")
        ax.errorbar(x, y, yerr=err, fmt=MARKERS.get(source, "o"), mfc="none", mec=colour,
                    ecolor=colour, elinewidth=0.8, capsize=2, ms=7,
                    label=f"{source} ({inside}/{len(rows)} within ±{tolerance:.0%})")
    for station, f0_true in known.drop_duplicates("station")[["station", "f0_true_hz"]].itertuples(
            index=False):
        if station in targets:
            ax.annotate(station, (f0_true, f0_true), xytext=(6, -12), textcoords="offset points",
                        fontsize=8)
    log_axes(ax)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("true site f0 (Hz)")
    ax.set_ylabel("recovered median f0 (Hz)  [bars: quartiles]")
    ax.set_title("Ground truth check: recovered f0 against the true site f0")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Figure 8: novelty (does the generator copy its training records?)

# novelty.csv "model" column -> (box label, colour)
NOVELTY_GROUPS = {"real": ("Real vs real", registry.REAL_COLOUR),
                  "holdout": ("Held-out real", "0.45"),
                  **{g.name: (g.gen_label, g.colour) for g in registry.GENERATORS}}


def novelty_figure(table: pd.DataFrame, stations: list[str], ncols: int = 5,
                   ylabel: str = "distance to nearest training record (1 - correlation)"
                   ) -> plt.Figure:
    """Per station, nearest-training-record distances of generated records (boxes with points)
    next to the real-to-real nearest-neighbour distances of the station's training records."""
    ncols = min(ncols, max(len(stations), 1))
    nrows = -(-len(stations) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 4.0 * nrows), sharey=True,
                             squeeze=False)
    rng = np.random.default_rng(0)  # jitter of the points only
    groups = {m: g for m, g in NOVELTY_GROUPS.items() if (table["model"] == m).any()}
    for ax, station in zip(axes.flat, stations):
        for k, (model, (_, colour)) in enumerate(groups.items()):
            rows = (table["station"] == station) & (table["model"] == model)
            values = table.loc[rows, "nn_distance"].to_numpy(dtype=np.float64)
            values = values[np.isfinite(values)]
            if len(values) == 0:
                continue
            box = ax.boxplot(values, positions=[k], widths=0.6, patch_artist=True,
                             showfliers=False, medianprops={"color": "black"},
                             manage_ticks=False)
            box["boxes"][0].set(facecolor=colour, alpha=0.35)
            ax.plot(k + rng.uniform(-0.18, 0.18, len(values)), values, ".", ms=3, color=colour)
        ax.set_xticks(range(len(groups)), [n for n, _ in groups.values()], rotation=30,
                      ha="right", fontsize=8)
        ax.set_title(f"station {station}", fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(True, axis="y", lw=0.3, color="0.85")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[len(stations):]:
        ax.set_axis_off()
    fig.suptitle("Novelty: generated records vs their nearest training record "
                 "(near 0 = copies)")
    fig.tight_layout()
    return fig
