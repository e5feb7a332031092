"""The canonical on-disk corpus: what `data/raw`, generated and reconstructed records look like.

A corpus folder holds
    records/<record_id>.mseed   one MiniSEED file per record: three traces E, N, U (channel codes
                                HNE, HNN, HNZ), 100 Hz, 6000 samples, int32 counts (STEIM2, or INT32
                                when a jump is too large for STEIM2);
                                acceleration in cm/s^2 = counts / counts_per_cm_s2
    records.csv                 one row per record (record_id, station, file, counts_per_cm_s2,
                                starttime, and any metadata: magnitude, distance_km, source ...)
    stations.csv                one row per station (station, role target|pretrain, f0_true_hz
                                empty when unknown, and any site metadata)
Folders are written atomically: into a temporary sibling, renamed over the target when complete,
so an interrupted write leaves the previous corpus intact.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from obspy import Stream, Trace, UTCDateTime, read

from timesnet_gen.atomic import staged_dir
from timesnet_gen.records import (  # noqa: F401  (re-exported: the corpus API in one place)
    CHANNELS,
    COMPONENTS,
    DEFAULT_COUNTS_PER_CM_S2,
    DEFAULT_STARTTIME,
    N_SAMPLES,
    SAMPLING_RATE,
    Corpus,
    CorpusError,
)

INT32_MAX = np.iinfo(np.int32).max


def to_counts(acc: np.ndarray, counts_per_cm_s2: float) -> np.ndarray:
    """cm/s^2 -> int32 counts; refuses NaN/inf and values outside the int32 range."""
    if not np.all(np.isfinite(acc)):
        raise CorpusError("record contains NaN or inf samples")
    scaled = np.rint(np.asarray(acc, dtype=np.float64) * counts_per_cm_s2)
    if np.abs(scaled).max(initial=0) > INT32_MAX:
        raise CorpusError(
            f"record peak {np.abs(acc).max():.4g} cm/s^2 overflows int32 at "
            f"{counts_per_cm_s2:g} counts per cm/s^2"
        )
    return scaled.astype(np.int32)


STEIM2_MAX_DIFF = 2**29  # STEIM2 packs first differences in at most 30 bits (signed)


def lossless_encoding(counts: np.ndarray) -> str:
    """'STEIM2' when every sample-to-sample difference fits its 30 bits, else 'INT32'.

    A jump of 2**29 counts (5369 cm/s^2 at 1e5 counts per cm/s^2) or more cannot be packed by
    STEIM2 (libmseed refuses it); plain INT32 holds any int32 sample, at ~2x the file size.
    """
    diffs = np.diff(np.asarray(counts, dtype=np.int64), axis=-1)
    fits = diffs.size == 0 or (diffs.min() >= -STEIM2_MAX_DIFF and diffs.max() < STEIM2_MAX_DIFF)
    return "STEIM2" if fits else "INT32"


def write_record(
    path: Path,
    acc: np.ndarray,
    station: str,
    network: str = "XX",
    starttime: str = DEFAULT_STARTTIME,
    counts_per_cm_s2: float = DEFAULT_COUNTS_PER_CM_S2,
    sampling_rate: float = SAMPLING_RATE,
) -> None:
    """Write one 3-component record (3, T) in cm/s^2 as int32 MiniSEED (STEIM2, or INT32 when
    a jump is too large for STEIM2: both lossless, `read_record` reads either)."""
    acc = np.asarray(acc)
    if acc.ndim != 2 or acc.shape[0] != 3:
        raise CorpusError(f"record must have shape (3, T), got {acc.shape}")
    counts = to_counts(acc, counts_per_cm_s2)
    traces = []
    for channel, data in zip(CHANNELS, counts):
        header = {
            "network": network[:2],
            "station": station[:5],
            "location": "",
            "channel": channel,
            "sampling_rate": sampling_rate,
            "starttime": UTCDateTime(starttime),
        }
        traces.append(Trace(data=np.ascontiguousarray(data), header=header))
    encoding = lossless_encoding(counts)
    Stream(traces).write(str(path), format="MSEED", encoding=encoding, reclen=4096)


def read_record(path: Path, counts_per_cm_s2: float = DEFAULT_COUNTS_PER_CM_S2) -> np.ndarray:
    """Read one canonical record -> (3, T) float32 cm/s^2 in E, N, U order."""
    try:
        stream = read(str(path), format="MSEED")
    except Exception as exc:  # obspy raises many types on corrupt input
        raise CorpusError(f"{path}: unreadable MiniSEED ({exc})") from None
    by_component = {tr.stats.channel[-1]: tr for tr in stream}
    missing = [c for c, ch in zip(COMPONENTS, CHANNELS) if ch[-1] not in by_component]
    if missing:
        raise CorpusError(f"{path}: missing component(s) {missing}")
    traces = [by_component[ch[-1]] for ch in CHANNELS]
    lengths = {len(tr.data) for tr in traces}
    if len(lengths) != 1:
        raise CorpusError(f"{path}: components have unequal lengths {sorted(lengths)}")
    data = np.stack([tr.data.astype(np.float64) for tr in traces])
    return (data / counts_per_cm_s2).astype(np.float32)


def check_records(waveforms: np.ndarray, records: pd.DataFrame) -> np.ndarray:
    """Waveforms (n, 3, T) aligned with a records table with unique record_id and station."""
    waveforms = np.asarray(waveforms)
    if waveforms.ndim != 3 or waveforms.shape[1] != 3:
        raise CorpusError(f"waveforms must have shape (n, 3, T), got {waveforms.shape}")
    if len(records) != len(waveforms):
        raise CorpusError(f"{len(records)} metadata rows for {len(waveforms)} waveforms")
    for column in ("record_id", "station"):
        if column not in records.columns:
            raise CorpusError(f"records table needs a {column!r} column")
    duplicated = records["record_id"].duplicated()
    if duplicated.any():
        raise CorpusError(f"duplicate record_id {records['record_id'][duplicated].iloc[0]!r}")
    return waveforms


def write_corpus_into(
    folder: Path,
    waveforms: np.ndarray,
    records: pd.DataFrame,
    stations: pd.DataFrame,
    network: str = "XX",
) -> None:
    """Write records/, records.csv and stations.csv into an existing (staging) folder.

    `records` needs columns record_id and station; optional starttime and counts_per_cm_s2
    (defaults filled in). The `file` column is set here.
    """
    waveforms = check_records(waveforms, records)
    if "station" not in stations.columns:
        raise CorpusError("stations table needs a 'station' column")
    records = records.copy()
    records["station"] = records["station"].astype(str)
    if "starttime" not in records.columns:
        records["starttime"] = DEFAULT_STARTTIME
    if "counts_per_cm_s2" not in records.columns:
        records["counts_per_cm_s2"] = DEFAULT_COUNTS_PER_CM_S2
    records["file"] = [f"records/{rid}.mseed" for rid in records["record_id"]]
    (folder / "records").mkdir()
    for row, acc in zip(records.itertuples(index=False), waveforms):
        write_record(
            folder / row.file, acc, row.station, network=network, starttime=str(row.starttime),
            counts_per_cm_s2=float(row.counts_per_cm_s2),
        )
    records.to_csv(folder / "records.csv", index=False, float_format="%.10g")
    stations.to_csv(folder / "stations.csv", index=False, float_format="%.10g")


def write_corpus(
    out_dir: str | Path,
    waveforms: np.ndarray,
    records: pd.DataFrame,
    stations: pd.DataFrame,
    network: str = "XX",
    sources: Iterable[str | Path] = (),
) -> None:
    """Write a whole corpus folder atomically (refused if out_dir is or contains a source)."""
    check_records(waveforms, records)  # fail before a staging folder exists
    with staged_dir(out_dir, sources) as tmp:
        write_corpus_into(tmp, waveforms, records, stations, network)


def read_tables(corpus_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """records.csv and stations.csv with station codes kept as strings ('0205')."""
    corpus_dir = Path(corpus_dir)
    tables = []
    for name in ("records.csv", "stations.csv"):
        path = corpus_dir / name
        if not path.exists():
            raise CorpusError(f"{corpus_dir}: not a corpus folder (no {name})")
        tables.append(pd.read_csv(path, dtype={"station": str, "record_id": str}))
    return tables[0], tables[1]


def read_corpus(corpus_dir: str | Path, stations: list[str] | None = None) -> Corpus:
    """Load a corpus folder (optionally only some stations) into memory."""
    corpus_dir = Path(corpus_dir)
    records, station_table = read_tables(corpus_dir)
    if stations is not None:
        records = records[records["station"].isin(stations)].reset_index(drop=True)
    waveforms = [
        read_record(corpus_dir / row.file, float(row.counts_per_cm_s2))
        for row in records.itertuples(index=False)
    ]
    lengths = {w.shape[1] for w in waveforms}
    if len(lengths) > 1:
        raise CorpusError(f"{corpus_dir}: records of unequal lengths {sorted(lengths)}")
    n_samples = lengths.pop() if lengths else N_SAMPLES
    array = np.stack(waveforms) if waveforms else np.zeros((0, 3, n_samples), np.float32)
    return Corpus(array, records, station_table)
