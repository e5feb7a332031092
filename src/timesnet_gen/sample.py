"""`train-sampler` and `sample`: record-free samplers conditioned on station and scenario.

    timesnet-gen train-sampler --data data/prepared --raw data/raw --out models/sampler
    timesnet-gen sample --checkpoint models/sampler/model.pt --station 4628 \
        [--magnitude 6.0 --distance-km 30] -n 20 --seed 0 --out DIR

train-sampler  trains the TimesNet flow sampler (models/flow_sampler/): pre-training on the
               non-target stations' train split, fine-tuning on the target stations' train
               split; writes <out>/model.pt and losses.tsv. Parameters: the `generators.flow`
               section of --params when present, else the CPU-profile defaults; --set KEY=VALUE
               overrides one (repeatable).
sample         reads only the checkpoint. Without --magnitude/--distance-km the scenarios are
               drawn (seeded, with replacement) from the station's training scenarios kept in
               the checkpoint; a scenario outside that range is generated with a one-line
               warning giving the range. --station all generates n records for every station.
               Writes a canonical corpus (records/, records.csv with the provenance columns
               sampler, checkpoint, seed, scenario, magnitude, distance_km; stations.csv).

A checkpoint is torch.save({"kind", "format": 1, "state"}) of a sampler; SAMPLERS names the
class of each kind.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from timesnet_gen.atomic import check_out
from timesnet_gen.stage import stage_parser
from timesnet_gen.errors import UserError

SAMPLERS = {
    "timesnet-flow": "timesnet_gen.models.flow_sampler:FlowSampler",
    "stochastic": "timesnet_gen.models.stochastic:StochasticSampler",
}
FORMAT = 1
SCENARIO_COLUMNS = ("magnitude", "distance_km")


class SampleError(UserError):
    """Bad input to `sample` / `train-sampler`: checkpoint, station, scenario or output."""


# --------------------------------------------------------------------------------------------
# checkpoints


def sampler_class(kind: str) -> type:
    """The sampler class registered for `kind` (SAMPLERS)."""
    if kind not in SAMPLERS:
        raise SampleError(f"unknown sampler kind {kind!r} (known: {', '.join(SAMPLERS)})")
    module, name = SAMPLERS[kind].split(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise SampleError(f"sampler kind {kind!r} is not available here ({exc})") from None


def save_sampler(sampler: Any, path: str | Path) -> None:
    """Write a sampler checkpoint atomically (loadable with weights_only=True)."""
    from timesnet_gen.runtime import save_checkpoint

    save_checkpoint({"kind": sampler.kind, "format": FORMAT, "state": sampler.state()},
                    Path(path))


def load_sampler(path: str | Path, kind: str | None = None) -> Any:
    """Load a sampler checkpoint; a corrupt file, another kind or format is a SampleError."""
    from timesnet_gen.runtime import CheckpointError, load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        raise SampleError(str(exc)) from None
    if not {"kind", "format", "state"} <= set(ckpt):
        raise SampleError(f"{path}: not a sampler checkpoint (no kind/format/state; a "
                          "TimesNet-Gen or VAE model.pt is not a sampler)")
    if kind is not None and ckpt["kind"] != kind:
        raise SampleError(f"{path}: a {ckpt['kind']!r} checkpoint, expected {kind!r}")
    if ckpt["format"] != FORMAT:
        raise SampleError(f"{path}: checkpoint format {ckpt['format']!r}, expected {FORMAT}")
    cls = sampler_class(str(ckpt["kind"]))
    try:
        return cls.from_state(ckpt["state"])
    except UserError as exc:
        raise SampleError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------------------------
# scenarios and records


def check_count(n: int) -> int:
    if n < 1:
        raise SampleError(f"-n must be >= 1, got {n}")
    return n


def check_values(name: str, values: np.ndarray) -> np.ndarray:
    """Finite, > 0 float64 values of a scenario column; else a SampleError naming the value."""
    values = np.atleast_1d(np.asarray(values, dtype=np.float64))
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        raise SampleError(f"--{name.replace('_', '-')} must be finite and > 0, got "
                          f"{values[bad][0]}")
    return values


def range_warning(station: str, train: np.ndarray, magnitude: np.ndarray,
                  distance_km: np.ndarray) -> str | None:
    """One line when a scenario leaves the station's training range, else None."""
    lo, hi = train.min(axis=0), train.max(axis=0)
    outside = [name for k, (name, v) in enumerate(zip(SCENARIO_COLUMNS, (magnitude, distance_km)))
               if (v < lo[k]).any() or (v > hi[k]).any()]
    if not outside:
        return None
    return (f"warning: {' and '.join(outside)} outside station {station}'s training range "
            f"(magnitude {lo[0]:.2f}-{hi[0]:.2f}, distance {lo[1]:.1f}-{hi[1]:.1f} km): "
            "extrapolating (README: \"Outside the training range\")")


def scenarios_for(sampler: Any, station: str, n: int, seed: int, magnitude: float | None,
                  distance_km: float | None, warn: Callable[[str], None]
                  ) -> tuple[np.ndarray, np.ndarray, str]:
    """(magnitude (n,), distance_km (n,), "given" | "drawn") for one station."""
    train = np.asarray(sampler.scenarios(station), dtype=np.float64)
    if (magnitude is None) != (distance_km is None):
        raise SampleError("give both --magnitude and --distance-km, or neither (drawn from the "
                          "station's training scenarios)")
    if magnitude is None:
        if len(train) == 0:
            raise SampleError(f"station {station} has no training scenarios; give --magnitude "
                              "and --distance-km")
        pick = np.random.default_rng(seed).integers(0, len(train), n)
        return train[pick, 0], train[pick, 1], "drawn"
    m = np.full(n, check_values("magnitude", magnitude)[0])
    r = np.full(n, check_values("distance_km", distance_km)[0])
    message = range_warning(station, train, m, r) if len(train) else None
    if message:
        warn(message)
    return m, r, "given"


def check_peak(waves: np.ndarray, station: str, magnitude: np.ndarray,
               distance_km: np.ndarray) -> None:
    """SampleError when a record's peak exceeds what a corpus record holds (int32 counts at
    DEFAULT_COUNTS_PER_CM_S2, about 21 g): a scenario extrapolated far outside the training
    range, named with its magnitude and distance."""
    from timesnet_gen.records import DEFAULT_COUNTS_PER_CM_S2

    limit = np.iinfo(np.int32).max / DEFAULT_COUNTS_PER_CM_S2
    peaks = np.abs(waves).reshape(len(waves), -1).max(axis=1, initial=0.0)
    if peaks.max(initial=0.0) > limit:
        k = int(np.argmax(peaks))
        raise SampleError(
            f"station {station}, magnitude {magnitude[k]:.2f} at {distance_km[k]:.1f} km: "
            f"generated peak {peaks[k]:.3g} cm/s^2 ({peaks[k] / 981:.0f} g) exceeds the "
            f"{limit / 981:.0f} g a record can hold; the scenario lies far outside the "
            "sampler's training range")


def sample_station(sampler: Any, station: str, n: int, seed: int,
                   magnitude: float | None = None, distance_km: float | None = None,
                   checkpoint: str = "", warn: Callable[[str], None] = print
                   ) -> tuple[np.ndarray, pd.DataFrame]:
    """n records of one station: (waveforms (n, 3, T) float32 cm/s^2, records table)."""
    if station not in sampler.stations:
        raise SampleError(f"unknown station {station!r} (known: {', '.join(sampler.stations)})")
    check_count(n)
    m, r, how = scenarios_for(sampler, station, n, seed, magnitude, distance_km, warn)
    waves = np.asarray(sampler.sample(station, m, r, seed), dtype=np.float32)
    if waves.shape[0] != n or not np.isfinite(waves).all():
        raise SampleError(f"sampler returned {waves.shape} records with NaN/inf or the wrong "
                          f"count for station {station} (expected {n})")
    check_peak(waves, station, m, r)
    records = pd.DataFrame({
        "record_id": [f"{sampler.kind}-{station}-s{seed}-{i:04d}" for i in range(n)],
        "station": station, "source": f"{sampler.kind}-gen", "sampler": sampler.kind,
        "checkpoint": checkpoint, "seed": seed, "scenario": how,
        "magnitude": m, "distance_km": r,
    })
    return waves, records


def sample_stations(sampler: Any, stations: list[str], n: int, seed: int,
                    magnitude: float | None = None, distance_km: float | None = None,
                    checkpoint: str = "", warn: Callable[[str], None] = print
                    ) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """n records for each station (station k seeded with seed + k): waveforms, records, and the
    stations table of the output corpus."""
    parts = [sample_station(sampler, s, n, seed + k, magnitude, distance_km, checkpoint, warn)
             for k, s in enumerate(stations)]
    waves = np.concatenate([w for w, _ in parts])
    records = pd.concat([r for _, r in parts], ignore_index=True)
    table = pd.DataFrame({"station": stations, "role": "target", "f0_true_hz": np.nan})
    return waves, records, table


def read_scenarios(csv: Path, split: str | None, raw: Path | None) -> pd.DataFrame:
    """Rows (record_id, station, magnitude, distance_km) of a scenario table: e.g. the held-out
    records of a prepared index.csv (--split holdout), magnitude and distance joined on
    record_id from RAW/records.csv when the table lacks them."""
    if not csv.is_file():
        raise SampleError(f"{csv}: no such scenario table")
    table = pd.read_csv(csv, dtype={"station": str, "record_id": str})
    for column in ("record_id", "station"):
        if column not in table.columns:
            raise SampleError(f"{csv}: needs a {column!r} column")
    if split is not None:
        if "split" not in table.columns:
            raise SampleError(f"{csv}: --split {split} but the table has no 'split' column")
        table = table[(table["split"] == split) & (table.get("role", "target") == "target")]
    missing = [c for c in SCENARIO_COLUMNS if c not in table.columns]
    if missing:
        if raw is None or not (raw / "records.csv").is_file():
            raise SampleError(f"{csv}: no {', '.join(missing)} columns; give --raw with a "
                              "records.csv that has them")
        meta = pd.read_csv(raw / "records.csv", dtype={"record_id": str})
        if any(c not in meta.columns for c in missing):
            raise SampleError(f"{raw / 'records.csv'}: no {', '.join(missing)} columns")
        table = table.merge(meta[["record_id", *missing]], on="record_id", how="left")
    if table.empty:
        raise SampleError(f"{csv}: no scenarios" + (f" in split {split!r}" if split else ""))
    for column in SCENARIO_COLUMNS:
        check_values(column, table[column].to_numpy())
    return table.reset_index(drop=True)


def sample_scenarios(sampler: Any, scenarios: pd.DataFrame, n: int, seed: int,
                     checkpoint: str = "", warn: Callable[[str], None] = print
                     ) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """n records at each scenario row (row k seeded with seed + k), each tagged with the
    scenario's record_id as source_record: for scenario fidelity on held-out records."""
    parts = []
    for k, row in enumerate(scenarios.itertuples(index=False)):
        waves, records = sample_station(sampler, row.station, n, seed + k, row.magnitude,
                                        row.distance_km, checkpoint, warn)
        records["record_id"] = [f"{sampler.kind}-{row.record_id}-{i:03d}" for i in range(n)]
        records["source_record"] = row.record_id
        parts.append((waves, records))
    stations = list(dict.fromkeys(scenarios["station"]))
    table = pd.DataFrame({"station": stations, "role": "target", "f0_true_hz": np.nan})
    return (np.concatenate([w for w, _ in parts]),
            pd.concat([r for _, r in parts], ignore_index=True), table)


def check_writable(out: Path, sources: list[Path]) -> Path:
    """Refuse an --out that is a file, replaces the checkpoint or sits in an unwritable folder
    (before any work)."""
    out = check_out(out, sources, "folder")
    parent = out.parent.resolve()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SampleError(f"{out}: cannot write there ({parent} is not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SampleError(f"{out}: cannot write there ({parent} is not writable)")
    return out


# --------------------------------------------------------------------------------------------
# params of train-sampler


def parse_value(text: str, like: Any) -> Any:
    """A --set value parsed as the type of the default it replaces."""
    if isinstance(like, bool):
        if text.lower() not in ("true", "false"):
            raise SampleError(f"expected true or false, got {text!r}")
        return text.lower() == "true"
    try:
        return type(like)(text)
    except ValueError:
        raise SampleError(f"expected a {type(like).__name__}, got {text!r}") from None


def flow_params(params_path: str | Path | None, overrides: list[str]):
    """FlowSamplerParams from params.yaml `generators.flow` (validated by config.section;
    ./params.yaml when none is named, the defaults when there is none) and KEY=VALUE
    overrides; an unknown key, a named file that is absent or a NaN value is named."""
    from timesnet_gen.config import load_params, section
    from timesnet_gen.models.flow_sampler import FlowSamplerParams

    defaults = asdict(FlowSamplerParams())
    given: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SampleError(f"--set {item!r}: expected KEY=VALUE")
        if key not in defaults:
            raise SampleError(f"--set {key}: unknown generators.flow key (known: "
                              f"{', '.join(f.name for f in fields(FlowSamplerParams))})")
        try:
            given[key] = parse_value(value, defaults[key])
        except SampleError as exc:
            raise SampleError(f"--set {key}: {exc}") from None
    if params_path is None and Path("params.yaml").exists():
        params_path = "params.yaml"  # the project's, when run from its root
    raw: dict[str, Any] = {}
    if params_path is not None:
        if not Path(params_path).is_file():
            raise SampleError(f"--params {params_path}: no such params file")
        raw = asdict(section(load_params(params_path), "flow", FlowSamplerParams))
    raw.update(given)
    return FlowSamplerParams(**raw)  # every key checked above


# --------------------------------------------------------------------------------------------
# CLI


def sample_main(args: argparse.Namespace) -> int:
    check_count(args.n)
    for name in SCENARIO_COLUMNS:
        value = getattr(args, name)
        if value is not None:
            check_values(name, value)
    out = check_writable(args.out, [args.checkpoint])
    if (args.station is None) == (args.scenarios is None):
        raise SampleError("give --station (a code or 'all') or --scenarios CSV, not both")
    scenarios = None if args.scenarios is None else read_scenarios(args.scenarios, args.split,
                                                                    args.raw)
    sampler = load_sampler(args.checkpoint, args.kind)
    warnings: dict[str, None] = {}

    def warn(message: str) -> None:
        if message not in warnings:
            warnings[message] = None
            print(message, file=sys.stderr)

    if scenarios is not None:
        waves, records, table = sample_scenarios(sampler, scenarios, args.n, args.seed,
                                                 str(args.checkpoint), warn)
        stations = list(table["station"])
    else:
        stations = list(sampler.stations) if args.station == "all" else [args.station]
        waves, records, table = sample_stations(sampler, stations, args.n, args.seed,
                                                args.magnitude, args.distance_km,
                                                str(args.checkpoint), warn)
    from timesnet_gen.corpus.format import write_corpus

    write_corpus(out, waves, records, table, sources=[args.checkpoint])  # failed write: one line
    print(f"sample: wrote {len(records)} {sampler.kind} records of {', '.join(stations)} -> {out}")
    return 0


def train_main(args: argparse.Namespace) -> int:
    from timesnet_gen.models.flow_sampler import train_sampler

    params = flow_params(args.params, args.set)
    check_writable(args.out, [args.data, args.raw])
    train_sampler(args.data, params, args.out, args.raw)
    print(f"train-sampler: wrote {args.out}/model.pt and losses.tsv")
    return 0


def main(argv: list[str], verb: str = "sample") -> int:
    parser = stage_parser(verb, __doc__)
    if verb == "sample":
        parser.add_argument("--checkpoint", required=True, type=Path,
                            help="sampler checkpoint (model.pt or its folder)")
        parser.add_argument("--kind", choices=sorted(SAMPLERS), default=None,
                            help="refuse a checkpoint of another kind")
        parser.add_argument("--station", help="station code, or 'all'")
        parser.add_argument("--scenarios", type=Path, help="CSV of scenarios (record_id, "
                            "station[, magnitude, distance_km]): -n records at each row")
        parser.add_argument("--split", help="with --scenarios: only rows of this split "
                            "(e.g. holdout of a prepared index.csv)")
        parser.add_argument("--raw", type=Path, help="with --scenarios: corpus whose "
                            "records.csv gives magnitude and distance_km by record_id")
        parser.add_argument("--magnitude", type=float, default=None, help="moment magnitude")
        parser.add_argument("--distance-km", dest="distance_km", type=float, default=None,
                            help="source distance, km")
        parser.add_argument("-n", type=int, default=20,
                            help="records per station, or per scenario row (>= 1)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--out", required=True, type=Path, help="output corpus folder")
        return sample_main(parser.parse_args(argv))
    if verb == "train-sampler":
        parser.add_argument("--params", default=None,
                            help="params.yaml (default: ./params.yaml when present, else the CPU-profile defaults)")
        parser.add_argument("--data", default=Path("data/prepared"), type=Path)
        parser.add_argument("--raw", default=Path("data/raw"), type=Path,
                            help="raw corpus: its records.csv gives magnitude and distance_km")
        parser.add_argument("--out", default=Path("models/sampler"), type=Path)
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override one flow_sampler parameter")
        return train_main(parser.parse_args(argv))
    raise SampleError(f"unknown verb {verb!r} for timesnet_gen.sample")
