"""`prepare` stage: stack the canonical corpus into one array and make the seeded splits.

Writes to the output folder
    waveforms.npy   (n, 3, T) float32, cm/s^2, rows aligned with index.csv
    index.csv       record_id, station, role (target|pretrain), split, station_index
splits:
    pretrain stations: train / val (data.val_fraction, seeded)
    target stations:   train / holdout (data.holdout_fraction per station, seeded); holdout
                       records are never seen by training or generation
station_index: position of the station in data.target_stations (the conditioning class), -1 else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from timesnet_gen.stage import stage_parser
from timesnet_gen.config import DataParams, load_params
from timesnet_gen.atomic import staged_dir
from timesnet_gen.corpus.format import CorpusError, read_corpus

SPLITS = ("train", "val", "holdout")


def _split_stations(records: pd.DataFrame, data: DataParams) -> tuple[list[str], list[str]]:
    present = sorted(records["station"].unique())
    missing = [s for s in data.target_stations if s not in present]
    if missing:
        raise CorpusError(
            f"target station(s) {missing} have no records in the corpus (stations present: "
            f"{', '.join(present[:20])}{' ...' if len(present) > 20 else ''})"
        )
    pretrain = [s for s in present if s not in data.target_stations]
    if data.max_pretrain_stations:
        rng = np.random.default_rng(data.split_seed)
        keep = rng.permutation(len(pretrain))[: data.max_pretrain_stations]
        pretrain = [pretrain[i] for i in sorted(keep)]
    return list(data.target_stations), pretrain


def make_index(records: pd.DataFrame, data: DataParams) -> pd.DataFrame:
    """Assign role, split and station_index to every record kept (pure, seeded)."""
    targets, pretrain = _split_stations(records, data)
    rng = np.random.default_rng(data.split_seed)
    rows = []
    for station in targets + pretrain:
        ids = sorted(records.loc[records["station"] == station, "record_id"])
        ids = [ids[i] for i in rng.permutation(len(ids))]
        if data.max_records_per_station:
            ids = ids[: data.max_records_per_station]
        is_target = station in targets
        fraction = data.holdout_fraction if is_target else data.val_fraction
        n_out = int(round(fraction * len(ids)))
        if fraction > 0 and len(ids) >= 2:
            n_out = min(max(n_out, 1), len(ids) - 1)
        other = "holdout" if is_target else "val"
        for i, rid in enumerate(ids):
            rows.append({
                "record_id": rid,
                "station": station,
                "role": "target" if is_target else "pretrain",
                "split": other if i < n_out else "train",
                "station_index": targets.index(station) if is_target else -1,
            })
    index = pd.DataFrame(rows)
    return index.sort_values(["role", "station", "record_id"], ignore_index=True)


def prepare(raw_dir: Path, out_dir: Path, data: DataParams) -> pd.DataFrame:
    corpus = read_corpus(raw_dir)
    index = make_index(corpus.records, data)
    position = {rid: i for i, rid in enumerate(corpus.records["record_id"])}
    waveforms = corpus.waveforms[[position[r] for r in index["record_id"]]]
    if not np.all(np.isfinite(waveforms)):
        raise CorpusError(f"{raw_dir}: corpus contains NaN/inf samples")
    with staged_dir(out_dir, [raw_dir]) as tmp:
        np.save(tmp / "waveforms.npy", waveforms.astype(np.float32))
        index.to_csv(tmp / "index.csv", index=False)
    return index


def load_prepared(prepared_dir: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """(waveforms (n, 3, T) float32 cm/s^2, index table) of a prepared folder."""
    prepared_dir = Path(prepared_dir)
    if not (prepared_dir / "index.csv").exists():
        raise CorpusError(f"{prepared_dir}: no index.csv (run the prepare stage first)")
    index = pd.read_csv(prepared_dir / "index.csv", dtype={"station": str, "record_id": str})
    waveforms = np.load(prepared_dir / "waveforms.npy", mmap_mode="r")
    if len(waveforms) != len(index):
        raise CorpusError(f"{prepared_dir}: {len(waveforms)} waveforms for {len(index)} rows")
    return np.asarray(waveforms), index


def select(index: pd.DataFrame, role: str, split: str) -> np.ndarray:
    """Row positions of one role ('target'|'pretrain') and split ('train'|'val'|'holdout')."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected one of {SPLITS})")
    mask = (index["role"] == role) & (index["split"] == split)
    return np.flatnonzero(mask.to_numpy())


def main(argv: list[str], verb: str = "prepare") -> int:
    parser = stage_parser(verb, __doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", default="data/raw", type=Path)
    parser.add_argument("--out", default="data/prepared", type=Path)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    index = prepare(args.raw, args.out, params.data)
    counts = index.groupby(["role", "split"]).size()
    print(f"prepared {len(index)} records -> {args.out}")
    print(counts.to_string())
    return 0
