"""What the flow sampler's representation and decoder alone cost a corpus's records.

docs/flow_sampler.md "Real records: the canvas and the long-period steps"; README "Run it on
your own AFAD records".

    PYTHONPATH=src python benchmarks/round_trip.py CORPUS [--stations CODE ...] [--seeds 3]
        [--params params.yaml]

CORPUS is a canonical corpus folder: data/raw, or what `timesnet-gen ingest` wrote from real
records. Every record is encoded with the flow sampler's representation (generators.flow of
--params) and decoded again: no network and no training, so what is measured is the
representation and the decoder alone, the floor under any flow trained on those records. The
decoded record is compared with the record itself on the realism classifier's features (ln mean
power per component, 5 s window and band; evaluate.realism), the features in which a sampler
is told apart from real records. Printed for the decoder settings side by side (rows): the
params' own, the real-records settings (flow_sampler.REAL_RECORDS), and every combination of
canvas (wrap, hold), long_gap (clip, shift, squeeze) and the long-period steps
(long_period_hz, random_phase_hz: as in the params, "on" (the simulated corpus's profile has
them on), or off). Columns: the ln power error (decoded less the record's) averaged over the
records, components and bands in each 5 s window (a mean a classifier sees), its rms over all
cells, and the share of records whose first window (before their P on a P-aligned corpus) is
decoded with more than 10 times its power (ln 2.3). Griffin-Lim starts from seeds 0 ..
--seeds - 1; every record is decoded once per seed, in chunks of rep.DECODE_CHUNK records.
Cost: the 773 records of the simulated corpus, --seeds 1, ten settings (before squeeze) took
134 s on one thread at a peak RSS of 0.87 GB.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from timesnet_gen.config import load_params
from timesnet_gen.corpus.format import read_corpus
from timesnet_gen.errors import UserError, one_line_errors
from timesnet_gen.evaluation.realism_features import spectrogram_features
from timesnet_gen.models import flow_sampler as fs
from timesnet_gen.models.flow_sampler import representation as rep
from timesnet_gen.records import SAMPLING_RATE
from timesnet_gen.sample import flow_params

LOUD_LN = np.log(10.0)  # ln power: a window decoded with more than 10 times its power


def settings(p: fs.FlowSamplerParams) -> dict[str, fs.FlowSamplerParams]:
    """The decoder settings compared: the params' own, the real-records settings
    (flow_sampler.REAL_RECORDS), then every combination of the canvas, long_gap and the
    long-period steps (as the params, or off)."""
    out = {"the params' own": p, "the real-records settings": replace(p, **fs.REAL_RECORDS)}
    for canvas, long_gap, steps in itertools.product(fs.CANVASES, fs.LONG_GAPS, ("on", "off")):
        q = replace(p, canvas=canvas, long_gap=long_gap)
        if steps == "off":
            q = replace(q, long_period_hz=0.0, random_phase_hz=0.0)
        out[f"canvas {canvas}, long_gap {long_gap}, long-period steps {steps}"] = q
    return out


def round_trip_error(records: np.ndarray, p: fs.FlowSamplerParams, rp, seeds: int
                     ) -> np.ndarray:
    """(seeds * n, 3, windows, bands) ln power of the decoded records less the records' own,
    rep.DECODE_CHUNK records at a time (memory); Griffin-Lim seed k draws from one generator
    seeded k across the chunks."""
    generators = [torch.Generator().manual_seed(seed) for seed in range(seeds)]
    errors = []
    for start in range(0, len(records), rep.DECODE_CHUNK):
        part = records[start:start + rep.DECODE_CHUNK]
        feats = rep.encode(part, p)
        ref = spectrogram_features(part, SAMPLING_RATE, rp)
        for generator in generators:
            decoded = rep.decode(*(torch.from_numpy(feats[k])
                                  for k in ("level", "onset", "coarse", "fine")),
                                p, generator, records.shape[-1])
            errors.append(spectrogram_features(decoded, SAMPLING_RATE, rp) - ref)
    return np.concatenate(errors).reshape(seeds * len(records), 3, -1, rp.spec_n_bands)


def summary_row(err: np.ndarray, window_s: float) -> dict[str, float]:
    """The printed columns of one setting's errors (records, 3, windows, bands)."""
    per_window = err.mean(axis=(0, 1, 3))
    row = {f"{k * window_s:g}-{(k + 1) * window_s:g} s": v for k, v in enumerate(per_window)}
    row["rms, all cells"] = float(np.sqrt((err ** 2).mean()))
    row["first window > 10x power, %"] = 100.0 * float((err[:, :, 0].mean(axis=(1, 2))
                                                  > LOUD_LN).mean())
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--stations", nargs="+", help="only these stations (default: all)")
    ap.add_argument("--seeds", type=int, default=3, help="Griffin-Lim seeds per record")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    rp = load_params(args.params).evaluate.realism
    p = flow_params(args.params, [])
    corpus = read_corpus(args.corpus, args.stations)
    records = np.asarray(corpus.waveforms, dtype=np.float32)
    if not len(records):
        raise UserError(f"{args.corpus}: no records" + (f" of stations {args.stations}"
                                                       if args.stations else ""))
    rows = {name: summary_row(round_trip_error(records, q, rp, args.seeds), rp.spec_window_s)
            for name, q in settings(p).items()}
    print(f"round trip (encode, decode) of {len(records)} records of {args.corpus}, "
          f"{args.seeds} Griffin-Lim seeds; ln power error per 5 s window (mean over records, "
          "components and bands), its rms over all cells, records whose first window has > 10x "
          "its power")
    print(pd.DataFrame(rows).T.to_string(float_format=lambda v: f"{v:.2f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(one_line_errors(main, "round_trip"))
