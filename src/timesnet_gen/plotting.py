"""Figure functions: the data stage and the notebooks call these; none of them computes science.

Every function takes arrays/tables that a pipeline stage wrote and returns a matplotlib Figure;
`save` writes it atomically at print resolution.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 300
COMPONENT_NAMES = ("E", "N", "U")
SOURCE_COLOURS = {
    "Real": "black",
    "TimesNet-Gen": "tab:red",
    "TimesNet-Recon": "tab:orange",
    "VAE-Gen": "tab:blue",
    "VAE-Recon": "tab:cyan",
}


def save(fig: plt.Figure, path: str | Path) -> Path:
    """Write a PNG at print resolution via a temporary file, then close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
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


def plot_record(ax: plt.Axes, record: np.ndarray, fs: float = 100.0, title: str = "") -> None:
    """Three components (3, T) in cm/s^2, offset vertically, E N U from top."""
    t = np.arange(record.shape[1]) / fs
    step = 1.2 * float(np.abs(record).max() or 1.0)
    for i, (name, trace) in enumerate(zip(COMPONENT_NAMES, record)):
        ax.plot(t, trace - i * step, lw=0.4, color="black")
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
