"""How much the median-f0 target moves with the sampling seed alone (README "A sampler that needs
no real records"): the target asks every station's median f0 of 50 generated records to be
within 5 % of the true f0, and one draw of 50 records is all the pipeline scores.

    PYTHONPATH=src python benchmarks/f0_spread.py models/flow/model.pt [more checkpoints] --seeds 8

For each checkpoint and target station: the median-f0 error (%) of 50 records at scenarios drawn
from the station's training rows (as `sample --station all` draws them), for sampling seeds
0..seeds-1. Beside them the same statistic of the perfect generator (50 of the station's real
training records drawn with replacement; --draws draws) and of all of its training records: the
spread a generator with the real records' own distribution cannot avoid.
Then, per checkpoint, the nearest-station accuracy of each seed's records (every station's
records assigned to the station whose real f0 distribution, all of its records, makes their f0
most likely, as the pipeline scores it) over the seeds, beside the real records' leave-one-out
ceiling.
Last, per checkpoint, the S-P picks of all of those records as the realism metrics pick them
(`diagnose_flow.realism_picks`): the share with an S-P pick and their median S-P time, pooled
over the stations and seeds (the realism metrics want all records picked, at the real median).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from diagnose_flow import realism_picks, sp_summary

from timesnet_gen.config import load_params
from timesnet_gen.errors import one_line_errors
from timesnet_gen.evaluation.hvsr import f0, hvsr
from timesnet_gen.evaluation.specificity import (
    histogram_edges,
    nearest_station_accuracy,
    nearest_station_accuracy_real,
)
from timesnet_gen.prepare import load_prepared
from timesnet_gen.sample import load_sampler

N_RECORDS = 50  # per station, as the pipeline's sample-flow stage draws


def error_pct(f0s: np.ndarray, truth: float) -> float:
    return float(100.0 * (np.median(f0s) / truth - 1.0))


def spread_row(errors: list[float]) -> dict:
    e = np.asarray(errors)
    return {"min": e.min(), "mean": e.mean(), "max": e.max(),
            "beyond_5pct": f"{int(np.sum(np.abs(e) > 5.0))} of {len(e)}", "errors": e}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--seeds", type=int, default=8, help="sampling seeds per checkpoint")
    ap.add_argument("--draws", type=int, default=20, help="perfect-generator draws")
    ap.add_argument("--data", default=Path("data/prepared"), type=Path)
    ap.add_argument("--raw", default=Path("data/raw"), type=Path)
    ap.add_argument("--params", default="params.yaml", help="for the realism pick settings")
    args = ap.parse_args(argv)
    ev = load_params(args.params).evaluate
    rp, edges = ev.realism, histogram_edges(ev.fmin, ev.fmax, ev.hist_bins)
    waves, index = load_prepared(args.data)
    truth = pd.read_csv(args.raw / "stations.csv", dtype={"station": str}).set_index("station")
    train = index[(index["role"] == "target") & (index["split"] == "train")]
    target = index[index["role"] == "target"]
    real_f0 = {s: f0(*hvsr(waves[target.index[target["station"] == s].to_numpy()]))
               for s in sorted(target["station"].unique())}
    nearest = (ev.nearest_method, ev.sigma_ln_floor, edges)
    rows, picks, accuracy = [], [], []
    for path in args.checkpoints:
        sampler = load_sampler(path)
        sp, gen_f0 = [], [{} for _ in range(args.seeds)]
        for station in sampler.stations:
            scen = sampler.scenarios(station)
            errors = []
            for seed in range(args.seeds):
                pick = scen[np.random.default_rng(seed).integers(0, len(scen), N_RECORDS)]
                gen = sampler.sample(station, pick[:, 0], pick[:, 1], seed)
                gen_f0[seed][station] = f0(*hvsr(gen))
                errors.append(error_pct(gen_f0[seed][station], truth.at[station, "f0_true_hz"]))
                p_pick, s_pick = realism_picks(gen, rp)
                sp.append(s_pick - p_pick)
            rows.append({"source": str(path), "station": station, **spread_row(errors)})
        sp = np.concatenate(sp)
        acc = [nearest_station_accuracy(g, real_f0, *nearest)["accuracy"] for g in gen_f0]
        accuracy.append({"source": str(path), "mean": np.mean(acc), "min": np.min(acc),
                         "max": np.max(acc), "acc": np.array(acc)})
        picks.append({"source": str(path), "records": len(sp), **sp_summary(sp)})
    for station in sorted(train["station"].unique()):
        f = f0(*hvsr(waves[train.index[train["station"] == station].to_numpy()]))
        t = truth.at[station, "f0_true_hz"]
        draws = [error_pct(f[np.random.default_rng(k).integers(0, len(f), N_RECORDS)], t)
                 for k in range(args.draws)]
        rows.append({"source": "perfect generator", "station": station, **spread_row(draws),
                     "all_training_records": error_pct(f, t)})
    table = pd.DataFrame(rows)
    print(f"median-f0 error (%) of {N_RECORDS} records, over {args.seeds} sampling seeds "
          f"(perfect generator: {args.draws} draws)")
    print(table.drop(columns="errors").to_string(index=False, float_format="%.1f"))
    for source, group in table.groupby("source", sort=False):  # seed / draw k at every station
        ok = np.all(np.abs(np.stack(group["errors"].to_list())) <= 5.0, axis=0)
        print(f"{source}: every station within 5 % in {int(ok.sum())} of {len(ok)} "
              f"{'draws' if source == 'perfect generator' else 'seeds'}")
    ceiling = nearest_station_accuracy_real(real_f0, *nearest)["accuracy"]
    accuracy = pd.DataFrame(accuracy)
    accuracy["below_target"] = [f"{int((a < ceiling - 0.05).sum())} of {len(a)}"
                                for a in accuracy.pop("acc")]
    print(f"\nnearest-station accuracy over the seeds (real ceiling {ceiling:.3f}; the target "
          f"asks for >= {ceiling - 0.05:.3f}):")
    print(accuracy.to_string(index=False, float_format="%.3f"))
    print("\nS-P picks of the same records (realism protocol):")
    print(pd.DataFrame(picks).to_string(index=False, float_format="%.2f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(one_line_errors(main, "f0_spread"))
