"""`check-corpus` (the `data` stage): validate the corpus with the paper's HVSR protocol.

For every station with a known site f0 (the synthetic corpus) it measures the median f0 of the
records against the truth; for every corpus it summarises counts and ground-motion scaling.
Writes a metrics JSON and figures/corpus_overview.png (for each target station: an example
record, the HVSR curves with the true f0 marked, the f0 histogram).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from timesnet_gen.atomic import staged_file
from timesnet_gen.stage import stage_parser
from timesnet_gen.config import EvaluateParams, load_params
from timesnet_gen.corpus.format import Corpus, read_corpus
from timesnet_gen.evaluation import f0, hvsr, median_hvsr


def station_summary(corpus: Corpus, evaluate: EvaluateParams) -> tuple:
    """(per-station table: records, true f0, median / q10 / q90 of record f0, error in %;
    HVSR freqs; curves; f0 per record)."""
    freqs, curves = hvsr(corpus.waveforms, params=evaluate)
    f0_values = f0(freqs, curves)
    truth = corpus.stations.set_index("station")["f0_true_hz"] if (
        "f0_true_hz" in corpus.stations.columns) else pd.Series(dtype=float)
    rows = []
    for station, group in corpus.records.groupby("station", sort=True):
        values = f0_values[group.index.to_numpy()]
        true = float(truth.get(station, np.nan))
        median = float(np.median(values))
        rows.append({
            "station": station,
            "records": len(values),
            "f0_true_hz": true,
            "f0_median_hz": round(median, 4),
            "f0_q10_hz": round(float(np.quantile(values, 0.1)), 4),
            "f0_q90_hz": round(float(np.quantile(values, 0.9)), 4),
            "f0_error_pct": round(100 * (median / true - 1), 2) if np.isfinite(true) else None,
        })
    return pd.DataFrame(rows), freqs, curves, f0_values


def scaling(records: pd.DataFrame) -> dict:
    """Spearman correlations of PGA and duration with magnitude and distance."""
    out = {}
    for column in ("pga_cm_s2", "duration_model_s"):
        if column not in records.columns:
            continue
        for driver in ("magnitude", "distance_km"):
            if driver in records.columns:
                rho = spearmanr(records[driver], records[column]).statistic
                out[f"spearman_{column}_vs_{driver}"] = round(float(rho), 4)
    return out


def main(argv: list[str], verb: str = "check-corpus") -> int:
    parser = stage_parser(verb, __doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", default="data/raw", type=Path)
    parser.add_argument("--metrics", default="metrics/corpus.json", type=Path)
    parser.add_argument("--figure", default="figures/corpus_overview.png", type=Path)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    corpus = read_corpus(args.raw)
    summary, freqs, curves, f0_values = station_summary(corpus, params.evaluate)
    targets = [s for s in params.data.target_stations if s in set(summary["station"])]

    result = {
        "records": int(len(corpus.records)),
        "stations": int(len(summary)),
        "targets": summary[summary["station"].isin(targets)].to_dict(orient="records"),
        **scaling(corpus.records),
    }
    known = summary.dropna(subset=["f0_error_pct"])
    if len(known):
        result["max_abs_f0_error_pct_targets"] = float(
            known[known["station"].isin(targets)]["f0_error_pct"].abs().max())
        result["median_abs_f0_error_pct_all"] = float(known["f0_error_pct"].abs().median())
    with staged_file(args.metrics) as tmp:
        tmp.write_text(json.dumps(result, indent=2, allow_nan=False, default=str) + "\n")
    print(summary.to_string(index=False))

    from timesnet_gen import plotting  # matplotlib only when drawing

    edges = np.linspace(params.evaluate.fmin, params.evaluate.fmax, params.evaluate.hist_bins + 1)
    panels = {"examples": [], "curves": [], "medians": [], "f0": [], "true": []}
    grid = None
    for station in targets:
        idx = np.flatnonzero(corpus.station_mask(station))
        pga = np.abs(corpus.waveforms[idx]).max(axis=(1, 2))
        panels["examples"].append(corpus.waveforms[idx[np.argsort(pga)[len(idx) // 2]]])
        panels["curves"].append(curves[idx])
        grid, med = median_hvsr(freqs, curves[idx], params.evaluate.n_median_points)
        panels["medians"].append(med)
        panels["f0"].append(f0_values[idx])
        panels["true"].append(float(summary.set_index("station").loc[station, "f0_true_hz"]))
    if targets:
        fig = plotting.corpus_overview(targets, panels["examples"], freqs, panels["curves"], grid,
                                       panels["medians"], panels["f0"], panels["true"], edges)
        plotting.save(fig, args.figure)
    return 0
