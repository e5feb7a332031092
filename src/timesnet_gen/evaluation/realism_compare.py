"""Realism metrics of a source of records against real records, and their sampling band.

`compare(src, ref)` -> every metric of issue items 1-6 (keys in METRICS; PSA ones per period).
`perfect_generator_draws / _band`: the same metrics for n records drawn with replacement from
the station's real training records, scored against the same reference: a source "meets" a
metric when its value lies inside the 5-95 % band of those draws.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.special
import scipy.stats

from timesnet_gen.evaluation.realism_features import Features, RealismParams
from timesnet_gen.evaluation.realism_gmm import gmm_compare

SCALAR_IMS = ("pga", "pgv", "arias", "d5_95")
# metric -> how stations are pooled: "geo" (geometric mean: ratios), "mean"
POOLING = {
    "psa_ln_resid": "mean", "psa_ln_std_ratio": "geo",
    **{f"fas_frechet_{c}": "mean" for c in "ENU"},
    **{f"{m}_median_ratio": "geo" for m in SCALAR_IMS},
    **{f"{m}_w1_ln": "mean" for m in SCALAR_IMS},
    "envelope_misfit_ln": "mean", "n_bursts_mean": "mean", "multi_burst_rate": "mean",
    "sp_found_rate": "mean", "sp_median_s": "mean", "sp_w1_s": "mean",
    "classifier_auc": "mean",
    **{f"gmm_{m}_{s}_diff": "mean" for m in ("pga", "pgv", "d5_95", "psa")
       for s in ("mean", "std")},
}
PER_PERIOD = ("psa_ln_resid", "psa_ln_std_ratio")
BIAS_FEATURE = 10.0  # constant feature carrying the logistic bias (weakly penalised)


def _nan_stat(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args)


def _w1(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return np.nan
    return float(scipy.stats.wasserstein_distance(a, b))


def _ln(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan)


def psa_metrics(src: Features, ref: Features) -> dict[str, np.ndarray]:
    """Median ln residual (median ln src - median ln ref) and ln-std ratio per period."""
    a, b = _ln(src.psa), _ln(ref.psa)
    return {
        "psa_ln_resid": _nan_stat(np.nanmedian, a, 0) - _nan_stat(np.nanmedian, b, 0),
        "psa_ln_std_ratio": (_nan_stat(np.nanstd, a, 0, None, None, 1)
                             / _nan_stat(np.nanstd, b, 0, None, None, 1)),
    }


def fas_frechet(src: Features, ref: Features) -> dict[str, float]:
    """Frechet distance of ln FAS per component: sum over frequency of (mean_a - mean_b)^2
    + (std_a - std_b)^2 (ln^2 units; the 1-D Gaussian W2^2 at each frequency)."""
    out = {}
    for j, comp in enumerate("ENU"):
        a, b = src.ln_fas[:, j], ref.ln_fas[:, j]
        d = (a.mean(0) - b.mean(0)) ** 2 + (a.std(0, ddof=1) - b.std(0, ddof=1)) ** 2
        out[f"fas_frechet_{comp}"] = float(d.sum())
    return out


def scalar_metrics(src: Features, ref: Features) -> dict[str, float]:
    """Median ratio src / ref and 1-Wasserstein distance of ln values, per PGA, PGV, Ia, D5-95."""
    out = {}
    for m in SCALAR_IMS:
        a, b = getattr(src, m), getattr(ref, m)
        out[f"{m}_median_ratio"] = float(np.nanmedian(a) / np.nanmedian(b))
        out[f"{m}_w1_ln"] = _w1(_ln(a), _ln(b))
    return out


def envelope_misfit(src: Features, ref: Features, floor: float = 1e-3) -> float:
    """Median over source records of the RMS (over time) of ln(env / peak) minus the real
    records' median ln(env / peak): timing and shape, not amplitude (ln units)."""

    def shape(env):
        peak = env.max(axis=1, keepdims=True)
        return np.log(np.maximum(env / np.where(peak > 0, peak, 1.0), floor))

    target = np.median(shape(ref.envelope), axis=0)
    return float(np.median(np.sqrt(np.mean((shape(src.envelope) - target) ** 2, axis=1))))


def phase_metrics(src: Features, ref: Features) -> dict[str, float]:
    """Burst count stats and the S-P time distribution (where both picks are found)."""
    a, b = src.sp_time_s, ref.sp_time_s
    fa, fb = a[np.isfinite(a)], b[np.isfinite(b)]
    return {
        "n_bursts_mean": float(np.mean(src.n_bursts)),
        "multi_burst_rate": float(np.mean(src.n_bursts > 1)),
        "sp_found_rate": float(np.isfinite(a).mean()),
        "sp_median_s": float(np.median(fa)) if len(fa) else np.nan,
        "sp_w1_s": _w1(fa, fb),
    }


def _penalised_loss(xa: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float) -> float:
    z = xa @ w
    return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w)


def logistic_fit(x: np.ndarray, y: np.ndarray, l2: float = 1.0, tol: float = 1e-8) -> np.ndarray:
    """Weights (d,) and bias of the L2-penalised logistic regression -> (d + 1,).

    Newton's method; with n records and d > n features the Woodbury identity makes every step
    an n x n system instead of d x d. The bias enters as a constant feature of value 10, so
    its penalty is 100 times weaker than a weight's (negligible); halving steps keep the loss
    decreasing.
    """
    xa = np.hstack([x, np.full((len(x), 1), BIAS_FEATURE)])
    gram = xa @ xa.T if len(xa) <= xa.shape[1] else None
    w = np.zeros(xa.shape[1])
    loss = _penalised_loss(xa, y, w, l2)
    for _ in range(50):
        p = scipy.special.expit(xa @ w)
        grad = xa.T @ (p - y) + l2 * w
        s = np.maximum(p * (1 - p), 1e-12)
        if gram is None:  # more records than features: the d x d Hessian
            step = np.linalg.solve(xa.T @ (xa * s[:, None]) + l2 * np.eye(len(w)), grad)
        else:  # (X^T S X + l2 I)^-1 g = (g - X^T (l2 S^-1 + X X^T)^-1 X g) / l2
            u = np.linalg.solve(gram + np.diag(l2 / s), xa @ grad)
            step = (grad - xa.T @ u) / l2
        for _ in range(30):
            new = _penalised_loss(xa, y, w - step, l2)
            if new <= loss:
                break
            step = step / 2
        w, loss = w - step, new
        if np.max(np.abs(step)) < tol:
            break
    return np.append(w[:-1], w[-1] * BIAS_FEATURE)


def _folds(groups: np.ndarray, y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold per sample, stratified by class, a group (repeated record) never split."""
    fold = np.empty(len(y), dtype=np.int64)
    for cls in (0, 1):
        ids = np.unique(groups[y == cls])
        order = rng.permutation(len(ids))
        lookup = dict(zip(ids[order], np.arange(len(ids)) % k))
        fold[y == cls] = [lookup[g] for g in groups[y == cls]]
    return fold


def classifier_auc(
    x_src: np.ndarray,
    x_ref: np.ndarray,
    folds: int = 5,
    l2: float = 1.0,
    seed: int = 0,
    groups_src: np.ndarray | None = None,
) -> float:
    """Cross-validated AUC of a logistic regression telling source (1) from real (0) records.

    0.5: indistinguishable. Out-of-fold scores of all folds pooled into one AUC (Mann-Whitney).
    groups_src: record identity of the source rows; repeats stay in one fold (else a
    classifier would recognise a record it trained on). NaN when a class has < 2 records.
    """
    if groups_src is None:
        groups_src = np.arange(len(x_src))
    n_groups = min(len(np.unique(groups_src)), len(x_ref))
    k = min(folds, n_groups)
    if k < 2:
        return np.nan
    x = np.vstack([x_src, x_ref])
    y = np.r_[np.ones(len(x_src)), np.zeros(len(x_ref))]
    groups = np.r_[np.asarray(groups_src).astype(str), [f"ref{i}" for i in range(len(x_ref))]]
    fold = _folds(groups, y, k, np.random.default_rng(seed))
    scores = np.empty(len(y))
    for f in range(k):
        train, test = fold != f, fold == f
        mean, std = x[train].mean(0), x[train].std(0)
        std = np.where(std > 0, std, 1.0)
        wb = logistic_fit((x[train] - mean) / std, y[train], l2)
        scores[test] = ((x[test] - mean) / std) @ wb[:-1] + wb[-1]
    ranks = scipy.stats.rankdata(scores)
    n1, n0 = len(x_src), len(x_ref)
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def compare(
    src: Features, ref: Features, seed: int = 0, params: RealismParams | None = None
) -> dict[str, float | np.ndarray]:
    """Every realism metric of a source against real records (valid records only).

    Arrays: psa_ln_resid, psa_ln_std_ratio (per period). Scalars: see POOLING; plus n_src,
    n_ref. GMM entries are NaN when either side has no scenario.
    """
    params = params or RealismParams()
    src, ref = src.valid_only(), ref.valid_only()
    if len(src) < 2 or len(ref) < 2:
        raise ValueError(f"compare needs >= 2 valid records on each side, got {len(src)} "
                         f"and {len(ref)}")
    out: dict[str, float | np.ndarray] = {"n_src": float(len(src)), "n_ref": float(len(ref))}
    out.update(psa_metrics(src, ref))
    out.update(fas_frechet(src, ref))
    out.update(scalar_metrics(src, ref))
    out["envelope_misfit_ln"] = envelope_misfit(src, ref, params.envelope_floor)
    out.update(phase_metrics(src, ref))
    out["classifier_auc"] = classifier_auc(src.spec, ref.spec, params.classifier_folds,
                                           params.classifier_l2, seed, src.record_id)
    out.update(gmm_compare(src.gmm, ref.gmm, src.gmm_columns))
    return out


def perfect_generator_draws(
    train: Features,
    ref: Features,
    n_records: int,
    n_draws: int = 20,
    seed: int = 0,
    params: RealismParams | None = None,
) -> list[dict[str, float | np.ndarray]]:
    """compare() of n_draws seeded draws of n_records (with replacement) from the valid
    training records, each against ref."""
    pool = train.valid_only()
    if len(pool) == 0:
        raise ValueError("no valid training records to draw the perfect generator from")
    rng = np.random.default_rng(seed)
    return [compare(pool.take(rng.integers(0, len(pool), n_records)), ref, seed + d, params)
            for d in range(n_draws)]


def band_of(draws: list[dict], q: tuple[float, float] = (5.0, 95.0)) -> dict[str, tuple]:
    """(lo, median, hi) per metric over draws (element-wise for per-period arrays)."""
    out = {}
    for key in draws[0]:
        values = np.array([d[key] for d in draws], dtype=np.float64)
        lo, mid, hi = _nan_stat(np.nanpercentile, values, [q[0], 50.0, q[1]], 0)
        out[key] = (lo, mid, hi)
    return out


def perfect_generator_band(
    train: Features,
    ref: Features,
    n_records: int,
    n_draws: int = 20,
    seed: int = 0,
    q: tuple[float, float] = (5.0, 95.0),
    params: RealismParams | None = None,
) -> dict[str, tuple]:
    """The band (lo, median, hi) of each compare() metric for the perfect generator."""
    return band_of(perfect_generator_draws(train, ref, n_records, n_draws, seed, params), q)
