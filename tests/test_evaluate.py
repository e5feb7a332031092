"""The evaluate stage (`timesnet-gen evaluate --prepared`) and the report stage on a small
synthetic corpus with stand-in model outputs."""

import json

import numpy as np
import pandas as pd
import pytest

from timesnet_gen import registry
from timesnet_gen.cli import main as cli_main
from timesnet_gen.config import DataParams, SynthParams
from timesnet_gen.corpus import synth
from timesnet_gen.corpus.format import read_corpus, write_corpus
from timesnet_gen.evaluate import correlation_distance
from timesnet_gen.prepare import prepare
from timesnet_gen.report import targets

STATIONS = ["0205", "1716", "2020", "3130", "4628"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    p = SynthParams(target_records={s: 10 for s in STATIONS}, n_pretrain_stations=2,
                    records_per_pretrain_station=3, n_rock_stations=0)
    waveforms, records, stations = synth.synthesize(p)
    write_corpus(root / "raw", waveforms, records, stations)
    prepare(root / "raw", root / "prepared", DataParams(holdout_fraction=0.3))
    real = read_corpus(root / "raw", STATIONS)
    rng = np.random.default_rng(0)
    for model, noise in (("timesnet", 0.05), ("vae", 3.0)):
        scale = real.waveforms.std(axis=2, keepdims=True)
        gen = real.waveforms + noise * scale * rng.standard_normal(real.waveforms.shape)
        table = real.records[["record_id", "station"]].copy()
        write_corpus(root / model / "generated", gen,
                     table.assign(record_id=table.record_id + "_g"), stations)
        write_corpus(root / model / "recon", real.waveforms,
                     table.assign(source_record=table.record_id,
                                  record_id=table.record_id + "_r"), stations)
    sources = []
    for model in ("timesnet", "vae"):
        sources += ["--generated", f"{model}={root / model / 'generated'}",
                    "--recon", f"{model}={root / model / 'recon'}"]
    rc = cli_main(["evaluate", "--real", str(root / "raw"), "--prepared", str(root / "prepared"),
                   *sources, "--params", str(root / "none.yaml"), "--stations", *STATIONS,
                   "--out", str(root / "evaluation"), "--metrics", str(root / "metrics.json"),
                   "--plots", str(root / "plots"), "--quiet"])
    assert rc == 1  # a params file that does not exist is named
    # few perfect-generator draws: the bands are tested in test_evaluation_realism.py
    (root / "params.yaml").write_text("evaluate:\n  realism:\n    n_draws: 3\n")
    rc = cli_main(["evaluate", "--real", str(root / "raw"), "--prepared", str(root / "prepared"),
                   *sources, "--params", str(root / "params.yaml"), "--stations", *STATIONS,
                   "--out", str(root / "evaluation"),
                   "--metrics", str(root / "metrics.json"), "--plots", str(root / "plots"),
                   "--quiet"])
    assert rc == 0
    return root, json.loads((root / "metrics.json").read_text())


def test_copy_of_real_scores_higher_than_noise(setup):
    _, metrics = setup
    near_copy, noisy = metrics["timesnet"]["all"], metrics["vae"]["all"]
    assert near_copy["score_15x15"] > noisy["score_15x15"]
    assert near_copy["score_5x5"] > 0.7
    for station in STATIONS:
        assert near_copy["per_station"][station]["delta_f0_hz"] < 0.5
    assert set(metrics["timesnet"]) == {"all", "holdout"}
    assert 0 < metrics["real_ceiling"]["nearest_station_accuracy"] <= 1
    # held-out real records scored as if generated: the attainable specificity here
    assert 0.3 < metrics["real_ceiling"]["score_5x5"] <= 1
    assert set(metrics["real_ceiling"]) == {"nearest_station_accuracy", "score_5x5",
                                            "score_10x10"}


def test_outputs_follow_the_contract(setup):
    root, _ = setup
    out = root / "evaluation"
    matrices = np.load(out / "matrices.npz")
    for key in ("timesnet/15x15/all", "vae/5x5/holdout", "timesnet/10x10/all/labels"):
        assert key in matrices.files
    assert matrices["timesnet/15x15/all"].shape == (15, 15)
    assert list(matrices["timesnet/15x15/all/labels"][:3]) == ["0205 Real", "0205 Recon",
                                                              "0205 Gen"]
    curves = np.load(out / "median_hvsr.npz")  # the standalone command's names
    assert curves["grid"].shape == (400,) and "4628/TimesNet-Gen" in curves.files
    assert "4628/VAE-Recon" in curves.files and "4628/Real" in curves.files
    full = json.loads((out / "metrics.json").read_text())
    assert set(full) == {"all", "holdout"}
    assert full["holdout"]["n_records"]["Real"]["0205"] == 3  # 30 % of 10 held out
    confusion = (root / "plots" / "confusion_timesnet.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) == 51


def test_a_bad_output_is_refused_before_the_evaluation(setup, tmp_path, capsys):
    """An output of the wrong kind, or one that would replace an input, stops evaluate with one
    line before anything is computed or written."""
    root, _ = setup
    (tmp_path / "afile").write_text("kept\n")
    base = ["evaluate", "--real", str(root / "raw"), "--prepared", str(root / "prepared"),
            "--generated", f"timesnet={root / 'timesnet' / 'generated'}",
            "--params", str(root / "params.yaml"), "--stations", *STATIONS,
            "--out", str(tmp_path / "ev"), "--metrics", str(tmp_path / "m.json"),
            "--plots", str(tmp_path / "plots"), "--quiet"]
    for flag, bad, why in (
            ("--plots", tmp_path / "afile", "is an existing file, expected an output folder"),
            ("--metrics", tmp_path, "is an existing folder, expected an output file"),
            ("--out", root / "raw", "output would replace the input")):
        assert cli_main([*base, flag, str(bad)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert (tmp_path / "afile").read_text() == "kept\n"


def test_novelty_flags_copies(setup):
    root, _ = setup
    import pandas as pd

    nov = pd.read_csv(root / "evaluation" / "novelty.csv", dtype={"station": str})
    # the stand-in "timesnet" is a 5 % perturbation of real records: training copies are ~0 away
    copies = nov[nov.model == "timesnet"].nn_distance
    assert (copies < 0.05).mean() > 0.5
    assert nov[nov.model == "real"].nn_distance.min() > 0.3  # random phase: real records differ
    held = nov[nov.model == "holdout"]  # every held-out record, none of them a copy
    assert len(held) == 15 and held.nn_distance.min() > 0.3
    assert held.record_id.str.len().gt(0).all() and not set(held.record_id) & set(
        nov[nov.model == "real"].record_id)
    x = np.random.default_rng(1).normal(size=(2, 3, 600))
    d = correlation_distance(x, np.concatenate([x, -x]))
    assert d[0, 0] == pytest.approx(0, abs=1e-9) and d[0, 2] == pytest.approx(2.0)


def test_report_tables_and_target_statements(setup, tmp_path, capsys):
    root, metrics = setup
    assert cli_main(["report", "--metrics", str(root / "metrics.json"), "--out",
                     str(tmp_path)]) == 0
    table = (tmp_path / "table_scores.csv").read_text().splitlines()
    assert len(table) == 1 + 2 * 2 * 3  # models x references x matrix sizes
    # the measured score of every row, next to the paper's from paper.json
    results = (tmp_path / "results.md").read_text()
    paper = registry.paper()["scores"]
    assert f"Paper: {paper['timesnet_15x15']:.2f} (TimesNet-Gen)" in results
    measured = metrics["timesnet"]["all"]["score_15x15"]
    assert f"| TimesNet-Gen | all | 15x15 | {measured:.3f} |" in results
    statements = {s: met for s, met, _ in targets(metrics)}
    tn, vae = metrics["timesnet"]["all"], metrics["vae"]["all"]
    key = next(s for s in statements if s.startswith("TimesNet-Gen 15x15"))
    assert statements[key] == (tn["score_15x15"] >= paper["timesnet_15x15"]
                               and tn["score_15x15"] > vae["score_15x15"])
    key = next(s for s in statements if s.startswith("nearest-station"))
    assert statements[key] == (metrics["real_ceiling"]["nearest_station_accuracy"]
                               - tn["nearest_station_accuracy"] <= 0.05)
    # the side-by-side table: a column per registered generator, then the perfect generator
    from timesnet_gen.report import generators_side_by_side

    side = generators_side_by_side(metrics).set_index("measure")
    assert list(side.columns) == [*(g.title for g in registry.GENERATORS), "Perfect generator"]
    assert side.loc["5x5 score vs all real records", "TimesNet-Gen"] == (
        f"{metrics['timesnet']['all']['score_5x5']:.3f}")
    assert side.loc["5x5 score vs all real records", "Perfect generator"] == (
        f"{metrics['perfect_generator']['all']['score_5x5']:.3f}")
    assert "### Generators side by side" in results
    # bad input: one line naming the file, exit 1
    (tmp_path / "bad.json").write_text("{not json")
    assert cli_main(["report", "--metrics", str(tmp_path / "bad.json"), "--out",
                     str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "bad.json: not valid JSON" in err and len(err.strip().splitlines()) == 1


def test_realism_and_perfect_generator_references(setup):
    root, metrics = setup
    # the perfect generator: draws of real training records, scored like a generator
    perfect = metrics["perfect_generator"]
    assert set(perfect) == {"all", "holdout"}
    assert 0.3 < perfect["all"]["score_5x5"] <= 1 and "score_10x10" in perfect["holdout"]
    realism = metrics["realism"]
    assert set(realism) == {"real-train", "timesnet", "vae", "timesnet-recon", "vae-recon"}
    # "timesnet" is a 5 % perturbation of the real records: its duration is the real one, and
    # its PGA ratio (3 held-out records a station: a wide sampling spread) is inside the band
    # the perfect generator gets, as is that of the training records themselves
    near = realism["timesnet"]
    assert 0.8 < near["d5_95_median_ratio"] < 1.25
    for source in ("timesnet", "real-train"):
        lo, hi = realism[source]["pga_median_ratio_band"]
        assert lo <= realism[source]["pga_median_ratio"] <= hi
    # "vae" adds noise of 3x the record's std over the whole window: D5-95 blows up, and a
    # value outside the perfect generator's band is "not met"
    noisy = realism["vae"]
    lo, hi = noisy["d5_95_median_ratio_band"]
    assert noisy["d5_95_median_ratio"] > 1.5 and noisy["d5_95_median_ratio"] > hi
    assert noisy["d5_95_median_ratio_met"] is False
    assert noisy["classifier_auc"] > near["classifier_auc"]
    table = pd.read_csv(root / "evaluation" / "realism.csv", dtype={"station": str})
    assert {"source", "station", "metric", "value", "band_lo", "band_hi", "met"} <= set(table)
    psa = pd.read_csv(root / "evaluation" / "realism_psa.csv", dtype={"station": str})
    assert set(psa["period_s"]) >= {0.05, 1.0, 5.0}


def test_scenario_fidelity_and_novelty_rates_in_closed_form(setup):
    from timesnet_gen.config import EvaluateParams
    from timesnet_gen.evaluate import novelty_rates, prepared_real, scenario_fidelity

    root, _ = setup
    real = prepared_real(root / "raw", root / "prepared", STATIONS)
    held = real.subset((real.records["split"] == "holdout").to_numpy())
    # "generated" at each held-out scenario: the held-out record itself, scaled by e^0.5
    copies = held.subset(np.repeat(np.arange(len(held.records)), 2))
    copies.records["source_record"] = copies.records["record_id"]
    copies.waveforms = copies.waveforms * np.exp(0.5)
    got = scenario_fidelity(real, copies, EvaluateParams(), 100.0)
    assert got["n_scenarios"] == len(held.records)
    for key in ("ln_pga_resid", "ln_psa_0.2s_resid", "ln_psa_1s_resid"):
        assert got[key] == pytest.approx(0.5, abs=1e-3)  # ln amplitudes scale exactly
    assert got["dlnpga_dm"] > 0 > got["dlnpga_dlnr"]  # larger M louder, farther quieter
    table = pd.DataFrame({"station": "A", "model": ["real"] * 10 + ["gen"] * 4,
                          "nn_distance": [*np.linspace(0.5, 1.0, 10), 0.1, 0.2, 0.9, 1.0]})
    assert novelty_rates(table) == {"gen": {"below_real_p10_rate": 0.5, "n": 4}}
