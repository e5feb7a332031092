"""HVSR speed and agreement: this library vs the authors' per-bin loop vs obspy.

    python benchmarks/bench_hvsr.py [--n-records 1000] [--threads 1] [--loop-subset 2]
                                    [--obspy-subset 100]

1000 synthetic records (3 x 6000 samples at 100 Hz, padded to 18000 as in the paper). Prints:
  - the full protocol (detrend .. f0) of this library: records/s and peak traced memory;
  - smoothing alone on the same H and V spectra (2 per record, 9001 bins, output 1-20 Hz):
      this library, paper kernel and Konno-Ohmachi;
      the authors' per-bin loop of the paper kernel (every bin a centre, then cut to 1-20 Hz);
      obspy's konno_ohmachi_smoothing (its matrix path; every bin a centre);
    rates, speed ratios and the largest relative differences on the 1-20 Hz bins.
BLAS threads default to 1: on a machine shared by many processes, OpenBLAS threads spin
against each other and small matrix products get ~15x slower (measured here); pass --threads 2
on an idle 2-core machine. The two slow references run on subsets; their times for all
records are extrapolated linearly per spectrum (obspy's one-off matrix build is reported apart
and added once), and the output says so.
"""

from __future__ import annotations

import os
import sys


def _threads() -> str:
    # BLAS threads must be fixed before numpy is imported.
    if "--threads" in sys.argv:
        return sys.argv[sys.argv.index("--threads") + 1]
    return "1"


for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _threads()

import argparse  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

from timesnet_gen.config import EvaluateParams  # noqa: E402
from timesnet_gen.evaluation import f0, hvsr  # noqa: E402
from timesnet_gen.evaluation.hvsr import hvsr_operator  # noqa: E402
from timesnet_gen.evaluation.smoothing import get_operator  # noqa: E402
from timesnet_gen.evaluation.spectra import (  # noqa: E402
    amplitude_spectra,
    combine_horizontal,
    fft_freqs,
)

FS = 100.0


def synthetic_records(n: int, seed: int = 0) -> np.ndarray:
    """(n, 3, 6000) noise whose horizontals carry a site resonance between 1.5 and 12 Hz."""
    rng = np.random.default_rng(seed)
    f = np.fft.rfftfreq(6000, 1 / FS)
    f_site = np.exp(rng.uniform(np.log(1.5), np.log(12.0), n))[:, None]
    r = f[None, :] / f_site
    transfer = 1.0 / np.sqrt((1 - r**2) ** 2 + (0.1 * r) ** 2)  # (n, F)
    rec = rng.standard_normal((n, 3, 6000)).astype(np.float32)
    for c in range(2):
        rec[:, c] = np.fft.irfft(np.fft.rfft(rec[:, c], axis=-1) * transfer, 6000, axis=-1)
    return rec


def authors_loop(spectrum: np.ndarray, freqs: np.ndarray, b: float = 40.0) -> np.ndarray:
    """The authors' smoothing: for every bin, weights over all bins, normalised (as published)."""
    f = np.where(freqs == 0.0, 1e-12, freqs)
    out = np.zeros_like(spectrum)
    for i in range(len(f)):
        w = np.exp(-b * (np.log(f / f[i])) ** 2)
        w[~np.isfinite(w)] = 0.0
        out[i] = np.sum(w * spectrum) / np.sum(w)
    return out


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-records", type=int, default=1000)
    parser.add_argument("--threads", default="1", help="BLAS threads (set before numpy loads)")
    parser.add_argument("--loop-subset", type=int, default=2, help="records for the loop")
    parser.add_argument("--obspy-subset", type=int, default=100, help="records for obspy")
    args = parser.parse_args()
    n = args.n_records
    params = EvaluateParams()
    print(f"# {n} records x 3 x 6000 samples at {FS:g} Hz; BLAS threads {args.threads}; "
          f"{os.cpu_count()} CPUs visible")
    records = synthetic_records(n)

    # ---- full protocol, operator built first (a one-off cost per grid, cached)
    _, t_build = timed(hvsr_operator, 6000, FS, params)
    hvsr(records[:2], FS, params)  # warm-up
    tracemalloc.start()
    (freqs, curves), t_full = timed(hvsr, records, FS, params)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"operator build (once per grid, cached): {t_build:.2f} s")
    print(f"full protocol, this library: {n / t_full:.0f} records/s ({t_full:.2f} s), "
          f"peak traced memory {peak / 2**20:.0f} MiB")

    # ---- the same spectra for every smoother
    spectra = amplitude_spectra(records, FS, params)  # (n, 3, 9001)
    h = combine_horizontal(spectra[:, 0], spectra[:, 1])
    hv = np.concatenate([h, spectra[:, 2]])  # (2n, 9001)
    grid = fft_freqs(18000, FS)
    band = (grid >= params.fmin) & (grid <= params.fmax)
    centers = grid[band]
    n_spec = len(hv)

    op_paper = get_operator(grid, centers, "paper", 40.0, True, params.smoothing_tol)
    ours_paper, t_paper = timed(op_paper.apply, hv)
    (op_ko), t_ko_build = timed(get_operator, grid, centers, "konno-ohmachi", 40.0, False,
                                params.smoothing_tol)
    ours_ko, t_ko = timed(op_ko.apply, hv)
    print(f"\nsmoothing {n_spec} spectra (H and V), {len(grid)} bins -> {len(centers)} "
          f"centres in 1-20 Hz:")
    print(f"  this library, paper kernel:    {n_spec / t_paper:9.0f} spectra/s "
          f"({t_paper:.3f} s; {op_paper.cost / 1e6:.2f} M multiply-adds per spectrum)")
    print(f"  this library, Konno-Ohmachi:   {n_spec / t_ko:9.0f} spectra/s "
          f"({t_ko:.3f} s; operator build {t_ko_build:.1f} s once)")

    # ---- the authors' loop on a subset
    k = max(1, min(args.loop_subset, n))
    sub = np.concatenate([h[:k], spectra[:k, 2]])
    loop_out, t_loop = timed(lambda: np.stack([authors_loop(s, grid) for s in sub]))
    rate_loop = len(sub) / t_loop
    diff_loop = np.max(np.abs(loop_out[:, band] - ours_paper[np.r_[0:k, n:n + k]])
                       / np.abs(loop_out[:, band]))
    print(f"  authors' per-bin loop (paper): {rate_loop:9.2f} spectra/s (measured on "
          f"{len(sub)} spectra, {t_loop:.1f} s; {n_spec / rate_loop:.0f} s extrapolated for "
          f"all {n_spec}) -> this library is {rate_loop and (n_spec / t_paper) / rate_loop:.0f}x"
          f" faster; max relative difference {diff_loop:.2e}")

    # ---- obspy on a subset, matrix path (its fastest)
    try:
        from obspy.signal.konnoohmachismoothing import (
            apply_smoothing_matrix,
            calculate_smoothing_matrix,
        )
    except ImportError:
        print("  obspy: not installed, skipped")
        return
    m = max(1, min(args.obspy_subset, n))
    sub = np.concatenate([h[:m], spectra[:m, 2]])
    matrix, t_matrix = timed(calculate_smoothing_matrix, grid, 40.0, False)
    ob_out, t_apply = timed(apply_smoothing_matrix, sub, matrix)
    del matrix
    t_all = t_matrix + t_apply / len(sub) * n_spec
    ref_rows = np.r_[0:m, n:n + m]
    diff_ob = np.max(np.abs(ob_out[:, band] - ours_ko[ref_rows]) / np.abs(ob_out[:, band]))
    rate_ob = len(sub) / t_apply
    print(f"  obspy konno_ohmachi_smoothing: {rate_ob:9.1f} spectra/s applying its matrix "
          f"(build {t_matrix:.1f} s once; every bin a centre); max relative difference to this "
          f"library {diff_ob:.2e}")
    print(f"  Konno-Ohmachi, this library vs obspy: {(n_spec / t_ko) / rate_ob:.1f}x per spectrum "
          f"once both matrices exist; {t_all / (t_ko_build + t_ko):.1f}x for all {n_spec} spectra "
          f"with both builds counted ({t_ko_build + t_ko:.1f} s vs {t_all:.1f} s extrapolated)")
    print(f"\nf0 of the records: median {np.median(f0(freqs, curves)):.2f} Hz "
          f"(range {np.min(f0(freqs, curves)):.2f}-{np.max(f0(freqs, curves)):.2f})")
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
        print(f"process peak RSS {rss:.0f} MiB (includes obspy's {len(grid)}^2 matrix)")
    except ImportError:  # pragma: no cover
        pass


if __name__ == "__main__":
    main()
