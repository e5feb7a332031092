"""A sampler's records against the truth at scenarios inside and outside its training range.

README "A sampler that needs no real records" (outside the training range).

    PYTHONPATH=src python benchmarks/extrapolation.py models/flow/model.pt [--station 4628]
        [--magnitudes 4 5 5.5 6 6.5] [--distances 15 50 150] [--n 50] [--extrapolate gmm]

`sample` warns when a scenario lies outside the station's training scenarios and generates all
the same; this measures what such records are worth. On the simulated corpus the truth is
known: at each (M, R) of the grid, --n fresh simulator records at exactly that scenario (the
oracle of oracle_realism.py with the event's magnitude and distance fixed; its stress drop,
kappa, P arrival and site jitter drawn as the corpus draws them) and --n of the checkpoint's.
Printed per scenario: whether it lies inside the training range of the station (its training
scenarios' magnitudes and distances), and the sampler's median less the oracle's for ln PGA,
ln PSA at PERIODS (RotD50, 5 %) and ln D5-95, each record's measure as the realism metrics
take it; then ASB14's median less the oracle's (realism_gmm; the yardstick that a user without
the truth would read, not the truth). --extrapolate samples a flow checkpoint with that
option in place of its own (`generators.flow.extrapolate`). Needs the simulated corpus
(raw/stations.csv with the simulator's site columns). Cost: about 1 min for the default grid
(15 scenarios) on one thread.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from timesnet_gen.corpus import synth
from timesnet_gen.errors import UserError, one_line_errors
from timesnet_gen.evaluation.intensity import G_CM_S2
from timesnet_gen.evaluation.realism_features import Features, record_features
from timesnet_gen.evaluation.realism_gmm import predict_medians
from timesnet_gen.models.flow_sampler import EXTRAPOLATIONS, FlowSampler
from timesnet_gen.records import SAMPLING_RATE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle_realism import ORACLE_SEED, oracle_setup  # noqa: E402

PERIODS = (0.2, 1.0)  # s: the scenario-fidelity target's periods
MEASURES = ("ln PGA",) + tuple(f"ln PSA({p:g} s)" for p in PERIODS) + ("ln D5-95",)


def scenario_records(station: pd.Series, magnitude: float, distance_km: float, n: int,
                     synth_params, seed: list[int]) -> np.ndarray:
    """n fresh simulator records (n, 3, T) float32 cm/s^2 at the station, every event at
    exactly (magnitude, distance_km); the rest of the event and the site drawn."""
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(n):
        event = synth.draw_event(rng, synth_params) | {"magnitude": float(magnitude),
                                                       "distance_km": float(distance_km)}
        site = synth.record_site(rng, station)
        records.append(synth.simulate_record(rng, event, site, synth_params)[0])
    return np.stack(records).astype(np.float32)


def medians(feats: Features) -> np.ndarray:
    """Median over the valid records of each of MEASURES (PGA and PSA in cm/s^2, D5-95 in s)."""
    ok = feats.valid
    columns = [feats.pga[ok]] + [feats.psa[ok][:, list(feats.periods).index(p)]
                                 for p in PERIODS] + [feats.d5_95[ok]]
    return np.array([np.median(np.log(c)) for c in columns])


def gmm_medians(magnitude: float, distance_km: float, vs30: float) -> np.ndarray:
    """ASB14's ln PGA and ln PSA at PERIODS (cm/s^2) and AS16's ln D5-95 (s): MEASURES."""
    ln_pga, _, ln_dur, ln_psa = predict_medians(magnitude, distance_km, vs30,
                                                np.array(PERIODS), "SS")
    return np.r_[ln_pga + np.log(G_CM_S2), ln_psa + np.log(G_CM_S2), ln_dur]


def inside(scenarios: np.ndarray, magnitude: float, distance_km: float) -> bool:
    """Whether (magnitude, distance_km) lies within the ranges of the training scenarios (n, 2)."""
    (m_lo, r_lo), (m_hi, r_hi) = scenarios.min(axis=0), scenarios.max(axis=0)
    return bool(m_lo <= magnitude <= m_hi and r_lo <= distance_km <= r_hi)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--station", default="4628")
    ap.add_argument("--magnitudes", type=float, nargs="+", default=[4.0, 5.0, 5.5, 6.0, 6.5])
    ap.add_argument("--distances", type=float, nargs="+", default=[15.0, 50.0, 150.0],
                    help="km")
    ap.add_argument("--n", type=int, default=50, help="records per scenario and source")
    ap.add_argument("--extrapolate", choices=EXTRAPOLATIONS,
                    help="a flow checkpoint's extrapolate option, in place of its own")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--raw", default=Path("data/raw"), type=Path)
    args = ap.parse_args(argv)
    if args.n < 3:
        raise UserError(f"--n must be at least 3, got {args.n}")
    params, stations, vs30, sampler = oracle_setup(args.checkpoint, args.params, args.raw)
    rp = params.evaluate.realism
    if args.extrapolate:
        if not isinstance(sampler, FlowSampler):
            raise UserError(f"--extrapolate: {args.checkpoint} is not a flow sampler checkpoint")
        sampler.params = replace(sampler.params, extrapolate=args.extrapolate)
    if args.station not in sampler.stations:
        raise UserError(f"station {args.station!r} is not one of the checkpoint's "
                        f"{list(sampler.stations)}")
    training = sampler.scenarios(args.station)
    k = list(stations.index).index(args.station)
    rows = []
    for i, m in enumerate(args.magnitudes):
        for j, r in enumerate(args.distances):
            seed = [ORACLE_SEED, k, i, j]
            oracle = scenario_records(stations.loc[args.station], m, r, args.n,
                                      params.data.synth, seed)
            gen = sampler.sample(args.station, np.full(args.n, m), np.full(args.n, r),
                                 seed=1000 + 100 * i + j)
            truth, got = (medians(record_features(x, SAMPLING_RATE, rp, params.evaluate))
                          for x in (oracle, gen))
            yardstick = gmm_medians(m, r, vs30[args.station])
            rows.append({"M": m, "R km": r, "inside": inside(training, m, r),
                         **{f"sampler {c}": v for c, v in zip(MEASURES, got - truth)},
                         **{f"GMM {c}": v for c, v in zip(MEASURES, yardstick - truth)},
                         "oracle PGA cm/s^2": float(np.exp(truth[0]))})
            print(f"M {m:g}, R {r:g} km done", flush=True)
    out = pd.DataFrame(rows)
    (m_lo, r_lo), (m_hi, r_hi) = training.min(axis=0), training.max(axis=0)
    how = f", extrapolate {sampler.params.extrapolate}" if args.extrapolate else ""
    print(f"\n{args.checkpoint} ({sampler.kind}{how}) at station {args.station}: median less the "
          f"simulator's median at the same scenario, {args.n} records each; training range M "
          f"{m_lo:.2f}-{m_hi:.2f}, R {r_lo:.0f}-{r_hi:.0f} km")
    print(out.to_string(index=False, float_format="{:+.2f}".format))
    return 0


if __name__ == "__main__":
    raise SystemExit(one_line_errors(main, "extrapolation"))
