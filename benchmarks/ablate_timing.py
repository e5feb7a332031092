"""Seed-replicated ablation of the flow sampler's timing, TimesBlock period choice and latent
(docs/flow_sampler.md): one training seed moves the realism proxies
as much as a design change does, so each variant is trained with several seeds and compared
on the mean and the range.

    PYTHONPATH=src python benchmarks/ablate_timing.py --seeds 0 1 2 --jobs 2

Every run trains the `generators.flow` profile of params.yaml with the variant's overrides and
the seed (pre-training, then fine-tuning, as the train-sampler stage does; about 100 s each on
one core), then draws --n records per target station at scenarios drawn from the station's
training rows (station k with sampling seed 1 + k, as `sample --station all` seeds them: one
seed for all stations would give every station the same noise and correlate their scores) and
scores them against all of the station's real records:
  d595     D5-95 median ratio generated / real as the realism protocol computes it (D5-95 the
           geometric mean of E and N; ratio per station, geometric mean over the stations;
           band 0.88-1.06)
  auc      classifier AUC (realism protocol, all spectrogram features), mean over stations
  auc_0_10 the same on the first two 5 s windows only (the P and S onsets)
  auc_shape, auc_vh  the same on the envelope less its largest window, and on the vertical
           envelope less the horizontal one (bench_sampler.classifier_groups; docs/flow_sampler.md
           "The frame gain": where the plain flow's records gave themselves away)
  f0_err   largest |median generated f0 / f0_true_hz - 1| over the stations (target <= 0.05)
--against holdout scores against the station's held-out records only, as the pipeline's realism
metrics do (with --n 50 the pipeline's sample-flow numbers), instead of all of its real records
(training records included).
With --draws K the scoring is repeated for K independent draws (draw j: scenarios from
default_rng(j), station k sampled with seed 1 + k + 1000 j; --draws 1 is the scoring above)
and the scores are averaged over the draws (D5-95 geometrically); auc_draw_sd is the standard
deviation of the AUC over the draws, the sampling noise of one draw.
Finished runs are kept under --out/<variant>-s<seed>/ (model.pt, scores.json), so a rerun only
trains what is missing and only scores again where the number of draws or the reference
changed or the scores lack the cue columns (--rescore scores the kept models again); the table
goes to --out/ablation.tsv (written atomically) and stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from timesnet_gen.atomic import staged_file
from timesnet_gen.config import load_params
from timesnet_gen.errors import one_line_errors
from timesnet_gen.models import flow_sampler as fs

# under every variant: no record components, and every later option as it was before it existed
PLAIN = {"record_pcs": 0, "record_weight": 0.0} | fs.BEFORE_OPTIONS
# the default latent (32 record components, their own loss part), under the rows built on it
R32 = {"timing": "pslot", "record_pcs": 32, "record_weight": 1.0}
# the record prior on every station, given the scalars, with its gain (the default 6 Dec 2026)
PCAL = {**R32, "remainder_calibrate": True, "p_knot": "aic", "record_prior": True,
        "prior_records": "all", "prior_scalars": True, "prior_calibrate": True}
VARIANTS = {
    "roll": {},
    "warp": {"timing": "warp", "align_s": 20.0},
    "stretch": {"timing": "stretch", "align_s": 20.0, "end_align_s": 40.0},
    "roll-fixed": {"period_selection": "fixed"},
    "warp-fixed": {"timing": "warp", "align_s": 20.0, "period_selection": "fixed"},
    "pslot": {"timing": "pslot"},
    "pslot-20": {"timing": "pslot", "align_s": 20.0},
    "pslot-p5": {"timing": "pslot", "p_align_s": 5.0},
    "pslot-p11": {"timing": "pslot", "p_align_s": 11.0},
    "pslot-long": {"timing": "pslot", "pretrain_epochs": 600, "finetune_epochs": 400},
    "pslot-d64": {"timing": "pslot", "d_model": 64, "d_ff": 64},
    "pslot-c32": {"timing": "pslot", "coarse_pcs": 32},
    "pslot-f48": {"timing": "pslot", "fine_pcs": 48},
    "pslot-r16": {"timing": "pslot", "record_pcs": 16},
    "pslot-r32": {"timing": "pslot", "record_pcs": 32},
    "pslot-r64": {"timing": "pslot", "record_pcs": 64},
    "pslot-r16-f48": {"timing": "pslot", "record_pcs": 16, "fine_pcs": 48},
    "pslot-r16-w1": {"timing": "pslot", "record_pcs": 16, "record_weight": 1.0},
    "pslot-r32-w1": R32,
    "pslot-r32-w3": {"timing": "pslot", "record_pcs": 32, "record_weight": 3.0},
    "pslot-r48-w1": {"timing": "pslot", "record_pcs": 48, "record_weight": 1.0},
    "pslot-r64-w1": {"timing": "pslot", "record_pcs": 64, "record_weight": 1.0},
    "pslot-r32-w1-rem": {**R32, "remainder_scale": True},
    "pslot-r32-w1-rem-cw05": {**R32, "remainder_scale": True, "coarse_weight": 0.5},
    "pslot-r32-w1-rem-gauss": {**R32, "remainder_scale": True, "remainder_gauss": True},
    "pslot-r32-w1-rem-gauss-cw05": {**R32, "remainder_scale": True, "remainder_gauss": True,
                                    "coarse_weight": 0.5},
    "pslot-r32-w1-cal": {**R32, "remainder_calibrate": True},  # the default 6 Dec 2026 (morning)
    "pslot-r32-w1-cal-prior": {**R32, "remainder_calibrate": True, "record_prior": True},
    "pslot-r32-w1-cal-prior1500": {**R32, "remainder_calibrate": True, "record_prior": True,
                                   "prior_steps": 1500},
    # the default until the record prior on every station
    "pslot-r32-w1-cal-aic": {**R32, "remainder_calibrate": True, "p_knot": "aic"},
    "pslot-r32-w1-cal-quad": {**R32, "remainder_calibrate": True, "mean_quadratic": True},
    "pslot-r32-w1-cal-aic-quad": {**R32, "remainder_calibrate": True, "p_knot": "aic",
                                  "mean_quadratic": True},
    "pslot-r32-w1-cal-aic-prior": {**R32, "remainder_calibrate": True, "p_knot": "aic",
                                   "record_prior": True},
    "pslot-r32-w1-cal-aic-prior-all": {**R32, "remainder_calibrate": True, "p_knot": "aic",
                                       "record_prior": True, "prior_records": "all"},
    "pslot-r32-w1-cal-aic-prior-all-scal": {**R32, "remainder_calibrate": True, "p_knot": "aic",
                                            "record_prior": True, "prior_records": "all",
                                            "prior_scalars": True},
    "pslot-r32-w1-cal-aic-prior-all-scal-pcal": PCAL,  # the default until the random phase
    "pslot-r32-w1-cal-aic-prior-all-scal-pcal-rp": {**PCAL, "random_phase_hz": 0.3},
    "pslot-r32-w1-cal-aic-prior-all-scal-pcal-rp-sm": {**PCAL, "random_phase_hz": 0.3,
                                                       "remainder_smooth": True},
    "pslot-r32-w1-cal-aic-prior-all-scal-pcal-rp-sm-pf3": {**PCAL, "random_phase_hz": 0.3,
                                                           "remainder_smooth": True,
                                                           "prior_fine": 3},  # default
    "pslot-r32-w1-cal-aic-prior-all-scal-pcal-rp-sm-pf3-picker": {
        **PCAL, "random_phase_hz": 0.3, "remainder_smooth": True, "prior_fine": 3,
        "p_knot": "picker"},
    "pslot-r48-w1-cal-aic": {**R32, "record_pcs": 48, "remainder_calibrate": True,
                             "p_knot": "aic"},
    "pslot-r32-w3-cal-aic": {**R32, "record_weight": 3.0, "remainder_calibrate": True,
                             "p_knot": "aic"},
    "pslot-r32-w1-cal-d64": {**R32, "remainder_calibrate": True, "d_model": 64, "d_ff": 64},
    "pslot-r32-w1-cal-long": {**R32, "remainder_calibrate": True, "pretrain_epochs": 600,
                              "finetune_epochs": 400},
    "pslot-r32-w1-ar": {**R32, "remainder_ar": True},
    "pslot-r32-w1-rem-ar": {**R32, "remainder_scale": True, "remainder_ar": True},
    "pslot-r32-w1-long": {**R32, "pretrain_epochs": 600, "finetune_epochs": 400},
    "pslot-r32-w1-d64": {**R32, "d_model": 64, "d_ff": 64},
}


def run(variant: str, seed: int, args: argparse.Namespace) -> dict:
    """Train one (variant, seed) unless its scores exist; score it; returns the scores row."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_sampler import classifier_groups

    from timesnet_gen.evaluation.hvsr import f0, hvsr
    from timesnet_gen.evaluation.intensity import significant_duration
    from timesnet_gen.prepare import load_prepared
    from timesnet_gen.sample import load_sampler

    out = args.out / f"{variant}-s{seed}"
    if (out / "scores.json").exists() and not args.rescore:
        kept = json.loads((out / "scores.json").read_text())
        if ((kept.get("draws", 1), kept.get("against", "all")) == (args.draws, args.against)
                and "auc_shape" in kept):  # scored before the cue columns: score again
            return kept
    if not (out / "model.pt").exists():
        raw = yaml.safe_load(open(args.params))["generators"]["flow"]
        p = fs.FlowSamplerParams.from_dict({**raw, **PLAIN, **VARIANTS[variant], "seed": seed})
        fs.train_sampler(args.data, p, out, args.raw, log=lambda _: None)
    sampler = load_sampler(out / "model.pt")
    rp = load_params(args.params).evaluate.realism
    waves, index = load_prepared(args.data)
    targets = index[index["role"] == "target"]
    if args.against == "holdout":
        targets = targets[targets["split"] == "holdout"]
    truth = pd.read_csv(args.raw / "stations.csv", dtype={"station": str}).set_index("station")
    draws = []
    for j in range(args.draws):
        rng = np.random.default_rng(j)
        d_gen, d_real, auc, auc_onset, auc_shape, auc_vh, f0_err = [], [], [], [], [], [], []
        for k, station in enumerate(sampler.stations):  # station k: seed 1 + k + 1000 j
            real = waves[targets.index[targets["station"] == station].to_numpy()]
            scen = sampler.scenarios(station)
            pick = scen[rng.integers(0, len(scen), args.n)]
            gen = sampler.sample(station, pick[:, 0], pick[:, 1], 1 + k + 1000 * j)
            d_gen.append(np.nanmedian(np.sqrt(np.prod(significant_duration(gen, 100.0)[:, :2],
                                                      1))))
            d_real.append(np.nanmedian(np.sqrt(np.prod(significant_duration(real, 100.0)[:, :2],
                                                       1))))
            groups = classifier_groups(gen, real, rp)
            auc.append(groups["all"])
            auc_shape.append(groups["envelope shape"])
            auc_vh.append(groups["V/H envelope"])
            auc_onset.append(classifier_groups(gen[..., :1000], real[..., :1000], rp)["all"])
            f0_err.append(np.median(f0(*hvsr(gen))) / truth.at[station, "f0_true_hz"] - 1)
        draws.append({"ln_d595": np.mean(np.log(np.array(d_gen) / np.array(d_real))),
                      "auc": np.mean(auc), "auc_0_10": np.mean(auc_onset),
                      "auc_shape": np.mean(auc_shape), "auc_vh": np.mean(auc_vh),
                      "f0_err": np.max(np.abs(f0_err))})
    mean = pd.DataFrame(draws).mean()
    row = {"variant": variant, "seed": seed, "draws": args.draws, "against": args.against,
           "d595": float(np.exp(mean["ln_d595"])), "auc": float(mean["auc"]),
           "auc_0_10": float(mean["auc_0_10"]), "auc_shape": float(mean["auc_shape"]),
           "auc_vh": float(mean["auc_vh"]), "f0_err": float(mean["f0_err"]),
           "auc_draw_sd": float(np.std([d["auc"] for d in draws], ddof=1)) if len(draws) > 1
           else float("nan")}
    with staged_file(out / "scores.json") as tmp:
        tmp.write_text(json.dumps(row))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default=Path("data/prepared"), type=Path)
    ap.add_argument("--raw", default=Path("data/raw"), type=Path)
    ap.add_argument("--out", default=Path("/tmp/ablate_timing"), type=Path)
    ap.add_argument("--n", type=int, default=80, help="generated records per station")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (one core each)")
    ap.add_argument("--against", choices=("all", "holdout"), default="all",
                    help="real records scored against: all of a station's, or its held-out ones")
    ap.add_argument("--draws", type=int, default=1,
                    help="independent sampling draws scored per run (scores averaged)")
    ap.add_argument("--rescore", action="store_true",
                    help="score the kept models again (after a change of the scoring)")
    args = ap.parse_args(argv)
    if args.draws < 1:
        ap.error(f"--draws must be >= 1, got {args.draws}")
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(v, s) for v in args.variants for s in args.seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run, *zip(*jobs), [args] * len(jobs)))
    table = pd.DataFrame(rows)
    with staged_file(args.out / "ablation.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.3f")
    print(table.to_string(index=False, float_format="%.3f"))
    summary = table.groupby("variant", sort=False)[["d595", "auc", "auc_0_10", "auc_shape",
                                                    "auc_vh", "f0_err"]]
    print("\nmean over seeds\n" + summary.mean().to_string(float_format="%.3f"))
    print("\nrange (max - min) over seeds\n"
          + (summary.max() - summary.min()).to_string(float_format="%.3f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(one_line_errors(main, "ablate_timing"))
