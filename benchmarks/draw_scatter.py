"""How much one pipeline draw of a sampler moves its headline realism metrics.

README "A sampler that needs no real records" (what it meets and misses); docs/flow_sampler.md
"Pipeline runs, version by version".

    PYTHONPATH=src python benchmarks/draw_scatter.py models/flow/model.pt [--seeds 0 1 2 3 4 5]

The `sample-flow` stage draws -n records per target station once (`timesnet-gen sample
--station all --seed generate.seed`) and the evaluate stage scores that draw against the
station's held-out records. This script makes the same draw for every --seeds value (through
the same command, into a temporary folder it removes) and scores each one as the evaluate stage
does (evaluate.realism), so seed generate.seed reproduces the committed metrics. It prints, per
seed, the metrics named by --metrics, then the perfect generator's band of each and how many
seeds fall inside it. One draw of 50 records per station scatters as much as a design change
moves the mean, which is why docs/flow_sampler.md compares designs with oracle_realism.py's 20
draws instead.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from timesnet_gen.config import load_params
from timesnet_gen.corpus.format import read_corpus
from timesnet_gen.errors import UserError, one_line_errors
from timesnet_gen.evaluate import prepared_real, realism
from timesnet_gen.records import SAMPLING_RATE
from timesnet_gen.sample import load_sampler

METRICS = ("classifier_auc", "gmm_pga_std_diff", "sp_median_s", "sp_found_rate")


def band_rows(flat: dict, metrics: list[str], source: str) -> pd.DataFrame:
    """One row per metric of `realism`'s flat output for source: value, band_lo, band_hi, met.
    UserError naming a metric that the output lacks."""
    missing = [m for m in metrics if f"realism/{source}/{m}" not in flat]
    if missing:
        known = sorted({k.split("/")[2] for k in flat if k.startswith(f"realism/{source}/")
                        and not k.endswith(("_band_lo", "_band_hi", "_met"))})
        raise UserError(f"no realism metric(s) {missing} for {source} (known: "
                        f"{', '.join(known)})")
    return pd.DataFrame([{"metric": m, "value": float(flat[f"realism/{source}/{m}"]),
                          "band_lo": float(flat[f"realism/{source}/{m}_band_lo"]),
                          "band_hi": float(flat[f"realism/{source}/{m}_band_hi"]),
                          "met": bool(flat[f"realism/{source}/{m}_met"])} for m in metrics])


def summary(per_seed: dict[int, pd.DataFrame]) -> tuple[pd.DataFrame, pd.Series]:
    """From band_rows of every seed (the band is the same for every seed): the seeds x metrics
    table of the values with the band's ends as two more rows, and per metric how many seeds
    are inside the band."""
    first = next(iter(per_seed.values())).set_index("metric")
    table = pd.DataFrame({f"seed {seed}": rows.set_index("metric")["value"]
                          for seed, rows in per_seed.items()}).T
    table.loc["band from"] = first["band_lo"]
    table.loc["band to"] = first["band_hi"]
    inside = sum(rows.set_index("metric")["met"].astype(int) for rows in per_seed.values())
    return table[list(first.index)], inside[list(first.index)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--n", type=int, default=50, help="records per station and draw")
    ap.add_argument("--metrics", nargs="+", default=list(METRICS))
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default=Path("data/prepared"), type=Path)
    ap.add_argument("--raw", default=Path("data/raw"), type=Path)
    args = ap.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        raise UserError(f"--seeds repeats a seed: {args.seeds}")
    params = load_params(args.params).evaluate
    if args.n < params.realism.min_records:
        raise UserError(f"--n must be at least evaluate.realism.min_records = "
                        f"{params.realism.min_records} (a station with fewer is not scored), "
                        f"got {args.n}")
    sampler = load_sampler(args.checkpoint)
    stations = list(sampler.stations)
    real = prepared_real(args.raw, args.data, stations)
    per_seed = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            out = Path(tmp) / f"seed{seed}"
            done = subprocess.run([sys.executable, "-m", "timesnet_gen", "sample", "--checkpoint",
                                   str(args.checkpoint), "--station", "all", "-n", str(args.n),
                                   "--seed", str(seed), "--out", str(out)],
                                  capture_output=True, text=True)
            if done.returncode:
                raise UserError(f"sampling seed {seed}: {done.stderr.strip().splitlines()[-1]}")
            flat = realism(real, {"flow": read_corpus(out, stations)}, {}, params, stations,
                           SAMPLING_RATE)[0]
            per_seed[seed] = band_rows(flat, args.metrics, "flow")
            print(f"seed {seed} done", flush=True)
    print(f"realism metrics of {args.checkpoint} ({sampler.kind}), one draw of {args.n} records "
          "per station per seed, against the held-out records")
    table, inside = summary(per_seed)
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    print("seeds inside the band: " + ", ".join(f"{m} {k} of {len(per_seed)}"
                                                 for m, k in inside.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(one_line_errors(main, "draw_scatter"))
