"""`score` (the `evaluate` stage): the paper's evaluation of every model, twice.

Once against all real records of the target stations (the paper's setting: the records the
generator mixes are among those it is scored against) and once against the held-out records
only (never seen by training or generation), so leakage is visible. The science is in
`timesnet_gen.evaluation`; this module feeds it the pipeline's folders and writes
    outputs/evaluation/records.csv      per record and source: f0, PGA, PGV, Arias, D5-95, PSA
    outputs/evaluation/hvsr_median.npz  "grid" and "<station>/<source>" median HVSR (400 points)
    outputs/evaluation/fas_median.npz   "freqs" and "<station>/<source>" median smoothed FAS
    outputs/evaluation/matrices.npz     "<model>/<size>/<reference>" similarity matrices (+labels)
    outputs/evaluation/novelty.csv      nearest-training-record distance of each generated record
    outputs/evaluation/full_metrics.json  everything evaluate_sources measured
    metrics.json                        the headline numbers (DVC metrics)
    metrics/confusion_<model>.csv       nearest-station assignments (DVC confusion plot)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from timesnet_gen.cli import stage_parser
from timesnet_gen.config import EvaluateParams, load_params
from timesnet_gen.atomic import staged_dir, staged_file
from timesnet_gen.corpus.format import Corpus, read_corpus
from timesnet_gen.evaluation.evaluate import evaluate_sources
from timesnet_gen.evaluation.intensity import smoothed_fas

PAPER_SCORES = {"timesnet_15x15": 0.93, "vae_15x15": 0.81}
LABELS = {"timesnet": "TimesNet", "vae": "VAE"}  # source labels: "<label>-Gen", "<label>-Recon"


def subset(corpus: Corpus, mask: np.ndarray) -> Corpus:
    return Corpus(corpus.waveforms[mask], corpus.records[mask].reset_index(drop=True),
                  corpus.stations)


def real_records(raw: Path, prepared: Path, stations: list[str]) -> Corpus:
    """The target stations' real records with their split (train / holdout) from prepare."""
    corpus = read_corpus(raw, stations)
    index = pd.read_csv(prepared / "index.csv", dtype={"record_id": str, "station": str})
    split = dict(zip(index["record_id"], index["split"]))
    keep = corpus.records["record_id"].isin(split).to_numpy()  # the tiny profile slices
    corpus = subset(corpus, keep)
    corpus.records["split"] = corpus.records["record_id"].map(split)
    return corpus


def source_label(name: str) -> str:
    """evaluate_sources labels -> figure labels: timesnet -> TimesNet-Gen, vae-recon -> VAE-Recon."""
    if name == "Real":
        return name
    model, _, kind = name.partition("-")
    return f"{LABELS[model]}-{'Recon' if kind == 'recon' else 'Gen'}"


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


def confusion_rows(result: dict, model: str) -> pd.DataFrame:
    """One row per generated record: actual station, predicted (nearest) station."""
    nearest = result["metrics"]["models"][model]["nearest_station"]
    stations, confusion = nearest["stations"], np.asarray(nearest["confusion"])
    rows = [{"actual": stations[i], "predicted": stations[j]}
            for i in range(len(stations)) for j in range(len(stations))
            for _ in range(int(confusion[i, j]))]
    return pd.DataFrame(rows, columns=["actual", "predicted"])


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
    and of each real training record to its nearest other training record (the baseline)."""
    rows = []
    for station in stations:
        train = real.waveforms[(real.station_mask(station)
                                & (real.records["split"] == "train").to_numpy())]
        if len(train) < 2:
            continue
        d = correlation_distance(train, train)
        np.fill_diagonal(d, np.inf)
        ids = real.records.loc[real.station_mask(station)
                               & (real.records["split"] == "train"), "record_id"]
        rows += [{"station": station, "model": "real", "record_id": r, "nn_distance": v}
                 for r, v in zip(ids, d.min(axis=1))]
        for model, corpus in generated.items():
            mask = corpus.station_mask(station)
            if mask.any():
                d = correlation_distance(corpus.waveforms[mask], train).min(axis=1)
                rows += [{"station": station, "model": model, "record_id": r, "nn_distance": v}
                         for r, v in zip(corpus.records.loc[mask, "record_id"], d)]
    return pd.DataFrame(rows, columns=["station", "model", "record_id", "nn_distance"])


def median_fas(sources: dict[str, Corpus], stations: list[str],
               params: EvaluateParams) -> dict[str, np.ndarray]:
    """Median over records of the smoothed FAS (geometric mean of E and N), per station."""
    out: dict[str, np.ndarray] = {}
    for label, corpus in sources.items():
        for station in stations:
            mask = corpus.station_mask(station)
            if not mask.any():
                continue
            freqs, fas = smoothed_fas(corpus.waveforms[mask], 100.0, params=params)
            out["freqs"] = freqs
            out[f"{station}/{label}"] = np.median(np.sqrt(fas[:, 0] * fas[:, 1]), axis=0)
    return out


def matrix_entries(result: dict, reference: str) -> dict[str, np.ndarray]:
    """matrices.npz entries "<model>/<size>/<reference>" and their "/labels"."""
    out = {}
    for model, kinds in result["matrices"].items():
        used = result["metrics"]["models"][model]["matrix_stations"]
        sources = {"cross": None, "real_gen": ["Real", "Gen"],
                   "real_recon_gen": ["Real", "Recon", "Gen"]}
        for kind, matrix in kinds.items():
            size = f"{len(matrix)}x{len(matrix)}"
            out[f"{model}/{size}/{reference}"] = matrix
            if sources[kind] is None:
                labels = [f"{s} Real" for s in used] + [f"{s} Gen" for s in used]
            else:
                labels = [f"{s} {src}" for s in used for src in sources[kind]]
            out[f"{model}/{size}/{reference}/labels"] = np.array(labels)
    return out


def real_ceiling_scores(real: Corpus, params: EvaluateParams, stations: list[str]) -> dict:
    """What a perfect generator could score here: the held-out real records scored as if they
    were generated, against the training records (same protocol, station overlap included)."""
    split = real.records["split"].to_numpy()
    train, held = subset(real, split == "train"), subset(real, split == "holdout")
    if not all(held.station_mask(s).any() for s in stations):
        return {}
    result = evaluate_sources(train, {"holdout": held}, None, params, stations)
    scores = result["metrics"]["models"]["holdout"]
    return {k: round(v, 4) for k, v in scores.items() if k.startswith("score_")}


def score(raw: Path, prepared: Path, models: dict[str, Path], params: EvaluateParams,
          stations: list[str], out_dir: Path, metrics_path: Path, plots_dir: Path) -> dict:
    real = real_records(raw, prepared, stations)
    generated = {m: read_corpus(p / "generated", stations) for m, p in models.items()}
    recon = {m: read_corpus(p / "recon", stations) for m, p in models.items()}
    metrics: dict = {model: {} for model in models}
    tables, matrices, curves, full = [], {}, {}, {}
    for reference in ("all", "holdout"):
        if reference == "all":
            real_ref, recon_ref = real, recon
        else:
            real_ref = subset(real, (real.records["split"] == "holdout").to_numpy())
            holdout_ids = set(real_ref.records["record_id"])
            recon_ref = {m: subset(c, c.records["source_record"].isin(holdout_ids).to_numpy())
                         for m, c in recon.items()}
        result = evaluate_sources(real_ref, generated, recon_ref, params, stations,
                                  progress=False)
        full[reference] = result["metrics"]
        for model in models:
            metrics[model][reference] = headline(result, model)
        matrices.update(matrix_entries(result, reference))
        if reference == "all":
            table = result["records"]
            table["source"] = table["source"].map(source_label)
            tables.append(table)
            curves = {("grid" if k == "grid" else f"{k[0]}/{source_label(k[1])}"): v
                      for k, v in result["median_hvsr"].items() if v is not None}
            confusions = {m: confusion_rows(result, m) for m in models}
            metrics["real_ceiling"] = {"nearest_station_accuracy": round(
                result["metrics"]["real_ceiling"]["accuracy"], 4)}
            truth = result["metrics"].get("true_f0", {})
            metrics["real_f0_error_vs_true_pct"] = {
                s: round(100 * (result["metrics"]["f0"]["Real"][s]["median"]
                                / t["f0_true_hz"] - 1), 4) for s, t in truth.items()}
    metrics["real_ceiling"].update(real_ceiling_scores(real, params, stations))
    metrics["paper"] = PAPER_SCORES

    sources = {"Real": real, **{f"{LABELS[m]}-Gen": c for m, c in generated.items()}}
    fas = median_fas(sources, stations, params)
    nov = novelty(real, generated, stations)

    with staged_dir(out_dir) as tmp:
        pd.concat(tables).to_csv(tmp / "records.csv", index=False, float_format="%.6g")
        np.savez(tmp / "hvsr_median.npz", **curves)
        np.savez(tmp / "fas_median.npz", **fas)
        np.savez(tmp / "matrices.npz", **matrices)
        nov.to_csv(tmp / "novelty.csv", index=False, float_format="%.6g")
        (tmp / "full_metrics.json").write_text(json.dumps(full, indent=1) + "\n")
    plots_dir.mkdir(parents=True, exist_ok=True)
    for model, rows in confusions.items():
        rows.to_csv(plots_dir / f"confusion_{model}.csv", index=False)
    with staged_file(metrics_path) as tmp_metrics:
        tmp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def parse_model(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or name not in LABELS:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR with NAME in {sorted(LABELS)}")
    return name, Path(path)


def main(argv: list[str], verb: str = "score") -> int:
    parser = stage_parser(verb, __doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", default="data/raw", type=Path)
    parser.add_argument("--prepared", default="data/prepared", type=Path)
    parser.add_argument("--model", type=parse_model, action="append", required=True,
                        metavar="NAME=DIR", help="a model's output folder (generated/, recon/)")
    parser.add_argument("--out", default="outputs/evaluation", type=Path)
    parser.add_argument("--metrics", default="metrics.json", type=Path)
    parser.add_argument("--plots", default="metrics", type=Path)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    metrics = score(args.raw, args.prepared, dict(args.model), params.evaluate,
                    params.data.target_stations, args.out, args.metrics, args.plots)
    print(json.dumps({m: {r: {k: v for k, v in x.items() if k != "per_station"}
                          for r, x in metrics[m].items()} for m in dict(args.model)}, indent=1))
    return 0
