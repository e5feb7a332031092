"""Ingest speed on real AFAD ASCII records: ../shared/data/afad_asc/samos_2020 (78 files).

    python benchmarks/bench_ingest.py [SRC] [--repeat 3]

Prints wall time and records/s for reading + checking + windowing (collect), for the full
ingest including the atomic corpus write, and for one cold command line
(`python -m timesnet_gen ingest`, interpreter start and imports included).
Goal: under 5 s on 2 cores for samos_2020.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timesnet_gen.io.ingest import IngestOptions, collect, ingest

DEFAULT_SRC = Path(__file__).resolve().parents[2] / "shared" / "data" / "afad_asc" / "samos_2020"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="?", type=Path, default=DEFAULT_SRC)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not args.src.is_dir():
        raise SystemExit(f"benchmark data absent: {args.src}")
    options = IngestOptions()
    best_collect = best_full = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        result = collect([args.src], options)
        best_collect = min(best_collect, time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            ingest([args.src], Path(tmp) / "raw", options)
            best_full = min(best_full, time.perf_counter() - t0)
    n = len(result.records)
    print(f"source: {args.src} ({result.n_files} record files, {sum(result.ignored.values())} "
          f"ignored, {len(result.quarantine)} skipped)")
    print(f"read+check+window: {best_collect:.2f} s  {n / best_collect:.1f} records/s")
    print(f"full ingest (incl. MiniSEED write): {best_full:.2f} s  {n / best_full:.1f} records/s "
          f"(best of {args.repeat}; goal < 5 s)")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "timesnet_gen", "ingest", str(args.src), "--out",
                        str(Path(tmp) / "raw"), "--no-progress"], check=True,
                       stdout=subprocess.DEVNULL)
        cold = time.perf_counter() - t0
    print(f"cold command line (start-up + imports + ingest): {cold:.2f} s  {n / cold:.1f} "
          "records/s")


if __name__ == "__main__":
    main()
