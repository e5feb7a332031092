"""`timesnet-gen hvsr`: earthquake HVSR of every record in any folder `ingest` can read.

    timesnet-gen hvsr FOLDER... --out DIR [--params params.yaml] [--smoothing konno-ohmachi]
                     [--bandwidth 40] [--fmin 1] [--fmax 20] [...every evaluate key...]
                     [--scale ...] [--inventory ...] [--orientation ...] [--window ...]

The workflow seismologists run with hvsrpy on earthquake records, on the project's own
evaluation library: each record is read, converted and windowed exactly as `ingest` does
(6000 samples at 100 Hz, shorter records zero-padded), then the paper's HVSR protocol
(evaluation/spectra, smoothing, hvsr) gives one curve and its f0 (frequency of the maximum)
per record. Per station: the lognormal median f0 = exp(mean ln f0) and sigma_ln (ddof 1;
undefined with one record), and the lognormal median curve exp(mean ln H/V) with its 16-84 %
band exp(mean ln H/V -/+ std ln H/V) on the evaluate median grid, as in hvsrpy.
Options: the evaluate section of --params (defaults when absent); a flag per evaluate key
overrides it (--smoothing paper|konno-ohmachi, --bandwidth, --fmin ...).

Writes DIR (atomically): records.csv (per record: f0_hz, a0 = H/V at f0, problem, and the
record's metadata), curves.npz ("freqs", "curves" rows = records.csv, "grid",
"<station>/median|p16|p84"), summary.csv and summary.md (per station), quarantine.csv (what
could not be read, with the reason), figures/<station>.png, and f0_vs_vs30.png when at least
two stations carry a header VS30.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing
from pathlib import Path

import numpy as np
import pandas as pd

from timesnet_gen.stage import stage_parser
from timesnet_gen.config import EvaluateParams, load_params, params_from_dict, to_dict
from timesnet_gen.records import SAMPLING_RATE

FIG_DPI = 100
RECORD_COLUMNS = (
    "network", "starttime", "event_id", "magnitude", "distance_km", "vs30", "site_class",
    "station_name", "station_latitude", "station_longitude", "units_original", "processing",
    "window", "source_path",
)
SUMMARY_COLUMNS = (
    "station", "n_records", "n_valid", "n_f0_at_edge", "f0_lognormal_median_hz", "sigma_ln_f0", "f0_min_hz",
    "f0_max_hz", "f0_median_curve_hz", "a0_median_curve", "vs30", "site_class",
    "distance_km_min",
)


# ------------------------------------------------------------------------------------------
# statistics (pure functions over arrays)


def lognormal_curve(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, G) positive curves -> (median, p16, p84) = exp(mean ln -/+ std ln), (G,) each.

    NaN rows are left out; std uses ddof 1 (0 for a single curve: the band is the curve).
    """
    curves = np.atleast_2d(np.asarray(curves, dtype=np.float64))
    curves = curves[np.isfinite(curves).all(axis=1) & (curves > 0).all(axis=1)]
    if len(curves) == 0:
        nan = np.full(curves.shape[1], np.nan)
        return nan, nan.copy(), nan.copy()
    ln = np.log(curves)
    mean = ln.mean(axis=0)
    std = ln.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros_like(mean)
    return np.exp(mean), np.exp(mean - std), np.exp(mean + std)


def f0_statistics(f0_values: np.ndarray) -> dict:
    """Lognormal f0 of a station: median exp(mean ln f0), sigma_ln (ddof 1, NaN for n < 2)."""
    x = np.asarray(f0_values, dtype=np.float64)
    x = x[np.isfinite(x) & (x > 0)]
    if len(x) == 0:
        return {"n_valid": 0, "f0_lognormal_median_hz": math.nan, "sigma_ln_f0": math.nan,
                "f0_min_hz": math.nan, "f0_max_hz": math.nan}
    ln = np.log(x)
    return {
        "n_valid": int(len(x)),
        "f0_lognormal_median_hz": float(np.exp(ln.mean())),
        "sigma_ln_f0": float(ln.std(ddof=1)) if len(x) > 1 else math.nan,
        "f0_min_hz": float(x.min()),
        "f0_max_hz": float(x.max()),
    }


def record_hvsr(waveforms: np.ndarray, params: EvaluateParams, fs: float = SAMPLING_RATE
                ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, list[str | None]]:
    """(n, 3, T) cm/s^2 -> (freqs (F,), curves (n, F), per-record table, problems).

    Table columns: f0_hz (global maximum), a0 (H/V there), f0_at_edge (the maximum is the
    first or last frequency of the band: no peak inside fmin-fmax).
    """
    from timesnet_gen.evaluation.hvsr import f0, hvsr_details

    freqs, curves, problems = hvsr_details(waveforms, fs, params)
    f0_hz = f0(freqs, curves)
    finite = np.isfinite(curves).all(axis=1)
    a0 = np.where(finite, np.max(np.where(finite[:, None], curves, 0.0), axis=1), np.nan)
    edge = finite & ((f0_hz <= freqs[0]) | (f0_hz >= freqs[-1]))
    return freqs, curves, pd.DataFrame({"f0_hz": f0_hz, "a0": a0, "f0_at_edge": edge}), problems


def _first(values: pd.Series) -> object:
    values = values.dropna()
    values = values[values.astype(str) != ""]
    return values.iloc[0] if len(values) else None


def station_summary(table: pd.DataFrame, freqs: np.ndarray, curves: np.ndarray,
                    params: EvaluateParams) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Per station: f0 statistics, median-curve f0/A0, header site data.

    Returns (summary table, grid (G,), {station: (median, p16, p84)} on the grid).
    """
    from timesnet_gen.evaluation.hvsr import interpolate_curves

    grid = np.linspace(params.fmin, params.fmax, params.n_median_points)
    rows, bands = [], {}
    for station, group in table.groupby("station", sort=True):
        index = group.index.to_numpy()
        band = lognormal_curve(interpolate_curves(freqs, curves[index], grid))
        bands[station] = band
        median = band[0]
        peak = int(np.nanargmax(median)) if np.isfinite(median).any() else None
        vs30 = pd.to_numeric(group.get("vs30", pd.Series(dtype=float)), errors="coerce")
        distance = pd.to_numeric(group.get("distance_km", pd.Series(dtype=float)),
                                 errors="coerce")
        rows.append({
            "station": station,
            "n_records": len(group),
            **f0_statistics(group["f0_hz"].to_numpy()),
            "n_f0_at_edge": int(group["f0_at_edge"].sum()),
            "f0_median_curve_hz": float(grid[peak]) if peak is not None else math.nan,
            "a0_median_curve": float(median[peak]) if peak is not None else math.nan,
            "vs30": float(vs30.dropna().iloc[0]) if vs30.notna().any() else math.nan,
            "site_class": _first(group["site_class"]) if "site_class" in group else None,
            "distance_km_min": float(distance.min()) if distance.notna().any() else math.nan,
        })
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS)), grid, bands


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of finite pairs (NaN with fewer than 3)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    return float(spearmanr(x[keep], y[keep]).statistic) if keep.sum() >= 3 else math.nan


# ------------------------------------------------------------------------------------------
# tables and figures


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A pipe table; floats to `digits` significant figures, NaN/None as empty cells."""
    def cell(value: object) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.{digits}g}"
        return str(value)

    lines = ["| " + " | ".join(frame.columns) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def station_figure(station: str, freqs: np.ndarray, curves: np.ndarray, grid: np.ndarray,
                   band: tuple[np.ndarray, np.ndarray, np.ndarray], row: dict,
                   smoothing: str) -> object:
    """Per-record curves (grey), lognormal median and 16-84 % band, median f0 +- sigma_ln."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from timesnet_gen.plotting import log_axes

    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for curve in curves:
        if np.isfinite(curve).all():
            ax.plot(freqs, curve, lw=0.5, color="0.65")
    median, p16, p84 = band
    if np.isfinite(median).all():
        ax.fill_between(grid, p16, p84, color="tab:blue", alpha=0.25, lw=0,
                        label="16-84 % (lognormal)")
        ax.plot(grid, median, lw=1.8, color="black", label="lognormal median")
    f0 = row["f0_lognormal_median_hz"]
    sigma = row["sigma_ln_f0"]
    if math.isfinite(f0):
        if math.isfinite(sigma) and sigma > 0:
            ax.axvspan(f0 * math.exp(-sigma), f0 * math.exp(sigma), color="tab:red", alpha=0.12,
                       lw=0)
        label = f"f0 {f0:.2f} Hz" + (f", sigma_ln {sigma:.2f}" if math.isfinite(sigma) else "")
        ax.axvline(f0, ls="--", color="tab:red", lw=1.0, label=label)
    log_axes(ax)
    ax.set_xlim(grid[0], grid[-1])
    ax.set_xlabel("Frequency (Hz)")
    ax.set_ylabel("H/V")
    vs30 = row.get("vs30")
    site = f", VS30 {vs30:.0f} m/s" if isinstance(vs30, float) and math.isfinite(vs30) else ""
    ax.set_title(f"{station}: {row['n_valid']}/{row['n_records']} record(s){site} "
                 f"[{smoothing}]", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def _vs30_panel(ax: object, data: pd.DataFrame, column: str, ylabel: str,
                edge: np.ndarray) -> str:
    """One scatter of `column` against VS30, coloured by EC8 class; returns its rho text."""
    from timesnet_gen.plotting import plain_log

    classes = data["site_class"].fillna("?").astype(str).to_numpy()
    for i, site_class in enumerate(sorted(set(classes))):
        for at_edge in (False, True):
            part = data[(classes == site_class) & (edge == at_edge)]
            ax.scatter(part["vs30"], part[column], s=22, zorder=3, edgecolors=f"C{i}",
                       facecolors="none" if at_edge else f"C{i}",
                       label=None if at_edge else f"EC8 {site_class}")
    for row in data.itertuples(index=False):
        ax.annotate(str(row.station), (row.vs30, getattr(row, column)), fontsize=5.5,
                    xytext=(3, 2), textcoords="offset points", color="0.35")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log(ax.xaxis)
    plain_log(ax.yaxis)
    ax.set_xlabel("VS30 from the record header (m/s)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", lw=0.3, alpha=0.5)
    rho = spearman(data["vs30"], data[column])
    rho_inner = spearman(data["vs30"][~edge], data[column][~edge])
    return f"Spearman rho {rho:.2f} ({rho_inner:.2f} without band-edge maxima)"


def vs30_figure(summary: pd.DataFrame, title: str = "") -> object:
    """f0 (lognormal median, Hz) and the median-curve peak A0 against header VS30 (m/s), one
    point per station; hollow markers: the maximum sits at the band edge (no peak inside)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = summary[np.isfinite(summary["vs30"]) & np.isfinite(summary["f0_lognormal_median_hz"])]
    edge = (data["n_f0_at_edge"] == data["n_valid"]).to_numpy()
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.9))
    rho_f0 = _vs30_panel(axes[0], data, "f0_lognormal_median_hz",
                         "f0 of the earthquake HVSR (Hz)", edge)
    rho_a0 = _vs30_panel(axes[1], data, "a0_median_curve", "A0 = H/V at f0", edge)
    axes[0].set_title(f"f0: {rho_f0}", fontsize=8)
    axes[1].set_title(f"A0: {rho_a0}", fontsize=8)
    if edge.any():
        axes[0].scatter([], [], s=22, facecolors="none", edgecolors="0.3",
                        label="maximum at band edge")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle(f"{title}{len(data)} stations, one point per station", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7,
               frameon=False)
    return fig


def _save(fig: object, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=FIG_DPI)
    plt.close(fig)


# ------------------------------------------------------------------------------------------
# the command


def survey(waveforms: np.ndarray, records: pd.DataFrame, params: EvaluateParams,
           fs: float = SAMPLING_RATE) -> dict:
    """Everything `hvsr` writes, in memory: tables, curves and station bands."""
    freqs, curves, values, problems = record_hvsr(waveforms, params, fs)
    table = pd.DataFrame({
        "record_id": records["record_id"].astype(str).to_numpy(),
        "station": records["station"].astype(str).to_numpy(),
        **{c: values[c].to_numpy() for c in values.columns},
        "problem": [p or "" for p in problems],
    })
    for column in RECORD_COLUMNS:
        if column in records.columns:
            table[column] = records[column].to_numpy()
    summary, grid, bands = station_summary(table, freqs, curves, params)
    return {"records": table, "freqs": freqs, "curves": curves, "summary": summary,
            "grid": grid, "bands": bands}


def write_survey(result: dict, quarantine: pd.DataFrame, out: Path, params: EvaluateParams,
                 sources: list[Path], title: str = "") -> None:
    """records.csv, curves.npz, summary.csv/.md, quarantine.csv, figures/ into out."""
    from timesnet_gen.atomic import staged_dir

    with staged_dir(out, sources) as tmp:
        result["records"].to_csv(tmp / "records.csv", index=False, float_format="%.6g")
        bands = {f"{s}/{name}": b[i] for s, b in result["bands"].items()
                 for i, name in enumerate(("median", "p16", "p84"))}
        np.savez_compressed(tmp / "curves.npz", freqs=result["freqs"], curves=result["curves"],
                            grid=result["grid"], record_id=result["records"]["record_id"]
                            .to_numpy(str), **bands)
        summary = result["summary"]
        summary.to_csv(tmp / "summary.csv", index=False, float_format="%.6g")
        settings = {k: v for k, v in to_dict(params).items() if k in (
            "smoothing", "bandwidth", "fmin", "fmax", "horizontal", "highpass_hz", "grid")}
        (tmp / "summary.md").write_text(
            f"# Earthquake HVSR survey{': ' + title if title else ''}\n\n"
            f"{len(result['records'])} record(s) at {len(summary)} station(s); "
            f"{len(quarantine)} file(s)/record(s) could not be used (quarantine.csv).\n"
            f"Settings: {json.dumps(settings)}\n\n" + markdown_table(summary))
        quarantine.to_csv(tmp / "quarantine.csv", index=False)
        (tmp / "figures").mkdir()
        table = result["records"]
        for row in summary.to_dict("records"):
            index = table.index[table["station"] == row["station"]].to_numpy()
            fig = station_figure(row["station"], result["freqs"], result["curves"][index],
                                 result["grid"], result["bands"][row["station"]], row,
                                 params.smoothing)
            _save(fig, tmp / "figures" / f"{row['station']}.png")
        if (np.isfinite(summary["vs30"]) & np.isfinite(summary["f0_lognormal_median_hz"])
                ).sum() >= 2:
            _save(vs30_figure(summary, f"{title}: " if title else ""), tmp / "f0_vs_vs30.png")


def _flag_type(hint: object) -> dict:
    """argparse keywords for one EvaluateParams field annotation."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return {"choices": list(typing.get_args(hint))}
    if origin is list:
        return {"type": typing.get_args(hint)[0], "nargs": "+"}
    return {"type": hint}


def add_evaluate_flags(parser: argparse.ArgumentParser) -> None:
    """One --flag per EvaluateParams key (default: the --params value)."""
    group = parser.add_argument_group("evaluate keys (override --params)")
    hints = typing.get_type_hints(EvaluateParams)
    for field in dataclasses.fields(EvaluateParams):
        group.add_argument(f"--{field.name.replace('_', '-')}", dest=f"ev_{field.name}",
                           default=None, **_flag_type(hints[field.name]))


def evaluate_params(args: argparse.Namespace) -> EvaluateParams:
    """--params evaluate section (defaults without --params), flags override, validated."""
    base = load_params(args.params).evaluate if args.params else EvaluateParams()
    raw = to_dict(base)
    raw.update({f.name: getattr(args, f"ev_{f.name}") for f in dataclasses.fields(EvaluateParams)
                if getattr(args, f"ev_{f.name}") is not None})
    return params_from_dict({"evaluate": raw}).evaluate


def build_parser(verb: str = "hvsr") -> argparse.ArgumentParser:
    from timesnet_gen.io.ingest import add_reading_arguments

    parser = stage_parser(verb, __doc__)
    parser.add_argument("sources", nargs="+", type=Path, help="folders or files of records "
                        "(anything `ingest` reads, or a corpus folder)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (replaced)")
    parser.add_argument("--params", type=Path, default=None,
                        help="params file whose evaluate section is the base (default: "
                        "the built-in defaults)")
    parser.add_argument("--title", default="", help="title for summary.md and the figures")
    parser.add_argument("--vs30-figure", type=Path, default=None, metavar="PNG",
                        help="also write the f0/A0 against VS30 figure here (atomically)")
    add_evaluate_flags(parser)
    reading = parser.add_argument_group("reading (as in ingest)")
    add_reading_arguments(reading)
    return parser


def main(argv: list[str], verb: str = "hvsr") -> int:
    from timesnet_gen.io.ingest import check_any_record, collect, options_from_args

    from timesnet_gen.atomic import check_out

    args = build_parser(verb).parse_args(argv)
    check_out(args.out, args.sources)  # refused before anything is read
    params = evaluate_params(args)
    options = options_from_args(args)
    result = collect(args.sources, options, exclude=args.out.resolve())
    check_any_record(result, "read", shown=20)
    out = survey(result.waveforms, result.records, params)
    write_survey(out, result.quarantine.frame(), args.out, params, list(args.sources),
                 args.title)
    summary = out["summary"]
    if args.vs30_figure is not None:
        from timesnet_gen.atomic import staged_file

        with staged_file(args.vs30_figure) as tmp:
            fig = vs30_figure(summary, f"{args.title}: " if args.title else "")
            fig.savefig(tmp, dpi=FIG_DPI, format="png")
            import matplotlib.pyplot as plt

            plt.close(fig)
    valid = int(summary["n_valid"].sum())
    print(f"hvsr: {len(out['records'])} record(s), {valid} with an f0, at {len(summary)} "
          f"station(s); {len(result.quarantine)} skipped (quarantine.csv)")
    print(f"  wrote {args.out}/records.csv, curves.npz, summary.csv, summary.md, figures/")
    return 0
