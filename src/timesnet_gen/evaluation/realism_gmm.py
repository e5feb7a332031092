"""GMM yardstick: ln residuals of records against published ground-motion models (pygmm).

- PGA, PGV and PSA: Akkar, Sandikkaya & Bommer (2014), the pan-European / Turkish model
  (pygmm `AkkarSandikkayaBommer2014`), with its hypocentral-distance coefficients. Its PSA is
  for the geometric mean of the horizontals; RotD50 is compared with it (RotD50 / GM is
  1.00-1.05 over 0.05-5 s, Boore 2010), PGA and PGV are the geometric mean of E and N.
- D5-95: Afshari & Stewart (2016) (pygmm `AfshariStewart2016`), which needs the rupture
  distance: the hypocentral distance given stands in for it (exact for a point source; for
  M > 6 it is longer than R_rup, so the predicted path duration is a little longer).
Residual = ln observed - ln predicted median, in ln units, per record and measure. The
corpus need not fit the GMMs; the check is that a source's residuals are distributed like the
real ones (`gmm_compare`). Scenarios outside a model's range (ASB14: M 4-8, R <= 200 km,
Vs30 150-1200 m/s; AS16: M 3-7.9, Vs30 200-1000 m/s) are extrapolated and flagged `in_range`.

Vs30 of a station (`station_vs30`): the `vs30` (or `vs30_m_s`) column of stations.csv when
present; else, for a synthetic soil column (`vs_soil_m_s`, `thickness_m`, `impedance`), the
travel-time average over 30 m with the rock below the layer at Vs = impedance x Vs_soil (equal
densities; 4628 -> 226 m/s, PAPER.md: about 186); else `RealismParams.vs30_default_m_s` (760
m/s, the B/C boundary: the synthetic rock stations).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from timesnet_gen.evaluation.intensity import G_CM_S2

if TYPE_CHECKING:
    from timesnet_gen.evaluation.realism_features import Features

SCALARS = ("pga", "pgv", "d5_95")
ASB14_RANGE = {"magnitude": (4.0, 8.0), "distance_km": (0.0, 200.0), "vs30": (150.0, 1200.0)}
AS16_RANGE = {"magnitude": (3.0, 7.9), "distance_km": (0.0, 200.0), "vs30": (200.0, 1000.0)}


def gmm_columns(periods: np.ndarray | list[float]) -> tuple[str, ...]:
    """Residual columns: pga, pgv, d5_95 and psa_<T>s per period."""
    return SCALARS + tuple(f"psa_{p:g}s" for p in periods)


def _in_range(mag: float, dist: float, vs30: float, limits: dict) -> bool:
    values = {"magnitude": mag, "distance_km": dist, "vs30": vs30}
    return all(lo <= values[k] <= hi for k, (lo, hi) in limits.items())


def predict_medians(mag: float, dist: float, vs30: float, periods: np.ndarray, mechanism: str
                    ) -> tuple[float, float, float, np.ndarray]:
    """ln medians at one scenario (dist: hypocentral km, see `gmm_residuals`): ASB14's PGA (g),
    PGV (cm/s) and PSA (g) at periods (s; NaN beyond 4 s), and AS16's D5-95 (s)."""
    import pygmm

    with warnings.catch_warnings():  # out-of-range inputs: flagged by in_range instead
        warnings.simplefilter("ignore")
        asb = pygmm.AkkarSandikkayaBommer2014(pygmm.Scenario(
            mag=mag, dist_hyp=dist, v_s30=vs30, mechanism=mechanism))
        ast = pygmm.AfshariStewart2016(pygmm.Scenario(
            mag=mag, dist_rup=dist, v_s30=vs30, mechanism=mechanism))
        ln_psa = asb.interp_ln_spec_accels(periods)
        return (float(np.log(asb.pga)), float(np.log(asb.pgv)),
                float(np.log(ast.duration["D_5t95"])), ln_psa)


def gmm_residuals(
    features: Features,
    magnitude: np.ndarray,
    distance_km: np.ndarray,
    vs30: float,
    mechanism: str = "SS",
) -> pd.DataFrame:
    """One row per record: ln residuals (columns gmm_columns), scenario and in_range flags.

    distance_km: hypocentral distance (km), used as R_hyp by ASB14 and as R_rup by AS16.
    Records without a scenario (NaN magnitude or distance) or left out (invalid) get NaN.
    """
    periods = np.asarray(features.periods, dtype=np.float64)
    columns = gmm_columns(periods)
    mag = np.asarray(magnitude, dtype=np.float64)
    dist = np.asarray(distance_km, dtype=np.float64)
    if not np.isfinite(vs30) or vs30 <= 0:
        raise ValueError(f"vs30 must be a positive number of m/s, got {vs30}")
    out = np.full((len(mag), len(columns)), np.nan)
    asb_ok = np.zeros(len(mag), dtype=bool)
    as16_ok = np.zeros(len(mag), dtype=bool)
    for i in np.flatnonzero(np.isfinite(mag) & np.isfinite(dist) & features.valid):
        ln_pga, ln_pgv, ln_dur, ln_psa = predict_medians(mag[i], max(dist[i], 0.1), vs30,
                                                         periods, mechanism)
        out[i, 0] = np.log(features.pga[i] / G_CM_S2) - ln_pga
        out[i, 1] = np.log(features.pgv[i]) - ln_pgv
        out[i, 2] = np.log(features.d5_95[i]) - ln_dur
        out[i, 3:] = np.log(features.psa[i] / G_CM_S2) - ln_psa
        asb_ok[i] = _in_range(mag[i], dist[i], vs30, ASB14_RANGE)
        as16_ok[i] = _in_range(mag[i], dist[i], vs30, AS16_RANGE)
    table = pd.DataFrame(out, columns=list(columns))
    table.insert(0, "magnitude", mag)
    table.insert(1, "distance_km", dist)
    table.insert(2, "vs30_m_s", float(vs30))
    table["asb14_in_range"] = asb_ok
    table["as16_in_range"] = as16_ok
    return table


def gmm_compare(src: np.ndarray, ref: np.ndarray, columns: tuple[str, ...]) -> dict[str, float]:
    """Difference of mean and of std (ddof 1) of the residuals, source - real, per measure.

    PSA is summarised by the averages over periods of those differences (gmm_psa_*); NaN when
    either side has fewer than 2 residuals (a source without scenario).
    """
    out: dict[str, float] = {}
    diffs = {}
    for j, name in enumerate(columns):
        a, b = src[:, j], ref[:, j]
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if len(a) < 2 or len(b) < 2:
            diffs[name] = (np.nan, np.nan)
        else:
            diffs[name] = (a.mean() - b.mean(), a.std(ddof=1) - b.std(ddof=1))
    for name in SCALARS:
        out[f"gmm_{name}_mean_diff"], out[f"gmm_{name}_std_diff"] = diffs[name]
    psa = np.array([diffs[c] for c in columns if c.startswith("psa_")]).reshape(-1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no scenario
        out["gmm_psa_mean_diff"] = float(np.nanmean(psa[:, 0])) if len(psa) else np.nan
        out["gmm_psa_std_diff"] = float(np.nanmean(psa[:, 1])) if len(psa) else np.nan
    return out


def column_vs30(vs_soil: float, thickness: float, impedance: float) -> float:
    """Vs30 (m/s) of a soil layer (Vs, H m) over rock of Vs = impedance * Vs_soil."""
    if thickness >= 30.0:
        return float(vs_soil)
    rock = impedance * vs_soil
    return float(30.0 / (thickness / vs_soil + (30.0 - thickness) / rock))


def station_vs30(stations: pd.DataFrame, default: float = 760.0) -> dict[str, float]:
    """Vs30 (m/s) per station: measured column, else the soil column rule, else default."""
    out = {}
    for _, row in stations.iterrows():
        measured = pd.to_numeric(row.get("vs30", row.get("vs30_m_s", np.nan)), errors="coerce")
        soil = [pd.to_numeric(row.get(k, np.nan), errors="coerce")
                for k in ("vs_soil_m_s", "thickness_m", "impedance")]
        if np.isfinite(measured) and measured > 0:
            out[str(row["station"])] = float(measured)
        elif all(np.isfinite(v) and v > 0 for v in soil):
            out[str(row["station"])] = column_vs30(*soil)
        else:
            out[str(row["station"])] = float(default)
    return out
