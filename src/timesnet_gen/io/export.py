"""`export` verb: records (a canonical corpus folder, or arrays) as MiniSEED, SAC or .npz.

    timesnet-gen export SRC --format mseed|sac|npz --out DIR [--provenance model=timesnet-gen ...]

SRC is a corpus folder (records.csv + records/*.mseed: data/raw, generated or reconstructed
records) or a folder with waveforms.npy and index.csv/records.csv (the prepared folder).
Samples are written as float32 cm/s^2 (no rescaling, no integer quantisation).

    mseed  <record_id>.mseed: three traces NET.STA..HNE/HNN/HNZ, FLOAT32 encoding; MiniSEED has
           no room for units or provenance, so <record_id>.json holds them
    sac    <record_id>.<HNE|HNN|HNZ>.sac: kstnm, knetwk, kcmpnm, delta, start time, cmpaz/cmpinc,
           idep = IACC, kuser0 = units 'cm/s^2', kuser1 = model, kuser2 = kind, user0 = seed,
           kevnm = record_id, evla/evlo/evdp/mag/dist/stla/stlo/stel when known;
           the full row and provenance also go to <record_id>.json
    npz    records.npz: waveforms (n, 3, T) float32, record_id, station, starttime,
           sampling_rate, channels, units, metadata_json (the records table), provenance_json
Every export also writes manifest.csv (one row per record with its files). The output folder is
replaced atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from obspy import Stream, Trace, UTCDateTime, read

from timesnet_gen.atomic import staged_dir
from timesnet_gen.stage import stage_parser
from timesnet_gen.corpus.format import (
    CHANNELS,
    DEFAULT_STARTTIME,
    SAMPLING_RATE,
    CorpusError,
    check_records,
    read_corpus,
)

FORMATS = ("mseed", "sac", "npz")
UNITS = "cm/s^2"
# records.csv columns that describe where a record came from; copied into headers/sidecars
PROVENANCE_COLUMNS = ("model", "seed", "kind", "source_records", "checkpoint", "source",
                      "source_path", "source_format")
# component -> SAC orientation: (cmpaz deg from N, cmpinc deg from vertical)
SAC_ORIENTATION = {"HNE": (90.0, 90.0), "HNN": (0.0, 90.0), "HNZ": (0.0, 0.0)}
SAC_IACC = 8  # SAC enumerated dependent-variable type: acceleration
SAC_FROM_META = {"evla": "event_latitude", "evlo": "event_longitude", "evdp": "depth_km",
                 "mag": "magnitude", "dist": "distance_km", "stla": "station_latitude",
                 "stlo": "station_longitude", "stel": "station_elevation_m"}


def _clean(value: object) -> object:
    """pandas/numpy scalar -> JSON-friendly value (NaN -> None)."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    if value is pd.NA or value is None:
        return None
    return value


def _row_dict(row: pd.Series) -> dict:
    return {k: _clean(v) for k, v in row.items() if k != "file"}


def record_provenance(row: dict, extra: dict | None = None) -> dict:
    """Provenance of one record: the known columns present in its row, plus `extra`."""
    out = {k: row[k] for k in PROVENANCE_COLUMNS if row.get(k) is not None}
    out.update(extra or {})
    return out


def _starttime(row: dict) -> UTCDateTime:
    text = row.get("starttime") or DEFAULT_STARTTIME
    return UTCDateTime(str(text))


def _traces(acc: np.ndarray, row: dict, network: str, rate: float) -> list[Trace]:
    """(3, T) cm/s^2 -> three float32 traces HNE, HNN, HNZ."""
    start = _starttime(row)
    net = str(row.get("network") or network)[:2]
    return [
        Trace(
            data=np.ascontiguousarray(acc[i], dtype=np.float32),
            header={"network": net, "station": str(row["station"])[:5],
                    "location": "", "channel": channel,
                    "sampling_rate": rate, "starttime": start},
        )
        for i, channel in enumerate(CHANNELS)
    ]


def _sac_header(channel: str, row: dict, provenance: dict) -> dict:
    az, inc = SAC_ORIENTATION[channel]
    header = {"cmpaz": az, "cmpinc": inc, "idep": SAC_IACC, "kuser0": UNITS,
              "kevnm": str(row["record_id"])[:16]}
    if provenance.get("model") is not None:
        header["kuser1"] = str(provenance["model"])[:8]
    if provenance.get("kind") is not None:
        header["kuser2"] = str(provenance["kind"])[:8]
    seed = provenance.get("seed")
    if seed is not None and str(seed).lstrip("-").replace(".", "", 1).isdigit():
        header["user0"] = float(seed)
    for sac_key, column in SAC_FROM_META.items():
        value = row.get(column)
        if isinstance(value, (int, float)) and math.isfinite(value):
            header[sac_key] = float(value)
    return header


def _sidecar(row: dict, provenance: dict, rate: float, files: list[str]) -> dict:
    return {
        "record_id": row["record_id"], "station": row["station"], "channels": list(CHANNELS),
        "components": ["E", "N", "U"], "sampling_rate_hz": rate,
        "starttime": str(_starttime(row)), "units": UNITS, "files": files,
        "provenance": provenance, "metadata": row,
    }


def export_records(
    waveforms: np.ndarray,
    records: pd.DataFrame,
    out_dir: str | Path,
    fmt: str,
    provenance: dict | None = None,
    network: str = "XX",
    sampling_rate: float = SAMPLING_RATE,
    sources: Iterable[str | Path] = (),
) -> list[Path]:
    """Write records (n, 3, T) float cm/s^2 (E, N, U) with their metadata rows to `out_dir`.

    `records` needs record_id and station; starttime, network and provenance columns are used
    when present. Returns the files written (paths inside out_dir). out_dir is replaced.
    """
    if fmt not in FORMATS:
        raise CorpusError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    waveforms = check_records(waveforms, records)
    if not np.all(np.isfinite(waveforms)):
        raise CorpusError("waveforms contain NaN or inf samples")

    out_dir = Path(out_dir)
    with staged_dir(out_dir, sources) as tmp:
        rows = [_row_dict(r) for _, r in records.iterrows()]
        manifest = []
        if fmt == "npz":
            _write_npz(tmp / "records.npz", waveforms, records, rows, provenance or {},
                       sampling_rate)
            manifest = [{"record_id": r["record_id"], "station": r["station"],
                         "files": "records.npz"} for r in rows]
        for acc, row in zip(waveforms if fmt != "npz" else [], rows):
            stem = safe_code_id(row["record_id"])
            prov = record_provenance(row, provenance)
            traces = _traces(acc, row, network, sampling_rate)
            if fmt == "mseed":
                files = [f"{stem}.mseed"]
                Stream(traces).write(str(tmp / files[0]), format="MSEED", encoding="FLOAT32",
                                     reclen=4096)
            else:
                files = []
                for trace in traces:
                    trace.stats.sac = _sac_header(trace.stats.channel, row, prov)
                    files.append(f"{stem}.{trace.stats.channel}.sac")
                    trace.write(str(tmp / files[-1]), format="SAC")
            sidecar = _sidecar(row, prov, sampling_rate, files)
            (tmp / f"{stem}.json").write_text(json.dumps(sidecar, indent=1, default=str) + "\n")
            manifest.append({"record_id": row["record_id"], "station": row["station"],
                             "files": ";".join(files + [f"{stem}.json"])})
        pd.DataFrame(manifest).to_csv(tmp / "manifest.csv", index=False)
        written = sorted(p.name for p in tmp.iterdir())
    return [out_dir / name for name in written]


def safe_code_id(record_id: str) -> str:
    """record_id -> file stem (letters, digits, '_' and '-' only)."""
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in str(record_id)) or "record"


def _write_npz(path: Path, waveforms: np.ndarray, records: pd.DataFrame, rows: list[dict],
               provenance: dict, rate: float) -> None:
    np.savez_compressed(
        path,
        waveforms=waveforms.astype(np.float32),  # (n, 3, T) cm/s^2
        record_id=np.array([str(r["record_id"]) for r in rows]),
        station=np.array([str(r["station"]) for r in rows]),
        starttime=np.array([str(_starttime(r)) for r in rows]),
        sampling_rate=np.float64(rate),
        channels=np.array(CHANNELS),
        units=np.array(UNITS),
        metadata_json=np.array(json.dumps(rows, default=str)),
        provenance_json=np.array(json.dumps(provenance, default=str)),
    )


def read_npz(path: str | Path) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """An exported records.npz -> (waveforms (n, 3, T) float32 cm/s^2, records, provenance)."""
    with np.load(path, allow_pickle=False) as npz:
        waveforms = npz["waveforms"]
        records = pd.DataFrame(json.loads(str(npz["metadata_json"])))
        provenance = json.loads(str(npz["provenance_json"]))
    if len(records):
        records["station"] = records["station"].astype(str)
    return waveforms, records, provenance


def load_source(src: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """A corpus folder, or a folder with waveforms.npy + index.csv/records.csv -> arrays, table."""
    src = Path(src)
    if (src / "records.csv").exists() and (src / "records").is_dir():
        corpus = read_corpus(src)
        records = corpus.records
        if "network" not in records.columns:  # the code is in the MiniSEED headers
            records = records.assign(network=[record_network(src / f) for f in records["file"]])
        return corpus.waveforms, records
    if (src / "waveforms.npy").exists():
        table = next((src / n for n in ("index.csv", "records.csv") if (src / n).exists()), None)
        if table is None:
            raise CorpusError(f"{src}: waveforms.npy without index.csv or records.csv")
        records = pd.read_csv(table, dtype={"station": str, "record_id": str})
        return np.load(src / "waveforms.npy"), records
    raise CorpusError(f"{src}: neither a corpus folder (records.csv + records/) nor a folder "
                      "with waveforms.npy")


def record_network(path: Path) -> str:
    """Network code of a canonical record file (its first trace's header)."""
    return read(str(path), format="MSEED", headonly=True)[0].stats.network


def export_corpus(src: str | Path, out_dir: str | Path, fmt: str,
                  provenance: dict | None = None) -> list[Path]:
    """Export every record of a corpus (or prepared) folder; see export_records."""
    waveforms, records = load_source(src)
    return export_records(waveforms, records, out_dir, fmt, provenance, sources=[src])


def _parse_provenance(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CorpusError(f"--provenance expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def main(argv: list[str], verb: str = "export") -> int:
    parser = stage_parser(verb, __doc__)
    parser.add_argument("src", type=Path, help="corpus folder (or folder with waveforms.npy)")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--out", type=Path, required=True, help="output folder (replaced)")
    parser.add_argument("--provenance", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra provenance for every record, e.g. model=timesnet-gen seed=0")
    args = parser.parse_args(argv)
    files = export_corpus(args.src, args.out, args.format, _parse_provenance(args.provenance))
    print(f"export: wrote {len(files)} file(s) to {args.out} ({args.format})")
    return 0
