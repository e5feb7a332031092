"""The figures runner: every notebook executes on a fake set of stage outputs in tmp_path and
writes its figures; missing inputs, failing notebooks and malformed inputs are named."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from timesnet_gen import notebooks as nb
from timesnet_gen import registry
from timesnet_gen.cli import main as cli_main
from timesnet_gen.corpus.format import write_corpus

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
STATIONS = ["0205", "4628"]
TRUE_F0 = {"0205": 2.6, "4628": 1.83, "9001": np.nan}
PSA_PERIODS = [0.1, 0.2, 1.0]
FS = 100.0


def _waveforms(rng: np.random.Generator, n: int, f0: float, n_samples: int = 6000) -> np.ndarray:
    """(n, 3, T) cm/s^2: enveloped noise plus a decaying resonance at f0 on the horizontals."""
    t = np.arange(n_samples) / FS
    env = (t / 10.0) ** 2 * np.exp(-t / 5.0)
    out = rng.normal(size=(n, 3, n_samples)) * env
    out[:, :2] += 3.0 * np.sin(2 * np.pi * f0 * t) * env
    return (out * rng.uniform(1, 20, size=(n, 1, 1))).astype(np.float32)


def _corpus(path: Path, rng: np.random.Generator, ids: dict[str, list[str]], source: str) -> None:
    waves, rows = [], []
    for station, record_ids in ids.items():
        waves.append(_waveforms(rng, len(record_ids), TRUE_F0[station]))
        rows += [{"record_id": r, "station": station, "source": source} for r in record_ids]
    stations = pd.DataFrame({"station": list(TRUE_F0), "role": ["target", "target", "pretrain"],
                             "f0_true_hz": list(TRUE_F0.values())})
    write_corpus(path, np.concatenate(waves), pd.DataFrame(rows), stations)


def _hvsr(grid: np.ndarray, f0: float, amp: float) -> np.ndarray:
    return 1.0 + (amp - 1.0) / (1.0 + ((grid - f0) / (0.15 * f0)) ** 2)


def write_fake_inputs(root: Path, n: int = 4, seed: int = 0) -> Path:
    """Every input of the figures stage, small and realistic; returns the params.yaml path."""
    rng = np.random.default_rng(seed)
    ids = {s: [f"{s}_{i:03d}" for i in range(n)] for s in STATIONS}
    _corpus(root / "data/raw", rng, ids, "real")
    # one fake output of every registered generator (the figures loop over the registry)
    gen_ids = {g.gen_label: {s: [f"{g.name}_{s}_{i:03d}" for i in range(n)] for s in STATIONS}
               for g in registry.GENERATORS}
    for g in registry.GENERATORS:
        _corpus(root / g.outputs / "generated", rng, gen_ids[g.gen_label], g.gen_label)

    rows = []
    spread = {source: 0.1 + 0.05 * k for k, source in enumerate(nb.SOURCES)}
    for station in STATIONS:
        for source in nb.SOURCES:
            if source.endswith("Gen"):
                record_ids, splits = gen_ids[source][station], [""] * n
            else:
                record_ids = ids[station]
                splits = ["holdout" if i == 0 else "train" for i in range(n)]
            for record_id, split in zip(record_ids, splits):
                row = {"record_id": record_id, "station": station, "source": source,
                       "split": split,
                       "f0_hz": float(np.clip(
                           TRUE_F0[station] * np.exp(rng.normal(0, spread[source])), 1, 20)),
                       "pga_cm_s2": float(rng.lognormal(2, 1)),
                       "pgv_cm_s": float(rng.lognormal(0, 1)),
                       "arias_m_s": float(rng.lognormal(-4, 1)),
                       "d5_95_s": float(rng.uniform(5, 30))}
                # named like the score stage writes them: psa_0.1s, psa_0.2s, psa_1s
                row.update({f"psa_{t:g}s": float(rng.lognormal(2.5, 1)) for t in PSA_PERIODS})
                rows.append(row)
    evaluation = root / "outputs/evaluation"
    evaluation.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(evaluation / "records.csv", index=False)

    grid = np.linspace(1, 20, 400)
    freqs = np.geomspace(0.1, 25, 100)
    hvsr, fas = {"grid": grid}, {"freqs": freqs}
    for station in STATIONS:
        for k, source in enumerate(nb.SOURCES):
            f0 = TRUE_F0[station] * (1 + 0.02 * k)
            hvsr[f"{station}/{source}"] = _hvsr(grid, f0, 4 - 0.3 * k)
            fas[f"{station}/{source}"] = 10.0 * freqs / (1 + (freqs / 3.0) ** 2) * (1 + 0.1 * k)
    np.savez(evaluation / "median_hvsr.npz", **hvsr)
    np.savez(evaluation / "fas_median.npz", **fas)

    matrices = {}
    for g in registry.GENERATORS:
        model = g.name
        sizes = (("5x5", None), ("10x10", ["Real", "Gen"]), ("15x15", ["Real", "Recon", "Gen"]))
        for size, kinds in sizes[:3 if g.has_recon else 2]:
            k = 1 if kinds is None else len(kinds)
            m = 5 * k
            block = np.kron(np.eye(5), np.ones((k, k)))
            sim = np.clip(0.8 * block + rng.uniform(0, 0.3, (m, m)), 0, 1)
            sim = (sim + sim.T) / 2
            codes = ["0205", "1716", "2020", "3130", "4628"]
            if kinds is None:
                labels = [f"{c} Real" for c in codes] + [f"{c} Gen" for c in codes]
            else:
                labels = [f"{c} {kind}" for c in codes for kind in kinds]
            for reference in ("all", "holdout"):
                matrices[f"{model}/{size}/{reference}"] = sim
                matrices[f"{model}/{size}/{reference}/labels"] = np.array(labels)
    np.savez(evaluation / "matrices.npz", **matrices)

    novelty = [{"station": s, "model": model, "record_id": f"{model}_{s}_{i}",
                "nn_distance": float(rng.uniform(0.2, 1.0) * (0.3 if model == "timesnet" else 1))}
               for s in STATIONS for model in (*registry.names(), "real") for i in range(n)]
    pd.DataFrame(novelty).to_csv(evaluation / "novelty.csv", index=False)

    periods = [0.05, 0.2, 1.0, 5.0]
    realism_sources = ["real-train", *registry.names()]
    pd.DataFrame([{"source": src, "station": st, "period_s": p,
                   "resid": rng.normal(0, 0.2), "resid_band_lo": -0.3, "resid_band_med": 0.0,
                   "resid_band_hi": 0.3, "std_ratio": rng.uniform(0.5, 1.2),
                   "std_ratio_band_lo": 0.8, "std_ratio_band_med": 1.0, "std_ratio_band_hi": 1.2}
                  for src in realism_sources for st in [*STATIONS, "pooled"] for p in periods]
                 ).to_csv(evaluation / "realism_psa.csv", index=False)
    arrays = {"env_times": np.arange(0, 60, 0.25)}
    for src in ["real-holdout", *realism_sources]:
        arrays.update({f"{src}/pga": rng.lognormal(3, 1, n), f"{src}/d5_95": rng.uniform(5, 30, n),
                       f"{src}/n_bursts": rng.integers(1, 3, n), f"{src}/valid": np.ones(n, bool),
                       f"{src}/envelope": rng.uniform(0.1, 1, (n, 240))})
    np.savez(evaluation / "realism_features.npz", **arrays)

    def section(score: float) -> dict:
        return {"score_5x5": score, "score_10x10": score - 0.01, "score_15x15": score - 0.02,
                "nearest_station_accuracy": 0.8,
                "per_station": {s: {"delta_f0_hz": 0.1, "hvsr_log_rmse": 0.2,
                                    "f0_error_vs_true_pct": 3.0} for s in STATIONS}}

    metrics = {"timesnet": {"all": section(0.954), "holdout": section(0.931)},
               "vae": {"all": section(0.812), "holdout": section(0.79)},
               **{name: {"all": section(0.9), "holdout": section(0.88)}
                  for name in registry.names() if name not in ("timesnet", "vae")},
               "real_ceiling": {"nearest_station_accuracy": 0.85},
               "paper": {"timesnet_15x15": 0.93, "vae_15x15": 0.81}}
    (root / "metrics.json").write_text(json.dumps(metrics))

    epochs = np.arange(1, 6)
    columns = {"models/pretrain/losses.tsv": ["train_loss", "val_loss"],
               "models/vae/losses.tsv": ["train_loss", "recon_loss", "kl"]}
    for path in (p for g in registry.GENERATORS for p in g.losses.values()):
        table = pd.DataFrame({"epoch": epochs, **{c: 10.0 / epochs + i for i, c in
                                                  enumerate(columns.get(path, ["train_loss"]))}})
        (root / path).parent.mkdir(parents=True)
        table.to_csv(root / path, sep="\t", index=False)

    params = root / "params.yaml"
    params.write_text(f"data:\n  target_stations: {json.dumps(STATIONS)}\n")
    return params


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    write_fake_inputs(root)
    return root


EXPECTED = (
    [f"combined/station_{s}.png" for s in STATIONS]
    + [f"waveforms/station_{s}.png" for s in STATIONS]
    + ["similarity_matrices.png", "similarity_matrices_5x5_10x10.png", "intensity_measures.png",
       "training_curves.png", "ground_truth_f0.png", "novelty.png", "realism.png"]
)


@pytest.mark.slow
def test_runner_executes_every_notebook(fake_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # notebooks must not depend on the caller's cwd
    figures = tmp_path / "figs"
    (figures / "combined").mkdir(parents=True)
    (figures / "combined" / "station_9999.png").write_bytes(b"stale")
    code = cli_main(["figures", "--params", str(fake_root / "params.yaml"), "--figures",
                     str(figures), "--executed", str(tmp_path / "executed"), "--root",
                     str(fake_root), "--notebooks", str(NOTEBOOKS)])
    assert code == 0
    produced = sorted(str(p.relative_to(figures)) for p in figures.rglob("*.png"))
    assert produced == sorted(EXPECTED)  # the stale station figure is gone
    for rel in EXPECTED:
        assert (figures / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    executed = sorted(p.name for p in (tmp_path / "executed").glob("*.ipynb"))
    assert executed == sorted(f"{n}.ipynb" for n in nb.NOTEBOOKS)
    # papermill injected the absolute paths
    injected = nbformat.read(tmp_path / "executed" / "novelty.ipynb", as_version=4)
    source = "".join(c.source for c in injected.cells
                     if "injected-parameters" in c.metadata.get("tags", []))
    assert str(fake_root / "outputs/evaluation/novelty.csv") in source
    assert str(fake_root / "outputs/vae/generated") in source or "VAE-Gen" not in source


def test_every_notebook_has_a_parameters_cell_and_expected_figures(fake_root: Path) -> None:
    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == sorted(nb.NOTEBOOKS)
    expected = nb.expected_figures(Path("figures"), STATIONS)
    assert sorted(expected) == sorted(nb.NOTEBOOKS)
    filled = nb.notebook_parameters(fake_root / "params.yaml", fake_root, fake_root / "figs")
    # the registry fills one entry per registered generator
    assert set(filled["generated"]) == {g.gen_label for g in registry.GENERATORS}
    assert filled["models"] == registry.names()
    for name in nb.NOTEBOOKS:
        declared = nb.declared_parameters(NOTEBOOKS / f"{name}.ipynb")
        assert "figures" in declared and "target_stations" in declared
        # kept at the notebook's own default: display choices, not inputs
        unknown = set(declared) - set(filled) - {"tolerance", "reference", "psa_figure_periods",
                                                 "fs"}
        assert not unknown, f"{name}: parameters the runner cannot fill {unknown}"
        notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")


def test_missing_input_is_named_before_any_kernel(fake_root: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "repo"
    write_fake_inputs(root)
    (root / "models/vae/losses.tsv").unlink()
    code = cli_main(["figures", "--params", str(root / "params.yaml"), "--figures",
                     str(tmp_path / "f"), "--executed", str(tmp_path / "e"), "--root", str(root),
                     "--notebooks", str(NOTEBOOKS)])
    assert code == 1
    err = capsys.readouterr().err
    assert "models/vae/losses.tsv" in err and "'vae'" in err and len(err.splitlines()) == 2
    assert not list((tmp_path / "e").glob("*.ipynb"))  # failed before starting any kernel
    with pytest.raises(FileNotFoundError, match="models/vae/losses.tsv"):
        nb.run_all(root / "params.yaml", tmp_path / "f", tmp_path / "e", root, NOTEBOOKS)


@pytest.mark.slow
def test_failing_notebook_is_named(fake_root: Path, tmp_path: Path) -> None:
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    broken = nbformat.read(NOTEBOOKS / "training.ipynb", as_version=4)
    broken.cells.append(nbformat.v4.new_code_cell("raise RuntimeError('boom in cell')"))
    nbformat.write(broken, notebooks / "training.ipynb")
    with pytest.raises(nb.NotebookError, match=r"training\.ipynb failed.*RuntimeError: boom"):
        nb.run_all(fake_root / "params.yaml", tmp_path / "f", tmp_path / "e", fake_root,
                   notebooks, only=["training"])
    assert (tmp_path / "e" / "training.ipynb").exists()  # the traceback is kept for reading


def test_notebook_without_parameters_cell_is_refused(tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(notebook, tmp_path / "training.ipynb")
    with pytest.raises(nb.NotebookError, match="training.ipynb has no cell tagged 'parameters'"):
        nb.declared_parameters(tmp_path / "training.ipynb")


def test_notebook_that_writes_no_figure_is_named(fake_root: Path, tmp_path: Path,
                                                 monkeypatch) -> None:
    monkeypatch.setattr(nb, "run_notebook", lambda *args: None)  # "ran" but wrote nothing
    with pytest.raises(nb.NotebookError, match=r"novelty\.ipynb did not write .*novelty\.png"):
        nb.run_all(fake_root / "params.yaml", tmp_path / "f", tmp_path / "e", fake_root,
                   NOTEBOOKS, only=["novelty"])


# --------------------------------------------------------------------------------------------
# loaders


def test_load_records_checks_columns_and_sources(fake_root: Path, tmp_path: Path) -> None:
    records = nb.load_records(fake_root / "outputs/evaluation/records.csv")
    assert set(records["source"]) == set(nb.SOURCES)
    assert records["station"].iloc[0] == "0205"  # codes stay strings
    assert set(records.loc[records["source"] == "TimesNet-Gen", "split"]) == {""}
    bad = records.drop(columns="f0_hz")
    bad.to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(ValueError, match=r"r\.csv: missing column\(s\) \['f0_hz'\]"):
        nb.load_records(tmp_path / "r.csv")
    records.assign(source="GAN").to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(ValueError, match="unknown source.*GAN"):
        nb.load_records(tmp_path / "r.csv")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        nb.load_records(tmp_path / "nope.csv")


def test_load_curves(fake_root: Path, tmp_path: Path) -> None:
    grid, curves = nb.load_curves(fake_root / "outputs/evaluation/median_hvsr.npz", "grid")
    assert grid.shape == (400,) and sorted(curves) == STATIONS
    assert list(nb.ordered(curves["0205"])) == list(nb.SOURCES)
    np.savez(tmp_path / "a.npz", grid=grid, **{"0205/Real": grid[:10]})
    with pytest.raises(ValueError, match="'0205/Real' has shape"):
        nb.load_curves(tmp_path / "a.npz", "grid")
    np.savez(tmp_path / "b.npz", grid=grid, **{"0205-Real": grid})
    with pytest.raises(KeyError, match="'0205-Real'"):
        nb.load_curves(tmp_path / "b.npz", "grid")
    with pytest.raises(KeyError, match="no 'freqs' array"):
        nb.load_curves(tmp_path / "b.npz", "freqs")
    (tmp_path / "c.npz").write_bytes(b"corrupt")
    with pytest.raises(Exception):
        nb.load_curves(tmp_path / "c.npz", "grid")


def test_matrices_and_panels(fake_root: Path, tmp_path: Path) -> None:
    mats = nb.load_matrices(fake_root / "outputs/evaluation/matrices.npz")
    metrics = nb.load_metrics(fake_root / "metrics.json")
    records = nb.load_records(fake_root / "outputs/evaluation/records.csv")
    true = nb.load_true_f0(fake_root / "data/raw/stations.csv")
    assert true["0205"] == 2.6 and np.isnan(true["9001"])
    f0 = nb.target_f0(records, true, ["0205", "1716"])
    assert f0["0205"] == (2.6, True)
    assert np.isnan(f0["1716"][0]) and f0["1716"][1] is False  # no truth and no real records
    panels = nb.similarity_panels(mats, metrics, "timesnet", ["5x5", "15x15"], "all", f0)
    assert panels[0].matrix.shape == (5, 5)
    assert panels[0].row_labels[0] == "0205 Real  [f0 2.60 Hz]"
    assert panels[0].col_labels[0] == "0205 Gen"
    assert "score 0.954" in panels[0].title and "held-out: 0.931" in panels[0].title
    assert "paper: 0.93" in panels[1].title and "score 0.934" in panels[1].title
    # f0 on the first label of each station group only
    assert panels[1].row_labels[:3] == ["0205 Real  [f0 2.60 Hz]", "0205 Recon", "0205 Gen"]
    assert nb.matrix_sizes(mats, "vae", "holdout") == ["5x5", "10x10", "15x15"]
    with pytest.raises(KeyError, match="no 'gan' matrix against 'all'"):
        nb.matrix_sizes(mats, "gan", "all")
    # 3 stations scored (a station without f0 values is skipped): 3x3, 6x6, 9x9
    small = {f"timesnet/{n}x{n}/all": (np.eye(n), [f"S{i // (n // 3)} Real" for i in range(n)])
             for n in (9, 3, 6)}
    small["timesnet/3x3/all"] = (np.eye(3), [f"S{i} Real" for i in range(3)]
                                 + [f"S{i} Gen" for i in range(3)])
    assert nb.matrix_sizes(small, "timesnet", "all") == ["3x3", "6x6", "9x9"]
    scores = {"timesnet": {"all": {"score_3x3": 0.5, "score_6x6": 0.6, "score_9x9": 0.7}}}
    three = nb.similarity_panels(small, scores, "timesnet", ["3x3", "9x9"], "all", {})
    assert three[0].xlabel == "Generated records of station" and three[1].xlabel == ""
    assert "paper" not in three[1].title and "score 0.700" in three[1].title
    with pytest.raises(KeyError, match="no matrix 'timesnet/20x20/all'"):
        nb.similarity_panels(mats, metrics, "timesnet", ["20x20"], "all", f0)
    with pytest.raises(KeyError, match="vae.all.score_5x5"):
        nb.similarity_panels(mats, {"timesnet": metrics["timesnet"]}, "vae", ["5x5"], "all", f0)
    np.savez(tmp_path / "m.npz", **{"vae/5x5/all": np.eye(5)})
    with pytest.raises(KeyError, match="no 'vae/5x5/all/labels'"):
        nb.load_matrices(tmp_path / "m.npz")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        nb.load_metrics(tmp_path / "bad.json")


def test_records_helpers(fake_root: Path, tmp_path: Path) -> None:
    records = nb.load_records(fake_root / "outputs/evaluation/records.csv")
    rid = nb.typical_record(records, "4628", "VAE-Gen")
    assert rid.startswith("vae_4628_")
    record = nb.read_record_by_id(fake_root / "outputs/vae/generated", rid)
    assert record.shape == (3, 6000) and record.dtype == np.float32
    with pytest.raises(KeyError, match="no record 'missing'"):
        nb.read_record_by_id(fake_root / "outputs/vae/generated", "missing")
    row = nb.record_entry(fake_root / "outputs/vae/generated", rid)
    np.testing.assert_array_equal(nb.read_entry(fake_root / "outputs/vae/generated", row), record)
    assert nb.scenario_text(pd.Series({"magnitude": 4.5926, "distance_km": 121.5468})) == (
        "M 4.6 at 122 km")
    assert nb.scenario_text(pd.Series({"magnitude": float("nan"), "distance_km": 20.0})) == ""
    assert nb.scenario_text(row) == ""  # the VAE's records carry no scenario
    with pytest.raises(ValueError, match="no VAE-Gen record of station 1716"):
        nb.typical_record(records, "1716", "VAE-Gen")
    from timesnet_gen.config import EvaluateParams

    freqs, fas = nb.record_fas(record, FS, EvaluateParams())
    assert freqs.shape == (100,) and fas.shape == (3, 100)
    assert freqs[0] == pytest.approx(0.1) and freqs[-1] == pytest.approx(25.0)
    assert np.all(fas > 0)
    # the resonance of the fake horizontals at the site f0 (1.83 Hz) dominates E, not U
    peak = freqs[np.argmax(fas[0] / fas[2])]
    assert 1.5 < peak < 2.2
    # the score stage names columns psa_1s, psa_0.2s ({period:g}): both spellings are found
    assert nb.psa_column(records, 1.0) == "psa_1s"
    assert nb.psa_column(records.rename(columns={"psa_1s": "psa_1.0s"}), 1) == "psa_1.0s"
    assert [m.column for m in nb.intensity_measures(records, [0.2])][-1] == "psa_0.2s"
    with pytest.raises(KeyError, match="no PSA column for T = 3 s"):
        nb.psa_column(records, 3.0)
    summary = nb.f0_summary(records, {"0205": 2.6})
    assert len(summary) == 2 * len(registry.generated_labels())  # stations x (Real + generators)
    assert summary.loc[summary["station"] == "4628", "f0_true_hz"].isna().all()
    assert (summary["n"] == 4).all()
    (tmp_path / "empty.tsv").write_text("epoch\ttrain_loss\n")
    with pytest.raises(ValueError, match="no epochs"):
        nb.load_losses(tmp_path / "empty.tsv")
