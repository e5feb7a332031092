"""Is the classifier-AUC band reachable, and where does a sampler miss it?

README "A sampler that needs no real records"; docs/flow_sampler.md "Is the AUC band
reachable? The oracle".

    PYTHONPATH=src python benchmarks/oracle_realism.py models/flow/model.pt [--n 1000] [--parts]
        [--quarters]

On the simulated corpus the distribution of the records is known: it is the simulator
(corpus/synth.py). The oracle draws fresh records from it at every target station (events and
site jitter from a generator seeded apart from the corpus's own, so none is a corpus record),
and the checkpoint generates --n records at the same (M, R). Per station, and as the mean over
the stations (the pipeline's pooling), the script prints the realism classifier's AUC
(evaluation/realism_compare.classifier_auc, the pipeline's features and settings):
  holdout  against the station's held-out records, as the pipeline scores a sampler: draws of
           50 records (mean over the --n / 50 disjoint draws), for the oracle, the perfect
           generator (50 of the station's training records drawn with replacement, one draw per
           oracle draw), the checkpoint and, for the flow sampler, the oracle records' round
           trip through its encode and decode (what the representation and decoder cost);
  oracle   300 generated records against 300 other oracle records: a sample large enough to see
           differences that the 9-16 held-out records cannot; and the same with the generated
           features' mean moved to that of 300 further oracle records (a linear classifier that
           then scores 0.5 saw only the mean); --quarters: also on each quarter of the record's
           5 s windows alone (where in time the difference lies). For the flow sampler the same
           rows for the round trip of the first 300 oracle records (what the representation
           and the decoder cost, as the checkpoint decodes: with its decoder_bias if it has
           one).
Feature-space moves (diagnostics, no records behind them) tell whether the sampler's mean or
the rest of its distribution carries its held-out AUC: its features with their mean moved to the
oracle's (in every direction, or only along the oracle features' 20 leading principal axes), and
the oracle's features with their mean moved to the sampler's.
Two references for a generator that learns from the station's n training records and copies
none: the oracle's records shifted by the error of a mean of n (and of 4 n) other oracle records
(one fresh shift per draw; every record of a learned generator shares its training sample's
mean error), and the perfect generator shifted by a bootstrap estimate of that error (the mean of
a resample of the training records less their mean; computable on real records too).
--parts (flow sampler only) repeats the held-out column for oracle records whose decoded features
are partly the flow's at the same scenario (the coarse frames before the P slot, in it, after
the onset; the timing scalars; the fine spectrum): which part carries the difference; and it
prints the S-P picks of those records, of the oracle's and of the checkpoint's (the share with an
S-P pick, the median S-P, the median P pick less the onset, the median P-to-onset gap between the
flow's timing knots), to locate where the picks are lost.
Below the AUC table, the f0 target read the same way: the median-f0 error against the station's
true f0 of all --n records and of each draw of 50, for the oracle and the checkpoint, and in how
many draws every station is within 5 %; then the durations against the truth at the same
scenarios: the checkpoint's median D5-95 and D5-75 over the oracle's, of all records and within
and beyond 30 km, and how many records of each source end in the noise (`duration_rows`).
Needs the simulated corpus (data/raw/stations.csv with the simulator's site columns) and the
params it was made with (data.synth of --params).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from timesnet_gen.config import load_params
from timesnet_gen.corpus import synth
from timesnet_gen.errors import UserError, one_line_errors
from timesnet_gen.evaluation.hvsr import f0, hvsr
from timesnet_gen.evaluation.intensity import significant_duration
from timesnet_gen.evaluation.realism_compare import classifier_auc
from timesnet_gen.evaluation.realism_features import spectrogram_features
from timesnet_gen.evaluation.realism_gmm import station_vs30
from timesnet_gen.models import flow_sampler as fs
from timesnet_gen.models.flow_sampler import latent as lat, representation as rep
from timesnet_gen.prepare import load_prepared
from timesnet_gen.records import SAMPLING_RATE
from timesnet_gen.sample import load_sampler

sys.path.insert(0, str(Path(__file__).parent))
from diagnose_flow import realism_picks  # noqa: E402  (a sibling script)
from f0_spread import error_pct  # noqa: E402

F0_TOLERANCE = 5.0  # %, the f0 target's
DRAW = 50  # records per scored draw, as the pipeline's sample stages write per station
LARGE = 300  # records per side of the large-sample AUC
LEADING = 20  # principal axes of `move_leading`
ORACLE_SEED = 99  # the oracle's generator: default_rng([ORACLE_SEED, station position])
NEAR_KM = 30.0  # `duration_rows`: the near records
TAIL_RATIO = 3.0  # `duration_rows`: D5-95 over D5-75 beyond which the last 5 % is noise
SITE_COLUMNS = ("f0_sh_hz", "f0_sigma_ln", "impedance", "damping", "outlier_fraction")


def simulator_stations(raw: Path) -> pd.DataFrame:
    """raw/stations.csv of the simulated corpus: the table with the simulator's site columns
    that `oracle_records` draws from. UserError when it is missing, unreadable or lacks them
    (a corpus of real records has none)."""
    table = raw / "stations.csv"
    if not table.is_file():
        raise UserError(f"{table}: no such file (--raw: the corpus folder)")
    try:
        stations = pd.read_csv(table, dtype={"station": str})
    except (ValueError, pd.errors.ParserError) as exc:  # UnicodeDecodeError is a ValueError
        raise UserError(f"{table}: not a readable table ({type(exc).__name__})") from None
    missing = [c for c in ("station", "f0_true_hz", *SITE_COLUMNS) if c not in stations.columns]
    if missing:
        raise UserError(f"{table} lacks the columns {missing} of the simulator's station table: "
                        "the oracle needs the simulated corpus")
    return stations


def oracle_setup(checkpoint: Path, params_path: str | Path, raw: Path):
    """What a script that scores a sampler against fresh simulator records reads: (params,
    the simulator's stations indexed by code, their Vs30 (`station_vs30`), the checkpoint's
    sampler). UserError when stations.csv lacks one of the checkpoint's stations."""
    params = load_params(params_path)
    stations = simulator_stations(raw)
    vs30 = station_vs30(stations, params.evaluate.realism.vs30_default_m_s)
    stations = stations.set_index("station")
    sampler = load_sampler(checkpoint)
    unknown = [s for s in sampler.stations if s not in stations.index]
    if unknown:
        raise UserError(f"{raw / 'stations.csv'} lacks the checkpoint's station(s) {unknown}")
    return params, stations, vs30, sampler


def oracle_records(station: pd.Series, n: int, synth_params, seed: list[int]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """n fresh simulator records at the station -> (records (n, 3, T) float32 cm/s^2,
    scenarios (n, 2) [magnitude, distance_km])."""
    rng = np.random.default_rng(seed)
    records, scenarios = [], []
    for _ in range(n):
        event = synth.draw_event(rng, synth_params)
        site = synth.record_site(rng, station)
        records.append(synth.simulate_record(rng, event, site, synth_params)[0])
        scenarios.append((event["magnitude"], event["distance_km"]))
    return np.stack(records).astype(np.float32), np.array(scenarios)


def move_leading(x: np.ndarray, oracle: np.ndarray, k: int = LEADING) -> np.ndarray:
    """x (n, F) with its mean moved to the oracle's along the k leading principal axes of the
    oracle's standardised features only."""
    std = oracle.std(axis=0).clip(1e-12)
    _, _, vt = np.linalg.svd((oracle - oracle.mean(0)) / std, full_matrices=False)
    axes = vt[:k].T  # (F, k)
    offset = (x.mean(0) - oracle.mean(0)) / std
    return x - (axes @ (axes.T @ offset)) * std


def f0_errors(records: np.ndarray, source: str, truth_hz: float) -> dict:
    """Median-f0 error (%) of all records and of each draw of DRAW, as the f0 target reads it."""
    f = f0(*hvsr(records))
    draws = np.array([error_pct(d, truth_hz) for d in f.reshape(-1, DRAW)])
    return {f"{source}, all": error_pct(f, truth_hz),
            f"{source}, draws of {DRAW}": draws.mean(),
            f"{source}, draws beyond {F0_TOLERANCE:g} %": float(np.sum(np.abs(draws)
                                                                    > F0_TOLERANCE)),
            f"{source} draws": draws}


def horizontal_duration(records: np.ndarray, hi: float = 0.95) -> np.ndarray:
    """(n,) s: each record's D5-95 (hi 0.75: D5-75), the geometric mean of its two horizontals',
    as the realism metrics take it."""
    d = significant_duration(records, SAMPLING_RATE, 0.05, hi)[:, :2]
    return np.sqrt(np.prod(d, axis=1))


def duration_ratio(records: np.ndarray, oracle: np.ndarray, hi: float = 0.95) -> float:
    """Median D5-95 (hi 0.75: D5-75) of records over that of the oracle's records (s / s);
    NaN where either holds none."""
    if not (len(records) and len(oracle)):
        return float("nan")
    return float(np.median(horizontal_duration(records, hi))
                 / np.median(horizontal_duration(oracle, hi)))


def duration_rows(records: np.ndarray, oracle: np.ndarray, distance_km: np.ndarray
                  ) -> dict[str, float]:
    """The durations against the truth at the same scenarios: the median D5-95 and D5-75
    ratios (`duration_ratio`), of all records and of those within and beyond NEAR_KM; and, for
    both sources, the share of records whose last 5 % of Arias intensity lies in the noise
    after the strong motion (D5-95 over TAIL_RATIO x D5-75). Where many of the oracle's records
    are such, a small change in the noise's share of the energy moves the median D5-95 a lot and
    the D5-75 hardly at all (docs/flow_sampler.md, "The durations at 2020")."""
    near = np.asarray(distance_km) < NEAR_KM
    rows = {}
    for hi, name in ((0.95, "D5-95"), (0.75, "D5-75")):
        rows[f"{name} ratio"] = duration_ratio(records, oracle, hi)
        rows[f"{name} ratio, R < {NEAR_KM:g} km"] = duration_ratio(records[near], oracle[near], hi)
        rows[f"{name} ratio, R >= {NEAR_KM:g} km"] = duration_ratio(records[~near],
                                                                   oracle[~near], hi)
    for source, x in (("oracle", oracle), ("sampler", records)):
        tail = horizontal_duration(x) > TAIL_RATIO * horizontal_duration(x, 0.75)
        rows[f"{source}: share of D5-95 > {TAIL_RATIO:g} x D5-75"] = float(tail.mean())
        rows[f"{source}: the same, R < {NEAR_KM:g} km"] = float(tail[near].mean())
    return rows


def reference_draws(oracle: np.ndarray, train: np.ndarray, n_draws: int,
                    rng: np.random.Generator) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """(features (DRAW, F), record groups) per draw of the references that involve no sampler:
    the perfect generator, it plus a bootstrap estimate of the training mean's error, and the
    oracle's draw j plus the error of a mean of n_train (4 n_train) other oracle records."""
    n = len(train)
    out: dict[str, list] = {"perfect generator": [], "perfect + bootstrap mean error": [],
                            "oracle + mean error of n_train": [],
                            "oracle + mean error of 4 n_train": []}
    mean = oracle.mean(axis=0)
    for j in range(n_draws):
        pick = rng.integers(0, n, DRAW)
        out["perfect generator"].append((train[pick], pick))
        error = train[rng.integers(0, n, n)].mean(axis=0) - train.mean(axis=0)
        out["perfect + bootstrap mean error"].append((train[pick] + error, pick))
        own = np.arange(j * DRAW, (j + 1) * DRAW)
        others = np.setdiff1d(np.arange(len(oracle)), own)
        for m, name in ((n, "oracle + mean error of n_train"),
                        (4 * n, "oracle + mean error of 4 n_train")):
            error = oracle[rng.choice(others, min(m, len(others)), replace=False)].mean(0) - mean
            out[name].append((oracle[own] + error, own))
    return out


def decoder_inputs(sampler: fs.FlowSampler, oracle: np.ndarray, scenarios: np.ndarray,
                   station: str, attribute: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Decoder inputs (coarse, static) of the oracle records ('round trip'); with attribute,
    also with one part at a time replaced by the flow's features at the same station and
    scenarios."""
    p, k = sampler.params, fs.n_scalars(sampler.params)
    feats = rep.encode(oracle, p)
    coarse, static = torch.from_numpy(feats["coarse"]), torch.from_numpy(lat.static_of(feats))
    out = {"round trip": (coarse, static)}
    if not attribute:
        return out
    _, gen_c, gen_s = sampler.features(sampler.station_index(station),
                                       lat.standardise_scenario(scenarios, sampler.stats),
                                       torch.Generator().manual_seed(ORACLE_SEED))
    frame_s = (np.arange(coarse.shape[1]) * p.hop + p.n_fft / 2) / SAMPLING_RATE  # aligned time
    for name, mask in (("before the P slot", frame_s < p.p_align_s),
                       ("in the P slot", (frame_s >= p.p_align_s) & (frame_s < p.align_s)),
                       ("after the onset", frame_s >= p.align_s)):
        c = coarse.clone()
        c[:, mask] = gen_c[:, mask]
        out[f"flow frames {name}"] = (c, static)
    for name, part in (("level and timing", slice(0, k)), ("fine spectrum", slice(k, None))):
        s = static.clone()
        s[:, part] = gen_s[:, part]
        out[f"flow {name}"] = (coarse, s)
    return out


def large_sample_aucs(gen: np.ndarray, oracle: np.ndarray, rp, quarters: bool,
                      label: str = "sampler") -> dict[str, float]:
    """AUC of LARGE generated records' features (the first LARGE of gen) against LARGE oracle
    records' (the second LARGE of oracle): as they are, with their mean moved to that of the
    first LARGE oracle records (does the mean carry the difference?), and (quarters) on each
    quarter of the record's time windows alone; the keys start with label."""
    ref = oracle[LARGE:2 * LARGE]
    x = gen[:LARGE]
    moved = x - x.mean(0) + oracle[:LARGE].mean(0)
    out = {f"{label} vs oracle (300)": classifier_auc(x, ref, rp.classifier_folds,
                                                      rp.classifier_l2, 0),
           f"{label}, mean moved to other oracle records'": classifier_auc(
               moved, ref, rp.classifier_folds, rp.classifier_l2, 0)}
    if quarters:
        cells = np.arange(x.shape[1]).reshape(3, -1, rp.spec_n_bands)  # component, window, band
        windows = cells.shape[1]
        for q in range(4):
            cols = cells[:, q * windows // 4:(q + 1) * windows // 4].ravel()
            span = f"{q * windows // 4 * rp.spec_window_s:g}-" \
                   f"{(q + 1) * windows // 4 * rp.spec_window_s:g} s"
            out[f"{label}, windows {span} only"] = classifier_auc(
                x[:, cols], ref[:, cols], rp.classifier_folds, rp.classifier_l2, 0)
    return out


def pick_stats(records: np.ndarray, p: fs.FlowSamplerParams, rp) -> dict[str, float]:
    """S-P picks as the realism metrics make them: the share found, the median S-P (s), the
    median P pick less the onset (s; records with a P pick), and the median P-to-onset gap (s)
    between the times of p.p_fraction and p.align_fraction of the Arias intensity (the flow's
    timing knots)."""
    p_pick, s_pick = realism_picks(records, rp)
    onset = rep.onset_time(records, p.align_fraction)
    found, p_found = np.isfinite(s_pick - p_pick), np.isfinite(p_pick)
    return {"S-P found": float(found.mean()),
            "median S-P (s)": float(np.median((s_pick - p_pick)[found])) if found.any()
            else np.nan,
            "median P pick - onset (s)": float(np.median((p_pick - onset)[p_found]))
            if p_found.any() else np.nan,
            "median P-to-onset gap (s)": float(np.median(
                onset - rep.onset_time(records, p.p_fraction)))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--n", type=int, default=1000, help="records per station and source")
    ap.add_argument("--parts", action="store_true", help="flow: attribute the held-out AUC")
    ap.add_argument("--quarters", action="store_true",
                    help="also the AUC against the oracle per quarter of the record's windows")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default=Path("data/prepared"), type=Path)
    ap.add_argument("--raw", default=Path("data/raw"), type=Path)
    args = ap.parse_args(argv)
    if args.n < 2 * LARGE or args.n % DRAW:
        raise UserError(f"--n must be a multiple of {DRAW} and at least {2 * LARGE}, got {args.n}")
    params = load_params(args.params)
    rp = params.evaluate.realism
    stations = simulator_stations(args.raw).set_index("station")
    sampler = load_sampler(args.checkpoint)
    unknown = [s for s in sampler.stations if s not in stations.index]
    if unknown:
        raise UserError(f"{args.raw / 'stations.csv'} lacks the checkpoint's station(s) {unknown}")
    is_flow = isinstance(sampler, fs.FlowSampler)
    if args.parts and not is_flow:
        raise UserError(f"--parts needs a {fs.KIND} checkpoint, got {sampler.kind}")
    waves, index = load_prepared(args.data)
    target = index[index["role"] == "target"]
    n_draws = args.n // DRAW
    truth = stations["f0_true_hz"]
    rows, f0_rows, pick_rows, durations = [], [], [], {}
    for k, station in enumerate(sampler.stations):
        oracle, scen = oracle_records(stations.loc[station], args.n, params.data.synth,
                                      [ORACLE_SEED, k])
        of = spectrogram_features(oracle, SAMPLING_RATE, rp)
        rows_of = target["station"] == station
        ho = spectrogram_features(waves[target.index[rows_of & (target["split"] == "holdout")]],
                                  SAMPLING_RATE, rp)
        tr = spectrogram_features(waves[target.index[rows_of & (target["split"] == "train")]],
                                  SAMPLING_RATE, rp)
        generated = sampler.sample(station, scen[:, 0], scen[:, 1], 1 + k)
        gen = spectrogram_features(generated, SAMPLING_RATE, rp)
        sources = {"oracle": of, "sampler": gen,
                   "sampler, mean moved to the oracle's": gen - gen.mean(0) + of.mean(0),
                   f"the same, {LEADING} leading directions only": move_leading(gen, of),
                   "oracle, mean moved to the sampler's": of - of.mean(0) + gen.mean(0)}
        if is_flow:
            for name, (c, s) in decoder_inputs(sampler, oracle, scen, station,
                                               args.parts).items():
                decoded = sampler.decode(c, s, torch.Generator().manual_seed(ORACLE_SEED))
                sources[name] = spectrogram_features(decoded, SAMPLING_RATE, rp)
                if args.parts:
                    pick_rows.append({"station": station, "records": name,
                                      **pick_stats(decoded, sampler.params, rp)})
            if args.parts:
                pick_rows += [{"station": station, "records": name,
                               **pick_stats(x, sampler.params, rp)}
                              for name, x in (("oracle", oracle), ("sampler", generated))]
        rng = np.random.default_rng(k)
        row = {"station": station}
        for name, draw in reference_draws(of, tr, n_draws, rng).items():
            row[name] = np.mean([classifier_auc(x, ho, rp.classifier_folds, rp.classifier_l2, j,
                                                groups) for j, (x, groups) in enumerate(draw)])
        for name, x in sources.items():
            row[name] = np.mean([classifier_auc(x[j * DRAW:(j + 1) * DRAW], ho,
                                                rp.classifier_folds, rp.classifier_l2, j)
                                 for j in range(n_draws)])
        f0_rows.append({"station": station, **f0_errors(oracle, "oracle", truth.loc[station]),
                        **f0_errors(generated, "sampler", truth.loc[station])})
        durations[station] = duration_rows(generated, oracle, scen[:, 1])
        row |= large_sample_aucs(gen, of, rp, args.quarters)
        if is_flow:  # the round trip of the first LARGE oracle records against the next LARGE
            row |= large_sample_aucs(sources["round trip"], of, rp, args.quarters, "round trip")
        row["oracle vs oracle (300)"] = classifier_auc(
            of[:LARGE], of[LARGE:2 * LARGE], rp.classifier_folds, rp.classifier_l2, 0)
        rows.append(row)
        print(f"{station} done", flush=True)
    table = pd.DataFrame(rows).set_index("station")
    table.loc["mean"] = table.mean()
    print(f"classifier AUC of {args.checkpoint} ({sampler.kind}); held-out columns: mean of "
          f"{n_draws} draws of {DRAW} against the station's held-out records")
    print(table.T.to_string(float_format="%.3f"))
    f0_table = pd.DataFrame(f0_rows).set_index("station")
    print(f"\nmedian-f0 error (%) against the true f0: of all {args.n} records, and the draws of "
          f"{DRAW} (mean, and how many of {n_draws} beyond 5 %)")
    print(f0_table.drop(columns=[c for c in f0_table if c.endswith("draws")]).T.to_string(
        float_format="%.1f"))
    ratio = pd.DataFrame(durations)
    ratio["mean"] = ratio.mean(axis=1)
    print(f"\ndurations of the sampler's {args.n} records against the oracle's at the same "
          "scenarios (median ratios; the realism metrics' D5-95)")
    print(ratio.to_string(float_format="%.3f"))
    if pick_rows:
        picks = pd.DataFrame(pick_rows)
        order = list(dict.fromkeys(picks["records"]))
        for metric in picks.columns.drop(["station", "records"]):
            table = picks.pivot(index="records", columns="station", values=metric).loc[order]
            table["mean"] = table.mean(axis=1)
            print(f"\n{metric}, {args.n} records per station")
            print(table.to_string(float_format="%.2f"))
    for source in ("oracle", "sampler"):
        within = np.all(np.abs(np.stack(f0_table[f"{source} draws"].to_list())) <= F0_TOLERANCE,
                        axis=0)
        print(f"{source}: every station within {F0_TOLERANCE:g} % in {int(within.sum())} of "
              f"{n_draws} draws")
    return 0


if __name__ == "__main__":
    raise SystemExit(one_line_errors(main, "oracle_realism"))
