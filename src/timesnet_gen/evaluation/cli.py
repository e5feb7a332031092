"""`timesnet-gen evaluate`: score folders of records against the real ones.

    timesnet-gen evaluate --real data/raw --generated timesnet=outputs/timesnet/generated \
        [--recon timesnet=outputs/timesnet/recon] [--real-records holdout.csv] \
        [--stations 0205 1716] [--params params.yaml] --out outputs/my_eval

Every folder is a canonical corpus (records.csv, stations.csv, records/*.mseed). Writes into
--out (atomically): metrics.json (scores, nearest-station accuracy, f0 statistics per station
and source, per-station errors), records.csv (one row per record and source: f0, PGA, PGV,
Arias, D5-95, PSA ...), median_hvsr.npz ("grid" plus "<station>/<source>" curves) and
matrices.npz ("<model>/<matrix>" similarity matrices).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from timesnet_gen.cli import stage_parser
from timesnet_gen.config import EvaluateParams, ParamsError, load_params
from timesnet_gen.atomic import staged_dir
from timesnet_gen.corpus.format import Corpus, CorpusError, read_corpus


def parse_source(text: str) -> tuple[str, Path]:
    """'NAME=DIR' or 'DIR' (name = the folder's name)."""
    name, sep, path = text.partition("=")
    if not sep:
        path, name = text, Path(text).name
    if not name or not path:
        raise argparse.ArgumentTypeError(f"expected [NAME=]DIR, got {text!r}")
    return name, Path(path)


def restrict_records(corpus: Corpus, csv: Path) -> Corpus:
    """Keep the records whose record_id is listed in csv (e.g. the held-out split)."""
    table = pd.read_csv(csv, dtype={"record_id": str})
    if "record_id" not in table.columns:
        raise CorpusError(f"{csv}: needs a 'record_id' column")
    keep = corpus.records["record_id"].astype(str).isin(set(table["record_id"])).to_numpy()
    if not keep.any():
        raise CorpusError(f"{csv}: none of its record_ids is in the real corpus")
    return Corpus(corpus.waveforms[keep], corpus.records[keep].reset_index(drop=True),
                  corpus.stations)


def write_outputs(result: dict, out_dir: Path) -> None:
    """metrics.json, records.csv, median_hvsr.npz, matrices.npz into out_dir, atomically."""
    with staged_dir(out_dir) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(result["metrics"], indent=2) + "\n")
        result["records"].to_csv(tmp / "records.csv", index=False, float_format="%.6g")
        curves = {("grid" if key == "grid" else f"{key[0]}/{key[1]}"): value
                  for key, value in result["median_hvsr"].items() if value is not None}
        np.savez(tmp / "median_hvsr.npz", **curves)
        matrices = {f"{model}/{kind}": m for model, ms in result["matrices"].items()
                    for kind, m in ms.items()}
        np.savez(tmp / "matrices.npz", **matrices)


def main(argv: list[str], verb: str = "evaluate") -> int:
    parser = stage_parser(verb, __doc__)
    parser.add_argument("--real", type=Path, required=True, help="corpus of real records")
    parser.add_argument("--generated", type=parse_source, action="append", default=[],
                        metavar="[NAME=]DIR", help="generated corpus (repeatable)")
    parser.add_argument("--recon", type=parse_source, action="append", default=[],
                        metavar="[NAME=]DIR", help="reconstructed corpus (repeatable)")
    parser.add_argument("--real-records", type=Path, help="CSV with a record_id column: "
                        "use only these real records (e.g. the held-out split)")
    parser.add_argument("--stations", nargs="+", help="stations to score (default: all real)")
    parser.add_argument("--params", default="params.yaml",
                        help="params file (evaluate section); defaults if absent")
    parser.add_argument("--fs", type=float, default=100.0, help="sampling rate (Hz)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    from timesnet_gen.evaluation.evaluate import EmptySourceError, evaluate_sources

    try:
        if Path(args.params).exists():
            params = load_params(args.params).evaluate
        elif args.params == "params.yaml":
            params = EvaluateParams()
        else:
            raise ParamsError(f"{args.params}: no such params file")
        if not args.generated:
            raise CorpusError("give at least one --generated [NAME=]DIR")
        for group in (args.generated, args.recon):
            names = [n for n, _ in group]
            if len(set(names)) != len(names):
                raise CorpusError(f"source names must be unique, got {names} (use NAME=DIR)")
        # Read everything (and fail on a bad folder) before the long computation.
        real = read_corpus(args.real, args.stations)
        if args.real_records:
            real = restrict_records(real, args.real_records)
        generated = {n: read_corpus(p, args.stations) for n, p in args.generated}
        recon = {n: read_corpus(p, args.stations) for n, p in args.recon}
        result = evaluate_sources(real, generated, recon, params, args.stations, args.fs,
                                  progress=not args.quiet)
        write_outputs(result, args.out)
    except EmptySourceError as exc:
        print(f"timesnet-gen {verb}: {exc}", file=sys.stderr)
        return 1
    except (CorpusError, ParamsError, ValueError) as exc:
        print(f"timesnet-gen {verb}: {exc}", file=sys.stderr)
        return 2
    for warning in result["metrics"]["warnings"]:
        print(f"timesnet-gen {verb}: WARNING: {warning}", file=sys.stderr)
    summary = {n: {k: v for k, v in m.items() if k.startswith("score_")}
               for n, m in result["metrics"]["models"].items()}
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}/metrics.json, records.csv, median_hvsr.npz, matrices.npz")
    return 0
