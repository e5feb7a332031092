"""Speed of the realism metrics: 1000 records batched vs a plain per-record loop (issue 11).

    PYTHONPATH=src python benchmarks/bench_realism.py [--prepared data/prepared] [--n 1000]

Records: the prepared corpus (repeated up to --n) or, without one, simulated records. Prints
the batched time of record_features on n records, the same features one record at a time
(a loop over --loop records, scaled to n), pyrotd one record at a time (the RotD50 reference,
--pyrotd records, scaled), and compare() of the n records against 200 real ones.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from timesnet_gen.evaluation.realism import RealismParams, compare, pyrotd_rotd50, record_features

FS = 100.0


def load_records(prepared: Path, n: int) -> np.ndarray:
    if (prepared / "waveforms.npy").exists():
        w = np.load(prepared / "waveforms.npy", mmap_mode="r")
        idx = np.arange(n) % len(w)
        return np.asarray(w[np.sort(idx)], dtype=np.float64)
    from timesnet_gen.config import SynthParams
    from timesnet_gen.corpus.synth import Site, draw_event, simulate_record

    p, rng = SynthParams(), np.random.default_rng(0)
    site = Site(f0=3.0, impedance=4.0, damping=0.05)
    return np.stack([simulate_record(rng, draw_event(rng, p), site, p)[0] for _ in range(n)])


CPU: list[float] = []  # process CPU seconds of each timed call (wall time on a loaded machine
#                       overstates what an idle 2-core machine needs)


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    CPU.append(time.process_time() - cpu)
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--loop", type=int, default=100, help="records in the per-record loop")
    ap.add_argument("--pyrotd", type=int, default=5, help="records given to pyrotd")
    args = ap.parse_args()
    params = RealismParams()
    records = load_records(args.prepared, args.n)
    print(f"{len(records)} records x {records.shape[-1]} samples, {len(params.periods)} periods,"
          f" {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    record_features(records[:4], FS, params)  # imports (obspy), caches
    t_batch, feats = timed(record_features, records, FS, params)
    print(f"batched record_features: {t_batch:.1f} s wall ({CPU[-1]:.1f} s CPU) for "
          f"{len(records)} records")
    loop = records[: args.loop]
    t_loop, _ = timed(lambda: [record_features(r[None], FS, params) for r in loop])
    t_loop_n = t_loop * len(records) / len(loop)
    print(f"per-record loop:         {t_loop:.1f} s for {len(loop)} records -> "
          f"{t_loop_n:.1f} s for {len(records)} (scaled); batched is {t_loop_n / t_batch:.1f}x "
          "faster")
    few = records[: args.pyrotd, :2]
    t_ref, _ = timed(pyrotd_rotd50, few, FS, params.periods, params.damping, params.rotd_pad_s)
    t_ref_n = t_ref * len(records) / len(few)
    print(f"pyrotd RotD50 alone:     {t_ref:.1f} s for {len(few)} records -> {t_ref_n:.0f} s "
          f"for {len(records)} (scaled); batched features are {t_ref_n / t_batch:.0f}x faster")
    ref = feats.take(np.arange(min(200, len(feats))))
    t_cmp, _ = timed(compare, feats, ref, 0, params)
    print(f"compare (incl. classifier AUC) of {len(feats)} vs {len(ref)} records: {t_cmp:.1f} s "
          f"wall ({CPU[-1]:.1f} s CPU)")
    total, cpu = t_batch + t_cmp, CPU[0] + CPU[-1]
    print(f"total realism metrics of {len(records)} records: {total:.1f} s wall, {cpu:.1f} s CPU "
          f"({'within' if total <= 30 else 'OVER'} the 30 s budget on wall time)")


if __name__ == "__main__":
    main()
