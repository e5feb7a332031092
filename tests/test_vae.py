"""The spectrogram CVAE baseline: STFT features, Griffin-Lim, model, training, CLI outputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from timesnet_gen.config import ParamsError, VaeParams, params_from_dict
from timesnet_gen.corpus.format import read_corpus
from timesnet_gen.models.cvae import (
    SpecCVAE,
    griffin_lim,
    istft,
    kl_per_dim,
    log_magnitude,
    spectral_convergence,
    station_onehot,
    stft,
    vae_loss,
)
from timesnet_gen.runtime import CheckpointError, RuntimeSetupError
from timesnet_gen.vae import (
    VaeError,
    features,
    fit_stats,
    load_vae,
    load_targets,
    main,
    reconstruction_mse,
    sample,
    standardise,
    train_model,
)

torch.set_num_threads(1)

FS = 100.0  # Hz
T = 2048  # samples: short records keep the tests fast; the code is generic in length
STATIONS = ["AAA", "BBB"]
F0 = {"AAA": 3.0, "BBB": 12.0}  # Hz, resonance that makes each tiny station recognisable
TINY = {
    "n_fft": 64, "hop": 16, "latent_dim": 8, "channels": [4, 8], "epochs": 12, "batch_size": 4,
    "lr": 0.003, "beta_warmup_epochs": 4, "griffin_lim_iters": 8, "n_per_station": 3,
    # the plain ELBO: with the default beta (1e3) the latent collapses on purpose and the
    # reconstruction can only reach the station mean, which is not what these tests probe
    "beta": 1.0,
}


def _chirp(n: int = 6000) -> torch.Tensor:
    """0.5 -> 20 Hz linear chirp with a Gaussian envelope, unit peak (cm/s^2)."""
    t = torch.arange(n, dtype=torch.float64) / FS
    phase = 2 * math.pi * (0.5 * t + (20.0 - 0.5) / (2 * t[-1]) * t**2)
    return (torch.sin(phase) * torch.exp(-(((t - t[-1] / 2) / (t[-1] / 4)) ** 2))).float()


def _records(n_per_station: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Noise bursts through a station-specific resonance; peaks lognormal around 50 cm/s^2."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / FS
    f = np.fft.rfftfreq(T, 1 / FS)
    waves, stations = [], []
    for station in STATIONS:
        response = 1.0 / np.abs(1 - (f / F0[station]) ** 2 + 0.2j * f / F0[station])
        for _ in range(n_per_station):
            noise = rng.standard_normal((3, T)) * np.exp(-(((t - 8) / 4) ** 2))
            x = np.fft.irfft(np.fft.rfft(noise) * response, T)
            waves.append(x / np.abs(x).max() * 50.0 * rng.lognormal(0, 0.3))
            stations.append(station)
    return np.stack(waves).astype(np.float32), stations


def _prepared(tmp_path: Path, n_per_station: int = 8, holdout: int = 2) -> Path:
    """A prepared folder (waveforms.npy + index.csv as prepare.py writes them)."""
    waves, stations = _records(n_per_station)
    rows = []
    for i, station in enumerate(stations):
        k = i % n_per_station
        rows.append({"record_id": f"{station}_{k:03d}", "station": station, "role": "target",
                     "split": "holdout" if k < holdout else "train",
                     "station_index": STATIONS.index(station)})
    out = tmp_path / "prepared"
    out.mkdir()
    np.save(out / "waveforms.npy", waves)
    pd.DataFrame(rows).to_csv(out / "index.csv", index=False)
    return out


def _params_file(tmp_path: Path, **vae) -> Path:
    raw = {"data": {"target_stations": STATIONS}, "train": {"device": "cpu"},
           "vae": {**TINY, **vae}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _train_tiny(prepared: Path, **overrides) -> tuple:
    vae = VaeParams(**{**TINY, **overrides})
    waves, rows = load_targets(prepared, STATIONS, ("train",))
    model, stats, losses = train_model(waves, rows["station_index"].to_numpy(), 2, vae,
                                       log=lambda _: None)
    return vae, waves, rows, model, stats, losses


# --------------------------------------------------------------------------------------------
# STFT and Griffin-Lim


def test_stft_istft_round_trip():
    x = _chirp()[None].repeat(2, 1)
    assert torch.allclose(istft(stft(x, 256, 32), 256, 32, 6000), x, atol=1e-5)


def test_griffin_lim_recovers_chirp_magnitude():
    # measured at the defaults (n_fft 256, hop 32, 64 iterations, momentum 0.99): spectral
    # convergence 0.028-0.042 over seeds 0-4 (0.76 before any iteration); bound 0.08
    x = _chirp()
    mag = stft(x, 256, 32).abs()
    start = griffin_lim(mag, 256, 32, 6000, 0, generator=torch.Generator().manual_seed(0))
    y = griffin_lim(mag, 256, 32, 6000, 64, generator=torch.Generator().manual_seed(0))
    assert spectral_convergence(mag, start, 256, 32) > 0.5
    assert spectral_convergence(mag, y, 256, 32) < 0.08
    assert y.shape == (6000,)


def test_griffin_lim_is_seeded_and_rejects_nan():
    mag = stft(_chirp(), 256, 32).abs()
    a = griffin_lim(mag, 256, 32, 6000, 4, generator=torch.Generator().manual_seed(3))
    b = griffin_lim(mag, 256, 32, 6000, 4, generator=torch.Generator().manual_seed(3))
    c = griffin_lim(mag, 256, 32, 6000, 4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    mag[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        griffin_lim(mag, 256, 32, 6000, 4)


def test_features_shape_scale_and_nan():
    waves, _ = _records(2)
    logmag, scale = features(torch.as_tensor(waves), VaeParams(n_fft=64, hop=16))
    assert logmag.shape == (4, 3, 32, 1 + T // 16)  # Nyquist bin dropped
    np.testing.assert_allclose(scale.numpy(), np.abs(waves).max(axis=(1, 2)), rtol=1e-6)
    waves[1, 2, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        features(torch.as_tensor(waves), VaeParams(n_fft=64, hop=16))


def test_log_magnitude_of_silence_is_the_floor():
    logmag = log_magnitude(torch.zeros(1, 3, 512), 64, 16, 1e-4)
    assert torch.allclose(logmag, torch.full_like(logmag, math.log(1e-4)))


# --------------------------------------------------------------------------------------------
# model and loss


@pytest.mark.parametrize("condition_encoder", [False, True])
def test_model_shapes_with_padding(condition_encoder):
    # 33 x 45 is not a multiple of 4: padded inside, cropped back at the output
    model = SpecCVAE(33, 45, 3, latent_dim=5, channels=(4, 6), condition_encoder=condition_encoder)
    x = torch.randn(2, 3, 33, 45)
    onehot = station_onehot(torch.tensor([0, 2]), 3)
    recon, mean, logvar = model(x, onehot)
    assert recon.shape == x.shape and mean.shape == logvar.shape == (2, 5)


def test_decoder_uses_the_condition():
    model = SpecCVAE(32, 40, 3, latent_dim=4, channels=(4, 8))
    z = torch.zeros(1, 4)
    a = model.decode(z, station_onehot(torch.tensor([0]), 3))
    b = model.decode(z, station_onehot(torch.tensor([1]), 3))
    assert (a - b).abs().max() > 1e-4


def test_unknown_station_class_is_refused():
    with pytest.raises(ValueError, match="unknown station"):
        station_onehot(torch.tensor([0, 5]), 5)
    with pytest.raises(ValueError, match="unknown station"):
        station_onehot(torch.tensor([-1]), 5)


def test_loss_free_bits_and_kl():
    x = torch.zeros(2, 3, 4, 5)
    mean, logvar = torch.zeros(2, 6), torch.zeros(2, 6)
    loss, mse, kl = vae_loss(x + 1.0, x, mean, logvar, beta=2.0, free_bits=0.5)
    # KL is zero, but free bits charge 0.5 nats x 6 dims, divided by the 60 elements per record
    assert float(mse) == pytest.approx(1.0) and float(kl) == pytest.approx(0.0)
    assert float(loss) == pytest.approx(1.0 + 2.0 * 3.0 / 60)
    mean = torch.ones(2, 6)
    assert torch.allclose(kl_per_dim(mean, logvar), torch.full((6,), 0.5))


# --------------------------------------------------------------------------------------------
# training, reconstruction, generation


def test_training_lowers_reconstruction_loss_and_is_deterministic(tmp_path):
    prepared = _prepared(tmp_path)
    vae, waves, rows, model, stats, losses = _train_tiny(prepared)
    logmag, _ = features(torch.as_tensor(waves), vae)
    spec = standardise(logmag, stats)
    onehot = station_onehot(torch.tensor(rows["station_index"].to_numpy()), 2)
    torch.manual_seed(vae.seed)
    untrained = SpecCVAE(spec.shape[2], spec.shape[3], 2, vae.latent_dim, tuple(vae.channels))
    before = reconstruction_mse(untrained, spec, onehot)
    after = reconstruction_mse(model, spec, onehot)
    assert after < 0.5 * before, (before, after)  # measured 1.00 -> 0.23
    assert list(losses.columns) == ["epoch", "train_loss", "recon_loss", "kl"]
    assert losses["recon_loss"].iloc[-1] < losses["recon_loss"].iloc[0]

    # same seed -> bit-identical weights, losses and generated records
    _, _, _, model2, _, losses2 = _train_tiny(prepared)
    pd.testing.assert_frame_equal(losses, losses2)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    gen_a, idx_a = sample(model, stats, 3, vae, T)
    gen_b, _ = sample(model2, stats, 3, vae, T)
    np.testing.assert_array_equal(gen_a, gen_b)
    np.testing.assert_array_equal(idx_a, [0, 0, 0, 1, 1, 1])


def _band_ratio(waves: np.ndarray) -> np.ndarray:
    """Energy 2-4 Hz over energy 10-14 Hz of each record's horizontals (n,)."""
    power = np.abs(np.fft.rfft(waves[:, :2], axis=-1)) ** 2
    f = np.fft.rfftfreq(waves.shape[-1], 1 / FS)
    low, high = (f >= 2) & (f <= 4), (f >= 10) & (f <= 14)
    return power[..., low].sum(axis=(1, 2)) / power[..., high].sum(axis=(1, 2))


def test_generation_follows_the_station_condition(tmp_path):
    # default beta: the latent carries little, the station one-hot decides the site response
    # (AAA resonates at 3 Hz, BBB at 12 Hz). Measured 2-4/10-14 Hz ratios: real AAA 700-1400,
    # real BBB ~0; generated AAA 96-381, BBB 0-0.3 (with beta 1 instead: both 1.6-20, mixed)
    vae, waves, rows, model, stats, _ = _train_tiny(_prepared(tmp_path), beta=1000.0, epochs=40)
    generated, labels = sample(model, stats, 4, vae, T)
    ratio = _band_ratio(generated)
    assert ratio[labels == 0].min() > 10 * ratio[labels == 1].max(), ratio


def test_fit_stats_needs_every_station():
    logmag = torch.randn(3, 3, 8, 10)
    with pytest.raises(VaeError, match="station class 1 has no training records"):
        fit_stats(logmag, torch.ones(3), torch.tensor([0, 0, 2]), 3)


def test_cli_train_and_generate(tmp_path):
    prepared = _prepared(tmp_path)
    raw = tmp_path / "raw"
    raw.mkdir()
    pd.DataFrame({"station": STATIONS, "role": "target", "f0_true_hz": [3.0, 12.0]}).to_csv(
        raw / "stations.csv", index=False)
    params = _params_file(tmp_path)
    models, outputs = tmp_path / "models" / "vae", tmp_path / "outputs" / "vae"
    assert main(["--params", str(params), "--data", str(prepared), "--out", str(models)],
                "train-vae") == 0
    for name in ("model.pt", "losses.tsv", "training_curve.png"):
        assert (models / name).stat().st_size > 0
    losses = pd.read_csv(models / "losses.tsv", sep="\t")
    assert list(losses.columns) == ["epoch", "train_loss", "recon_loss", "kl"]
    assert len(losses) == TINY["epochs"]

    assert main(["--params", str(params), "--data", str(prepared), "--model", str(models),
                 "--out", str(outputs), "--raw", str(raw)], "generate-vae") == 0
    gen = read_corpus(outputs / "generated")
    rec = read_corpus(outputs / "recon")
    assert gen.waveforms.shape == (2 * TINY["n_per_station"], 3, T)
    assert gen.records["station"].tolist() == ["AAA"] * 3 + ["BBB"] * 3
    assert set(gen.records["source"]) == {"vae-gen"} and set(gen.records["model"]) == {"cvae"}
    assert gen.stations["f0_true_hz"].tolist() == [3.0, 12.0]

    # every real target record (train and holdout) reconstructed, peak restored in cm/s^2
    real, index = load_targets(prepared, STATIONS, ("train", "holdout"))
    assert sorted(rec.records["source_record"]) == sorted(index["record_id"])
    assert sorted(rec.records["split"].unique()) == ["holdout", "train"]
    order = [rec.records["source_record"].tolist().index(r) for r in index["record_id"]]
    peaks_real = np.abs(real).max(axis=(1, 2))
    peaks_rec = np.abs(rec.waveforms[order]).max(axis=(1, 2))
    np.testing.assert_allclose(peaks_rec, peaks_real, rtol=1e-4)
    # energy too stays on the real scale (rms within a factor 2; measured ratios 0.74-1.12)
    rms_ratio = rec.waveforms[order].std(axis=(1, 2)) / real.std(axis=(1, 2))
    assert np.all((rms_ratio > 0.5) & (rms_ratio < 2.0)), rms_ratio
    # generated peaks come from each station's training range
    train_peaks = peaks_real[(index["split"] == "train").to_numpy()]
    gen_peaks = np.abs(gen.waveforms).max(axis=(1, 2))
    assert gen_peaks.min() >= train_peaks.min() * 0.999
    assert gen_peaks.max() <= train_peaks.max() * 1.001


# --------------------------------------------------------------------------------------------
# bad input


def test_nan_training_record_is_named(tmp_path):
    prepared = _prepared(tmp_path)
    waves = np.load(prepared / "waveforms.npy")
    waves[5, 1, 100] = np.nan
    np.save(prepared / "waveforms.npy", waves)
    record = pd.read_csv(prepared / "index.csv")["record_id"][5]
    with pytest.raises(VaeError, match=f"record {record} has NaN"):
        load_targets(prepared, STATIONS, ("train",))


def test_unknown_station_and_empty_split(tmp_path):
    prepared = _prepared(tmp_path, holdout=0)
    with pytest.raises(RuntimeSetupError, match=r"station\(s\) \['BBB'\] not in data.target_stations"):
        load_targets(prepared, ["AAA"], ("train",))
    with pytest.raises(VaeError, match="no target records in split"):
        load_targets(prepared, STATIONS, ("holdout",))


def test_checkpoint_mismatch_and_corrupt_file(tmp_path):
    prepared = _prepared(tmp_path, n_per_station=3, holdout=1)
    models = tmp_path / "models"
    params = _params_file(tmp_path, epochs=1)
    main(["--params", str(params), "--data", str(prepared), "--out", str(models)], "train-vae")
    with pytest.raises(CheckpointError, match="vae.n_fft: 64 -> 128"):
        load_vae(models / "model.pt", VaeParams(**{**TINY, "n_fft": 128}), STATIONS)
    with pytest.raises(CheckpointError, match=r"data.target_stations: \['AAA', 'BBB'\] -> "):
        load_vae(models / "model.pt", VaeParams(**TINY), ["AAA", "CCC"])
    with pytest.raises(CheckpointError, match="a timesnet-gen checkpoint, expected spectrogram"):
        torch.save({"kind": "timesnet-gen"}, tmp_path / "other.pt")
        load_vae(tmp_path / "other.pt", VaeParams(**TINY), STATIONS)
    (models / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_vae(models / "model.pt", VaeParams(**TINY), STATIONS)
    with pytest.raises(CheckpointError, match="no model checkpoint"):
        load_vae(tmp_path / "missing.pt", VaeParams(**TINY), STATIONS)


@pytest.mark.parametrize(
    ("vae", "message"),
    [({"hop": 200}, "vae.hop"), ({"n_fft": 63}, "vae.n_fft"), ({"channels": []}, "vae.channels"),
     ({"griffin_lim_momentum": 1.0}, "griffin_lim_momentum"), ({"latent": 3}, "unknown key")],
)
def test_bad_vae_params(vae, message):
    with pytest.raises(ParamsError, match=message):
        params_from_dict({"vae": vae})
