"""Budget of the TimesNet flow sampler beside TimesNet-Gen, measured in one run (item 4).

    PYTHONPATH=src python benchmarks/bench_sampler.py --data data/prepared --raw data/raw

Prints, side by side:
  training   flow sampler: seconds per epoch of each phase (a few real epochs, the
             `generators.flow` section of --params) x the profile's epochs, plus what does not
             scale with them (features, the frame gain, the record prior's fit and gain, the
             checkpoint), timed in full; TimesNet-Gen: each phase run by the stage's own code
             (threads and denormal setting included) for 1 and 1 + --tng-epochs epochs, each in
             a fresh process: their difference x the profile's epochs, plus the rest of the
             1-epoch run
  generation records/s of FlowSampler.sample (GL + equalisation included), 1 and 2 workers
  memory     peak RSS of this process (the flow's training and generation) and of TimesNet-Gen's
             runs (child processes, the largest), GB
The machine is shared and its speed varies up to 2x, so only the ratios of one run mean much.

    PYTHONPATH=src python benchmarks/bench_sampler.py --realism models/flow/model.pt

instead prints the quick realism check of a trained sampler against the real target records
(50 records per station at scenarios drawn from its training rows): median f0 vs f0_true_hz,
median D5-95 and PGA ratios to the station's real records, multi-burst rate, novelty, the 5x5
and 10x10 specificity beside a perfect generator (50 own training records drawn with
replacement, mean of 20 draws), nearest-station accuracy, and the scenario fidelity on the
holdout (20 records per holdout record's station, M, R; ln PGA / PSA residuals, slopes), and
the two-sample classifier AUC (the realism protocol's) on groups of its log-spectrogram features
(all; envelope = band-averaged power per window; spectrum = window-averaged power per band;
envelope shape = the envelope less its largest window; V/H envelope = the vertical envelope less
the horizontal one; one component; the first four 5 s windows; the rest): which part of a
record gives it away.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from timesnet_gen.config import load_params
from timesnet_gen.models import flow_sampler as fs
from timesnet_gen.prepare import load_prepared


def timesnet_gen_run(params_path: str, data: Path, phase: str, epochs: int, init: Path | None,
                     out: Path) -> float:
    """In a fresh process: wall seconds of TimesNet-Gen's `phase` stage run for `epochs` epochs
    by the stage's own code (`train.train`: its threads and denormal setting, validation,
    checkpoints and outputs), with the stage's printing kept out of the benchmark's."""
    import contextlib
    import io

    from timesnet_gen.config import params_from_dict, to_dict
    from timesnet_gen.train import train

    raw = to_dict(load_params(params_path))
    raw["train"][phase]["epochs"] = epochs
    params = params_from_dict(raw)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        train(params, data, out, phase, init)
    return time.perf_counter() - t0


def timesnet_gen_seconds(params_path: str, data: Path, extra: int) -> dict:
    """Projected wall time (s) of TimesNet-Gen's two phases as the pipeline runs them: each phase
    run for 1 and for 1 + `extra` epochs, each run in a fresh process (so that no setting of
    the flow sampler's run carries over); the difference gives the seconds per epoch, the rest
    of the 1-epoch run the part that does not scale with the epochs (loading, the latent std
    pass, the outputs). Fine-tuning starts from the 1-epoch pretraining run's model."""
    import tempfile

    from bench_model import in_fresh_process  # a sibling script

    load_prepared(data)  # a bad folder stops here, in this process, with one line
    epochs = {phase: getattr(load_params(params_path).train, phase).epochs
              for phase in ("pretrain", "finetune")}
    out = {"fixed": 0.0}
    with tempfile.TemporaryDirectory(prefix="bench_sampler_tng_") as work:
        for phase in ("pretrain", "finetune"):
            init = None if phase == "pretrain" else Path(work) / "pretrain_1"
            seconds = [in_fresh_process(timesnet_gen_run, params_path, data, phase, n, init,
                                        Path(work) / f"{phase}_{n}") for n in (1, 1 + extra)]
            per_epoch = (seconds[1] - seconds[0]) / extra
            out[phase] = per_epoch * epochs[phase]
            out["fixed"] += seconds[0] - per_epoch
    return out


def flow_seconds(p: fs.FlowSamplerParams, data: Path, raw: Path, epochs: int,
                 out: Path) -> tuple[dict, fs.FlowSampler]:
    """Projected wall time (s) of the sampler's phases from `epochs` real epochs each."""
    import re

    quick = replace(p, pretrain_epochs=epochs, finetune_epochs=epochs)
    lines: list[str] = []
    t0 = time.perf_counter()
    sampler = fs.train_sampler(data, quick, out, raw, log=lines.append)
    total = time.perf_counter() - t0
    per_epoch = {}  # the epoch times are in the log (losses.tsv stays byte-stable without them)
    for phase in ("pretrain", "finetune"):
        times = [float(m.group(1)) for m in (
            re.match(rf"{phase} epoch \d+/\d+: .*\(([\d.]+) s/epoch\)", line) for line in lines) if m]
        if not times:
            raise SystemExit(f"no {phase} epoch time in the training log: {lines}")
        per_epoch[phase] = float(np.mean(times))
    # the rest, not scaled: features, the frame gain, the record prior and its gain, the save
    fixed = total - epochs * (per_epoch["pretrain"] + per_epoch["finetune"])
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


def geo(values: np.ndarray) -> np.ndarray:
    """Geometric mean of the E and N values (n, 3, ...) -> (n, ...)."""
    return np.sqrt(values[:, 0] * values[:, 1])


def bursts(x: np.ndarray, fs_hz: float = 100.0) -> np.ndarray:
    """Strong-motion bursts per record: peaks of the 1 s RMS horizontal envelope above 0.3 of
    its maximum, prominence 0.25, at least 2 s apart -> (n,)."""
    import scipy.signal

    h2 = x[:, 0].astype(np.float64) ** 2 + x[:, 1].astype(np.float64) ** 2
    window = np.ones(int(fs_hz)) / fs_hz
    env = np.sqrt(np.clip(scipy.signal.fftconvolve(h2, window[None], "same", axes=-1), 0, None))
    env /= env.max(axis=1, keepdims=True)
    return np.array([len(scipy.signal.find_peaks(e, height=0.3, prominence=0.25,
                                                 distance=int(2 * fs_hz))[0]) for e in env])


def unit_rows(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1).astype(np.float64)
    flat -= flat.mean(axis=1, keepdims=True)
    return flat / np.linalg.norm(flat, axis=1, keepdims=True)


def log_mean(a: np.ndarray, axis) -> np.ndarray:
    """ln of the mean power over `axis` of ln-power features."""
    return np.log(np.mean(np.exp(a), axis=axis))


def classifier_groups(gen: np.ndarray, real: np.ndarray, rp) -> dict[str, float]:
    """Classifier AUC (realism protocol: features, folds, L2) of generated vs real records on
    groups of the (component, 5 s window, band) log-spectrogram features."""
    from timesnet_gen.evaluation.realism import classifier_auc
    from timesnet_gen.evaluation.realism_features import spectrogram_features

    def cube(x):
        return spectrogram_features(x, 100.0, rp).reshape(len(x), 3, -1, rp.spec_n_bands)

    def envelope(c):  # (n, 3, windows): band-averaged power per component and window
        return log_mean(c, 3)

    groups = {
        "all": lambda c: c, "envelope": envelope, "spectrum": lambda c: log_mean(c, 2),
        # the sharpest cues of Dec 2026 (docs/flow_sampler.md "The frame gain"): the envelope
        # over its own largest window, and the vertical envelope over the horizontal one
        "envelope shape": lambda c: envelope(c) - envelope(c).max(axis=(1, 2), keepdims=True),
        "V/H envelope": lambda c: envelope(c)[:, 2] - log_mean(envelope(c)[:, :2], 1),
        "E": lambda c: c[:, 0], "N": lambda c: c[:, 1], "U": lambda c: c[:, 2],
        "windows 0-3 (0-20 s)": lambda c: c[:, :, :4], "windows 4+": lambda c: c[:, :, 4:],
    }
    g, r = cube(gen), cube(real)
    return {name: classifier_auc(f(g).reshape(len(g), -1), f(r).reshape(len(r), -1),
                                 rp.classifier_folds, rp.classifier_l2, 0)
            for name, f in groups.items()}


def realism(checkpoint: Path, data: Path, raw: Path, params_path: str = "params.yaml",
            n: int = 50, seed: int = 1) -> None:
    import pandas as pd

    from timesnet_gen.evaluation.hvsr import f0, hvsr
    from timesnet_gen.evaluation.intensity import pga, psa, significant_duration
    from timesnet_gen.evaluation.specificity import (
        f0_histogram,
        nearest_station_accuracy,
        nearest_station_accuracy_real,
        specificity_scores,
    )
    from timesnet_gen.sample import load_sampler

    sampler = load_sampler(checkpoint)
    waves, index = load_prepared(data)
    scen = fs.scenario_table(data, raw, index)
    truth = pd.read_csv(raw / "stations.csv", dtype={"station": str}).set_index("station")
    targets = index[index["role"] == "target"]
    rng = np.random.default_rng(0)

    def f0_of(x: np.ndarray) -> np.ndarray:
        return f0(*hvsr(x))

    rp = load_params(params_path).evaluate.realism
    rows, f0_real, f0_gen, f0_by_row, train_rows, auc = {}, {}, {}, {}, {}, {}
    for station in sampler.stations:
        own = targets.index[targets["station"] == station].to_numpy()
        train_rows[station] = targets.index[(targets["station"] == station)
                                            & (targets["split"] == "train")].to_numpy()
        pick = sampler.scenarios(station)[rng.integers(0, len(sampler.scenarios(station)), n)]
        gen = sampler.sample(station, pick[:, 0], pick[:, 1], seed)
        real = waves[own]
        auc[station] = classifier_groups(gen, real, rp)
        f0_real[station], f0_gen[station] = f0_of(real), f0_of(gen)
        f0_by_row.update(zip(own, f0_real[station]))
        nn_real = unit_rows(waves[train_rows[station]])
        d_real = 1 - np.where(np.eye(len(nn_real), dtype=bool), -np.inf,
                              nn_real @ nn_real.T).max(axis=1)
        d_gen = 1 - (unit_rows(gen) @ nn_real.T).max(axis=1)
        d595 = (np.median(geo(significant_duration(gen, 100.0)))
                / np.median(geo(significant_duration(real, 100.0))))
        rows[station] = {
            "f0_gen_hz": np.median(f0_gen[station]), "f0_true_hz": truth.at[station, "f0_true_hz"],
            "f0_error": np.median(f0_gen[station]) / truth.at[station, "f0_true_hz"] - 1,
            "d5_95_ratio": d595,
            "pga_ratio": np.median(geo(pga(gen))) / np.median(geo(pga(real))),
            "multi_burst_gen": np.mean(bursts(gen) > 1), "multi_burst_real": np.mean(bursts(real) > 1),
            "novel_below_p10": np.mean(d_gen < np.quantile(d_real, 0.1)),
        }
    print(pd.DataFrame(rows).T.to_string(float_format=lambda v: f"{v:.3f}"))
    table = pd.DataFrame(auc).T
    table.loc["mean"] = table.mean()
    print("classifier AUC by feature group (0.5 = indistinguishable):")
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    stations = sampler.stations
    real_pdf = [f0_histogram(f0_real[s][np.isfinite(f0_real[s])]) for s in stations]
    scores = specificity_scores(real_pdf, [f0_histogram(f0_gen[s]) for s in stations])
    reference = np.mean([[sc["cross"]["score"], sc["real_gen"]["score"]] for sc in (
        specificity_scores(real_pdf, [f0_histogram(np.array(
            [f0_by_row[i] for i in rng.choice(train_rows[s], n)])) for s in stations])
        for _ in range(20))], axis=0)
    print(f"specificity 5x5 {scores['cross']['score']:.3f} (perfect generator "
          f"{reference[0]:.3f}), 10x10 {scores['real_gen']['score']:.3f} ({reference[1]:.3f})")
    acc = nearest_station_accuracy(f0_gen, f0_real)["accuracy"]
    ceiling = nearest_station_accuracy_real(f0_real)["accuracy"]
    print(f"nearest-station accuracy {acc:.3f} (real ceiling {ceiling:.3f})")

    holdout = targets[targets["split"] == "holdout"]
    resid, fit_rows = [], []
    for i in holdout.index:
        station, (m, r) = holdout.at[i, "station"], scen[i]
        gen = sampler.sample(station, np.full(20, m), np.full(20, r), int(i))
        lg = np.log(np.column_stack([geo(pga(gen)), geo(psa(gen, 100.0, [0.2, 1.0]))]))
        lr = np.log(np.column_stack([geo(pga(waves[i:i + 1])),
                                     geo(psa(waves[i:i + 1], 100.0, [0.2, 1.0]))]))[0]
        resid.append(np.median(lg, axis=0) - lr)
        fit_rows += [(station, m, np.log(r), v) for v in lg[:, 0]]
    mean = np.mean(resid, axis=0)
    print(f"holdout scenario residual (gen - real, mean of medians): ln PGA {mean[0]:+.3f}, "
          f"ln PSA(0.2 s) {mean[1]:+.3f}, ln PSA(1 s) {mean[2]:+.3f}")

    def slopes(codes, m, ln_r, y):
        design = np.column_stack([m, ln_r] + [np.asarray(codes) == s for s in stations])
        return np.linalg.lstsq(design.astype(float), y, rcond=None)[0][:2]

    real_slopes = slopes(targets["station"], scen[targets.index, 0],
                         np.log(scen[targets.index, 1]), np.log(geo(pga(waves[targets.index]))))
    codes, m, ln_r, y = zip(*fit_rows)
    gen_slopes = slopes(codes, np.array(m), np.array(ln_r), np.array(y))
    print(f"d lnPGA/dM real {real_slopes[0]:.3f} gen {gen_slopes[0]:.3f}; "
          f"d lnPGA/d lnR real {real_slopes[1]:.3f} gen {gen_slopes[1]:.3f}")


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
    ap.add_argument("--tng-epochs", type=int, default=1,
                    help="TimesNet-Gen epochs per phase timed beyond a first (1-epoch) run")
    ap.add_argument("--n", type=int, default=100, help="records generated for the rate")
    ap.add_argument("--gen-workers", type=int, default=2)
    ap.add_argument("--realism", type=Path, default=None, metavar="CHECKPOINT",
                    help="print the realism check of this sampler instead of the budget")
    args = ap.parse_args(argv)
    if args.realism is not None:
        realism(args.realism, args.data, args.raw, args.params)
        return 0

    if args.tng_epochs < 1 or args.epochs < 1:
        ap.error("--epochs and --tng-epochs must be >= 1")
    from timesnet_gen.sample import flow_params

    flow, sampler = flow_seconds(flow_params(args.params, []), args.data, args.raw, args.epochs,
                                 args.out)
    tng = timesnet_gen_seconds(args.params, args.data, args.tng_epochs)
    if args.checkpoint is not None:
        from timesnet_gen.sample import load_sampler

        sampler = load_sampler(args.checkpoint)
    rate = {t: generation_rate(sampler, args.n, t) for t in sorted({1, args.gen_workers})}
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    tng_rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2

    flow_total = sum(flow.values())
    tng_total = sum(tng.values())
    print(f"{'':28}{'flow sampler':>14}{'TimesNet-Gen':>14}")
    print(f"{'pretrain (s, projected)':28}{flow['pretrain']:14.0f}{tng['pretrain']:14.0f}")
    print(f"{'finetune (s, projected)':28}{flow['finetune']:14.0f}{tng['finetune']:14.0f}")
    print(f"{'not scaling with epochs (s)':28}{flow['fixed']:14.1f}{tng['fixed']:14.1f}")
    print(f"{'training total (s)':28}{flow_total:14.0f}{tng_total:14.0f}"
          f"   ratio {flow_total / tng_total:.2f} (target <= 1)")
    for threads, r in rate.items():
        print(f"generation, {threads} worker(s): {r:.1f} records/s (target >= 50 on 2 cores)")
    print(f"peak RSS: {rss_gb:.2f} GB (target <= 4); TimesNet-Gen's runs {tng_rss_gb:.2f} GB")
    return 0


if __name__ == "__main__":
    from timesnet_gen.errors import one_line_errors

    sys.exit(one_line_errors(main, "bench_sampler"))  # bad checkpoint, data or params: one line
