"""`report` stage: the score table (Markdown + CSV) and the results summary, from metrics.json.

Nothing here computes science: it lays out what the `evaluate` stage measured next to the
paper's published numbers (paper.json) and states which targets are met. Rows come from the
generator registry (registry.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from timesnet_gen import registry
from timesnet_gen.atomic import staged_file
from timesnet_gen.stage import stage_parser
from timesnet_gen.errors import UserError

REFERENCES = {"all": "all real records", "holdout": "held-out real records"}
SIZES = ("5x5", "10x10", "15x15")
F0_TOLERANCE_PCT = 5.0
ACCURACY_GAP = 0.05


FIGURES = [
    ("combined/station_<code>.png", "per station: f0 histograms + KDE and median HVSR of "
     + ", ".join(registry.source_labels()) + ", true f0 marked"),
    ("similarity_matrices.png", "largest similarity matrix of each generator (15x15 with its "
     "reconstructions, else 10x10): "
     + ", ".join(f"{g.title} {'15x15' if g.has_recon else '10x10'}" for g in registry.GENERATORS)),
    ("similarity_matrices_5x5_10x10.png", "5x5 and 10x10 similarity matrices"),
    ("waveforms/station_<code>.png", "real vs generated waveforms (E, N, U) and their spectra"),
    ("intensity_measures.png", "PGA, Arias intensity, D5-95 and PSA per station"),
    ("training_curves.png", "training curves of every generator"),
    ("ground_truth_f0.png", "recovered f0 (real and generated) against the true site f0"),
    ("novelty.png", "distance of generated records to their nearest training record"),
    ("realism.png", "realism: PSA residual and spread vs period with the perfect generator's "
     "band, D5-95, PGA and burst-count distributions, example envelopes"),
    ("corpus_overview.png", "the synthetic corpus: example records, HVSR, f0 histograms"),
]


def score_table(metrics: dict) -> pd.DataFrame:
    """One row per model, reference set and matrix size."""
    rows = []
    for g in registry.GENERATORS:
        model, name = g.name, g.title
        for ref in REFERENCES:
            m = metrics.get(model, {}).get(ref)
            if m is None:
                continue
            stations = m.get("per_station", {})
            for size in SIZES:
                row = {
                    "model": name,
                    "reference": ref,
                    "matrix": size,
                    "score": m.get(f"score_{size}"),
                    "paper_score": metrics.get("paper", {}).get(f"{model}_15x15"),
                    "nearest_station_accuracy": m.get("nearest_station_accuracy"),
                    "real_ceiling_accuracy": metrics.get("real_ceiling", {}).get(
                        "nearest_station_accuracy"),
                }
                for code, values in stations.items():
                    row[f"dF0_{code}_hz"] = values.get("delta_f0_hz")
                rows.append(row)
    return pd.DataFrame(rows)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def to_markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join([header, rule, *body]) + "\n"


def targets(metrics: dict) -> list[tuple[str, bool | None, str]]:
    """The issue's targets on the default corpus: (statement, met?, measured)."""
    out = []
    target_score = registry.paper()["scores"]["timesnet_15x15"]
    tn = metrics.get("timesnet", {}).get("all", {})
    vae = metrics.get("vae", {}).get("all", {})
    for size in ("15x15", "5x5"):
        score, other = tn.get(f"score_{size}"), vae.get(f"score_{size}")
        if score is not None:
            met = score >= target_score and (other is None or score > other)
            out.append((f"TimesNet-Gen {size} score >= {target_score} and above the VAE's", met,
                        f"TimesNet-Gen {score:.3f}, VAE {_fmt(other)}"))
    acc = tn.get("nearest_station_accuracy")
    ceiling = metrics.get("real_ceiling", {}).get("nearest_station_accuracy")
    if acc is not None and ceiling is not None:
        out.append((f"nearest-station accuracy within {ACCURACY_GAP} of the real ceiling",
                    ceiling - acc <= ACCURACY_GAP, f"{acc:.3f} vs ceiling {ceiling:.3f}"))
    errors = {code: v.get("f0_error_vs_true_pct") for code, v in tn.get("per_station", {}).items()}
    errors = {k: v for k, v in errors.items() if v is not None}
    if errors:
        worst = max(errors, key=lambda k: abs(errors[k]))
        out.append((f"median f0 of generated records within {F0_TOLERANCE_PCT:g} % of the true "
                    "site f0 for every target station",
                    all(abs(v) <= F0_TOLERANCE_PCT for v in errors.values()),
                    ", ".join(f"{k}: {v:+.1f} %" for k, v in errors.items())
                    + f" (worst {worst})"))
    return out


REALISM_LABELS = {"real-train": "Real (training records)"}
REALISM_ROWS = {  # headline metric -> what it measures
    "d5_95_median_ratio": "D5-95 median ratio to real",
    "pga_median_ratio": "PGA median ratio to real",
    "multi_burst_rate": "share of records with > 1 strong-motion burst",
    "classifier_auc": "two-sample classifier AUC (0.5 = indistinguishable)",
    "gmm_pga_mean_diff": "ASB14 PGA residual: mean difference to real",
    "gmm_pga_std_diff": "ASB14 PGA residual: std difference to real",
}
SUMMARY_PERIODS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # PSA periods (s) in results.md


def realism_source_label(name: str) -> str:
    return REALISM_LABELS.get(name) or registry.label_of(name)


def _cell(entry: dict, metric: str) -> str:
    """'value [lo, hi] met|MISSED' of one pooled metric; '-' when not measured."""
    value = entry.get(metric)
    if value is None:
        return "no scenario" if metric.startswith("gmm_") else "-"
    lo, hi = entry.get(f"{metric}_band", [None, None])
    band = "" if lo is None else f" [{lo:.2f}, {hi:.2f}]"
    met = entry.get(f"{metric}_met")
    mark = "" if met is None else (" met" if met else " **MISSED**")
    return f"{value:.2f}{band}{mark}"


def realism_rows(realism: dict, periods: tuple | None = None) -> list[tuple[str, str]]:
    """(metric key, description) of the realism table: PSA at `periods` (all when None)."""
    keys = sorted({k for entry in realism.values() for k in entry
                   if k.startswith(("psa_ln_resid_", "psa_ln_std_ratio_"))
                   and not k.endswith(("_band", "_met"))},
                  key=lambda k: (k.startswith("psa_ln_std"), float(k.rsplit("_", 1)[1][:-1])))
    if periods is not None:
        keys = [k for k in keys if float(k.rsplit("_", 1)[1][:-1]) in periods]
    rows = [(k, ("ln PSA residual" if "resid" in k else "ln-std ratio of PSA")
             + f" at T = {k.rsplit('_', 1)[1][:-1]} s") for k in keys]
    return rows + list(REALISM_ROWS.items())


def realism_markdown(metrics: dict, periods: tuple | None = None) -> str:
    """Every source's pooled realism metrics with the perfect generator's 5-95 % band."""
    realism = metrics.get("realism", {})
    if not realism:
        return ""
    sources = list(realism)
    header = "| metric | " + " | ".join(realism_source_label(s) for s in sources) + " |"
    lines = [header, "|" + "---|" * (len(sources) + 1)]
    for metric, text in realism_rows(realism, periods):
        lines.append(f"| {text} | " + " | ".join(_cell(realism[s], metric) for s in sources)
                     + " |")
    return "\n".join(lines) + "\n"


def realism_summary(metrics: dict) -> list[str]:
    """Per source: how many headline metrics (every PSA period included) are met."""
    out = []
    for source, entry in metrics.get("realism", {}).items():
        met = [k for k, v in entry.items() if k.endswith("_met")]
        n_met = sum(bool(entry[k]) for k in met)
        missed = [k[:-4] for k in met if not entry[k]]
        out.append(f"- {realism_source_label(source)}: {n_met} of {len(met)} realism metrics "
                   f"inside the perfect generator's band"
                   + (f"; missed: {', '.join(missed)}" if missed else ""))
    return out


SPECIFICITY_MARGIN = 0.02  # a record-free sampler's score >= the perfect generator's - this
FIDELITY_RESID = 0.3  # |mean median ln residual| at the held-out scenarios
SLOPE_TOLERANCE = 0.25  # generated / real scaling slopes within 1 +- this


def sampler_targets(metrics: dict, g: registry.Generator) -> list[tuple[str, bool | None, str]]:
    """The record-free sampler targets (issue 12) of one generator: (statement, met?, measured)."""
    out = []
    name, mine = g.title, metrics.get(g.name, {})
    perfect = metrics.get("perfect_generator", {})
    for ref in REFERENCES:
        for size in ("5x5", "10x10"):
            score = mine.get(ref, {}).get(f"score_{size}")
            bar = perfect.get(ref, {}).get(f"score_{size}")
            if score is not None and bar is not None:
                out.append((f"{name} {size} vs {REFERENCES[ref]} >= perfect generator - "
                            f"{SPECIFICITY_MARGIN}", score >= bar - SPECIFICITY_MARGIN,
                            f"{score:.3f} vs {bar:.3f}"))
    errors = {c: v.get("f0_error_vs_true_pct")
              for c, v in mine.get("all", {}).get("per_station", {}).items()}
    errors = {k: v for k, v in errors.items() if v is not None}
    if errors:
        out.append((f"{name}: median f0 within {F0_TOLERANCE_PCT:g} % of the true f0, every "
                    "target station", all(abs(v) <= F0_TOLERANCE_PCT for v in errors.values()),
                    ", ".join(f"{k}: {v:+.1f} %" for k, v in errors.items())))
    acc = mine.get("all", {}).get("nearest_station_accuracy")
    ceiling = metrics.get("real_ceiling", {}).get("nearest_station_accuracy")
    if acc is not None and ceiling is not None:
        out.append((f"{name}: nearest-station accuracy >= real ceiling - {ACCURACY_GAP}",
                    acc >= ceiling - ACCURACY_GAP, f"{acc:.3f} vs {ceiling:.3f}"))
    realism = metrics.get("realism", {}).get(g.name, {})
    flags = {k[:-4]: v for k, v in realism.items() if k.endswith("_met")}
    if flags:
        missed = [k for k, v in flags.items() if not v]
        out.append((f"{name}: every realism metric inside the perfect generator's band",
                    not missed, f"{len(flags) - len(missed)} of {len(flags)} met"
                    + (f"; missed {', '.join(missed)}" if missed else "")))
    fidelity = metrics.get("scenario_fidelity", {}).get(g.name)
    if fidelity:
        resid = {k: v for k, v in fidelity.items() if k.endswith("_resid")}
        out.append((f"{name}: scenario fidelity, mean median ln residual within "
                    f"+-{FIDELITY_RESID} ({fidelity['n_scenarios']} held-out scenarios)",
                    all(abs(v) <= FIDELITY_RESID for v in resid.values()),
                    ", ".join(f"{k.removesuffix('_resid')} {v:+.2f}" for k, v in resid.items())))
        ratios = {k: fidelity[f"{k}_ratio"] for k in ("dlnpga_dm", "dlnpga_dlnr")}
        out.append((f"{name}: ln PGA slopes in M and ln R within {SLOPE_TOLERANCE:.0%} of the "
                    "real records'", all(abs(r - 1) <= SLOPE_TOLERANCE for r in ratios.values()),
                    ", ".join(f"{k} {fidelity[k]:.2f} (real {fidelity[k + '_real']:.2f})"
                              for k in ratios)))
    novelty = metrics.get("novelty", {}).get(g.name)
    if novelty:
        rate = novelty["below_real_p10_rate"]
        out.append((f"{name}: no record closer to a training record than the 10th percentile "
                    "of real-vs-real nearest distances", rate == 0.0,
                    f"{rate:.1%} of {novelty['n']} records below it{holdout_novelty(metrics)}"))
    return out


def holdout_novelty(metrics: dict) -> str:
    """"; held-out real records: x %" (what new real records score on the novelty bar), or ""."""
    held = metrics.get("novelty", {}).get("holdout")
    return (f"; held-out real records: {held['below_real_p10_rate']:.1%} of {held['n']}"
            if held else "")


def generators_side_by_side(metrics: dict) -> pd.DataFrame:
    """One column per registered generator (and the perfect generator where it has a value),
    one row per headline number: specificity, f0, realism, scenario fidelity, novelty."""
    perfect = metrics.get("perfect_generator", {})
    columns: dict[str, dict[str, str]] = {}
    for g in registry.GENERATORS:
        mine, col = metrics.get(g.name, {}), {}
        for ref in REFERENCES:
            for size in ("5x5", "10x10"):
                col[f"{size} score vs {REFERENCES[ref]}"] = _fmt(
                    mine.get(ref, {}).get(f"score_{size}"))
        col["nearest-station accuracy"] = _fmt(mine.get("all", {}).get("nearest_station_accuracy"))
        errors = {c: v.get("f0_error_vs_true_pct")
                  for c, v in mine.get("all", {}).get("per_station", {}).items()}
        errors = {c: v for c, v in errors.items() if v is not None}
        worst = max(errors, key=lambda c: abs(errors[c])) if errors else None
        col["worst median f0 error vs truth"] = (f"{errors[worst]:+.1f} % ({worst})"
                                                  if worst else "-")
        realism = metrics.get("realism", {}).get(g.name, {})
        flags = [v for k, v in realism.items() if k.endswith("_met")]
        col["realism metrics met"] = f"{sum(flags)} of {len(flags)}" if flags else "-"
        for key, label in (("d5_95_median_ratio", "D5-95 median ratio to real"),
                           ("multi_burst_rate", "share with > 1 burst"),
                           ("classifier_auc", "classifier AUC")):
            band = realism.get(f"{key}_band")
            col[label] = (f"{realism[key]:.2f} [{band[0]:.2f}, {band[1]:.2f}]"
                          if key in realism and band else "-")
        fidelity = metrics.get("scenario_fidelity", {}).get(g.name)
        col["held-out scenarios: ln PGA residual"] = (
            f"{fidelity['ln_pga_resid']:+.2f}" if fidelity else "needs real records")
        novelty = metrics.get("novelty", {}).get(g.name)
        col["share nearer a training record than real p10"] = (
            f"{novelty['below_real_p10_rate']:.1%}" if novelty else "-")
        columns[g.title] = col
    if perfect:
        columns["Perfect generator"] = {
            f"{size} score vs {REFERENCES[ref]}": _fmt(perfect.get(ref, {}).get(f"score_{size}"))
            for ref in REFERENCES for size in ("5x5", "10x10")}
    table = pd.DataFrame(columns).fillna("-")
    return table.rename_axis("measure").reset_index()


def results_markdown(metrics: dict, table: pd.DataFrame) -> str:
    lines = ["_Generated by the `report` stage of `dvc repro` from metrics.json; do not edit._", ""]
    lines += ["### Targets on this corpus", ""]
    statements = targets(metrics) + [t for g in registry.GENERATORS if g.record_free
                                     for t in sampler_targets(metrics, g)]
    for statement, met, measured in statements:
        mark = "met" if met else "NOT met"
        lines.append(f"- {statement}: **{mark}** ({measured})")
    lines += ["", "### Station-specificity scores", ""]
    paper = registry.paper()["scores"]
    lines.append(f"Paper: {paper['timesnet_15x15']:.2f} (TimesNet-Gen) and "
                 f"{paper['vae_15x15']:.2f} (VAE), on five AFAD stations.")
    ceiling = metrics.get("real_ceiling", {})
    if "score_5x5" in ceiling:
        lines.append(
            f"Ceiling on this corpus (held-out real records scored as if generated, against the "
            f"training records): {ceiling['score_5x5']:.3f} (5x5), "
            f"{ceiling.get('score_10x10', float('nan')):.3f} (10x10); nearest-station accuracy "
            f"of real records (leave-one-out): {ceiling['nearest_station_accuracy']:.3f}.")
    lines.append("")
    summary = table[["model", "reference", "matrix", "score", "nearest_station_accuracy"]]
    lines.append(to_markdown(summary))
    lines.append("Full table with per-station |delta f0|: `figures/table_scores.md`.")
    lines.append("")
    perfect = metrics.get("perfect_generator", {})
    if perfect:
        lines.append("Perfect generator (50 records per station drawn with replacement from the "
                     "station's real training records, mean of 20 draws): "
                     + "; ".join(f"{REFERENCES[ref]}: " + ", ".join(
                         f"{k.removeprefix('score_')} {v:.3f}" for k, v in scores.items()
                         if k.startswith("score_")) for ref, scores in perfect.items()) + ".")
        lines.append("")
    lines += ["### Generators side by side", ""]
    lines.append("The paper's sampler (TimesNet-Gen), the record-free samplers and the VAE; in "
                 "brackets the perfect generator's 5-95 % band; the last row should be near 10 %, "
                 "the share of real training records below their own 10th percentile"
                 f"{holdout_novelty(metrics)}.")
    lines += ["", to_markdown(generators_side_by_side(metrics))]
    if metrics.get("realism"):
        lines += ["### Realism against the held-out real records", ""]
        lines.append("Pooled over the target stations; beside each value the 5-95 % band a "
                     "perfect generator with the same number of records gets against the same "
                     "real records; a value outside it is missed. Every PSA period, the per-"
                     "station values and every other metric: `figures/table_realism.md`, "
                     "`outputs/evaluation/realism.csv`.")
        lines.append("")
        lines += realism_summary(metrics) + [""]
        lines.append(realism_markdown(metrics, SUMMARY_PERIODS))
    lines += ["### Figures", ""]
    lines += [f"- {text}: `figures/{path}`" for path, text in FIGURES]
    lines += ["", "![similarity matrices](figures/similarity_matrices.png)", ""]
    return "\n".join(lines)


def read_metrics(path: Path) -> dict:
    if not path.exists():
        raise UserError(f"{path}: missing (run the evaluate stage first)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def write_atomic(path: Path, text: str) -> None:
    with staged_file(path) as tmp:
        tmp.write_text(text)


README_START = "<!-- results:start (written by `make readme-results` from figures/results.md) -->"
README_END = "<!-- results:end -->"


def splice_readme(readme: Path, results: str) -> None:
    """Replace the README's results block (between the markers) with `results`."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise UserError(f"{readme}: no results markers ({README_START} ... {README_END})")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    write_atomic(readme, f"{head}{README_START}\n{results.strip()}\n{README_END}{tail}")


def main(argv: list[str], verb: str = "report") -> int:
    parser = stage_parser(verb, __doc__)
    parser.add_argument("--metrics", default="metrics.json", type=Path)
    parser.add_argument("--evaluation", default="outputs/evaluation", type=Path)
    parser.add_argument("--out", default="figures", type=Path)
    parser.add_argument("--readme", type=Path,
                        help="only copy <out>/results.md into this README's results block")
    args = parser.parse_args(argv)
    if args.readme:
        results = args.out / "results.md"
        if not results.exists():
            raise UserError(f"{results}: missing (run the report stage first)")
        splice_readme(args.readme, results.read_text())
        return 0
    metrics = read_metrics(args.metrics)
    table = score_table(metrics)
    if table.empty:
        raise UserError(f"{args.metrics}: no model scores found (run the evaluate stage)")
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "table_scores.csv", table.to_csv(index=False, float_format="%.4f"))
    write_atomic(args.out / "table_scores.md", to_markdown(table))
    write_atomic(args.out / "results.md", results_markdown(metrics, table))
    write_atomic(args.out / "table_realism.md", realism_markdown(metrics) or "no realism metrics\n")
    print((args.out / "results.md").read_text())
    return 0
