"""`figures` stage: execute the papermill notebooks of notebooks/, and the loaders they call.

    timesnet-gen figures --params params.yaml --figures figures --executed notebooks/executed

Every notebook has a cell tagged `parameters` (input paths, the figures folder, the target
stations ...). The runner passes absolute paths for every parameter a notebook declares, runs
the kernel `python3` with the repository root as its working directory, writes the executed
copies to --executed (not a DVC output: papermill's timestamps change on every run) and checks
that every expected figure exists. Inputs are checked before any kernel starts; a missing one
or a failing notebook stops the run with a message naming it.

The loaders below read stage outputs into arrays and tables for the plotting functions; they
check what they read and name the file and key when something is wrong.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from timesnet_gen import registry
from timesnet_gen.stage import stage_parser
from timesnet_gen.config import EvaluateParams, load_params
from timesnet_gen.errors import UserError

# Input parameters of the notebooks: default path (relative to the repository root) and the
# pipeline stage that writes it (named in the error when the file is missing).
INPUTS: dict[str, tuple[str, str]] = {
    "records_csv": ("outputs/evaluation/records.csv", "evaluate"),
    "hvsr_median": ("outputs/evaluation/median_hvsr.npz", "evaluate"),
    "fas_median": ("outputs/evaluation/fas_median.npz", "evaluate"),
    "matrices": ("outputs/evaluation/matrices.npz", "evaluate"),
    "novelty_csv": ("outputs/evaluation/novelty.csv", "evaluate"),
    "realism_psa": ("outputs/evaluation/realism_psa.csv", "evaluate"),
    "realism_features": ("outputs/evaluation/realism_features.npz", "evaluate"),
    "metrics_json": ("metrics.json", "evaluate"),
    "raw": ("data/raw", "data"),
    "stations_csv": ("data/raw/stations.csv", "data"),
}
# Inputs that come from the registry: parameter -> (generator -> {key: path}); a notebook
# gets one dict per parameter, with the entries of every registered generator.
REGISTRY_INPUTS = {
    "generated": lambda g: {g.gen_label: f"{g.outputs}/generated"},
    "losses": lambda g: dict(g.losses),
}
NOTEBOOKS = ("site_signature", "similarity", "records", "training", "novelty", "realism")
KERNEL = "python3"
SOURCES = registry.source_labels()
RECORD_COLUMNS = ("record_id", "station", "source", "split", "f0_hz", "pga_cm_s2", "pgv_cm_s",
                  "arias_m_s", "d5_95_s")


class NotebookError(UserError):
    """A notebook failed, or did not write a figure it should have."""


# --------------------------------------------------------------------------------------------
# loaders (called from the notebooks)


def require(path: str | Path) -> Path:
    """The path, or FileNotFoundError naming it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"missing input file {path}")
    return path


def load_records(path: str | Path) -> pd.DataFrame:
    """outputs/evaluation/records.csv: one row per record and source (f0 Hz, PGA cm/s^2 ...)."""
    table = pd.read_csv(require(path), dtype={"record_id": str, "station": str, "split": str},
                        keep_default_na=False, na_values=["", "nan", "NaN"])
    missing = [c for c in RECORD_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    unknown = sorted(set(table["source"]) - set(SOURCES))
    if unknown:
        raise ValueError(f"{path}: unknown source(s) {unknown} (expected {list(SOURCES)})")
    table["split"] = table["split"].fillna("")
    return table


def load_curves(path: str | Path, axis: str) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """An npz of curves keyed "<station>/<source>" plus a frequency axis (Hz) named `axis`
    -> (axis (F,), {station: {source: curve (F,)}})."""
    with np.load(require(path), allow_pickle=False) as npz:
        if axis not in npz.files:
            raise KeyError(f"{path}: no {axis!r} array (has {sorted(npz.files)[:6]} ...)")
        freqs = npz[axis].astype(np.float64)
        curves: dict[str, dict[str, np.ndarray]] = {}
        for key in npz.files:
            if key == axis:
                continue
            station, _, source = key.partition("/")
            if source not in SOURCES:
                raise KeyError(f"{path}: key {key!r} is not '<station>/<source>' with a source "
                               f"in {list(SOURCES)}")
            curve = npz[key].astype(np.float64)
            if curve.shape != freqs.shape:
                raise ValueError(f"{path}: {key!r} has shape {curve.shape}, {axis!r} has "
                                 f"{freqs.shape}")
            curves.setdefault(station, {})[source] = curve
    return freqs, curves


def ordered(curves: dict[str, np.ndarray], sources: tuple[str, ...] = SOURCES
            ) -> dict[str, np.ndarray]:
    """The entries of one station's curves in the standard source order."""
    return {s: curves[s] for s in sources if s in curves}


def load_matrices(path: str | Path) -> dict[str, tuple[np.ndarray, list[str]]]:
    """matrices.npz -> {"<model>/<size>/<reference>": (matrix, labels)}."""
    out = {}
    with np.load(require(path), allow_pickle=False) as npz:
        for key in npz.files:
            if key.endswith("/labels"):
                continue
            if key + "/labels" not in npz.files:
                raise KeyError(f"{path}: matrix {key!r} has no {key + '/labels'!r} array")
            out[key] = (npz[key].astype(np.float64), [str(s) for s in npz[key + "/labels"]])
    return out


def load_metrics(path: str | Path) -> dict:
    """metrics.json (scores per model and reference, paper values)."""
    try:
        return json.loads(require(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def load_true_f0(path: str | Path) -> dict[str, float]:
    """stations.csv -> {station: true site f0 (Hz), NaN when unknown}."""
    table = pd.read_csv(require(path), dtype={"station": str})
    if "station" not in table.columns:
        raise ValueError(f"{path}: no 'station' column")
    f0 = table["f0_true_hz"] if "f0_true_hz" in table.columns else pd.Series(np.nan, table.index)
    return dict(zip(table["station"], pd.to_numeric(f0, errors="coerce").astype(float)))


def load_losses(path: str | Path) -> pd.DataFrame:
    """A losses.tsv table (epoch, train_loss, ...); refuses an empty one."""
    table = pd.read_csv(require(path), sep="\t")
    if "epoch" not in table.columns:
        raise ValueError(f"{path}: no 'epoch' column (has {list(table.columns)})")
    if table.empty:
        raise ValueError(f"{path}: no epochs")
    return table


def load_novelty(path: str | Path) -> pd.DataFrame:
    """novelty.csv: station, model (a generator, "real" or "holdout"), record_id, nn_distance."""
    table = pd.read_csv(require(path), dtype={"station": str, "record_id": str})
    missing = [c for c in ("station", "model", "nn_distance") if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return table


# realism source names (evaluate.py) -> figure labels
REALISM_LABELS = {"real-holdout": "Real (held out)", "real-train": "Real (training)"}


def realism_label(name: str) -> str:
    return REALISM_LABELS.get(name) or registry.label_of(name)


def load_realism(psa_csv: str | Path, features_npz: str | Path,
                 sources: list[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """realism_psa.csv and realism_features.npz -> (PSA curves with figure labels,
    {label: per-record values (pga, d5_95, n_bursts, valid, envelope, env_times)})."""
    from types import SimpleNamespace

    curves = pd.read_csv(require(psa_csv), dtype={"station": str})
    if not {"source", "station", "period_s"} <= set(curves.columns):
        raise ValueError(f"{psa_csv}: needs columns source, station, period_s")
    curves["source"] = curves["source"].map(realism_label)
    features = {}
    with np.load(require(features_npz), allow_pickle=False) as npz:
        if "env_times" not in npz.files:
            raise KeyError(f"{features_npz}: no 'env_times' array")
        names = list(dict.fromkeys(k.split("/")[0] for k in npz.files if "/" in k))
        for name in sources or names:
            if f"{name}/pga" not in npz.files:
                raise KeyError(f"{features_npz}: no values of source {name!r} (has {names})")
            features[realism_label(name)] = SimpleNamespace(
                env_times=npz["env_times"],
                **{k: npz[f"{name}/{k}"] for k in ("pga", "d5_95", "n_bursts", "valid",
                                                   "envelope")})
    return curves, features


def f0_by_source(records: pd.DataFrame, station: str, sources: tuple[str, ...] = SOURCES
                 ) -> dict[str, np.ndarray]:
    """f0 (Hz) of every record of a station, per source present."""
    rows = records[records["station"] == station]
    return {s: rows.loc[rows["source"] == s, "f0_hz"].to_numpy(np.float64)
            for s in sources if (rows["source"] == s).any()}


def f0_summary(records: pd.DataFrame, true_f0: dict[str, float],
               sources: tuple[str, ...] = registry.generated_labels()) -> pd.DataFrame:
    """Median and quartiles of f0 (Hz) per station and source, next to the true site f0."""
    rows = records[records["source"].isin(sources)]
    grouped = rows.groupby(["station", "source"])["f0_hz"]
    out = pd.DataFrame({
        "f0_median_hz": grouped.median(), "f0_q25_hz": grouped.quantile(0.25),
        "f0_q75_hz": grouped.quantile(0.75), "n": grouped.count(),
    }).reset_index()
    out["f0_true_hz"] = [true_f0.get(s, np.nan) for s in out["station"]]
    return out


def target_f0(records: pd.DataFrame, true_f0: dict[str, float], stations: list[str]
              ) -> dict[str, tuple[float, bool]]:
    """Per station the target f0 (Hz) for annotations: the true site f0 when known (True), else
    the median f0 of its real records (False)."""
    out = {}
    for station in stations:
        value = true_f0.get(station, np.nan)
        if np.isfinite(value):
            out[station] = (float(value), True)
        else:
            real = records.loc[(records["station"] == station) & (records["source"] == "Real"),
                               "f0_hz"]
            out[station] = (float(np.nanmedian(real)) if real.notna().any() else np.nan, False)
    return out


def _f0_labels(labels: list[str], f0: dict[str, tuple[float, bool]]) -> list[str]:
    """Append the station's target f0 to the first label of each station group."""
    out, previous = [], None
    for label in labels:
        station = label.split()[0] if label.split() else ""
        if station != previous and station in f0 and np.isfinite(f0[station][0]):
            value, is_true = f0[station]
            label = f"{label}  [f0 {value:.2f} Hz{'' if is_true else '*'}]"
        out.append(label)
        previous = station
    return out


def matrix_sizes(matrices: dict[str, tuple[np.ndarray, list[str]]], model: str,
                 reference: str) -> list[str]:
    """Sizes of a model's matrices, smallest first: [cross (real vs generated, k x k),
    Real/Gen (2k x 2k), Real/Recon/Gen (3k x 3k)], k = stations scored (5: 5x5, 10x10, 15x15)."""
    prefix = f"{model}/"
    suffix = f"/{reference}"
    sizes = [key[len(prefix):-len(suffix)] for key in matrices
             if key.startswith(prefix) and key.endswith(suffix)]
    if not sizes:
        raise KeyError(f"matrices.npz has no {model!r} matrix against {reference!r} real records "
                       f"(has {sorted(matrices)})")
    return sorted(sizes, key=lambda size: matrices[f"{model}/{size}/{reference}"][0].shape[0])


def similarity_panels(matrices: dict[str, tuple[np.ndarray, list[str]]], metrics: dict,
                      model: str, sizes: list[str], reference: str,
                      f0: dict[str, tuple[float, bool]]) -> list:
    """MatrixPanels of one model: the score (and the other reference's, the paper's) in titles."""
    from timesnet_gen.plotting import MatrixPanel

    other = {"all": "holdout", "holdout": "all"}.get(reference, "")
    names = {"all": "all real records", "holdout": "held-out real records"}
    panels = []
    for size in sizes:
        key = f"{model}/{size}/{reference}"
        if key not in matrices:
            raise KeyError(f"matrices.npz has no matrix {key!r} (has {sorted(matrices)})")
        matrix, labels = matrices[key]
        n = matrix.shape[0]
        if len(labels) == 2 * n:  # 5x5: real stations (rows) then generated stations (columns)
            rows, cols = labels[:n], labels[n:]
        elif len(labels) == n:
            rows, cols = labels, labels
        else:
            raise ValueError(f"matrices.npz: {key!r} is {matrix.shape} but has {len(labels)} "
                             f"labels")
        try:
            score = metrics[model][reference][f"score_{size}"]
        except KeyError:
            raise KeyError(f"metrics.json has no {model}.{reference}.score_{size}") from None
        extra = []
        other_score = metrics.get(model, {}).get(other, {}).get(f"score_{size}")
        if other_score is not None:
            extra.append(f"{names[other].split()[0]}: {other_score:.3f}")
        paper = metrics.get("paper", {}).get(f"{model}_{size}")
        if paper is not None:
            extra.append(f"paper: {paper:.2f}")
        title = (f"{registry.label_of(model)} {size} vs {names.get(reference, reference)}\n"
                 f"specificity score {score:.3f}" + (f"  ({'; '.join(extra)})" if extra else ""))
        cross = rows != cols  # k x k: real stations (rows) against generated ones (columns)
        axis = ("Generated records of station", "Real records of station") if cross else ("", "")
        panels.append(MatrixPanel(matrix, _f0_labels(rows, f0), cols, title, *axis))
    return panels


def typical_record(records: pd.DataFrame, station: str, source: str) -> str:
    """record_id of the station's record of that source whose f0 is nearest the median f0."""
    rows = records[(records["station"] == station) & (records["source"] == source)]
    if rows.empty:
        raise ValueError(f"records table has no {source} record of station {station}")
    f0 = rows["f0_hz"].to_numpy(np.float64)
    if not np.isfinite(f0).any():
        return str(rows["record_id"].iloc[0])
    distance = np.abs(f0 - np.nanmedian(f0))
    return str(rows["record_id"].iloc[int(np.nanargmin(distance))])


def record_entry(corpus_dir: str | Path, record_id: str) -> pd.Series:
    """The records.csv row of one record of a canonical corpus folder."""
    from timesnet_gen.corpus.format import read_tables

    table, _ = read_tables(require(corpus_dir))
    rows = table[table["record_id"] == record_id]
    if rows.empty:
        raise KeyError(f"{corpus_dir}: no record {record_id!r} in records.csv")
    return rows.iloc[0]


def read_entry(corpus_dir: str | Path, row: pd.Series) -> np.ndarray:
    """The record (3, T) cm/s^2 of a records.csv row (record_entry) of corpus_dir."""
    from timesnet_gen.corpus.format import read_record

    return read_record(Path(corpus_dir) / row["file"], float(row["counts_per_cm_s2"]))


def read_record_by_id(corpus_dir: str | Path, record_id: str) -> np.ndarray:
    """One record (3, T) cm/s^2 of a canonical corpus folder."""
    return read_entry(corpus_dir, record_entry(corpus_dir, record_id))


def scenario_text(row: pd.Series) -> str:
    """"M 4.6 at 122 km" from a records.csv row; "" when it has no scenario (the paper's
    sampler and the VAE generate from latents, not scenarios)."""
    m, r = row.get("magnitude"), row.get("distance_km")
    return f"M {float(m):.1f} at {float(r):.0f} km" if pd.notna(m) and pd.notna(r) else ""


def record_fas(record: np.ndarray, fs: float, params: EvaluateParams
               ) -> tuple[np.ndarray, np.ndarray]:
    """Konno-Ohmachi smoothed Fourier amplitude (3, F) in cm/s of one record (3, T) cm/s^2,
    at the evaluate stage's centres (fas_n_points log-spaced in fas_fmin-fas_fmax Hz): the
    evaluation package's `smoothed_fas`, the one behind fas_median.npz."""
    from timesnet_gen.evaluation.intensity import smoothed_fas

    freqs, fas = smoothed_fas(np.asarray(record)[None], fs, params=params)
    return freqs, fas[0]


def psa_column(records: pd.DataFrame, period: float) -> str:
    """The records-table column of PSA at `period` s (psa_0.2s, psa_1.0s ...)."""
    for column in records.columns:
        if column.startswith("psa_") and column.endswith("s"):
            try:
                if np.isclose(float(column[4:-1]), period):
                    return column
            except ValueError:
                continue
    raise KeyError(f"records table has no PSA column for T = {period:g} s "
                   f"(has {[c for c in records.columns if c.startswith('psa_')]})")


def intensity_measures(records: pd.DataFrame, psa_periods: list[float]) -> list:
    """The Measures of the intensity figure: PGA, Arias, D5-95 and PSA at the given periods."""
    from timesnet_gen.plotting import Measure

    measures = [Measure("pga_cm_s2", "PGA (cm/s$^2$)"),
                Measure("arias_m_s", "Arias intensity (m/s)"),
                Measure("d5_95_s", "significant duration D5-95 (s)", log=False)]
    return measures + [Measure(psa_column(records, t), f"PSA(T = {t:g} s, 5 %) (cm/s$^2$)")
                       for t in psa_periods]


# --------------------------------------------------------------------------------------------
# the runner


def expected_figures(figures: Path, stations: list[str]) -> dict[str, list[Path]]:
    """The figure files each notebook must write."""
    return {
        "site_signature": [figures / "combined" / f"station_{s}.png" for s in stations]
        + [figures / "ground_truth_f0.png"],
        "similarity": [figures / "similarity_matrices.png",
                       figures / "similarity_matrices_5x5_10x10.png"],
        "records": [figures / "waveforms" / f"station_{s}.png" for s in stations]
        + [figures / "intensity_measures.png"],
        "training": [figures / "training_curves.png"],
        "novelty": [figures / "novelty.png"],
        "realism": [figures / "realism.png"],
    }


def notebook_parameters(params_path: Path, root: Path, figures: Path) -> dict:
    """Every parameter the runner knows, with absolute paths (notebooks take what they declare)."""
    params = load_params(params_path)
    values: dict = {name: str((root / rel).resolve()) for name, (rel, _) in INPUTS.items()}
    for name, entries in REGISTRY_INPUTS.items():
        values[name] = {key: str((root / rel).resolve())
                        for g in registry.GENERATORS for key, rel in entries(g).items()}
    values.update(
        models=registry.names(),
        loss_units={title: g.loss_unit for g in registry.GENERATORS for title in g.losses
                    if g.loss_unit},
        params_file=str(params_path.resolve()), figures=str(figures.resolve()),
        target_stations=list(params.data.target_stations), fmin=params.evaluate.fmin,
        fmax=params.evaluate.fmax, hist_bins=params.evaluate.hist_bins,
    )
    return values


def declared_parameters(notebook: Path) -> list[str]:
    """Names in the notebook's `parameters` cell; NotebookError when it has none."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            import papermill

            return list(papermill.inspect_notebook(str(notebook)))
    raise NotebookError(f"notebook {notebook.name} has no cell tagged 'parameters'")


def check_inputs(names: list[str], values: dict) -> None:
    """FileNotFoundError naming every missing input and the stage that writes it."""
    missing = [f"{values[n]} (input {n!r}, written by the {INPUTS[n][1]!r} stage)"
               for n in names if n in INPUTS and not Path(values[n]).exists()]
    missing += [f"{values[n][key]} (input {n}[{key!r}], written by the stages of the "
                f"registered generator {g.name!r})"
                for n in names if n in REGISTRY_INPUTS for g in registry.GENERATORS
                for key in REGISTRY_INPUTS[n](g) if not Path(values[n][key]).exists()]
    if missing:
        raise FileNotFoundError("missing input file(s):\n  " + "\n  ".join(missing))


def run_notebook(notebook: Path, executed: Path, parameters: dict, cwd: Path) -> None:
    """Execute one notebook with papermill; NotebookError naming it when anything fails."""
    import papermill

    try:
        papermill.execute_notebook(
            str(notebook), str(executed), parameters=parameters, kernel_name=KERNEL,
            cwd=str(cwd), progress_bar=False, log_output=False,
        )
    except papermill.PapermillExecutionError as exc:
        raise NotebookError(
            f"notebook {notebook.name} failed in cell {exc.exec_count}: {exc.ename}: "
            f"{exc.evalue}\n  executed copy with the traceback: {executed}") from None
    except Exception as exc:  # kernel missing or dead, unreadable notebook ...
        raise NotebookError(f"notebook {notebook.name} could not run: "
                            f"{type(exc).__name__}: {exc}") from None


def _remove_stale(figures: Path, stations: list[str]) -> None:
    """Drop per-station figures of stations no longer in the target list."""
    keep = {f"station_{s}.png" for s in stations}
    for folder in ("combined", "waveforms"):
        for path in (figures / folder).glob("station_*.png"):
            if path.name not in keep:
                path.unlink()


def run_all(params_path: str | Path, figures: str | Path, executed: str | Path,
            root: str | Path = ".", notebooks: str | Path = "notebooks",
            only: list[str] | None = None, jobs: int = 2) -> list[Path]:
    """Execute the notebooks (all, or `only` these names; `jobs` kernels at a time)
    -> the figure files written."""
    params_path, root = Path(params_path), Path(root).resolve()
    figures, executed, notebooks = Path(figures), Path(executed), Path(notebooks)
    values = notebook_parameters(params_path, root, figures)
    names = list(only or NOTEBOOKS)
    unknown = [n for n in names if n not in NOTEBOOKS]
    if unknown:
        raise NotebookError(f"unknown notebook(s) {unknown} (known: {list(NOTEBOOKS)})")
    paths = [require(notebooks / f"{name}.ipynb") for name in names]
    declared = {path: declared_parameters(path) for path in paths}
    # Every input of every notebook checked before the first (slow) kernel start.
    check_inputs(sorted({p for ps in declared.values() for p in ps}), values)
    expected = expected_figures(figures, values["target_stations"])
    for folder in ("combined", "waveforms"):
        (figures / folder).mkdir(parents=True, exist_ok=True)
    executed.mkdir(parents=True, exist_ok=True)
    _remove_stale(figures, values["target_stations"])
    os.environ.setdefault("MPLBACKEND", "Agg")

    def run(name: str, path: Path) -> list[Path]:
        start = time.perf_counter()
        run_notebook(path, executed / path.name,
                     {k: values[k] for k in declared[path] if k in values}, root)
        missing = [str(f) for f in expected[name] if not f.exists()]
        if missing:
            raise NotebookError(f"notebook {path.name} did not write {missing}")
        print(f"figures: {path.name} ran in {time.perf_counter() - start:.1f} s "
              f"({len(expected[name])} figure(s))", flush=True)
        return expected[name]

    # Kernels are separate processes: `jobs` of them at a time use the cores (most of a
    # notebook's time is kernel start-up, imports and rendering).
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run, name, path) for name, path in zip(names, paths)]
        written = []
        for future in futures:  # the first failure in notebook order is raised
            written += future.result()
    return written


def main(argv: list[str] | None = None, verb: str = "figures") -> int:
    parser = stage_parser(verb, __doc__)
    parser.add_argument("--params", default="params.yaml", type=Path)
    parser.add_argument("--figures", default="figures", type=Path)
    parser.add_argument("--executed", default="notebooks/executed", type=Path)
    parser.add_argument("--notebooks", default="notebooks", type=Path,
                        help="folder of the notebooks (default: notebooks)")
    parser.add_argument("--root", default=".", type=Path,
                        help="repository root: inputs are resolved here, kernels run here")
    parser.add_argument("--only", nargs="+", choices=NOTEBOOKS, help="run only these notebooks")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="notebooks executed at the same time (default: 2)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        written = run_all(args.params, args.figures, args.executed, args.root, args.notebooks,
                          args.only, args.jobs)
    except FileNotFoundError as exc:
        raise NotebookError(str(exc)) from None
    print(f"figures: wrote {len(written)} figure(s) under {args.figures}")
    return 0

