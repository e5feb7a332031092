"""figures/realism.png: what a seismologist checks first, per source, against the real records.

Six panels: (a) median ln PSA residual vs period with each source's perfect-generator 5-95 %
band, (b) the ln-std ratio of PSA the same way, (c) D5-95 and (d) PGA distributions,
(e) the burst-count distribution, (f) one example envelope per source. Inputs are the tables
and features the realism library returns; nothing is computed here beyond display aids.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


if TYPE_CHECKING:
    from timesnet_gen.evaluation.realism_features import Features

DPI = 100  # realism.png stays well below 400 kB
POOLED = "pooled"


def _colours(names: list[str]) -> dict[str, str]:
    """The registry's colours for its sources (labels); the first real source black (the
    registry's real colour), every other source a tab10 colour no registered source uses."""
    from timesnet_gen.registry import REAL, REAL_COLOUR, source_colours

    known = source_colours()
    used = {matplotlib.colors.to_hex(c) for c in known.values()}
    free = iter([c for c in plt.get_cmap("tab10").colors
                 if matplotlib.colors.to_hex(c) not in used] * len(names))
    out: dict[str, str] = {}
    for n in names:
        if n in known:
            out[n] = known[n]
        elif n.startswith(REAL) and REAL_COLOUR not in out.values():
            out[n] = REAL_COLOUR
        else:
            out[n] = next(free)
    return out


def _plain_log_x(ax: plt.Axes) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _curve_panel(ax, curves: pd.DataFrame, prefix: str, colours: dict, ylabel: str, ideal):
    for name, colour in colours.items():
        rows = curves[curves["source"] == name].sort_values("period_s")
        if rows.empty or rows[prefix].isna().all():
            continue
        p = rows["period_s"].to_numpy()
        ax.fill_between(p, rows[f"{prefix}_band_lo"], rows[f"{prefix}_band_hi"],
                        color=colour, alpha=0.12, lw=0)
        ax.plot(p, rows[prefix], color=colour, lw=1.6, marker="o", ms=3, label=name)
    ax.axhline(ideal, color="0.3", lw=0.8, ls=":")
    _plain_log_x(ax)
    ax.set_xlabel("period (s)")
    ax.set_ylabel(ylabel)


def _distribution_panel(ax, features: dict, attr: str, colours: dict, xlabel: str) -> None:
    values = {n: getattr(f, attr)[f.valid] for n, f in features.items()}
    values = {n: v[np.isfinite(v) & (v > 0)] for n, v in values.items()}
    pooled = np.concatenate([v for v in values.values() if len(v)] or [np.ones(1)])
    edges = np.geomspace(pooled.min() * 0.9, pooled.max() * 1.1, 25)
    for name, v in values.items():
        if len(v):
            # Share of records per log-spaced bin (a density would favour small values).
            ax.hist(v, bins=edges, weights=np.full(len(v), 1.0 / len(v)), histtype="step",
                    lw=1.5, color=colours[name], label=f"{name} (median {np.median(v):.3g})")
    _plain_log_x(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of records")
    ax.legend(fontsize=7)


def _burst_panel(ax, features: dict, colours: dict) -> None:
    labels = ["0", "1", "2", "3+"]
    width = 0.8 / max(len(features), 1)
    for i, (name, f) in enumerate(features.items()):
        counts = np.clip(f.n_bursts[f.valid], 0, 3)
        share = np.bincount(counts, minlength=4)[:4] / max(len(counts), 1)
        ax.bar(np.arange(4) + (i - (len(features) - 1) / 2) * width, share, width,
               color=colours[name], label=name)
    ax.set_xticks(np.arange(4), labels)
    ax.set_xlabel("strong-motion bursts per record")
    ax.set_ylabel("share of records")


def _envelope_panel(ax, features: dict, colours: dict) -> None:
    for i, (name, f) in enumerate(features.items()):
        valid = np.flatnonzero(f.valid)
        if not len(valid):
            continue
        env = f.envelope[valid[0]]
        ax.plot(f.env_times, env / env.max() + 1.2 * i, color=colours[name], lw=1.2)
        ax.text(f.env_times[-1], 1.2 * i + 0.5, f" {name}", color=colours[name], fontsize=7,
                va="center")
    ax.set_yticks([])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("horizontal envelope / peak (first record of each source)")


def realism_figure(psa_curves: pd.DataFrame, features: dict[str, Features],
                   station: str = POOLED) -> plt.Figure:
    """The six-panel realism figure; features: {source: Features} (e.g. all stations joined),
    the real reference included under its own name."""
    curves = psa_curves[psa_curves["station"] == station]
    names = list(dict.fromkeys([*features, *curves["source"].unique()]))
    colours = _colours(names)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    (a, b, c), (d, e, f) = axes
    curve_colours = {n: colours[n] for n in curves["source"].unique()}
    _curve_panel(a, curves, "resid", curve_colours, "median ln PSA residual (RotD50, 5 %)", 0.0)
    a.set_title("(a) response spectrum vs held-out real records\n(shade: perfect generator "
                "5-95 %)", fontsize=9)
    a.legend(fontsize=7)
    _curve_panel(b, curves, "std_ratio", curve_colours, "ln-std ratio of PSA (source / real)",
                 1.0)
    b.set_title("(b) record-to-record spread of PSA", fontsize=9)
    feat_colours = {n: colours[n] for n in features}
    _distribution_panel(c, features, "d5_95", feat_colours, "D5-95 significant duration (s)")
    c.set_title("(c) duration", fontsize=9)
    _distribution_panel(d, features, "pga", feat_colours, "PGA (cm/s$^2$, geometric mean E, N)")
    d.set_title("(d) peak ground acceleration", fontsize=9)
    _burst_panel(e, features, feat_colours)
    e.set_title("(e) separate strong-motion bursts (real records: one)", fontsize=9)
    e.legend(fontsize=7)
    _envelope_panel(f, features, feat_colours)
    f.set_title("(f) example envelope per source", fontsize=9)
    fig.suptitle(f"Realism of the records, station {station}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_realism(psa_curves: pd.DataFrame, features: dict[str, Features], path: str | Path,
                 station: str = POOLED) -> Path:
    """Write figures/realism.png (dpi 100) atomically; returns the path."""
    from timesnet_gen.plotting import save

    return save(realism_figure(psa_curves, features, station), path, dpi=DPI)
