"""Protocol steps 8-12: f0 distributions, Jensen-Shannon similarity matrices and the
station-specificity score; plus nearest-station accuracy and per-station f0 / HVSR errors.

A "pdf" here is what the authors call one: histogram counts / total over fixed bin edges
(probability mass per bin, sum 1), not a density.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_EDGES = np.linspace(1.0, 20.0, 21)  # Hz, 20 bins of 0.95 Hz (paper)


def histogram_edges(fmin: float = 1.0, fmax: float = 20.0, n_bins: int = 20) -> np.ndarray:
    return np.linspace(fmin, fmax, n_bins + 1)


def _finite(values: np.ndarray | Sequence[float], what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if len(values) == 0:
        raise ValueError(f"{what}: no finite f0 values")
    return values


def f0_histogram(f0_values: np.ndarray | Sequence[float], edges: np.ndarray | None = None):
    """Step 8: histogram of f0 (Hz) over `edges`, normalised to sum 1 (NaN values left out)."""
    edges = DEFAULT_EDGES if edges is None else np.asarray(edges, dtype=np.float64)
    counts, _ = np.histogram(_finite(f0_values, "f0_histogram"), bins=edges)
    if counts.sum() == 0:
        raise ValueError(f"f0_histogram: no f0 value inside {edges[0]}-{edges[-1]} Hz")
    return counts / counts.sum()


def _as_pdf(p: np.ndarray | Sequence[float], name: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64).ravel()
    if len(p) == 0 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"{name} must be a non-empty, finite, non-negative, non-zero histogram")
    return p / p.sum()


def js_similarity(p: np.ndarray, q: np.ndarray, eps: float = 1e-10) -> float:
    """Step 9: 1 - Jensen-Shannon distance (base 2) after adding eps to every bin.

    Same numbers as 1 - scipy.spatial.distance.jensenshannon(p', q', base=2).
    """
    p, q = _as_pdf(p, "p"), _as_pdf(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in length: {len(p)} vs {len(q)}")
    p = (p + eps) / (p + eps).sum()
    q = (q + eps) / (q + eps).sum()
    m = 0.5 * (p + q)
    divergence = 0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m))
    return float(1.0 - np.sqrt(max(divergence, 0.0) / np.log(2.0)))


def similarity_matrix(
    p_list: Sequence[np.ndarray], q_list: Sequence[np.ndarray], eps: float = 1e-10
) -> np.ndarray:
    """M[i, j] = js_similarity(p_list[i], q_list[j]) -> (len(p_list), len(q_list))."""
    return np.array([[js_similarity(p, q, eps) for q in q_list] for p in p_list])


def interleaved_matrix(pdfs_by_source: Sequence[Sequence[np.ndarray]], eps: float = 1e-10):
    """Step 10: similarity of every (station, source) pair, ordered station by station.

    pdfs_by_source[s][i] is the pdf of source s (e.g. Real, Recon, Gen) at station i; row and
    column i * n_sources + s -> a (n_stations * n_sources) square matrix (10x10, 15x15 ...).
    """
    n_sources = len(pdfs_by_source)
    n_stations = {len(pdfs) for pdfs in pdfs_by_source}
    if n_sources == 0 or len(n_stations) != 1:
        raise ValueError("every source needs one pdf per station")
    flat = [pdfs_by_source[s][i] for i in range(n_stations.pop()) for s in range(n_sources)]
    return similarity_matrix(flat, flat, eps)


def ideal_matrix(n_stations: int, n_sources: int = 1) -> np.ndarray:
    """Step 11: identity (one source per axis) or an all-ones block per station."""
    if n_stations < 1 or n_sources < 1:
        raise ValueError("n_stations and n_sources must be >= 1")
    return np.kron(np.eye(n_stations), np.ones((n_sources, n_sources)))


def specificity_score(matrix: np.ndarray, ideal: np.ndarray) -> float:
    """Step 12: Pearson correlation of the flattened similarity and ideal matrices."""
    a = np.asarray(matrix, dtype=np.float64).ravel()
    b = np.asarray(ideal, dtype=np.float64).ravel()
    if np.shape(matrix) != np.shape(ideal):
        raise ValueError(f"matrix {np.shape(matrix)} and ideal {np.shape(ideal)} differ in shape")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("similarity matrix contains NaN or inf")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        raise ValueError("a constant matrix has no Pearson correlation (score undefined)")
    return float(np.corrcoef(a, b)[0, 1])


def specificity_scores(
    real: Sequence[np.ndarray],
    generated: Sequence[np.ndarray],
    recon: Sequence[np.ndarray] | None = None,
    eps: float = 1e-10,
) -> dict:
    """All of the paper's matrices and scores from per-station pdfs (same station order).

    cross: rows real station i, columns generated station j (5x5); real_gen: [Real, Gen]
    interleaved (10x10); real_recon_gen: [Real, Recon, Gen] interleaved (15x15, with recon).
    """
    n = len(real)
    if len(generated) != n or (recon is not None and len(recon) != n):
        raise ValueError("real, generated and recon need one pdf per station each")
    cross = similarity_matrix(real, generated, eps)
    pair = interleaved_matrix([real, generated], eps)
    out = {
        "cross": {"matrix": cross, "score": specificity_score(cross, ideal_matrix(n))},
        "real_gen": {"matrix": pair, "score": specificity_score(pair, ideal_matrix(n, 2))},
    }
    if recon is not None:
        triple = interleaved_matrix([real, recon, generated], eps)
        out["real_recon_gen"] = {
            "matrix": triple, "score": specificity_score(triple, ideal_matrix(n, 3))
        }
    return out


# --------------------------------------------------------------------------------------------
# per-station statistics


def lognormal_stats(f0_values: np.ndarray | Sequence[float]) -> dict:
    """Lognormal fit of f0 (Hz): median = exp(mean ln f0), sigma_ln (ddof 1), plus sample stats."""
    x = _finite(f0_values, "lognormal_stats")
    ln = np.log(x)
    return {
        "n": int(len(x)),
        "median_lognormal": float(np.exp(ln.mean())),
        "sigma_ln": float(ln.std(ddof=1)) if len(x) > 1 else 0.0,
        "median": float(np.median(x)),
        "q10": float(np.quantile(x, 0.1)),
        "q90": float(np.quantile(x, 0.9)),
    }


def median_f0_difference(f0_a: np.ndarray, f0_b: np.ndarray) -> float:
    """|median f0 a - median f0 b| in Hz (e.g. generated vs real of one station)."""
    return float(abs(np.median(_finite(f0_a, "f0_a")) - np.median(_finite(f0_b, "f0_b"))))


def log_rmse(curve_a: np.ndarray, curve_b: np.ndarray) -> float:
    """sqrt(mean((ln a - ln b)^2)) between two curves on the same grid (e.g. median HVSRs)."""
    a, b = np.asarray(curve_a, dtype=np.float64), np.asarray(curve_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"curves differ in shape: {a.shape} vs {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and a.min() > 0 and b.min() > 0):
        raise ValueError("log_rmse needs finite, positive curves")
    return float(np.sqrt(np.mean((np.log(a) - np.log(b)) ** 2)))


def true_f0_error(f0_values: np.ndarray, f0_true: float) -> dict:
    """Error of f0 estimates against a known true f0 (Hz; synthetic corpus)."""
    if not (np.isfinite(f0_true) and f0_true > 0):
        raise ValueError(f"true f0 must be a positive number, got {f0_true}")
    x = _finite(f0_values, "true_f0_error")
    ln_err = np.log(x / f0_true)
    return {
        "median_abs_error_hz": float(abs(np.median(x) - f0_true)),
        "rmse_ln": float(np.sqrt(np.mean(ln_err**2))),
        "within_10_percent": float(np.mean(np.abs(x / f0_true - 1) <= 0.1)),
    }


# --------------------------------------------------------------------------------------------
# nearest-station accuracy


def _station_loglik(
    x: np.ndarray, reference: np.ndarray, method: str, sigma_floor: float, edges: np.ndarray
) -> np.ndarray:
    """log-likelihood of f0 values x under one station's real f0 sample (up to a shared term).

    lognormal: N(ln x; mean ln f0, max(std ln f0, sigma_floor)); the 1/x Jacobian is the same
    for every station and dropped. histogram: bin mass over `edges` with add-1/2 (Jeffreys)
    smoothing, so an empty bin is unlikely but not impossible; values outside are clipped.
    """
    if method == "lognormal":
        ln = np.log(reference)
        sigma = max(ln.std(ddof=1) if len(ln) > 1 else 0.0, sigma_floor)
        return -np.log(sigma) - (np.log(x) - ln.mean()) ** 2 / (2 * sigma**2)
    if method == "histogram":
        n_bins = len(edges) - 1
        counts, _ = np.histogram(np.clip(reference, edges[0], edges[-1]), bins=edges)
        mass = (counts + 0.5) / (counts.sum() + 0.5 * n_bins)
        idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, n_bins - 1)
        return np.log(mass[idx])
    raise ValueError(f"unknown likelihood method {method!r} (lognormal, histogram)")


def _score(confusion: np.ndarray, stations: list[str], n_invalid: int) -> dict:
    total = int(confusion.sum())
    return {
        "accuracy": float(np.trace(confusion) / total) if total else float("nan"),
        "confusion": confusion,
        "stations": stations,
        "n": total,
        "n_invalid": n_invalid,
    }


def nearest_station_accuracy(
    query_f0: Mapping[str, np.ndarray],
    real_f0: Mapping[str, np.ndarray],
    method: str = "lognormal",
    sigma_floor: float = 0.01,
    edges: np.ndarray | None = None,
) -> dict:
    """Assign every query record to the station whose real f0 distribution makes its f0 most
    likely; returns accuracy, confusion (rows true station, columns assigned; order of real_f0),
    n and n_invalid (NaN f0, left out). Ties go to the first station.
    """
    stations = list(real_f0)
    edges = DEFAULT_EDGES if edges is None else np.asarray(edges, dtype=np.float64)
    refs = [_finite(real_f0[s], f"real f0 of station {s}") for s in stations]
    unknown = sorted(set(query_f0) - set(stations))
    if unknown:
        raise ValueError(f"query station(s) {unknown} have no real f0 distribution")
    confusion = np.zeros((len(stations), len(stations)), dtype=np.int64)
    n_invalid = 0
    for s, values in query_f0.items():
        values = np.asarray(values, dtype=np.float64).ravel()
        ok = np.isfinite(values) & (values > 0)
        n_invalid += int((~ok).sum())
        if not ok.any():
            continue
        ll = np.stack([_station_loglik(values[ok], r, method, sigma_floor, edges) for r in refs])
        assigned = np.argmax(ll, axis=0)
        np.add.at(confusion[stations.index(s)], assigned, 1)
    return _score(confusion, stations, n_invalid)


def nearest_station_accuracy_real(
    real_f0: Mapping[str, np.ndarray],
    method: str = "lognormal",
    sigma_floor: float = 0.01,
    edges: np.ndarray | None = None,
) -> dict:
    """The attainable ceiling: real records classified leave-one-out (each record's own station
    distribution is fitted without it, so a record never votes for itself)."""
    stations = list(real_f0)
    edges = DEFAULT_EDGES if edges is None else np.asarray(edges, dtype=np.float64)
    refs = [_finite(real_f0[s], f"real f0 of station {s}") for s in stations]
    confusion = np.zeros((len(stations), len(stations)), dtype=np.int64)
    for i, ref in enumerate(refs):
        for k in range(len(ref)):
            rest = np.delete(ref, k)
            if len(rest) == 0:
                continue  # a station with one record cannot be scored leave-one-out
            ll = [
                _station_loglik(ref[k : k + 1], rest if j == i else other, method, sigma_floor,
                                edges)[0]
                for j, other in enumerate(refs)
            ]
            confusion[i, int(np.argmax(ll))] += 1
    return _score(confusion, stations, 0)
