"""Evaluate sources of records against the real ones: per-record table, scores, curves.

`evaluate_sources` is what `timesnet-gen evaluate` (cli.py) and the pipeline call: it takes
canonical corpora in memory and returns plain arrays, tables and a JSON-ready metrics dict.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from timesnet_gen.config import EvaluateParams, to_dict
from timesnet_gen.errors import UserError
from timesnet_gen.records import SAMPLING_RATE, Corpus
from timesnet_gen.evaluation.hvsr import f0, hvsr_details, median_hvsr
from timesnet_gen.evaluation.intensity import intensity_measures
from timesnet_gen.evaluation.specificity import (
    f0_histogram,
    histogram_edges,
    log_rmse,
    lognormal_stats,
    median_f0_difference,
    nearest_station_accuracy,
    nearest_station_accuracy_real,
    specificity_scores,
    true_f0_error,
)

REAL = "Real"


class EvaluationError(UserError):
    """Sources that cannot be scored together (names, stations)."""


class EmptySourceError(EvaluationError):
    """A generated or reconstructed corpus with no records (for the stations scored)."""


def _unscored_stations(name: str, corpus: Corpus, stations: list[str]) -> str | None:
    """Warning text when `corpus` has stations that are not scored (no real records)."""
    extra = sorted(set(corpus.records["station"].astype(str)) - set(stations))
    if not extra:
        return None
    return (f"{name}: station(s) {', '.join(extra)} have generated records but no real "
            f"records; left out of every score")


def _skipped_warning(name: str, stations: list[str], used: list[str]) -> str | None:
    """Warning text when scores use fewer stations than were asked for."""
    skipped = [s for s in stations if s not in used]
    if not skipped:
        return None
    k, n = len(used), len(stations)
    what = (f"scores use the {k}x{k} station matrix (score_{k}x{k}, score_{2 * k}x{2 * k} ...)"
            f" of {', '.join(used)} instead of {n}x{n}" if k >= 2 else
            f"no scores: {k} station(s) left of {n}")
    return f"{name}: station(s) {', '.join(skipped)} have no f0 values in every source; {what}"


def _geo(x: np.ndarray) -> np.ndarray:
    """Geometric mean of the E and N values (n, 3, ...) -> (n, ...)."""
    return np.sqrt(x[:, 0] * x[:, 1])


def record_table(
    corpus: Corpus,
    source: str,
    kind: str,
    params: EvaluateParams,
    fs: float = SAMPLING_RATE,
    progress: bool = False,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """One row per record: f0 and intensity measures (horizontal = geometric mean of E, N).

    Returns (table, freqs (F,), hvsr curves (n, F)); a bad record gets NaN values and the
    reason in the `problem` column.
    """
    freqs, curves, problems = hvsr_details(corpus.waveforms, fs, params, progress=progress)
    table = pd.DataFrame({
        "record_id": corpus.records["record_id"].astype(str).to_numpy(),
        "station": corpus.records["station"].astype(str).to_numpy(),
        "source": source,
        "kind": kind,
        "f0_hz": f0(freqs, curves),
    })
    if "split" in corpus.records.columns:
        table["split"] = corpus.records["split"].fillna("").astype(str).to_numpy()
    columns = ["pga_cm_s2", "pgv_cm_s", "arias_m_s", "d5_95_s", "pga_v_cm_s2"]
    columns += [f"psa_{p:g}s" for p in params.psa_periods]
    values = np.full((len(table), len(columns)), np.nan)
    ok = np.flatnonzero([p is None for p in problems])
    if len(ok):
        ims = intensity_measures(corpus.waveforms[ok], fs, params)
        values[ok, 0] = _geo(ims["pga"])
        values[ok, 1] = _geo(ims["pgv"])
        values[ok, 2] = _geo(ims["arias"])
        values[ok, 3] = _geo(ims["d5_95"])
        values[ok, 4] = ims["pga"][:, 2]
        values[ok, 5:] = _geo(ims["psa"])
    table[columns] = values
    table["problem"] = [p or "" for p in problems]
    return table, freqs, curves


def _by_station(table: pd.DataFrame, stations: list[str]) -> dict[str, np.ndarray]:
    return {s: table.loc[table["station"] == s, "f0_hz"].to_numpy(np.float64) for s in stations}


def _has_f0(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).any())


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _check_sources(real: Corpus, generated: dict, recon: dict, stations: list[str] | None
                   ) -> tuple[dict, list[str], list]:
    """Source labels ("<name>-recon" for reconstructions), the stations, and warnings."""
    if len(recon) and len(generated) != 1 and set(recon) - set(generated):
        raise EvaluationError(f"recon names {sorted(recon)} must match generated names "
                              f"{sorted(generated)} to be paired")
    recon = {f"{n}-recon": c for n, c in recon.items()}
    names = [REAL, *generated, *recon]
    if len(set(names)) != len(names):
        raise EvaluationError(f"source names must be unique (and not {REAL!r}): {names}")
    warnings = []
    if stations is None:
        stations = sorted(real.records["station"].astype(str).unique())
        warnings += [_unscored_stations(n, c, stations)
                     for n, c in [*generated.items(), *recon.items()]]
    missing = [s for s in stations if not real.station_mask(s).any()]
    if missing:
        raise EvaluationError(f"station(s) {missing} have no real records")
    empty = [n for n, c in [*generated.items(), *recon.items()] if not len(c.records)]
    if empty:
        raise EmptySourceError(f"source(s) {', '.join(empty)} have no records; nothing to "
                               "evaluate")
    return recon, stations, warnings


def _score_records(sources: list[tuple[str, str, Corpus]], stations: list[str],
                   params: EvaluateParams, fs: float, progress: bool,
                   precomputed: dict | None = None) -> tuple:
    """Per-record tables, f0 per source and station, median HVSR per (station, source).
    precomputed: {name: (table, freqs, curves)} of sources already through record_table."""
    tables, medians = [], {}
    f0s: dict[str, dict[str, np.ndarray]] = {}
    grid = None
    for name, kind, corpus in sources:
        if name in (precomputed or {}):
            table, freqs, curves = precomputed[name]
        else:
            table, freqs, curves = record_table(corpus, name, kind, params, fs, progress)
        tables.append(table)
        f0s[name] = _by_station(table, stations)
        for s in stations:
            rows = (table["station"] == s).to_numpy()
            if rows.any():
                grid, medians[(s, name)] = median_hvsr(
                    freqs, curves[rows], params.n_median_points, params.fmin, params.fmax)
    return pd.concat(tables, ignore_index=True), f0s, grid, medians


def _specificity(name: str, partner: str | None, f0s: dict, stations: list[str],
                 entry: dict, params: EvaluateParams, edges: np.ndarray, warnings: list
                 ) -> dict | None:
    """The k x k, 2k x 2k (and 3k x 3k with a recon partner) scores of one generator, into
    `entry` (a warning when stations are left out); returns its matrices (None when fewer
    than 2 stations can be scored)."""
    real_f0 = f0s[REAL]
    used = [s for s in stations if _has_f0(real_f0[s]) and _has_f0(f0s[name][s])
            and (partner is None or _has_f0(f0s[partner][s]))]
    entry["matrix_stations"] = used
    entry["stations_skipped"] = [s for s in stations if s not in used]
    warnings.append(_skipped_warning(name, stations, used))
    if len(used) < 2:
        entry["scores_error"] = "fewer than 2 stations with f0 values in every source"
        return None
    pdf = {n: [f0_histogram(f0s[n][s], edges) for s in used]
           for n in {REAL, name, *([partner] if partner else [])}}
    scores = specificity_scores(pdf[REAL], pdf[name], pdf[partner] if partner else None,
                                params.js_eps)
    k = len(used)
    sizes = {"cross": k, "real_gen": 2 * k, "real_recon_gen": 3 * k}
    for key, value in scores.items():
        entry[f"score_{sizes[key]}x{sizes[key]}"] = value["score"]
    if partner:
        entry["recon_partner"] = partner
    return {key: value["matrix"] for key, value in scores.items()}


def evaluate_sources(
    real: Corpus,
    generated: dict[str, Corpus],
    recon: dict[str, Corpus] | None = None,
    params: EvaluateParams | None = None,
    stations: list[str] | None = None,
    fs: float = SAMPLING_RATE,
    progress: bool = False,
    precomputed: dict | None = None,
) -> dict:
    """Score generated (and reconstructed) corpora against the real one.

    generated / recon: {name: corpus}. A recon corpus is paired with the generated corpus of
    the same name (or, with one of each, with the only one) for the [Real, Recon, Gen] matrix;
    its source label is "<name>-recon".
    Returns {"records": DataFrame (one row per record and source), "metrics": JSON-ready dict,
    "median_hvsr": {"grid": (G,), (station, source): (G,)}, "matrices": {name: {...}}}.
    precomputed: {source name: record_table(...) of its corpus (restricted to `stations`)},
    for callers that score the same records many times (resampled draws).
    """
    params = params or EvaluateParams()
    recon, stations, warnings = _check_sources(real, generated, recon or {}, stations)

    def restrict(corpus: Corpus) -> Corpus:
        return corpus.subset(corpus.records["station"].astype(str).isin(stations).to_numpy())

    sources = [(REAL, "real", restrict(real))]
    sources += [(n, "generated", restrict(c)) for n, c in generated.items()]
    sources += [(n, "recon", restrict(c)) for n, c in recon.items()]
    records, f0s, grid, medians = _score_records(sources, stations, params, fs, progress,
                                                 precomputed)

    edges = histogram_edges(params.fmin, params.fmax, params.hist_bins)
    nearest = {"method": params.nearest_method, "sigma_floor": params.sigma_ln_floor,
               "edges": edges}
    real_f0 = f0s[REAL]
    metrics: dict = {
        "stations": stations,
        "n_records": {n: {s: int(len(v[s])) for s in stations} for n, v in f0s.items()},
        "n_invalid": {n: {s: int((~np.isfinite(v[s])).sum()) for s in stations}
                      for n, v in f0s.items()},
        "f0": {n: {s: {**lognormal_stats(v[s]), "pdf": f0_histogram(v[s], edges)}
                   for s in stations if _has_f0(v[s])} for n, v in f0s.items()},
        "real_ceiling": nearest_station_accuracy_real(
            {s: real_f0[s] for s in stations if _has_f0(real_f0[s])},
            params.nearest_method, params.sigma_ln_floor, edges),
        "models": {},
        "params": to_dict(params),
    }
    truth = _true_f0(real, stations)
    if truth:
        metrics["true_f0"] = {s: {"f0_true_hz": t, **{n: true_f0_error(f0s[n][s], t)
                                                    for n in f0s if _has_f0(f0s[n][s])}}
                              for s, t in truth.items()}
    for name in [*generated, *recon]:
        metrics["models"][name] = _source_metrics(name, f0s, medians, real_f0, stations,
                                                  nearest)
    matrices: dict = {}
    for name in generated:
        # a generator's own reconstructions; an unnamed pair only when there is one of each
        partner = f"{name}-recon" if f"{name}-recon" in recon else (
            next(iter(recon)) if len(recon) == 1 and len(generated) == 1 else None)
        found = _specificity(name, partner, f0s, stations, metrics["models"][name], params,
                             edges, warnings)
        if found is not None:
            matrices[name] = found
    metrics["warnings"] = [w for w in warnings if w]
    return {"records": records, "metrics": _jsonable(metrics),
            "median_hvsr": {"grid": grid, **medians}, "matrices": matrices}


def _source_metrics(name, f0s, medians, real_f0, stations, nearest) -> dict:
    query = {s: f0s[name][s] for s in stations if len(f0s[name][s])}
    refs = {s: real_f0[s] for s in stations if _has_f0(real_f0[s])}
    query = {s: v for s, v in query.items() if s in refs}
    out: dict = {"nearest_station": nearest_station_accuracy(
        query, refs, nearest["method"], nearest["sigma_floor"], nearest["edges"])}
    per_station = {}
    for s in stations:
        item: dict = {}
        if _has_f0(f0s[name][s]) and _has_f0(real_f0[s]):
            item["median_f0_abs_diff_hz"] = median_f0_difference(f0s[name][s], real_f0[s])
        a, b = medians.get((s, name)), medians.get((s, REAL))
        if a is not None and b is not None and np.all(np.isfinite(a)) and np.all(np.isfinite(b)):
            item["log_rmse_median_hvsr"] = log_rmse(a, b)
        per_station[s] = item
    out["per_station"] = per_station
    return out


def _true_f0(real: Corpus, stations: list[str]) -> dict[str, float]:
    table = real.stations
    if "f0_true_hz" not in table.columns or "station" not in table.columns:
        return {}
    values = dict(zip(table["station"].astype(str),
                      pd.to_numeric(table["f0_true_hz"], errors="coerce")))
    return {s: float(values[s]) for s in stations
            if s in values and np.isfinite(values[s]) and values[s] > 0}
