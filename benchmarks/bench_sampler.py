"""Budget of the TimesNet flow sampler beside TimesNet-Gen, measured in one run (item 4).

    PYTHONPATH=src python benchmarks/bench_sampler.py --data data/prepared --raw data/raw

Prints, side by side:
  training   flow sampler: seconds per epoch of each phase (a few real epochs) x the profile's
             epochs; TimesNet-Gen: seconds per optimiser step of each phase (a few real steps,
             params.yaml model and batch sizes) x steps per epoch x epochs
  generation records/s of FlowSampler.sample (GL + equalisation included), 1 and 2 workers
  memory     peak RSS of this process (training + generation), GB
The machine is shared and its speed varies up to 2x, so only the ratios of one run mean much.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from timesnet_gen.config import load_params
from timesnet_gen.models import flow_sampler as fs
from timesnet_gen.models.timesnet import TimesNetGen
from timesnet_gen.prepare import load_prepared, select
from timesnet_gen.train import model_config


def timesnet_gen_seconds(params_path: str, data: Path, steps: int, threads: int) -> dict:
    """Projected wall time (s) of TimesNet-Gen's two phases from `steps` timed steps each."""
    params = load_params(params_path)
    torch.set_num_threads(threads)
    waveforms, index = load_prepared(data)
    torch.manual_seed(0)
    model = TimesNetGen(model_config(params))
    out = {}
    for phase, role in (("pretrain", "pretrain"), ("finetune", "target")):
        pp = getattr(params.train, phase)
        rows = select(index, role, "train")
        x = torch.from_numpy(np.ascontiguousarray(waveforms[rows[: pp.batch_size]]))
        station = None if phase == "pretrain" else torch.from_numpy(
            index["station_index"].to_numpy()[rows[: pp.batch_size]]).long()
        opt = torch.optim.AdamW(model.parameters(), lr=pp.lr)
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = torch.mean((model(x, station) - x) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
        per_step = (time.perf_counter() - t0) / steps
        out[phase] = per_step * math.ceil(len(rows) / pp.batch_size) * pp.epochs
    return out


def flow_seconds(p: fs.FlowSamplerParams, data: Path, raw: Path, epochs: int,
                 out: Path) -> tuple[dict, fs.FlowSampler]:
    """Projected wall time (s) of the sampler's phases from `epochs` real epochs each."""
    quick = replace(p, pretrain_epochs=epochs, finetune_epochs=epochs)
    t0 = time.perf_counter()
    sampler = fs.train_sampler(data, quick, out, raw, log=lambda _: None)
    total = time.perf_counter() - t0
    import pandas as pd

    losses = pd.read_csv(out / "losses.tsv", sep="\t")
    per_epoch = losses.groupby("phase")["seconds"].mean()
    fixed = total - losses["seconds"].sum()  # features, checkpoint
    return {"pretrain": per_epoch["pretrain"] * p.pretrain_epochs,
            "finetune": per_epoch["finetune"] * p.finetune_epochs, "fixed": fixed}, sampler


def generation_rate(sampler: fs.FlowSampler, n: int, workers: int) -> float:
    """records/s of `workers` generating threads (one torch thread each)."""
    sampler.params = replace(sampler.params, num_threads=1, workers=workers)
    station = sampler.stations[0]
    scen = sampler.scenarios(station)[np.arange(n) % len(sampler.scenarios(station))]
    sampler.sample(station, scen[:4, 0], scen[:4, 1], seed=0)  # warm-up
    t0 = time.perf_counter()
    sampler.sample(station, scen[:, 0], scen[:, 1], seed=1)
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default=Path("data/prepared"), type=Path)
    ap.add_argument("--raw", default=Path("data/raw"), type=Path)
    ap.add_argument("--out", default=Path("/tmp/bench_sampler"), type=Path)
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="trained sampler for the generation rate (default: the benchmark's)")
    ap.add_argument("--epochs", type=int, default=3, help="timed flow-sampler epochs per phase")
    ap.add_argument("--steps", type=int, default=3, help="timed TimesNet-Gen steps per phase")
    ap.add_argument("--n", type=int, default=100, help="records generated for the rate")
    ap.add_argument("--gen-workers", type=int, default=2)
    ap.add_argument("--tng-threads", type=int, default=1,
                    help="torch threads of TimesNet-Gen (2 oversubscribes a shared machine)")
    args = ap.parse_args(argv)

    p = fs.FlowSamplerParams()
    flow, sampler = flow_seconds(p, args.data, args.raw, args.epochs, args.out)
    tng = timesnet_gen_seconds(args.params, args.data, args.steps, args.tng_threads)
    if args.checkpoint is not None:
        from timesnet_gen.sample import load_sampler

        sampler = load_sampler(args.checkpoint)
    rate = {t: generation_rate(sampler, args.n, t) for t in sorted({1, args.gen_workers})}
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2

    flow_total = sum(flow.values())
    tng_total = sum(tng.values())
    print(f"{'':28}{'flow sampler':>14}{'TimesNet-Gen':>14}")
    print(f"{'pretrain (s, projected)':28}{flow['pretrain']:14.0f}{tng['pretrain']:14.0f}")
    print(f"{'finetune (s, projected)':28}{flow['finetune']:14.0f}{tng['finetune']:14.0f}")
    print(f"{'features + checkpoint (s)':28}{flow['fixed']:14.1f}{'':>14}")
    print(f"{'training total (s)':28}{flow_total:14.0f}{tng_total:14.0f}"
          f"   ratio {flow_total / tng_total:.2f} (target <= 1)")
    for threads, r in rate.items():
        print(f"generation, {threads} worker(s): {r:.1f} records/s (target >= 50 on 2 cores)")
    print(f"peak RSS: {rss_gb:.2f} GB (target <= 4)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
