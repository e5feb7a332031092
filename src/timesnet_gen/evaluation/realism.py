"""Realism of generated records, as a seismologist sees it (issue 11): the public entry points.

    feats = record_features(waveforms, fs, params)              # per record, batched
    metrics = compare(feats_src, feats_ref, seed)               # one source vs real records
    band = perfect_generator_band(train, ref, n_records)         # the sampling band
    flat, per_station, psa_curves = realism_tables(train, ref, sources)

Recommended wiring: ref = the held-out real records of each target station (never seen by
training or generation), train = its training records, sources = every generator, its
reconstructions and `real-train` (the training records themselves: the real-vs-real floor).
A source meets a metric when its value lies inside the band_lo-band_hi percentiles that the
perfect generator (params.n_draws draws of the source's record count, with replacement, from
the training records) gets against the same ref. Headlines pool the stations: the mean over
stations (geometric mean for ratios), and the band of that pooled value from the same draws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from timesnet_gen.evaluation.realism_compare import (
    PER_PERIOD,
    POOLING,
    band_of,
    classifier_auc,
    compare,
    perfect_generator_band,
    perfect_generator_draws,
)
from timesnet_gen.evaluation.realism_features import (
    Features,
    RealismParams,
    concat_features,
    record_features,
)
from timesnet_gen.evaluation.realism_gmm import gmm_compare, gmm_residuals, station_vs30
from timesnet_gen.evaluation.realism_rotd import pyrotd_rotd50, rotd50

__all__ = [
    "Features", "RealismParams", "classifier_auc", "compare", "concat_features",
    "flatten_metrics", "gmm_compare", "gmm_residuals", "perfect_generator_band",
    "perfect_generator_draws", "pyrotd_rotd50", "realism_tables", "record_features", "rotd50",
    "station_vs30",
]
POOLED = "pooled"
POOL_FUNCTIONS = {
    "mean": lambda v: float(np.mean(v)),
    "geo": lambda v: float(np.exp(np.mean(np.log(v)))) if np.all(v > 0) else np.nan,
}


def flatten_metrics(metrics: dict, periods: np.ndarray) -> dict[str, float]:
    """compare() output with per-period arrays spread into <metric>_<T>s keys."""
    out = {}
    for key, value in metrics.items():
        if key in PER_PERIOD:
            out.update({f"{key}_{p:g}s": float(v) for p, v in zip(periods, value)})
        else:
            out[key] = float(value)
    return out


def _pool_kind(metric: str) -> str | None:
    base = next((k for k in PER_PERIOD if metric.startswith(k + "_")), metric)
    return POOLING.get(base)


def _skip_reason(src: Features | None, train: Features | None, ref: Features,
                 min_records: int) -> str:
    """'' when a (source, station) pair can be scored, else why not."""
    counts = {"source": None if src is None else len(src) - src.n_invalid,
              "training": None if train is None else len(train) - train.n_invalid,
              "reference": len(ref) - ref.n_invalid}
    if counts["source"] is None:
        return "station missing in source"
    if counts["training"] is None:
        return "station missing in the training records"
    few = [f"{k} {v}" for k, v in counts.items() if v < min_records]
    return f"fewer than {min_records} valid records ({', '.join(few)})" if few else ""


def _rows(source, station, values, band, n_src, n_ref, n_invalid, reason, no_scenario):
    rows = []
    for metric in band if band else values:
        value = values.get(metric, np.nan)
        lo, mid, hi = band[metric] if band else (np.nan, np.nan, np.nan)
        why = reason
        if not why and metric.startswith("gmm_") and no_scenario:
            why = "source has no scenario (magnitude, distance)"
            value = np.nan
        met = bool(lo <= value <= hi) if np.isfinite(value) and np.isfinite(lo) else None
        rows.append({"source": source, "station": station, "metric": metric, "value": value,
                     "band_lo": lo, "band_med": mid, "band_hi": hi, "met": met, "n_src": n_src,
                     "n_ref": n_ref, "n_invalid": n_invalid, "reason": why})
    return rows


def _pooled(scored: dict[str, tuple[dict, list[dict]]], q: tuple[float, float]):
    """Pooled value and band per metric over the scored stations {station: (values, draws)}."""
    out = {}
    stations = list(scored)
    n_draws = min(len(d) for _, d in scored.values())
    for metric in scored[stations[0]][0]:
        kind = _pool_kind(metric)
        if kind is None:
            continue
        values = np.array([scored[s][0][metric] for s in stations])
        keep = np.isfinite(values)
        if not keep.any():
            out[metric] = (np.nan, (np.nan, np.nan, np.nan))
            continue
        used = [s for s, k in zip(stations, keep) if k]
        pool = POOL_FUNCTIONS[kind]
        draws = [{metric: pool(np.array([scored[s][1][d][metric] for s in used]))}
                 for d in range(n_draws)]
        out[metric] = (pool(values[keep]), band_of(draws, q)[metric])
    return out


def realism_tables(
    train: dict[str, Features],
    ref: dict[str, Features],
    sources: dict[str, dict[str, Features]],
    params: RealismParams | None = None,
) -> tuple[dict[str, float | bool], pd.DataFrame, pd.DataFrame]:
    """Every source scored against ref per station, with perfect-generator bands.

    Returns (flat, per_station, psa_curves):
      flat: realism/<source>/<metric> pooled over stations, + _band_lo, _band_hi, _met (bool),
            + realism/<source>/n_stations_scored. GMM keys are absent for a source without a
            scenario (per_station says so).
      per_station: one row per (source, station, metric) incl. station "pooled": value,
            band_lo / band_med / band_hi, met, n_src, n_ref, n_invalid, reason (why a station
            was not scored: missing, fewer than min_records valid records).
      psa_curves: (source, station, period_s, psa_ln_resid, band lo/med/hi, psa_ln_std_ratio,
            std band lo/med/hi): the PSA residual curves for `dvc plots` and the figure.
    """
    params = params or RealismParams()
    q = (params.band_lo, params.band_hi)
    periods = np.asarray(params.periods, dtype=np.float64)
    stations = sorted(ref)
    cache: dict[tuple[str, int], list[dict]] = {}
    flat: dict[str, float | bool] = {}
    rows: list[dict] = []
    for name, per_station in sources.items():
        scored: dict[str, tuple[dict, list[dict]]] = {}
        no_scenario = True
        for st in stations:
            src = per_station.get(st)
            reason = _skip_reason(src, train.get(st), ref[st], params.min_records)
            n_src = 0 if src is None else len(src) - src.n_invalid
            n_ref = len(ref[st]) - ref[st].n_invalid
            if reason:
                rows += _rows(name, st, {}, _empty_band(periods), n_src, n_ref,
                              0 if src is None else src.n_invalid, reason, False)
                continue
            src_no_scenario = not np.isfinite(src.valid_only().gmm).any()
            no_scenario &= src_no_scenario
            if (st, n_src) not in cache:
                draws = perfect_generator_draws(train[st], ref[st], n_src, params.n_draws,
                                                params.seed, params)
                cache[(st, n_src)] = [flatten_metrics(d, periods) for d in draws]
            values = flatten_metrics(compare(src, ref[st], params.seed, params), periods)
            band = band_of(cache[(st, n_src)], q)
            rows += _rows(name, st, values, band, n_src, n_ref, src.n_invalid, "",
                          src_no_scenario)
            scored[st] = (values, cache[(st, n_src)])
        flat[f"realism/{name}/n_stations_scored"] = float(len(scored))
        if not scored:
            continue
        for metric, (value, (lo, mid, hi)) in _pooled(scored, q).items():
            if metric.startswith("gmm_") and no_scenario:
                continue
            met = bool(lo <= value <= hi) if np.isfinite(value) and np.isfinite(lo) else None
            key = f"realism/{name}/{metric}"
            flat.update({key: value, f"{key}_band_lo": lo, f"{key}_band_hi": hi})
            if met is not None:
                flat[f"{key}_met"] = met
            rows.append({"source": name, "station": POOLED, "metric": metric, "value": value,
                         "band_lo": lo, "band_med": mid, "band_hi": hi, "met": met,
                         "n_src": sum(int(scored[s][0]["n_src"]) for s in scored),
                         "n_ref": sum(int(scored[s][0]["n_ref"]) for s in scored),
                         "n_invalid": np.nan, "reason": ""})
    per_station = pd.DataFrame(rows)
    return flat, per_station, psa_curves(per_station, periods)


def _empty_band(periods: np.ndarray) -> dict[str, tuple]:
    keys = [f"{k}_{p:g}s" for k in PER_PERIOD for p in periods]
    keys += [k for k in POOLING if k not in PER_PERIOD]
    return {k: (np.nan, np.nan, np.nan) for k in keys}


def psa_curves(per_station: pd.DataFrame, periods: np.ndarray) -> pd.DataFrame:
    """PSA residual and ln-std ratio per period with their bands, from the per-station table."""
    out = []
    columns = ["value", "band_lo", "band_med", "band_hi"]
    for (source, station), group in per_station.groupby(["source", "station"], sort=False):
        table = group.set_index("metric")
        for p in periods:
            row = {"source": source, "station": station, "period_s": float(p)}
            for base, prefix in (("psa_ln_resid", "resid"), ("psa_ln_std_ratio", "std_ratio")):
                key = f"{base}_{p:g}s"
                vals = table.loc[key, columns] if key in table.index else [np.nan] * 4
                row.update({f"{prefix}{'' if c == 'value' else '_' + c}": float(v)
                            for c, v in zip(columns, vals)})
            out.append(row)
    return pd.DataFrame(out)
