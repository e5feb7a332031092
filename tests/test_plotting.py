"""Figure functions on small fake inputs: what each figure draws (lines, boxes, labels, titles),
and the errors on inputs that do not fit."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from timesnet_gen import plotting  # noqa: E402
from timesnet_gen.plotting import Measure, MatrixPanel  # noqa: E402

RNG = np.random.default_rng(0)
EDGES = np.linspace(1, 20, 21)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _records_table(stations: list[str], n: int = 6) -> pd.DataFrame:
    rows = []
    for station in stations:
        for source in plotting.SOURCES:
            for i in range(n):
                rows.append({"station": station, "source": source, "record_id": f"{station}{i}",
                             "pga_cm_s2": RNG.lognormal(2, 1), "arias_m_s": RNG.lognormal(-4, 1),
                             "d5_95_s": RNG.uniform(5, 30), "psa_0.2s": RNG.lognormal(2, 1)})
    return pd.DataFrame(rows)


def test_save_writes_png_at_screen_resolution(tmp_path) -> None:
    from PIL import Image

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    path = plotting.save(fig, tmp_path / "sub" / "a.png")
    assert path.exists() and not list(path.parent.glob(".*tmp*"))
    with Image.open(path) as image:
        assert image.info["dpi"][0] == pytest.approx(plotting.DPI, abs=1)
        assert 1.6 * plotting.DPI < image.size[0] <= 2 * plotting.DPI  # 2 in, tight bbox


def test_f0_kde_matches_scipy_and_refuses_degenerate_input() -> None:
    import scipy.stats

    values = RNG.lognormal(1, 0.2, 40)
    x = np.linspace(1, 20, 50)
    np.testing.assert_allclose(plotting.f0_kde(values, x), scipy.stats.gaussian_kde(values)(x),
                               rtol=1e-10, atol=1e-300)
    assert plotting.f0_kde(np.array([2.0, 2.0, np.nan]), x) is None
    assert plotting.f0_kde(np.array([]), x) is None


def test_f0_distributions_probabilities_kde_and_true_f0() -> None:
    fig, ax = plt.subplots()
    f0 = {"Real": RNG.normal(5, 0.5, 30), "TimesNet-Gen": RNG.normal(5, 0.4, 20),
          "VAE-Gen": np.array([7.0, 7.0, np.nan])}  # one distinct value: bars but no KDE
    plotting.plot_f0_distributions(ax, f0, EDGES, f0_true=5.1)
    steps = [p for p in ax.patches if isinstance(p, matplotlib.patches.StepPatch)]
    assert len(steps) == 2 * 3  # filled + outline per source
    for step in steps:
        assert step.get_data().values.sum() == pytest.approx(1.0)
    kde_lines = [line for line in ax.lines if len(line.get_xdata()) == 800]
    assert len(kde_lines) == 2
    # the KDE (density x bin width) carries the histogram's mass
    x, y = kde_lines[0].get_data()
    assert np.trapezoid(y, x) / np.diff(EDGES)[0] == pytest.approx(1.0, abs=0.01)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["Real (n=30)", "TimesNet-Gen (n=20)", "VAE-Gen (n=2)", "true f0 5.10 Hz"]
    assert ax.get_xlim() == (1.0, 20.0)


def test_combined_station_draws_every_source_and_the_true_f0() -> None:
    grid = np.linspace(1, 20, 400)
    medians = {s: 1 + 3 / (1 + ((grid - 4) / 0.5) ** 2) for s in plotting.SOURCES}
    f0 = {s: RNG.normal(4, 0.3, 10) for s in plotting.SOURCES}
    fig = plotting.combined_station("1716", f0, EDGES, grid, medians, f0_true=4.0)
    top, bottom = fig.axes
    assert "1716" in fig._suptitle.get_text()
    assert bottom.get_yscale() == "log" and top.get_yscale() == "linear"
    hvsr_lines = [line for line in bottom.lines if len(line.get_xdata()) == 400]
    assert [line.get_label() for line in hvsr_lines] == list(plotting.SOURCES)
    # reconstructions dotted, real and generated records solid
    styles = [line.get_linestyle() for line in hvsr_lines]
    assert styles == [":" if s.endswith("Recon") else "-" for s in plotting.SOURCES]
    assert styles.count(":") == 2 and styles[:2] == ["-", "-"]  # TimesNet-Recon, VAE-Recon
    for ax in (top, bottom):
        dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert len(dashed) == 1 and dashed[0].get_xdata()[0] == 4.0
    assert "Hz" in bottom.get_xlabel()
    # unknown truth: no marker
    fig = plotting.combined_station("0205", f0, EDGES, grid, medians, f0_true=float("nan"))
    assert not [line for line in fig.axes[1].lines if line.get_linestyle() == "--"]
    with pytest.raises(ValueError, match="median HVSR of Real has shape"):
        plotting.combined_station("0205", f0, EDGES, grid, {"Real": grid[:10]})


def _panel(n: int = 15, score: float = 0.934) -> MatrixPanel:
    labels = [f"{s} {k}" for s in ("0205", "1716", "2020", "3130", "4628")
              for k in ("Real", "Recon", "Gen")][:n]
    m = np.clip(np.kron(np.eye(5), np.ones((3, 3)))[:n, :n] * 0.9 + 0.05, 0, 1)
    return MatrixPanel(m, labels, labels, f"TimesNet-Gen 15x15\nspecificity score {score:.3f}")


def test_similarity_matrix_grey_scale_0_1_with_score_and_labels() -> None:
    fig, ax = plt.subplots()
    panel = _panel()
    image = plotting.plot_similarity(ax, panel)
    np.testing.assert_array_equal(image.get_array(), panel.matrix)
    assert image.get_clim() == (0.0, 1.0) and image.get_cmap().name == "Greys"
    assert "score 0.934" in ax.get_title()
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[:3] == ["0205 Real", "0205 Recon", "0205 Gen"]
    values = [t.get_text() for t in ax.texts]
    assert len(values) == 225 and values[0] == "0.95"
    separators = [line for line in ax.lines if line.get_color() == "tab:red"]
    assert len(separators) == 2 * 4  # between the 5 station blocks, both axes
    with pytest.raises(ValueError, match="matrix shape \\(15, 15\\) does not match 14 row"):
        plotting.plot_similarity(ax, MatrixPanel(panel.matrix, panel.row_labels[:14],
                                                 panel.col_labels, "bad"))


def test_similarity_figure_side_by_side_one_colour_bar() -> None:
    fig = plotting.similarity_figure([_panel(), _panel(score=0.812)], ncols=2, suptitle="15x15")
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert "0.934" in titles[0] and "0.812" in titles[1]
    assert len(fig.axes) == 3  # two matrices and the colour bar
    fig = plotting.similarity_figure([_panel()] * 3, ncols=2)
    assert sum(ax.axison for ax in fig.axes) == 3 + 1  # the empty fourth slot is hidden


def test_waveform_comparison_records_and_spectra() -> None:
    t = np.arange(6000) / 100
    records = {s: RNG.normal(size=(3, 6000)) * np.exp(-t / 10) for s in plotting.GENERATED}
    freqs = np.geomspace(0.1, 25, 100)
    fas = {s: np.tile(freqs / (1 + freqs**2), (3, 1)) for s in plotting.GENERATED}
    median = {s: freqs / (1 + freqs**2) for s in plotting.SOURCES}
    fig = plotting.waveform_comparison("0205", records, {"Real": "Real: rec1"}, freqs, fas,
                                       freqs, median)
    n = len(plotting.GENERATED)  # Real and one generated record per registered generator
    assert n >= 3 and len(fig.axes) == n + 3 + 1
    waves, spectra, medians = fig.axes[:n], fig.axes[n:n + 3], fig.axes[n + 3]
    assert waves[0].get_title() == "Real: rec1" and waves[1].get_title() == "TimesNet-Gen"
    assert all(len(ax.lines) == 3 for ax in waves)  # E, N, U
    assert [len(ax.lines) for ax in spectra] == [n, n, n]
    assert all(ax.get_xscale() == "log" and ax.get_yscale() == "log" for ax in spectra)
    assert spectra[0].get_ylabel() == "FAS (cm/s)" and "component E" in spectra[0].get_title()
    assert len(medians.lines) == len(plotting.SOURCES)  # reconstructions too
    fig = plotting.waveform_comparison("0205", records, {}, freqs, fas)
    assert len(fig.axes) == n + 3  # no median panel without median spectra
    with pytest.raises(ValueError, match="FAS of Real has shape \\(3, 99\\)"):
        plotting.waveform_comparison("0205", records, {}, freqs, {"Real": fas["Real"][:, 1:]})


def test_intensity_distributions_boxes_scales_and_units() -> None:
    table = _records_table(["0205", "4628"])
    table.loc[0, "pga_cm_s2"] = -1.0  # impossible on a log axis: left out
    table.loc[1, "pga_cm_s2"] = np.nan
    measures = [Measure("pga_cm_s2", "PGA (cm/s$^2$)"), Measure("arias_m_s", "Arias (m/s)"),
                Measure("d5_95_s", "D5-95 (s)", log=False), Measure("psa_0.2s", "PSA (cm/s$^2$)")]
    fig = plotting.intensity_distributions(table, ["0205", "4628"], measures)
    panels = fig.axes[:4]
    for ax in panels:
        boxes = [p for p in ax.patches if isinstance(p, matplotlib.patches.PathPatch)]
        assert len(boxes) == 2 * len(plotting.GENERATED)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0205", "4628"]
    assert [ax.get_yscale() for ax in panels] == ["log", "log", "linear", "log"]
    assert panels[0].get_ylabel() == "PGA (cm/s$^2$)"
    legend = [t.get_text() for t in fig.axes[4].get_legend().get_texts()]
    assert legend == list(plotting.GENERATED)
    assert legend[:3] == ["Real", "TimesNet-Gen", "VAE-Gen"]
    # a station without VAE records gets fewer boxes, not an error
    fig, ax = plt.subplots()
    drawn = plotting.plot_grouped_boxes(ax, table[table["source"] != "VAE-Gen"], measures[0],
                                        ["0205"])
    assert drawn == len(plotting.GENERATED) - 1
    with pytest.raises(KeyError, match="psa_1.0s"):
        plotting.intensity_distributions(table, ["0205"], [Measure("psa_1.0s", "PSA")])


def test_training_curves_one_panel_per_run() -> None:
    epochs = np.arange(1, 6)
    fig = plotting.training_curves({
        "pretrain": pd.DataFrame({"epoch": epochs, "train_loss": 1 / epochs,
                                  "val_loss": 2 / epochs}),
        "finetune": pd.DataFrame({"epoch": epochs, "train_loss": 1 / epochs}),
        "vae": pd.DataFrame({"epoch": epochs, "train_loss": 1 / epochs, "recon_loss": 1 / epochs,
                             "kl": np.zeros(5)}),
    }, {"pretrain": "MSE ((cm/s$^2$)$^2$)"})
    assert [len(ax.lines) for ax in fig.axes] == [2, 1, 3]
    assert [ax.get_title() for ax in fig.axes] == ["pretrain", "finetune", "vae"]
    assert fig.axes[0].get_yscale() == "log" and fig.axes[2].get_yscale() == "linear"  # kl = 0
    assert fig.axes[0].get_ylabel().startswith("MSE") and fig.axes[1].get_ylabel() == "loss"
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["train", "val"]
    with pytest.raises(KeyError, match="no 'epoch' column"):
        plotting.training_curves({"x": pd.DataFrame({"step": [1], "loss": [1.0]})})


def test_ground_truth_counts_stations_inside_the_band() -> None:
    summary = pd.DataFrame([
        {"station": "0205", "source": "Real", "f0_true_hz": 2.6, "f0_median_hz": 2.62},
        {"station": "4628", "source": "Real", "f0_true_hz": 1.83, "f0_median_hz": 1.84},
        {"station": "0205", "source": "TimesNet-Gen", "f0_true_hz": 2.6, "f0_median_hz": 2.65},
        {"station": "4628", "source": "TimesNet-Gen", "f0_true_hz": 1.83, "f0_median_hz": 2.2},
        {"station": "0205", "source": "VAE-Gen", "f0_true_hz": 2.6, "f0_median_hz": 4.0},
        {"station": "X001", "source": "Real", "f0_true_hz": np.nan, "f0_median_hz": 9.0},
    ])
    summary["f0_q25_hz"] = summary["f0_median_hz"] * 0.9
    summary["f0_q75_hz"] = summary["f0_median_hz"] * 1.1
    fig = plotting.ground_truth_f0(summary, ["0205", "4628"])
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[2:] == ["Real (2/2 within ±5%)", "TimesNet-Gen (1/2 within ±5%)",
                          "VAE-Gen (0/1 within ±5%)"]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert sorted(t.get_text() for t in ax.texts) == ["0205", "4628"]  # unknown truth left out
    one_to_one = [line for line in ax.lines if line.get_label() == "1:1"][0]
    np.testing.assert_allclose(one_to_one.get_xdata(), one_to_one.get_ydata())


def test_novelty_boxes_per_station() -> None:
    rows = [{"station": s, "model": m, "nn_distance": d}
            for s in ("0205", "4628") for m in ("real", "timesnet", "vae")
            for d in RNG.uniform(0.1, 1.0, 5)]
    table = pd.DataFrame(rows)
    table = table[~((table["station"] == "4628") & (table["model"] == "vae"))]
    fig = plotting.novelty_figure(table, ["0205", "4628"])
    a, b = fig.axes
    count = [len([p for p in ax.patches if isinstance(p, matplotlib.patches.PathPatch)])
             for ax in (a, b)]
    assert count == [3, 2]
    ticks = [t.get_text() for t in a.get_xticklabels()]
    assert ticks == ["Real vs real", "TimesNet-Gen", "VAE-Gen"]
    assert a.get_title() == "station 0205" and "nearest training record" in a.get_ylabel()
    assert a.get_ylim()[0] == 0


def test_corpus_overview_still_draws_three_panels_per_station() -> None:
    grid = np.linspace(1, 20, 400)
    freqs = np.linspace(1, 20, 50)
    fig = plotting.corpus_overview(
        ["0205", "4628"], [RNG.normal(size=(3, 600))] * 2, freqs, [np.ones((4, 50)) * 2] * 2,
        grid, [np.ones(400) * 2] * 2, [RNG.uniform(1, 20, 10)] * 2, [2.6, float("nan")], EDGES)
    assert len(fig.axes) == 6
    assert fig.axes[0].get_title() == "station 0205: example record"


def test_committed_figures_stay_small_enough_for_git() -> None:
    """figures/ is committed and rewritten by every pipeline run: it stays under 3 MB."""
    from conftest import ROOT

    total = sum(p.stat().st_size for p in (ROOT / "figures").rglob("*") if p.is_file())
    assert total < 3_000_000, f"figures/ is {total / 1e6:.1f} MB"
