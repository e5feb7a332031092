"""`timesnet-gen evaluate`: the paper's evaluation of generated records, standalone or as the
pipeline's `evaluate` stage (one command, one set of output names).

    timesnet-gen evaluate --real data/raw --generated my=outputs/mine/generated \
        [--recon my=outputs/mine/recon] [--real-records holdout.csv] [--stations 0205 1716] \
        [--params params.yaml] --out outputs/my_eval
    timesnet-gen evaluate --real data/raw --prepared data/prepared --registered \
        --out outputs/evaluation --metrics metrics.json --plots metrics/confusion  (the stage)

Every folder is a canonical corpus. `--registered` adds every generator of the registry
(registry.py) from its output folder. With `--prepared` the real records are the target
stations' records of the prepared index, and everything is scored twice: against all of them
(the paper's setting: the records a generator mixes are among those it is scored against) and
against the held-out ones only (never seen by training or generation), so leakage is visible.

Writes into --out (atomically):
    metrics.json      everything measured, per reference set ("all", "holdout")
    records.csv       per record and source: f0, PGA, PGV, Arias, D5-95, PSA (reference "all")
    median_hvsr.npz   "grid" and "<station>/<source>" median HVSR (400 points)
    fas_median.npz    "freqs" and "<station>/<source>" median smoothed FAS
    matrices.npz      "<model>/<size>/<reference>" similarity matrices (+ "/labels")
    novelty.csv       nearest-training-record distance of each generated record (--prepared)
    realism.csv       realism metrics per source, station and metric with the 5-95 % band of
                      the perfect generator and met / not met (--prepared; evaluation/realism.py)
    realism_psa.csv   RotD50 PSA ln residual and ln-std ratio per period (DVC plots data)
    realism_features.npz  "<source>/<pga|d5_95|n_bursts|valid|envelope>" and "env_times":
                      the per-record values figures/realism.png draws
and with --metrics the headline numbers (the DVC metrics file) and, in --plots,
confusion_<model>.csv (nearest-station assignments, a DVC confusion plot).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from timesnet_gen import registry
from timesnet_gen.atomic import check_out, staged_dir, staged_file
from timesnet_gen.stage import stage_parser
from timesnet_gen.config import EvaluateParams, ParamsError, load_params
from timesnet_gen.corpus.format import read_corpus
from timesnet_gen.evaluation.evaluate import evaluate_sources, record_table
from timesnet_gen.evaluation.intensity import intensity_measures, smoothed_fas
from timesnet_gen.evaluation.realism import (
    Features,
    concat_features,
    realism_tables,
    record_features,
    station_vs30,
)
from timesnet_gen.records import SAMPLING_RATE, Corpus, CorpusError

SPLITS = ("all", "holdout")


# --------------------------------------------------------------------------------------------
# inputs


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
    return corpus.subset(keep)


def prepared_real(raw: Path, prepared: Path, stations: list[str]) -> Corpus:
    """The target stations' real records with their split (train / holdout) from prepare."""
    corpus = read_corpus(raw, stations)
    index_path = prepared / "index.csv"
    if not index_path.exists():
        raise CorpusError(f"{prepared}: no index.csv (run the prepare stage first)")
    index = pd.read_csv(index_path, dtype={"record_id": str, "station": str})
    split = dict(zip(index["record_id"], index["split"]))
    corpus = corpus.subset(corpus.records["record_id"].isin(split).to_numpy())  # tiny slices
    corpus.records["split"] = corpus.records["record_id"].map(split)
    return corpus


def registered_sources() -> tuple[list[tuple[str, Path]], ...]:
    """(generated, recon, scenario) NAME=DIR pairs of every registered generator."""
    generated = [(g.name, Path(g.outputs) / "generated") for g in registry.GENERATORS]
    recon = [(g.name, Path(g.outputs) / "recon") for g in registry.GENERATORS if g.has_recon]
    scenario = [(g.name, Path(g.outputs) / "scenario") for g in registry.GENERATORS
                if g.record_free]
    return generated, recon, scenario


def check_names(generated: list[tuple[str, Path]], recon: list[tuple[str, Path]]) -> None:
    if not generated:
        raise CorpusError("give at least one --generated [NAME=]DIR (or --registered)")
    for group in (generated, recon):
        names = [n for n, _ in group]
        if len(set(names)) != len(names):
            raise CorpusError(f"source names must be unique, got {names} (use NAME=DIR)")


def holdout_references(real: Corpus, recon: dict[str, Corpus]) -> tuple[Corpus, dict]:
    """The held-out real records and the reconstructions of exactly those records."""
    held = real.subset((real.records["split"] == "holdout").to_numpy())
    ids = set(held.records["record_id"])
    return held, {m: c.subset(c.records["source_record"].isin(ids).to_numpy())
                  for m, c in recon.items()}


# --------------------------------------------------------------------------------------------
# headline numbers


def headline(result: dict, model: str) -> dict:
    """The numbers metrics.json keeps for one model and one reference set."""
    m = result["metrics"]["models"][model]
    out = {k: round(v, 4) for k, v in m.items() if k.startswith("score_")}
    out["nearest_station_accuracy"] = round(m["nearest_station"]["accuracy"], 4)
    truth = result["metrics"].get("true_f0", {})
    stats = result["metrics"]["f0"]
    per_station = {}
    for station, values in m["per_station"].items():
        item = {"delta_f0_hz": values.get("median_f0_abs_diff_hz"),
                "hvsr_log_rmse": values.get("log_rmse_median_hvsr")}
        if station in truth and station in stats.get(model, {}):
            true = truth[station]["f0_true_hz"]
            item["f0_error_vs_true_pct"] = 100 * (stats[model][station]["median"] / true - 1)
        per_station[station] = {k: (None if v is None else round(v, 4)) for k, v in item.items()}
    out["per_station"] = per_station
    return out


def real_headline(result: dict) -> dict:
    """Real records against themselves: nearest-station ceiling, f0 error vs the true f0."""
    truth = result["metrics"].get("true_f0", {})
    return {
        "real_ceiling": {"nearest_station_accuracy": round(
            result["metrics"]["real_ceiling"]["accuracy"], 4)},
        "real_f0_error_vs_true_pct": {
            s: round(100 * (result["metrics"]["f0"][registry.REAL][s]["median"]
                            / t["f0_true_hz"] - 1), 4) for s, t in truth.items()},
    }


def real_ceiling_scores(real: Corpus, params: EvaluateParams, stations: list[str]) -> dict:
    """What a perfect generator could score here: the held-out real records scored as if they
    were generated, against the training records (same protocol, station overlap included)."""
    split = real.records["split"].to_numpy()
    train, held = real.subset(split == "train"), real.subset(split == "holdout")
    if not all(held.station_mask(s).any() for s in stations):
        return {}
    result = evaluate_sources(train, {"holdout": held}, None, params, stations)
    scores = result["metrics"]["models"]["holdout"]
    return {k: round(v, 4) for k, v in scores.items() if k.startswith("score_")}


def confusion_rows(result: dict, model: str) -> pd.DataFrame:
    """One row per generated record: actual station, predicted (nearest) station."""
    nearest = result["metrics"]["models"][model]["nearest_station"]
    stations, confusion = nearest["stations"], np.asarray(nearest["confusion"])
    rows = [{"actual": stations[i], "predicted": stations[j]}
            for i in range(len(stations)) for j in range(len(stations))
            for _ in range(int(confusion[i, j]))]
    return pd.DataFrame(rows, columns=["actual", "predicted"])


# --------------------------------------------------------------------------------------------
# tables beside the scores


def correlation_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - Pearson correlation between records (n, 3, T) and (m, 3, T), all components
    standardised and concatenated -> (n, m). 0 = a copy, about 1 = unrelated (random phase)."""
    def flat(x):
        x = x - x.mean(axis=2, keepdims=True)
        x = x / (x.std(axis=2, keepdims=True) + 1e-12)
        return x.reshape(len(x), -1) / np.sqrt(x.shape[1] * x.shape[2])
    return 1.0 - flat(a) @ flat(b).T


def novelty(real: Corpus, generated: dict[str, Corpus], stations: list[str]) -> pd.DataFrame:
    """Distance of each generated record to its nearest training record of the same station,
    of each real training record to its nearest other training record (model "real", the
    baseline whose 10th percentile is the bar) and of each held-out real record to its nearest
    training record (model "holdout": what a genuinely new real record scores)."""
    rows = []
    split = real.records["split"].to_numpy()
    for station in stations:
        in_train = real.station_mask(station) & (split == "train")
        train = real.waveforms[in_train]
        if len(train) < 2:
            continue
        d = correlation_distance(train, train)
        np.fill_diagonal(d, np.inf)
        ids = real.records.loc[in_train, "record_id"]
        rows += [{"station": station, "model": "real", "record_id": r, "nn_distance": v}
                 for r, v in zip(ids, d.min(axis=1))]
        held = real.subset(real.station_mask(station) & (split == "holdout"))
        for model, corpus in {"holdout": held, **generated}.items():
            mask = corpus.station_mask(station)
            if mask.any():
                d = correlation_distance(corpus.waveforms[mask], train).min(axis=1)
                rows += [{"station": station, "model": model, "record_id": r, "nn_distance": v}
                         for r, v in zip(corpus.records.loc[mask, "record_id"], d)]
    return pd.DataFrame(rows, columns=["station", "model", "record_id", "nn_distance"])


def median_fas(sources: dict[str, Corpus], stations: list[str], params: EvaluateParams,
               fs: float) -> dict[str, np.ndarray]:
    """Median over records of the smoothed FAS (geometric mean of E and N), per station."""
    out: dict[str, np.ndarray] = {}
    for label, corpus in sources.items():
        for station in stations:
            mask = corpus.station_mask(station)
            if not mask.any():
                continue
            freqs, fas = smoothed_fas(corpus.waveforms[mask], fs, params=params)
            out["freqs"] = freqs
            out[f"{station}/{label}"] = np.median(np.sqrt(fas[:, 0] * fas[:, 1]), axis=0)
    return out


def matrix_entries(result: dict, reference: str) -> dict[str, np.ndarray]:
    """matrices.npz entries "<model>/<size>/<reference>" and their "/labels"."""
    out = {}
    sources = {"cross": None, "real_gen": ["Real", "Gen"], "real_recon_gen": ["Real", "Recon", "Gen"]}
    for model, kinds in result["matrices"].items():
        used = result["metrics"]["models"][model]["matrix_stations"]
        for kind, matrix in kinds.items():
            size = f"{len(matrix)}x{len(matrix)}"
            out[f"{model}/{size}/{reference}"] = matrix
            if sources[kind] is None:
                labels = [f"{s} Real" for s in used] + [f"{s} Gen" for s in used]
            else:
                labels = [f"{s} {src}" for s in used for src in sources[kind]]
            out[f"{model}/{size}/{reference}/labels"] = np.array(labels)
    return out


def labelled_curves(median_hvsr: dict) -> dict[str, np.ndarray]:
    return {("grid" if k == "grid" else f"{k[0]}/{registry.label_of(k[1])}"): v
            for k, v in median_hvsr.items() if v is not None}


# --------------------------------------------------------------------------------------------
# references: the perfect generator and the realism metrics


def perfect_generator_scores(real: Corpus, params: EvaluateParams, stations: list[str],
                             references: dict[str, Corpus], fs: float) -> dict:
    """The paper's scores of a perfect generator: realism.perfect_n_records records per
    station drawn with replacement from its real training records, mean over n_draws seeded
    draws, against each reference set. What a generator with the real f0 spread gets.
    Every record's f0 and curve is computed once; a draw takes rows of those tables."""
    rp = params.realism
    train = real.subset((real.records["split"] == "train").to_numpy()
                        & real.records["station"].isin(stations).to_numpy())
    train_table = record_table(train, "perfect", "generated", params, fs)
    ref_tables = {ref: record_table(c.subset(c.records["station"].isin(stations).to_numpy()),
                                    registry.REAL, "real", params, fs)
                  for ref, c in references.items()}
    rng = np.random.default_rng(rp.seed)
    sums: dict[str, dict[str, list[float]]] = {ref: {} for ref in references}
    for _ in range(rp.n_draws):
        picks = np.concatenate([rng.choice(np.flatnonzero(train.station_mask(s)),
                                           rp.perfect_n_records) for s in stations])
        table, freqs, curves = train_table
        drawn = (table.iloc[picks].reset_index(drop=True), freqs, curves[picks])
        for ref, real_ref in references.items():
            result = evaluate_sources(
                real_ref, {"perfect": train.subset(picks)}, None, params, stations, fs,
                precomputed={"perfect": drawn, registry.REAL: ref_tables[ref]})
            for key, value in headline(result, "perfect").items():
                if key != "per_station":
                    sums[ref].setdefault(key, []).append(value)
    return {ref: {k: round(float(np.mean(v)), 4) for k, v in values.items()}
            for ref, values in sums.items()}


def scenario_features(corpus: Corpus, params: EvaluateParams, vs30: dict[str, float],
                      fs: float) -> Features:
    """Realism features of a corpus; the scenario (magnitude, distance_km) from records.csv
    when it has both columns (generators without a scenario get no GMM residuals)."""
    table = corpus.records
    scenario = {}
    if {"magnitude", "distance_km"} <= set(table.columns):
        scenario = {"magnitude": pd.to_numeric(table["magnitude"], errors="coerce").to_numpy(),
                    "distance_km": pd.to_numeric(table["distance_km"], errors="coerce").to_numpy()}
    station_vs = np.array([vs30.get(str(s), params.realism.vs30_default_m_s)
                           for s in table["station"]])
    parts = []
    for value in np.unique(station_vs) if len(station_vs) else []:
        rows = np.flatnonzero(station_vs == value)
        parts.append((rows, record_features(
            corpus.waveforms[rows], fs, params.realism, params, vs30=float(value),
            record_id=table["record_id"].to_numpy()[rows],
            **{k: v[rows] for k, v in scenario.items()})))
    if not parts:
        return record_features(corpus.waveforms, fs, params.realism, params)
    order = np.argsort(np.concatenate([rows for rows, _ in parts]), kind="stable")
    return concat_features([f for _, f in parts]).take(order)


def by_station(corpus: Corpus, features: Features, stations: list[str]) -> dict[str, Features]:
    return {s: features.take(corpus.station_mask(s)) for s in stations
            if corpus.station_mask(s).any()}


def realism(real: Corpus, generated: dict[str, Corpus], recon: dict[str, Corpus],
            params: EvaluateParams, stations: list[str], fs: float) -> tuple:
    """The realism metrics of every source against the held-out real records, with the
    perfect-generator bands; the training records themselves are the real-vs-real floor."""
    vs30 = station_vs30(real.stations, params.realism.vs30_default_m_s)
    split = real.records["split"].to_numpy()
    train_c, held_c = real.subset(split == "train"), real.subset(split == "holdout")
    train = by_station(train_c, scenario_features(train_c, params, vs30, fs), stations)
    held = by_station(held_c, scenario_features(held_c, params, vs30, fs), stations)
    sources = {"real-train": train}
    joined = {"real-holdout": held, "real-train": train}
    for name, corpus in [*generated.items(), *((f"{n}-recon", c) for n, c in recon.items())]:
        sources[name] = by_station(corpus, scenario_features(corpus, params, vs30, fs), stations)
        joined[name] = sources[name]
    flat, table, curves = realism_tables(train, held, sources, params.realism)
    figure_data = {}  # per source, all stations: what figures/realism.png draws
    for name, per_station in joined.items():
        if per_station:
            f = concat_features(list(per_station.values()))
            figure_data.update({f"{name}/{k}": getattr(f, k) for k in FIGURE_FIELDS})
            figure_data["env_times"] = f.env_times
    return flat, table, curves, figure_data


FIGURE_FIELDS = ("pga", "d5_95", "n_bursts", "valid", "envelope")


# scenario fidelity and novelty of the record-free samplers

FIDELITY_PERIODS = (0.2, 1.0)  # s: PSA periods of the scenario-fidelity residuals


def ln_amplitudes(corpus: Corpus, params: EvaluateParams, fs: float) -> np.ndarray:
    """(n, 3) ln of PGA and PSA(0.2 s, 1 s), geometric mean of E and N (as records.csv)."""
    ims = intensity_measures(corpus.waveforms, fs,
                             dataclasses.replace(params, psa_periods=list(FIDELITY_PERIODS)))
    pga_ = np.sqrt(ims["pga"][:, 0] * ims["pga"][:, 1])
    psa_ = np.sqrt(ims["psa"][:, 0] * ims["psa"][:, 1])
    return np.log(np.column_stack([pga_, psa_]))


def scaling_slopes(corpus: Corpus, ln_pga: np.ndarray) -> tuple[float, float]:
    """(d lnPGA/dM, d lnPGA/d lnR) of ln PGA = a_station + b M + c ln R (least squares)."""
    table = corpus.records
    stations = sorted(table["station"].unique())
    design = np.column_stack([
        *(table["station"].to_numpy() == s for s in stations),
        pd.to_numeric(table["magnitude"]).to_numpy(),
        np.log(pd.to_numeric(table["distance_km"]).to_numpy())]).astype(np.float64)
    coef = np.linalg.lstsq(design, ln_pga, rcond=None)[0]
    return float(coef[-2]), float(coef[-1])


def scenario_fidelity(real: Corpus, generated: Corpus, params: EvaluateParams,
                      fs: float) -> dict:
    """Records generated at each held-out record's (station, M, R) (source_record names it):
    mean over held-out records of the median ln residual of PGA and PSA(0.2 s, 1 s), and the
    M and ln R slopes of ln PGA against those fitted on the real target records."""
    if not {"source_record", "magnitude", "distance_km"} <= set(generated.records.columns):
        raise CorpusError("scenario corpus needs source_record, magnitude and distance_km")
    held = real.subset((real.records["split"] == "holdout").to_numpy())
    ln_real = dict(zip(held.records["record_id"], ln_amplitudes(held, params, fs)))
    ln_gen = ln_amplitudes(generated, params, fs)
    source = generated.records["source_record"].astype(str).to_numpy()
    per_record = [np.median(ln_gen[source == rid], axis=0) - ln_real[rid]
                  for rid in ln_real if (source == rid).any()]
    if not per_record:
        raise CorpusError("scenario corpus has no records at the held-out records' scenarios")
    resid = np.mean(per_record, axis=0)
    real_slopes = scaling_slopes(real, ln_amplitudes(real, params, fs)[:, 0])
    gen_slopes = scaling_slopes(generated, ln_gen[:, 0])
    out = {"n_scenarios": len(per_record), "ln_pga_resid": resid[0]}
    out.update({f"ln_psa_{t:g}s_resid": r for t, r in zip(FIDELITY_PERIODS, resid[1:])})
    for name, real_value, gen_value in zip(("dlnpga_dm", "dlnpga_dlnr"), real_slopes,
                                           gen_slopes):
        out.update({f"{name}_real": real_value, f"{name}": gen_value,
                    f"{name}_ratio": gen_value / real_value})
    return {k: (v if isinstance(v, int) else round(float(v), 4)) for k, v in out.items()}


def novelty_rates(table: pd.DataFrame) -> dict:
    """Per model (and "holdout", the held-out real records): share of records closer to their
    nearest training record than the 10th percentile of the real-vs-real nearest distances of
    the same station."""
    out = {}
    for model in table["model"].unique():
        if model == "real":
            continue
        below, total = 0, 0
        for station, rows in table.groupby("station"):
            real = rows.loc[rows["model"] == "real", "nn_distance"].to_numpy()
            mine = rows.loc[rows["model"] == model, "nn_distance"].to_numpy()
            if len(real) and len(mine):
                below += int((mine < np.percentile(real, 10)).sum())
                total += len(mine)
        if total:
            out[model] = {"below_real_p10_rate": round(below / total, 4), "n": total}
    return out


# headline realism metrics in metrics.json (pooled over the target stations, with bands)
REALISM_HEADLINE = ("psa_ln_resid", "psa_ln_std_ratio", "d5_95_median_ratio", "pga_median_ratio",
                    "multi_burst_rate", "classifier_auc", "gmm_pga_mean_diff",
                    "gmm_pga_std_diff")


def realism_headline(flat: dict) -> dict:
    """{source: {metric: value, metric_band: [lo, hi], metric_met: bool}} of the headline
    metrics (every PSA period); the full tables are in outputs/evaluation."""
    out: dict = {}
    for key, value in flat.items():
        _, source, metric = key.split("/", 2)
        if metric.endswith(("_band_lo", "_band_hi", "_met")) or not any(
                metric == h or metric.startswith(h + "_") and metric[len(h) + 1].isdigit()
                for h in REALISM_HEADLINE):
            continue
        item = out.setdefault(source, {})
        item[metric] = _round(value)
        lo, hi = flat.get(f"{key}_band_lo"), flat.get(f"{key}_band_hi")
        item[f"{metric}_band"] = [_round(lo), _round(hi)]
        if f"{key}_met" in flat:
            item[f"{metric}_met"] = bool(flat[f"{key}_met"])
    return out


def _round(value) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


# --------------------------------------------------------------------------------------------
# the work


def evaluate(real: Corpus, generated: dict[str, Corpus], recon: dict[str, Corpus],
             params: EvaluateParams, stations: list[str], fs: float = SAMPLING_RATE,
             progress: bool = False, scenarios: dict[str, Corpus] | None = None) -> dict:
    """Every reference set's evaluation and the tables beside it -> {"metrics" (headline),
    "full", "records", "curves", "fas", "matrices", "novelty", "confusions", realism ...}.
    scenarios: {name: records generated at the held-out records' scenarios}."""
    has_split = "split" in real.records.columns and (real.records["split"] == "holdout").any()
    references = {"all": (real, recon)}
    if has_split:
        references["holdout"] = holdout_references(real, recon)
    out: dict = {"metrics": {m: {} for m in generated}, "full": {}, "matrices": {}}
    for reference, (real_ref, recon_ref) in references.items():
        result = evaluate_sources(real_ref, generated, recon_ref, params, stations, fs,
                                  progress=progress)
        out["full"][reference] = result["metrics"]
        for model in generated:
            out["metrics"][model][reference] = headline(result, model)
        out["matrices"].update(matrix_entries(result, reference))
        if reference == "all":
            table = result["records"]
            table["source"] = table["source"].map(registry.label_of)
            out["records"] = table
            out["curves"] = labelled_curves(result["median_hvsr"])
            out["confusions"] = {m: confusion_rows(result, m) for m in generated}
            out["metrics"].update(real_headline(result))
    if has_split:
        out["metrics"]["real_ceiling"].update(real_ceiling_scores(real, params, stations))
        out["metrics"]["perfect_generator"] = perfect_generator_scores(
            real, params, stations, {ref: pair[0] for ref, pair in references.items()}, fs)
        out["novelty"] = novelty(real, generated, stations)
        out["metrics"]["novelty"] = novelty_rates(out["novelty"])
        if scenarios:
            out["metrics"]["scenario_fidelity"] = {
                name: scenario_fidelity(real, corpus, params, fs)
                for name, corpus in scenarios.items()}
        flat, out["realism_table"], out["realism_psa"], out["realism_features"] = realism(
            real, generated, recon, params, stations, fs)
        out["metrics"]["realism"] = realism_headline(flat)
    out["metrics"]["paper"] = registry.paper()["scores"]
    sources = {registry.REAL: real,
               **{registry.label_of(m): c for m, c in generated.items()}}
    out["fas"] = median_fas(sources, stations, params, fs)
    return out


def write_outputs(result: dict, out_dir: Path, metrics_path: Path | None,
                  plots_dir: Path | None, sources: list[Path]) -> None:
    """The evaluation folder (atomic), then the headline metrics file and confusion tables."""
    with staged_dir(out_dir, sources) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(result["full"], indent=1) + "\n")
        result["records"].to_csv(tmp / "records.csv", index=False, float_format="%.6g")
        np.savez(tmp / "median_hvsr.npz", **result["curves"])
        np.savez(tmp / "fas_median.npz", **result["fas"])
        np.savez(tmp / "matrices.npz", **result["matrices"])
        if "novelty" in result:
            result["novelty"].to_csv(tmp / "novelty.csv", index=False, float_format="%.6g")
        if "realism_table" in result:
            result["realism_table"].to_csv(tmp / "realism.csv", index=False,
                                           float_format="%.6g")
            result["realism_psa"].to_csv(tmp / "realism_psa.csv", index=False,
                                         float_format="%.6g")
            np.savez(tmp / "realism_features.npz", **result["realism_features"])
    if plots_dir is not None:
        plots_dir.mkdir(parents=True, exist_ok=True)
        for model, rows in result["confusions"].items():
            with staged_file(plots_dir / f"confusion_{model}.csv") as tmp:
                rows.to_csv(tmp, index=False)
    if metrics_path is not None:
        with staged_file(metrics_path) as tmp:
            tmp.write_text(json.dumps(result["metrics"], indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# CLI


def build_parser(verb: str) -> argparse.ArgumentParser:
    parser = stage_parser(verb, __doc__)
    parser.add_argument("--real", type=Path, required=True, help="corpus of real records")
    parser.add_argument("--prepared", type=Path, help="prepared folder: score the target "
                        "stations against all and against the held-out records")
    parser.add_argument("--registered", action="store_true",
                        help="add every registered generator from its output folder")
    parser.add_argument("--generated", type=parse_source, action="append", default=[],
                        metavar="[NAME=]DIR", help="generated corpus (repeatable)")
    parser.add_argument("--recon", type=parse_source, action="append", default=[],
                        metavar="[NAME=]DIR", help="reconstructed corpus (repeatable)")
    parser.add_argument("--scenario", type=parse_source, action="append", default=[],
                        metavar="NAME=DIR", help="records generated at the held-out records' "
                        "scenarios (sample --scenarios): scenario fidelity (repeatable)")
    parser.add_argument("--real-records", type=Path, help="CSV with a record_id column: "
                        "use only these real records (e.g. the held-out split)")
    parser.add_argument("--stations", nargs="+", help="stations to score (default: "
                        "data.target_stations with --prepared, else every real station)")
    parser.add_argument("--params", default="params.yaml",
                        help="params file (evaluate section); defaults if absent")
    parser.add_argument("--fs", type=float, default=SAMPLING_RATE, help="sampling rate (Hz)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, help="also write the headline metrics here")
    parser.add_argument("--plots", type=Path, help="folder for confusion_<model>.csv")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def load_evaluate_params(path: str) -> tuple[EvaluateParams, list[str] | None]:
    """(evaluate params, data.target_stations) of the params file; defaults when the default
    file is absent."""
    if Path(path).exists():
        params = load_params(path)
        return params.evaluate, list(params.data.target_stations)
    if path == "params.yaml":
        return EvaluateParams(), None
    raise ParamsError(f"{path}: no such params file")


def main(argv: list[str], verb: str = "evaluate") -> int:
    args = build_parser(verb).parse_args(argv)
    params, targets = load_evaluate_params(args.params)
    generated, recon, scenario = list(args.generated), list(args.recon), list(args.scenario)
    if args.registered:
        more_gen, more_recon, more_scenario = registered_sources()
        generated, recon = more_gen + generated, more_recon + recon
        scenario = more_scenario + scenario
    if scenario and not args.prepared:
        raise CorpusError("--scenario needs --prepared (the held-out records it is scored at)")
    check_names(generated, recon)
    stations = args.stations or (targets if args.prepared else None)
    # Check every output, read everything (and fail on a bad folder) before the long computation.
    inputs = [args.real, *(p for _, p in generated + recon + scenario)]
    for out, kind in ((args.out, "folder"), (args.metrics, "file"), (args.plots, "folder")):
        if out is not None:
            check_out(out, inputs, kind)
    if args.prepared:
        real = prepared_real(args.real, args.prepared, stations)
    else:
        real = read_corpus(args.real, stations)
    if args.real_records:
        real = restrict_records(real, args.real_records)
    stations = stations or sorted(real.records["station"].astype(str).unique())
    gen = {n: read_corpus(p, stations) for n, p in generated}
    rec = {n: read_corpus(p, stations) for n, p in recon}
    scen = {n: read_corpus(p, stations) for n, p in scenario}
    result = evaluate(real, gen, rec, params, stations, args.fs, progress=not args.quiet,
                      scenarios=scen)
    write_outputs(result, args.out, args.metrics, args.plots, inputs)
    warnings = dict.fromkeys(w for ref in result["full"].values() for w in ref["warnings"])
    for warning in warnings:
        print(f"timesnet-gen {verb}: WARNING: {warning}", file=sys.stderr)
    summary = {m: {r: {k: v for k, v in x.items() if k != "per_station"}
                   for r, x in result["metrics"][m].items()} for m in gen}
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}/metrics.json, records.csv, median_hvsr.npz, matrices.npz",
          file=sys.stderr)
    return 0
