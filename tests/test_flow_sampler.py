"""The TimesNet flow sampler: representation, equalisation, training, sampling, state."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.signal import butter, sosfiltfilt

from conftest import resplit

from timesnet_gen.errors import UserError
from timesnet_gen.evaluation.realism_phases import horizontal_envelope, pick_p_s
from timesnet_gen.models import flow_sampler as fs
from timesnet_gen.models.flow_sampler import calibration as cal
from timesnet_gen.models.flow_sampler import latent as lat
from timesnet_gen.models.flow_sampler import network as fnet
from timesnet_gen.models.flow_sampler import representation as rep

FS = 100.0
T = 6000


def tiny_params(**overrides) -> fs.FlowSamplerParams:
    base = dict(d_model=8, d_ff=8, num_kernels=1, e_layers=1, d_cond=8, pretrain_epochs=1,
                finetune_epochs=2, batch_size=8, n_steps=2, griffin_lim_iters=2, batch_generate=2,
                num_threads=1, n_fine=40, record_pcs=4, prior_steps=20, prior_hidden=8)
    base.update(overrides)
    return fs.FlowSamplerParams(**base)


def assert_older_state_loads_off(sampler: fs.FlowSampler, option: str, off=False) -> None:
    """The sampler's state without `option` (a checkpoint written before the option existed,
    trained without it) loads with the option `off` and samples as the sampler does."""
    old = sampler.state()
    del old["params"][option]
    loaded = fs.FlowSampler.from_state(old)
    assert getattr(loaded.params, option) is off or getattr(loaded.params, option) == off
    m, r = np.array([5.0]), np.array([40.0])
    np.testing.assert_array_equal(loaded.sample("A", m, r, seed=4), sampler.sample("A", m, r, 4))


def assert_state_refused(sampler: fs.FlowSampler, edit, match: str) -> None:
    """A copy of the sampler's state changed by edit(state) is refused with `match`."""
    state = sampler.state()
    edit(state)
    with pytest.raises(fs.FlowSamplerError, match=match):
        fs.FlowSampler.from_state(state)


def retrained(sampler: fs.FlowSampler, prepared, tmp_path, **overrides) -> fs.FlowSampler:
    """The tiny sampler trained again with overrides of a fit after training: its network's
    weights are sampler's, to the bit."""
    other = fs.train_sampler(prepared, tiny_params(**overrides), tmp_path / "m",
                             raw_dir=tmp_path / "none", log=lambda _: None)
    for key, value in other.net.state_dict().items():
        torch.testing.assert_close(sampler.net.state_dict()[key], value, rtol=0, atol=0)
    return other


def sample_and_reload(sampler: fs.FlowSampler, path, station: str, m: np.ndarray,
                      r: np.ndarray, seed: int) -> np.ndarray:
    """The sampler's seeded records at (m, r): finite and not all zero, and the checkpoint at
    path reloads to a sampler that draws the same records."""
    a = sampler.sample(station, m, r, seed=seed)
    assert a.shape == (len(m), 3, T) and np.isfinite(a).all() and np.abs(a).max() > 0
    again = fs.FlowSampler.from_state(torch.load(path, weights_only=True)["state"])
    np.testing.assert_array_equal(again.sample(station, m, r, seed=seed), a)
    return a


def synthetic_records(rng: np.random.Generator, f0: float, magnitude: np.ndarray,
                      distance_km: np.ndarray) -> np.ndarray:
    """Enveloped noise with a resonance at f0 (Hz), amplitude growing with M, falling with R."""
    n = len(magnitude)
    t = np.arange(T) / FS
    freqs = np.fft.rfftfreq(T, 1 / FS)
    resonance = 1.0 / np.sqrt((1 - (freqs / f0) ** 2) ** 2 + (0.2 * freqs / f0) ** 2)
    out = np.empty((n, 3, T), np.float32)
    for i in range(n):
        onset = rng.uniform(5, 15)
        env = np.clip(t - onset, 0, None) * np.exp(-np.clip(t - onset, 0, None) / 3.0)
        noise = rng.standard_normal((3, T)) * env
        spec = np.fft.rfft(noise, axis=1)
        spec[:2] *= resonance  # horizontals resonate, the vertical does not
        x = np.fft.irfft(spec, n=T, axis=1)
        amp = 10 ** (0.5 * magnitude[i] - np.log10(distance_km[i]))
        out[i] = x / np.abs(x).max() * amp
    return out


def decode_features(feats: dict[str, np.ndarray], p: fs.FlowSamplerParams) -> np.ndarray:
    """`rep.decode` of the features `rep.encode` returned, Griffin-Lim seeded with 0."""
    return rep.decode(*(torch.from_numpy(feats[k]) for k in ("level", "onset", "coarse", "fine")),
                     p, torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny prepared folder: 2 target and 2 pretrain stations, 6 records each, with the
    scenario columns in index.csv."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("flow")
    rows, waves = [], []
    stations = [("A", "target", 0, 2.0), ("B", "target", 1, 8.0), ("P1", "pretrain", -1, 4.0),
                ("P2", "pretrain", -1, 5.0)]
    for code, role, index, f0 in stations:
        m, r = rng.uniform(4, 6, 6), rng.uniform(10, 100, 6)
        waves.append(synthetic_records(rng, f0, m, r))
        other = "holdout" if role == "target" else "val"
        for k in range(6):
            rows.append({"record_id": f"{code}_{k}", "station": code, "role": role,
                         "split": other if k == 0 else "train", "station_index": index,
                         "magnitude": m[k], "distance_km": r[k]})
    prepared = root / "prepared"
    prepared.mkdir()
    np.save(prepared / "waveforms.npy", np.concatenate(waves))
    pd.DataFrame(rows).to_csv(prepared / "index.csv", index=False)
    return prepared


@pytest.fixture(scope="module")
def trained(prepared):
    out = prepared.parent / "model"
    sampler = fs.train_sampler(prepared, tiny_params(), out, raw_dir=prepared.parent / "none",
                               log=lambda _: None)
    return sampler, out


# --------------------------------------------------------------------------------------------
# representation


def test_bands_cover_every_bin_once_and_increase():
    p = fs.FlowSamplerParams()
    bands = rep.band_of_bin(p)
    assert len(bands) == p.n_fft // 2
    assert bands[0] == 0 and np.all(np.diff(bands) >= 0)
    assert set(bands) == set(range(bands.max() + 1))  # no empty band
    pool = rep.pooling_matrix(bands)
    assert torch.allclose(pool.sum(dim=1), torch.ones(len(pool)))


def test_band_centers_are_the_geometric_means_of_each_bands_bins():
    p = fs.FlowSamplerParams()
    freqs = np.arange(1, p.n_fft // 2 + 1) * FS / p.n_fft
    bands, centers = rep.band_of_bin(p), rep.band_centers(p)
    assert len(centers) == bands.max() + 1 and np.all(np.diff(centers) > 0)
    for b in (0, len(centers) // 2, len(centers) - 1):
        members = freqs[bands == b]
        assert members.min() <= centers[b] <= members.max()
        np.testing.assert_allclose(centers[b], np.exp(np.log(members).mean()))


def test_stretch_after_onset_lengthens_only_the_frames_from_the_onset_on():
    """A ramp along the frames: the frames before the onset (align_s) are kept; after it the
    ramp rises at half the rate with ratio 2 (the frame at align_s + t reads align_s + t / 2),
    and ratio 1 keeps every frame."""
    p = fs.FlowSamplerParams()
    n_frames = 94
    t = np.arange(n_frames) * p.hop / FS
    ramp = np.broadcast_to(t[None, :, None], (2, n_frames, 3)).astype(np.float32)
    out = rep.stretch_after_onset(ramp, np.array([1.0, 2.0]), p)
    np.testing.assert_array_equal(out[0], ramp[0])
    before = t < p.align_s
    np.testing.assert_array_equal(out[1, before], ramp[1, before])
    np.testing.assert_allclose(out[1, ~before, 0], p.align_s + (t[~before] - p.align_s) / 2,
                               atol=1e-5)


def test_equalise_constant_gain_is_a_scale_factor():
    """A target 0.5 above the record's own smoothed ln FAS multiplies every non-DC bin by
    e^0.5: for a zero-mean record that is x * e^0.5 exactly."""
    rng = np.random.default_rng(1)
    p = fs.FlowSamplerParams()
    x = rng.standard_normal((2, 3, T))
    x -= x.mean(axis=-1, keepdims=True)
    target = torch.from_numpy(rep.fine_spectrum(x, p) + 0.5)
    y = rep.equalise(torch.from_numpy(x), target, p).numpy()
    np.testing.assert_allclose(y, x * np.exp(0.5), rtol=1e-4, atol=1e-5)


def test_equalise_below_a_frequency_leaves_the_rest_untouched():
    """below_hz = 0.6: bins under 0.3 Hz take the full e^0.5, bins from 0.6 Hz keep their value
    exactly, and the taper between them is monotone."""
    rng = np.random.default_rng(1)
    p = fs.FlowSamplerParams()
    x = rng.standard_normal((2, 3, T))
    x -= x.mean(axis=-1, keepdims=True)
    target = torch.from_numpy(rep.fine_spectrum(x, p) + 0.5)
    y = rep.equalise(torch.from_numpy(x), target, p, below_hz=0.6).numpy()
    ratio = np.abs(np.fft.rfft(y, axis=-1)[..., 1:]) / np.abs(np.fft.rfft(x, axis=-1)[..., 1:])
    f = np.fft.rfftfreq(T, 1.0 / FS)[1:]
    np.testing.assert_allclose(ratio[..., f >= 0.6], 1.0, rtol=2e-5)  # float32 out
    np.testing.assert_allclose(ratio[..., (f <= 0.3) & (f >= p.fine_fmin)], np.exp(0.5),
                               rtol=1e-3)
    taper = ratio[0, 0, (f > 0.3) & (f < 0.6)]
    assert np.all(np.diff(taper) <= 1e-9) and taper.min() >= 1.0


def test_long_period_step_restores_the_fine_spectrum_below_its_frequency():
    """The envelope rounds leave the smoothed FAS under 0.3 Hz off its target (0.15 ln,
    measured); the last long-period equalisation brings it to a third of that (0.05)."""
    rng = np.random.default_rng(3)
    x = synthetic_records(rng, 3.0, np.array([5.5, 6.5]), np.array([20.0, 60.0]))
    out = {}
    for hz in (0.0, 0.6):
        p = fs.FlowSamplerParams(timing="roll", long_period_hz=hz)
        feats = rep.encode(x, p)
        y = decode_features(feats, p)
        low = rep.fine_centers(p) < 0.3
        err = (rep.encode(y, p)["fine"] - feats["fine"]).reshape(2, 3, -1)
        offset = err[..., (rep.fine_centers(p) > 1) & (rep.fine_centers(p) < 20)].mean(-1)
        out[hz] = np.abs(err[..., low] - offset[..., None]).mean()
    assert out[0.6] < 0.5 * out[0.0], out


def test_random_phase_keeps_every_magnitude_and_draws_the_phase_below_its_frequency():
    rng = np.random.default_rng(4)
    x = torch.from_numpy(synthetic_records(rng, 3.0, np.array([5.0, 6.0]),
                                           np.array([20.0, 50.0])))
    y = rep.random_phase(x, 0.3, torch.Generator().manual_seed(1))
    f = np.fft.rfftfreq(T, 1 / FS)
    sx, sy = (np.fft.rfft(a.double().numpy(), axis=-1) for a in (x, y))
    np.testing.assert_allclose(np.abs(sy), np.abs(sx), rtol=1e-4, atol=1e-6 * np.abs(sx).max())
    np.testing.assert_allclose(sy[..., f >= 0.3], sx[..., f >= 0.3], rtol=1e-4,
                               atol=1e-6 * np.abs(sx).max())
    turned = np.abs(np.angle(sy / sx))[..., (f > 0) & (f < 0.15)]
    assert turned.mean() > 1.0  # uniform phase differences: mean |angle| pi / 2
    again = rep.random_phase(x, 0.3, torch.Generator().manual_seed(1))
    assert torch.equal(y, again)
    assert not torch.equal(y, rep.random_phase(x, 0.3, torch.Generator().manual_seed(2)))


def test_random_phase_spreads_the_long_periods_over_the_record():
    """The envelope rounds give the content below 0.3 Hz the band-0 envelope, which is shorter
    than that content lasts (real: 0.90 x, measured); the random phase spreads it out."""
    rng = np.random.default_rng(5)
    x = synthetic_records(rng, 3.0, np.array([5.0, 5.5, 6.0, 6.5]), np.full(4, 30.0))
    sos = butter(4, 0.2, "low", fs=FS, output="sos")
    out = {}
    for hz in (0.0, 0.3):
        p = fs.FlowSamplerParams(timing="roll", random_phase_hz=hz)
        feats = rep.encode(x, p)
        y = decode_features(feats, p)
        low = sosfiltfilt(sos, y.astype(np.float64), axis=-1) ** 2
        husid = np.cumsum(low, axis=-1).sum(axis=1)
        husid /= husid[:, -1:]
        out[hz] = np.median(np.argmax(husid >= 0.95, 1) - np.argmax(husid >= 0.05, 1)) / FS
    assert out[0.3] > 1.2 * out[0.0], out


def test_quiet_before_p_caps_the_envelope_before_the_p_knot_at_the_pre_event_level():
    """Noise at 0.01, energy smeared 2 s before a P knot at 10 s (as the decoder's 2.56 s frames
    smear it), a P wave from 10 s: in the guard before the knot the envelope is brought down to
    the noise level (rms within 40 % of 0.01, from 0.2); nothing before the guard, at or after
    the knot changes; a record whose reference window is shorter than 0.5 s is left."""
    rng = np.random.default_rng(6)
    t = np.arange(T) / FS
    x = 0.01 * rng.standard_normal((3, 3, T))
    x[..., (t >= 8) & (t < 10)] += 0.3 * rng.standard_normal((3, 3, 200)) * np.linspace(0, 1, 200)
    p_wave = t >= 10
    x[..., p_wave] += rng.standard_normal((3, 3, int(p_wave.sum()))) * np.exp(10 - t[p_wave])
    x = torch.from_numpy(x.astype(np.float32))
    knot = np.array([10.0, 10.0, 2.0])
    y = rep.quiet_before_p(x, knot, 2.56).numpy()
    xs = x.numpy()
    guard = (t >= 10 - 2.56) & (t < 10)
    np.testing.assert_array_equal(y[:2][..., ~guard], xs[:2][..., ~guard])
    np.testing.assert_array_equal(y[2], xs[2])  # reference window [-3.12, -0.56) s: empty
    last = (t >= 9) & (t < 10)
    before, after = (np.sqrt((a[:2][..., last] ** 2).mean(axis=-1)) for a in (xs, y))
    assert (before > 0.1).all()
    np.testing.assert_allclose(after, 0.01, rtol=0.4)
    assert (np.abs(y) <= np.abs(xs)).all()


@pytest.mark.parametrize("long_gap, far_gap", [("clip", 15.0 - rep.MIN_GAP_S),
                                               ("squeeze", 30.0 - rep.MIN_GAP_S)])
def test_decoded_p_knot_is_where_decode_places_it(long_gap, far_gap):
    """pslot: the onset less the P-to-onset gap, the gap clipped as `rolled_knots` clips it
    (clip: to align_s less MIN_GAP_S; squeeze: to the onset less it); warp: the first knot of
    `knots_of_features`."""
    p = fs.FlowSamplerParams(timing="pslot", align_s=15.0, long_gap=long_gap)
    timing = np.array([[20.0, np.log(6.0)], [12.0, np.log(0.1)], [30.0, np.log(40.0)]])
    np.testing.assert_allclose(rep.decoded_p_knot(timing, p, 60.0),
                               [14.0, 12.0 - rep.MIN_GAP_S, 30.0 - far_gap])
    warp = fs.FlowSamplerParams(timing="warp", align_s=20.0)
    feats = rep.knot_features(np.array([[8.0, 15.0], [3.0, 4.0]]))
    np.testing.assert_allclose(rep.decoded_p_knot(feats, warp, 60.0), [8.0, 3.0])


def test_decode_with_quiet_before_p_changes_only_the_guard_before_the_p_knot():
    """The same features and Griffin-Lim seed decoded with and without the option: the records
    agree outside the n_fft-long guard before each record's P knot (up to the peak scaling,
    which the guard does not hold), and inside it the option only lowers the envelope. The
    record is scaled by its peak here: scaled by its spectrum (record_scale "spectrum"), the
    lower guard would rescale the whole record a little."""
    rng = np.random.default_rng(7)
    x = synthetic_records(rng, 3.0, np.array([5.0, 5.5, 6.0]), np.array([20.0, 60.0, 120.0]))
    x += 0.002 * np.abs(x).max() * rng.standard_normal(x.shape).astype(np.float32)
    on, off = (fs.FlowSamplerParams(quiet_before_p=q, record_scale="peak") for q in (True, False))
    feats = rep.encode(x, on)
    y_on, y_off = decode_features(feats, on), decode_features(feats, off)
    knot = rep.decoded_p_knot(feats["onset"].astype(np.float64), on, T / FS)
    t = np.arange(T) / FS
    for i in range(len(x)):
        guard = (t >= knot[i] - on.n_fft / FS) & (t < knot[i])
        np.testing.assert_allclose(y_on[i][:, ~guard], y_off[i][:, ~guard], rtol=1e-5,
                                   atol=1e-6 * np.abs(y_off[i]).max())
        assert (np.abs(y_on[i][:, guard]) <= np.abs(y_off[i][:, guard]) * (1 + 1e-5) + 1e-12).all()
    quieter = [np.sqrt((y[i, 2, (t >= knot[i] - 1) & (t < knot[i])] ** 2).mean())
               for y in (y_on, y_off) for i in range(len(x))]
    assert sum(quieter[:3]) < 0.8 * sum(quieter[3:])


def test_encode_decode_keeps_peak_and_fine_spectrum():
    rng = np.random.default_rng(2)
    p = fs.FlowSamplerParams(timing="roll", griffin_lim_iters=4, record_scale="peak")
    x = synthetic_records(rng, 3.0, np.array([5.0, 6.0]), np.array([20.0, 50.0]))
    feats = rep.encode(x, p)
    assert feats["level"].shape == (2, 1) and feats["onset"].shape == (2, 1)
    assert feats["coarse"].shape == (2, 1 + T // p.hop, 3 * (rep.band_of_bin(p).max() + 1))
    assert feats["fine"].shape == (2, 3 * p.n_fine)
    np.testing.assert_allclose(feats["level"][:, 0], np.log(np.abs(x).max(axis=(1, 2))),
                               rtol=1e-6)
    y = decode_features(feats, p)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(np.abs(y).max(axis=(1, 2)), np.abs(x).max(axis=(1, 2)),
                               rtol=1e-5)
    band = (rep.fine_centers(p) > 1) & (rep.fine_centers(p) < 20)
    rebuilt = rep.encode(y, p)["fine"].reshape(2, 3, -1)[..., band]
    wanted = feats["fine"].reshape(2, 3, -1)[..., band]
    # The shape of the spectrum is the decoder's to keep: within about 5 % (0.035 measured).
    # Its offset is the ratio of crest factors (peak / spectrum) of the random-phase record and
    # the original, since the peak is set to exp(level): -0.55 and +0.2 ln for these two.
    offset = (rebuilt - wanted).mean(axis=-1, keepdims=True)
    assert np.median(np.abs(rebuilt - wanted - offset)) < 0.05
    assert np.abs(offset).max() < 0.7
    np.testing.assert_allclose(rep.encode(y, p)["onset"], feats["onset"], atol=1.0)  # s


def test_record_scale_spectrum_keeps_the_spectrum_level_and_the_peak_follows():
    """record_scale "spectrum" decodes the same waveform as "peak" and scales it so that its
    fine spectrum is, on average over every value, the drawn level + fine spectrum; the peak
    then misses the level by the crest-factor offset that "peak" leaves in the spectrum."""
    rng = np.random.default_rng(2)
    p = fs.FlowSamplerParams(timing="roll", griffin_lim_iters=4)
    assert p.record_scale == "spectrum"  # the default
    x = synthetic_records(rng, 3.0, np.array([5.0, 6.0]), np.array([20.0, 50.0]))
    feats = rep.encode(x, p)
    wanted = feats["fine"].reshape(2, 3, -1) + feats["level"][:, :, None]
    by_peak = decode_features(feats, replace(p, record_scale="peak"))
    by_spectrum = decode_features(feats, p)
    offset = (rep.fine_spectrum(by_peak, p) - wanted).mean(axis=(1, 2))
    assert np.abs(offset).min() > 0.1  # the peak mode misses the spectrum level
    np.testing.assert_allclose(np.abs(by_peak).max(axis=(1, 2)), np.abs(x).max(axis=(1, 2)),
                               rtol=1e-5)
    np.testing.assert_allclose((rep.fine_spectrum(by_spectrum, p) - wanted).mean(axis=(1, 2)),
                               0.0, atol=1e-4)
    np.testing.assert_allclose(by_spectrum, by_peak * np.exp(-offset)[:, None, None],
                               rtol=1e-4, atol=1e-6 * np.abs(by_peak).max())


@pytest.mark.parametrize("timing, canvas", [("roll", "wrap"), ("pslot", "wrap"), ("warp", "wrap"),
                                            ("roll", "hold"), ("pslot", "hold")])
def test_canvas_frames_at_the_encoded_timing_are_the_encoded_frames(timing, canvas):
    """`canvas_frames` at the timing that `encode` returns (through `timing_knots`, as decode
    and the decoder-bias fit read it) rebuilds encode's own frames."""
    rng = np.random.default_rng(5)
    p = fs.FlowSamplerParams(timing=timing, align_s=20.0 if timing == "warp" else 15.0,
                             canvas=canvas)
    x = synthetic_records(rng, 3.0, rng.uniform(4, 6, 4), rng.uniform(10, 80, 4))
    feats = rep.encode(x, p)
    onset, knots = rep.timing_knots(feats["onset"], p, T / FS)
    xn = x / np.abs(x).max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(rep.canvas_frames(xn, onset, knots, p), feats["coarse"],
                               atol=2e-4)


def test_decoder_bias_is_the_decoders_mean_frame_error_and_asking_less_reduces_it():
    """`fit_decoder_bias` is the mean over records of the frames of their decoded records less
    their own. Decoding the frames less it (with another Griffin-Lim seed) brings the decoded
    frames' mean nearer the records' wherever the decoder sets them: outside the lowest band,
    whose content the long-period steps set after the last envelope projection, the cells it
    missed by more than 0.1 are missed by 30 % less here. The records have pre-event noise, as
    recorded ones do (a silent stretch sits at the log floor, which no request can lower)."""
    rng = np.random.default_rng(6)
    p = tiny_params(timing="pslot")
    x = synthetic_records(rng, 3.0, rng.uniform(4, 6, 24), rng.uniform(10, 80, 24))
    x += 0.01 * np.abs(x).max(axis=(1, 2), keepdims=True) * rng.standard_normal(x.shape)
    feats = rep.encode(x, p)
    bias = rep.fit_decoder_bias(feats, p, T)
    assert bias.shape == feats["coarse"].shape[1:] and torch.isfinite(bias).all()

    def mean_error(ask: np.ndarray, seed: int) -> np.ndarray:
        y = rep.decode(*(torch.from_numpy(v) for v in (feats["level"], feats["onset"], ask,
                                                     feats["fine"])), p,
                      torch.Generator().manual_seed(seed))
        yn = y / np.abs(y).max(axis=(1, 2), keepdims=True)
        onset, knots = rep.timing_knots(feats["onset"], p, T / FS)
        return (rep.canvas_frames(yn, onset, knots, p) - feats["coarse"]).mean(axis=0)

    np.testing.assert_allclose(bias.numpy(), mean_error(feats["coarse"], p.seed
                                                        + fs.CALIBRATION_SEED), atol=1e-5)
    before = mean_error(feats["coarse"], 1)
    after = mean_error(feats["coarse"] - bias.numpy(), 1)
    lowest = np.zeros(bias.shape[1], dtype=bool)
    lowest[::bias.shape[1] // 3] = True  # band 0 of each component
    missed = (np.abs(bias.numpy()) > 0.1) & ~lowest
    assert missed.sum() > 100
    assert np.sqrt((after[missed] ** 2).mean()) < 0.8 * np.sqrt((before[missed] ** 2).mean())


def p_and_s_records(rng: np.random.Generator, t_p: np.ndarray, t_s: np.ndarray) -> np.ndarray:
    """A weak P phase (0.15 of the S amplitude, vertical strongest) at t_p and an S phase on
    the horizontals at t_s (s), each a decaying noise burst."""
    t = np.arange(T) / FS
    out = np.empty((len(t_p), 3, T), np.float32)
    for i in range(len(t_p)):
        burst = lambda t0, tau: np.clip(t - t0, 0, None) * np.exp(-np.clip(t - t0, 0, None) / tau)
        p_wave = 0.15 * burst(t_p[i], 1.0) * np.array([0.5, 0.5, 1.0])[:, None]
        s_wave = burst(t_s[i], 3.0) * np.array([1.0, 1.0, 0.4])[:, None]
        out[i] = rng.standard_normal((3, T)) * (p_wave + s_wave)
    return out


def test_aic_p_knot_sits_at_the_p_arrival_where_the_arias_knot_lags_it():
    """p_knot "aic": the P knot is the vertical's AIC onset, within 0.1 s of the true P arrival
    of a weak P phase over quiet noise; the 1 % Arias time lags it by more than 0.5 s; pslot's
    timing feature is ln(onset - that knot)."""
    rng = np.random.default_rng(3)
    t_p, t_s = np.array([4.0, 9.0, 12.0]), np.array([10.0, 18.0, 24.0])
    x = p_and_s_records(rng, t_p, t_s) + 1e-3 * rng.standard_normal((3, 3, T)).astype(np.float32)
    xn = x / np.abs(x).max(axis=(1, 2))[:, None, None]
    aic = rep.p_knot_time(xn, fs.FlowSamplerParams(p_knot="aic"))
    arias = rep.p_knot_time(xn, fs.FlowSamplerParams(p_knot="arias"))
    np.testing.assert_allclose(aic, t_p, atol=0.1)
    assert (arias - t_p > 0.5).all()
    np.testing.assert_array_equal(arias, rep.onset_time(xn, 0.01))
    feats = rep.encode(x, fs.FlowSamplerParams(p_knot="aic"))
    np.testing.assert_allclose(np.exp(feats["onset"][:, 1]),
                               rep.onset_time(xn, 0.05) - aic, rtol=1e-5)


def test_picker_p_knot_finds_the_p_where_pre_event_noise_holds_the_1_percent_arias_time():
    """p_knot "picker": over pre-event noise that holds more than 1 % of the Arias intensity,
    the 1 % time falls before the P arrival and the "aic" knot (whose AIC window ends 1 s after
    it) lands in the noise, more than 3 s early; the picker's knot (its window ends past the
    vertical's half-maximum RMS) is within 0.3 s of the P arrival and is the realism metrics'
    own P pick."""
    rng = np.random.default_rng(3)
    t_p, t_s = np.array([15.0, 20.0, 25.0]), np.array([21.0, 28.0, 35.0])
    t = np.arange(T) / FS
    burst = lambda t0, tau: np.clip(t - t0, 0, None) * np.exp(-np.clip(t - t0, 0, None) / tau)
    x = np.stack([rng.standard_normal((3, T)) * (
        0.5 * burst(tp, 1.0) * np.array([0.3, 0.3, 1.0])[:, None]
        + burst(ts, 3.0) * np.array([1.0, 1.0, 0.4])[:, None] + 0.08)
        for tp, ts in zip(t_p, t_s)]).astype(np.float32)
    xn = x / np.abs(x).max(axis=(1, 2))[:, None, None]
    assert (rep.onset_time(xn, 0.01) < t_p - 3.0).all()
    aic = rep.p_knot_time(xn, fs.FlowSamplerParams(p_knot="aic"))
    picker = rep.p_knot_time(xn, fs.FlowSamplerParams(p_knot="picker"))
    assert (aic < t_p - 3.0).all()
    np.testing.assert_allclose(picker, t_p, atol=0.3)
    env_t, env = horizontal_envelope(xn, FS, 1.0, 0.5)
    picked, _ = pick_p_s(xn, FS, env_t, env)
    np.testing.assert_array_equal(picked, picker)
    feats = rep.encode(x, fs.FlowSamplerParams(p_knot="picker"))
    np.testing.assert_allclose(np.exp(feats["onset"][:, 1]),
                               rep.onset_time(xn, 0.05) - picker, rtol=1e-5)


def test_quadratic_mean_recovers_the_scenario_terms_and_is_held_linear_outside_the_range():
    """mean_quadratic: features that are an exact station term plus a quadratic in (M', lnR')
    are fitted exactly (the flow's residuals are zero); beyond the training range the mean
    continues with the linear slopes only (the quadratic terms held at the edge)."""
    rng = np.random.default_rng(5)
    n = 40
    codes = np.array(["A", "B"] * (n // 2))
    scenario = np.column_stack([rng.uniform(3.5, 5.5, n), rng.uniform(10, 120, n)])
    cond = lat.scenario_features(scenario)
    z = (cond - cond.mean(axis=0)) / cond.std(axis=0)
    y = ((codes == "B") * 0.7 + 0.5 * z[:, 0] - 0.3 * z[:, 1] + 0.2 * z[:, 0] ** 2
         - 0.1 * z[:, 0] * z[:, 1])[:, None]
    feats = {"level": y, "onset": np.hstack([y, 2 * y]), "coarse": np.repeat(y, 6, axis=1)
             .reshape(n, 3, 2), "fine": -y}
    stats = lat.fit_stats(feats, codes, scenario, ["A", "B"], True, quadratic=True)
    station = torch.as_tensor(np.where(codes == "A", 1, 2))
    zt = lat.standardise_scenario(scenario, stats)
    coarse, static = lat.mean_prediction(stats, station, zt)
    np.testing.assert_allclose(static[:, 0], y[:, 0], atol=1e-4)
    np.testing.assert_allclose(coarse, np.repeat(y, 6, axis=1), atol=1e-4)
    linear = lat.fit_stats(feats, codes, scenario, ["A", "B"], True)
    assert linear["static_std"][0] > 0.01 and "cond_lo" not in linear
    edge = stats["cond_hi"][None].clone()
    beyond = edge + torch.tensor([[1.0, 0.0]])
    at_edge, past = (lat.mean_prediction(stats, torch.tensor([1]), e)[1][0, 0]
                     for e in (edge, beyond))
    np.testing.assert_allclose(past - at_edge, 0.5, atol=1e-4)  # the linear M' slope only


def noisy_intercepts(rng: np.random.Generator, varying_sd: float, n: int = 40
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(truth, free estimate) of 30 stations' intercepts over (20 frames, 4 channels): a
    shared pattern, a site term per (station, channel), a time-varying station term of sd
    varying_sd; the estimate is the truth plus the mean of n records' unit noise."""
    shared = rng.normal(0.0, 1.0, (1, 20, 4))
    truth = (shared + rng.normal(0.0, 0.5, (30, 1, 4))
             + rng.normal(0.0, varying_sd, (30, 20, 4)))
    return truth, truth + rng.normal(0.0, 1.0 / np.sqrt(n), truth.shape)


def test_site_intercepts_pool_a_station_s_frames_only_where_its_frames_differ_by_noise():
    """site_intercepts: stations that differ by a site term alone (the same deviation in every
    frame) get it back from the mean of all their frames, at a third of the free fit's error;
    where the stations also differ frame by frame, by more than the noise, that is kept (the
    empirical-Bayes weight near 1). One station, or no noise, leaves the intercepts as they
    are."""
    rng = np.random.default_rng(0)
    counts, noise = np.full(30, 40), np.ones((20, 4))
    truth, free = noisy_intercepts(rng, 0.0)
    site = lat.site_intercepts(free, noise, counts)
    rms = lambda x: float(np.sqrt(np.mean(x ** 2)))  # noqa: E731
    assert rms(free - truth) > 0.15 and rms(site - truth) < rms(free - truth) / 3
    truth, free = noisy_intercepts(rng, 1.0)
    site = lat.site_intercepts(free, noise, counts)
    assert 0.97 < rms(site - truth) / rms(free - truth) < 1.03
    rest = lambda x: x - x.mean(axis=0) - (x - x.mean(axis=0)).mean(axis=1, keepdims=True)  # noqa
    assert np.corrcoef(rest(site).ravel(), rest(truth).ravel())[0, 1] > 0.98
    np.testing.assert_allclose(lat.site_intercepts(free[:1], noise, counts[:1]), free[:1])
    np.testing.assert_allclose(lat.site_intercepts(free, 0 * noise, counts), free)


def test_fit_stats_site_keeps_the_free_fit_for_training_and_the_site_term_for_sampling():
    """fit_stats(site=True): the residuals the flow learns ("_coarse_fit"), the slopes and the
    static intercepts are the free fit's; the coarse intercepts kept for the targets are
    `site_intercepts` of every station's free intercepts."""
    rng = np.random.default_rng(1)
    n, frames = 60, (5, 2)
    codes = np.array(["A", "B", "C"] * (n // 3))
    scenario = np.column_stack([rng.uniform(3.5, 5.5, n), rng.uniform(10, 120, n)])
    feats = {"level": rng.normal(size=(n, 1)), "onset": rng.normal(size=(n, 2)),
             "coarse": rng.normal(size=(n, *frames)), "fine": rng.normal(size=(n, 3))}
    free = lat.fit_stats(feats, codes, scenario, ["A", "B", "C"], True)
    site = lat.fit_stats(feats, codes, scenario, ["C", "A"], True, site=True)
    for key in ("_coarse_fit", "_static_fit", "coarse_slope", "coarse_std", "static_slope"):
        torch.testing.assert_close(site[key], free[key], rtol=0, atol=0)
    torch.testing.assert_close(site["static_icpt"], free["static_icpt"][[2, 0]])
    residual = feats["coarse"].reshape(n, -1) - free["_coarse_fit"].numpy()
    want = lat.site_intercepts(free["coarse_icpt"].numpy().reshape(3, *frames),
                              residual.var(axis=0).reshape(frames), np.full(3, 20))
    np.testing.assert_allclose(site["coarse_icpt"], want.reshape(3, -1)[[2, 0]], atol=1e-5)
    assert float((site["coarse_icpt"] - free["coarse_icpt"][[2, 0]]).abs().max()) > 0.01


def test_warp_frame_times_put_the_knots_in_place_and_invert():
    """Warped time: P knot at p_align_s, onset at align_s, slope 1 after it; the inverse map
    is the same piecewise-linear function the other way round."""
    hop_s = 64 / FS  # knots on the frame grid: frames 13 and 31
    p = fs.FlowSamplerParams(timing="warp", hop=64, align_s=31 * hop_s, p_align_s=13 * hop_s)
    t_p, t_s = np.array([3.0, 12.0]), np.array([6.0, 30.0])
    n = 1 + T // p.hop
    real_of_warped = rep.frame_times(np.stack([t_p, t_s], axis=1), p, n)  # (2, n)
    grid = np.arange(n) * hop_s
    np.testing.assert_allclose(real_of_warped[:, [0, 13, 31, 81]],
                               np.stack([[0.0] * 2, t_p, t_s, t_s + 50 * hop_s], 1), atol=1e-9)
    warped_of_real = rep.frame_times(np.stack([t_p, t_s], axis=1), p, n, inverse=True)
    for i in range(2):  # the inverse, piece by piece
        r = grid
        want = np.where(r < t_p[i], r * p.p_align_s / t_p[i],
                        np.where(r < t_s[i], p.p_align_s + (r - t_p[i]) * (p.align_s - p.p_align_s)
                                 / (t_s[i] - t_p[i]), p.align_s + r - t_s[i]))
        np.testing.assert_allclose(warped_of_real[i], want, atol=1e-9)


def test_resample_frames_interpolates_linearly_and_holds_the_ends():
    p = fs.FlowSamplerParams(hop=50)  # frames 0.5 s apart at 100 Hz
    frames = np.arange(10, dtype=np.float32)[None, None] * np.array([1.0, -2.0],
                                                                    np.float32)[None, :, None]
    at = np.array([[0.25, 1.0, -3.0, 99.0]])  # s: frame 0.5, frame 2, before, after
    out = rep.resample_frames(frames, at, p)
    assert out.shape == (1, 2, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [0.5, 2.0, 0.0, 9.0])
    np.testing.assert_allclose(out[0, 1], [-1.0, -4.0, 0.0, -18.0])


def test_resample_frames_on_a_circle_wraps_and_reads_the_first_frame_after_the_last():
    """period_s: times are read modulo the period, and between the last frame (4.5 s) and the
    period (5.25 s) the frames are interpolated toward the first one."""
    p = fs.FlowSamplerParams(hop=50)
    frames = np.arange(10, dtype=np.float32)[None, None] * np.float32(2.0)
    at = np.array([[0.25, -1.0, 4.5, 4.875, 5.25 + 0.5, -0.375]])
    out = rep.resample_frames(frames, at, p, period_s=5.25)
    np.testing.assert_allclose(out[0, 0], [1.0, 2 * 8.5, 18.0, 9.0, 2.0, 9.0])


def test_squeeze_frame_times_read_before_the_canvas_and_invert():
    """pslot with a canvas start before 0 (long_gap squeeze, `canvas_start`): warped 0 is the
    start, the P knot (before 0 here) sits at p_align_s and the onset at align_s; the inverse
    reads the real times from period + start on as a period earlier, so that every warped
    time it reads (before period + start) maps back to itself and the canvas's end is not read.
    A record whose canvas starts at 0 is placed as before."""
    hop_s = 64 / FS  # knots on the frame grid: frames 10 and 25
    p = fs.FlowSamplerParams(timing="pslot", hop=64, align_s=25 * hop_s, p_align_s=10 * hop_s,
                             long_gap="squeeze")
    n = 1 + T // p.hop
    onset = np.array([40.0, 20.0])
    knots = rep.rolled_knots(np.array([30.0, 4.0]), p, onset)
    start = rep.canvas_start(onset, knots, p)
    np.testing.assert_allclose(start, [p.align_s - 40.0, 0.0])
    clip = fs.FlowSamplerParams(timing="pslot", hop=64, align_s=p.align_s, p_align_s=p.p_align_s,
                                long_gap="clip")  # clip and shift: the canvas starts at 0
    np.testing.assert_array_equal(rep.canvas_start(onset, rep.rolled_knots(
        np.array([30.0, 4.0]), clip, onset), clip), [0.0, 0.0])
    real = rep.frame_times(knots, p, n, start_s=start, period_s=T / FS)
    np.testing.assert_allclose(real[0, [0, 10, 25, 30]], [p.align_s - 40.0, p.align_s - 30.0,
                                                          p.align_s, p.align_s + 5 * hop_s])
    np.testing.assert_allclose(real[1], rep.frame_times(knots[1:], p, n)[0])
    back = rep.frame_times(knots, p, n, inverse=True, start_s=start, period_s=T / FS)
    grid = np.arange(n) * hop_s
    circle = np.mod(real[0], T / FS)  # the real time of each warped frame, on the circle
    seam = T / FS + start[0]  # real times from here on are read as before the record's start
    read = (real[0] < seam) & (np.abs(circle - seam) > hop_s)  # the canvas's end is not read
    assert read.sum() == int(seam / hop_s) - 1
    np.testing.assert_allclose(np.interp(circle, grid, back[0], period=T / FS)[read], grid[read],
                               atol=0.03)  # the P knot falls between frames of the inverse
    assert (back[0] >= 0).all() and (back[0] < seam).all()


@pytest.mark.parametrize("timing, fractions", [("warp", (0.01, 0.05)),
                                               ("stretch", (0.01, 0.05, 0.95))])
def test_warped_encode_decode_keeps_the_knot_times(timing, fractions):
    """Timings "warp" / "stretch" with the 1 % Arias P knot: the features are ln onset,
    ln(onset - P knot) (and ln(end knot - onset)); a round trip puts the 1 %, 5 % (and 95 %)
    Arias times of the record back within a frame and a half (about 1 s) of the original ones,
    and keeps the peak. No random long-period phase: these records have no pre-event noise, so
    their content below 0.3 Hz is the event's, and spreading it over the record moves the 1 %
    Arias time (to 19.2 s from 26.6 s in the second record; docs/flow_sampler.md "The long-period
    phase")."""
    rng = np.random.default_rng(7)
    p = fs.FlowSamplerParams(timing=timing, align_s=20.0, p_align_s=8.0, end_align_s=35.0,
                             griffin_lim_iters=2, p_knot="arias", random_phase_hz=0.0,
                             record_scale="peak")
    x = p_and_s_records(rng, np.array([4.0, 10.0]), np.array([9.0, 26.0]))
    feats = rep.encode(x, p)
    xn = x / np.abs(x).max(axis=(1, 2))[:, None, None]
    times = np.stack([rep.onset_time(xn, f) for f in fractions], axis=1)
    assert feats["onset"].shape == (2, len(fractions))
    np.testing.assert_allclose(np.exp(feats["onset"]),
                               np.column_stack([times[:, 1], np.diff(times, axis=1)]), rtol=1e-5)
    y = decode_features(feats, p)
    yn = y / np.abs(y).max(axis=(1, 2))[:, None, None]
    for f, t in zip(fractions, times.T):
        np.testing.assert_allclose(rep.onset_time(yn, f), t, atol=1.0)
    np.testing.assert_allclose(np.abs(y).max(axis=(1, 2)), np.abs(x).max(axis=(1, 2)),
                               rtol=1e-5)


def test_pslot_rolls_the_onset_and_warps_only_the_frames_before_it():
    """Timing "pslot" (1 % Arias P knot): the features are the onset (s) and ln(onset - P
    knot); the frames from the onset on are roll's frames exactly (no interpolation there), the
    frames before it are resampled so that the P knot sits at p_align_s; a round trip keeps the
    1 % and 5 % Arias times within a frame and a half and the peak."""
    rng = np.random.default_rng(8)
    hop_s = 64 / FS
    p = fs.FlowSamplerParams(timing="pslot", align_s=25 * hop_s, p_align_s=10 * hop_s,
                             griffin_lim_iters=2, p_knot="arias", record_scale="peak",
                             long_gap="clip")
    x = p_and_s_records(rng, np.array([4.0, 10.0]), np.array([9.0, 26.0]))
    feats = rep.encode(x, p)
    xn = x / np.abs(x).max(axis=(1, 2))[:, None, None]
    t1, t5 = rep.onset_time(xn, 0.01), rep.onset_time(xn, 0.05)
    np.testing.assert_allclose(feats["onset"][:, 0], t5, rtol=1e-6)
    np.testing.assert_allclose(np.exp(feats["onset"][:, 1]), t5 - t1, rtol=1e-5)
    rolled = rep.encode(x, fs.FlowSamplerParams(timing="roll", align_s=p.align_s))
    np.testing.assert_array_equal(feats["coarse"][:, 25:], rolled["coarse"][:, 25:])
    assert not np.allclose(feats["coarse"][:, :25], rolled["coarse"][:, :25])
    np.testing.assert_allclose(
        rep.rolled_knots(np.array([0.0, 5.0, 99.0]), p, np.array([9.0, 9.0, 30.0]))[:, 0],
        [p.align_s - rep.MIN_GAP_S, p.align_s - 5.0, rep.MIN_GAP_S])
    squeeze = fs.FlowSamplerParams(timing="pslot", align_s=p.align_s, p_align_s=p.p_align_s,
                                   long_gap="squeeze")
    np.testing.assert_allclose(  # gaps kept to the onset less MIN_GAP_S and to MAX_GAP_S
        rep.rolled_knots(np.array([0.0, 5.0, 99.0, 99.0]), squeeze,
                        np.array([9.0, 9.0, 30.0, 60.0]))[:, 0],
        p.align_s - np.array([rep.MIN_GAP_S, 5.0, 30.0 - rep.MIN_GAP_S, rep.MAX_GAP_S]))
    y = decode_features(feats, p)
    yn = y / np.abs(y).max(axis=(1, 2))[:, None, None]
    np.testing.assert_allclose(rep.onset_time(yn, 0.01), t1, atol=1.0)
    np.testing.assert_allclose(rep.onset_time(yn, 0.05), t5, atol=1.0)
    np.testing.assert_allclose(np.abs(y).max(axis=(1, 2)), np.abs(x).max(axis=(1, 2)),
                               rtol=1e-5)


@pytest.mark.parametrize("long_gap, canvas", [("shift", "wrap"), ("squeeze", "wrap"),
                                             ("squeeze", "hold")])
def test_long_gap_keeps_a_far_records_p_in_the_slot(long_gap, canvas):
    """pslot with a P-to-onset gap longer than the canvas before the onset (a far record):
    long_gap clip clips the timing feature to align_s - MIN_GAP_S and leaves no P at the slot's
    knot; shift and squeeze keep the gap and put the P at the knot, the pre-event noise at the
    canvas's start, and a round trip keeps the onset (and, shift, the P knot; squeeze's
    decoding has a test of its own below) within a second. squeeze leaves the frames from the
    onset on as clip has them. A record whose gap the canvas holds encodes the same either
    way."""
    rng = np.random.default_rng(11)
    t_p, t_s = np.array([3.0, 8.0]), np.array([27.0, 14.0])
    never = np.full(2, 1e3)  # a P 0.6 of the S's amplitude: the vertical's strongest phase
    x = 4 * p_and_s_records(rng, t_p, never) + p_and_s_records(rng, never, t_s)
    x += 1e-4 * rng.standard_normal((2, 3, T)).astype(np.float32)
    clip, kept = (fs.FlowSamplerParams(long_gap=g, canvas=canvas) for g in ("clip", long_gap))
    fc, fk = rep.encode(x, clip), rep.encode(x, kept)
    xn = x / np.abs(x).max(axis=(1, 2))[:, None, None]
    onset, knot = rep.onset_time(xn, clip.align_fraction), rep.p_knot_time(xn, clip)
    assert abs(knot[0] - t_p[0]) < 0.3 and onset[0] - knot[0] > clip.align_s
    np.testing.assert_allclose(np.exp(fc["onset"][0, 1]), clip.align_s - rep.MIN_GAP_S)
    np.testing.assert_allclose(np.exp(fk["onset"][0, 1]), onset[0] - knot[0], rtol=1e-5)
    for key in fc:  # the near record: the same features
        np.testing.assert_array_equal(fc[key][1], fk[key][1])
    n_bands = fc["coarse"].shape[-1] // 3
    knot_frame = int(round(clip.p_align_s * FS / clip.hop))
    if long_gap == "squeeze":
        onset_frame = int(np.ceil(clip.align_s * FS / clip.hop))
        np.testing.assert_array_equal(fk["coarse"][0, onset_frame:], fc["coarse"][0, onset_frame:])

    def vertical(feats, frames):  # ln band energy of the far record's vertical
        return np.log(np.exp(feats["coarse"][0, frames, 2 * n_bands:]).sum(axis=-1))

    after = slice(knot_frame + 1, knot_frame + 3)
    assert (vertical(fk, after).min() - vertical(fk, slice(0, 3)).max()) > 5.0  # noise, P
    assert (vertical(fk, after).min() - vertical(fc, after).max()) > 3.0  # no P there
    y = decode_features(fk, kept)
    yn = y / np.abs(y).max(axis=(1, 2))[:, None, None]
    np.testing.assert_allclose(rep.onset_time(yn, kept.align_fraction), onset, atol=1.0)
    if long_gap == "shift":  # squeeze's own decoding test is below
        np.testing.assert_allclose(rep.p_knot_time(yn, kept), knot, atol=1.0)
    np.testing.assert_allclose(rep.decoded_p_knot(fk["onset"].astype(np.float64), kept, 60.0),
                               knot, atol=0.02)


def test_long_gap_squeeze_decodes_a_far_records_start_from_the_slot():
    """squeeze: decoding reads a far record's start (before the onset less align_s) from the
    frames before the onset, not from the canvas's end as clip does, so silencing the canvas's
    end keeps its P: the vertical's power in 1.5 s from the P is > 10 dB over the 2 s before."""
    rng = np.random.default_rng(11)
    never = np.full(1, 1e3)
    x = 4 * p_and_s_records(rng, np.array([3.0]), never)
    x += p_and_s_records(rng, never, np.array([27.0]))
    x += 1e-4 * rng.standard_normal((1, 3, T)).astype(np.float32)
    t = np.arange(T) / FS

    def p_step(p):  # dB, the decoded vertical, the canvas's last 12 s silenced
        feats = rep.encode(x, p)
        feats["coarse"][:, int(48.0 * FS / p.hop):] = np.log(p.log_eps)
        v = decode_features(feats, p)[0, 2].astype(np.float64)
        power = [np.mean(v[(t >= a) & (t < b)] ** 2) for a, b in ((3.0, 4.5), (0.5, 2.5))]
        return 10 * np.log10(power[0] / max(power[1], 1e-30))

    assert p_step(fs.FlowSamplerParams(long_gap="squeeze")) > 10.0
    assert p_step(fs.FlowSamplerParams(long_gap="clip")) < 3.0


@pytest.mark.parametrize("overrides, match", [
    (dict(timing="shift"), "timing = 'shift'"),
    (dict(timing="warp", p_align_s=15.0), r"p_align_s = 15.0 \(warp: must be in \(0, align_s"),
    (dict(timing="warp", p_fraction=0.05), r"p_fraction = 0.05 \(warp: must be in"),
    (dict(timing="stretch", end_align_s=15.0), r"end_align_s = 15.0 \(stretch: must be > "),
    (dict(timing="stretch", end_fraction=1.0), r"end_fraction = 1.0 \(stretch: must be in"),
    (dict(timing="stretch", p_align_s=0.0), r"p_align_s = 0.0 \(stretch: must be in"),
    (dict(timing="pslot", p_align_s=16.0), r"p_align_s = 16.0 \(pslot: must be in \(0, align_s"),
    (dict(p_knot="pick"), r"p_knot = 'pick' \(not one of \('arias', 'aic', 'picker'\)\)"),
    (dict(long_gap="wrap"), r"long_gap = 'wrap' \(not one of \('clip', 'shift', 'squeeze'\)\)"),
    (dict(canvas="clip"), r"canvas = 'clip' \(not one of \('wrap', 'hold'\)\)"),
    (dict(record_scale="energy"),
     r"record_scale = 'energy' \(not one of \('peak', 'spectrum'\)\)"),
])
def test_bad_timing_params_are_refused(overrides, match):
    with pytest.raises(fs.FlowSamplerError, match=match):
        fs.FlowSamplerParams(**overrides)


def test_envelope_projection_moves_the_band_magnitudes_to_the_target():
    """One projection of stationary white noise onto a Gaussian band envelope: the frame
    magnitudes follow the target to 0.12 ln (median, measured; not exact, as the overlap-add of
    neighbouring frames mixes them) from about 4 ln before; a zero target gives silence."""
    rng = np.random.default_rng(5)
    p = fs.FlowSamplerParams()
    x = torch.from_numpy(rng.standard_normal((1, 3, T)).astype(np.float32))
    spec = rep.stft(x, p.n_fft, p.hop)
    n_bands, n_frames = rep.band_magnitude(spec, p).shape[-2:]
    t = torch.arange(n_frames, dtype=torch.float32) * p.hop / FS
    target = torch.exp(-((t - 20.0) / 4.0) ** 2)[None, None, None].expand(1, 3, n_bands, -1)
    y = rep.envelope_project(x, target.contiguous(), p)
    got = rep.band_magnitude(rep.stft(y, p.n_fft, p.hop), p)
    strong = target > 0.1
    ln_err = (torch.log(got[strong]) - torch.log(target[strong])).abs()
    before = (torch.log(rep.band_magnitude(spec, p)[strong]) - torch.log(target[strong])).abs()
    assert float(ln_err.median()) < 0.2 and float(before.median()) > 2.0
    assert float(got[..., t > 40].max()) < 0.05 * float(got.max())  # silent where the target is
    assert torch.count_nonzero(rep.envelope_project(x, torch.zeros_like(target), p)) == 0


def test_decoder_without_envelope_rounds_is_griffin_lim_plus_equalisation():
    rng = np.random.default_rng(6)
    p0 = fs.FlowSamplerParams(griffin_lim_iters=2, envelope_rounds=0, record_scale="peak")
    x = synthetic_records(rng, 3.0, np.array([5.0]), np.array([30.0]))
    feats = {k: torch.from_numpy(v) for k, v in rep.encode(x, p0).items()}
    args = (feats["level"], feats["onset"], feats["coarse"], feats["fine"])
    y0 = rep.decode(*args, p0, torch.Generator().manual_seed(0))
    y4 = rep.decode(*args, replace(p0, envelope_rounds=4), torch.Generator().manual_seed(0))
    assert not np.allclose(y0, y4)  # the rounds act
    np.testing.assert_allclose(np.abs(y4).max(), np.abs(x).max(), rtol=1e-5)


@pytest.mark.parametrize("key", ["envelope_rounds", "griffin_lim_iters", "long_period_hz",
                                 "random_phase_hz", "num_threads"])
def test_negative_decoder_rounds_are_refused(key):
    with pytest.raises(fs.FlowSamplerError, match=f"{key} = -1"):
        fs.FlowSamplerParams(**{key: -1})


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_dropout_outside_unit_interval_is_refused(value):
    with pytest.raises(fs.FlowSamplerError, match=rf"dropout = {value} \(must be in \[0, 1\)\)"):
        fs.FlowSamplerParams(dropout=value)


def test_dropout_acts_in_training_only():
    torch.manual_seed(0)
    net = fnet.VelocityNet(fs.FlowSamplerParams(dropout=0.5), n_frames=10, n_coarse=6,
                         n_static=4, n_stations=2)
    for film in net.films:  # non-zero FiLM so that the blocks reach the output
        torch.nn.init.normal_(film.weight)
    args = (torch.randn(3, 10, 6), torch.randn(3, 4), torch.rand(3), torch.tensor([0, 1, 2]),
            torch.randn(3, 2))
    net.train()
    assert not torch.allclose(net(*args)[0], net(*args)[0])  # a fresh mask per call
    net.eval()
    torch.testing.assert_close(net(*args)[0], net(*args)[0])


def test_onset_and_roll():
    x = np.zeros((2, 3, 100))
    x[0, 0, 30] = 1.0
    x[1, 2, 70] = 2.0
    np.testing.assert_allclose(rep.onset_time(x, 0.05, fs=10.0), [3.0, 7.0])
    rolled = rep.roll(x, np.array([5, -10]))
    assert rolled[0, 0, 35] == 1.0 and rolled[1, 2, 60] == 2.0
    np.testing.assert_array_equal(rep.roll(rolled, np.array([-5, 10])), x)


def test_move_rolls_or_shifts_with_the_edge_mirrored():
    x = np.tile(np.arange(10.0), (2, 1, 1))  # (2, 1, 10)
    shift = np.array([3, -2])
    np.testing.assert_array_equal(rep.move(x, shift, fs.FlowSamplerParams()), rep.roll(x, shift))
    held = rep.move(x, shift, fs.FlowSamplerParams(canvas="hold"))
    np.testing.assert_array_equal(held[0, 0], [3, 2, 1, 0, 1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(held[1, 0], [2, 3, 4, 5, 6, 7, 8, 9, 8, 7])


def test_canvas_shift_moves_the_frames_by_whole_hops_and_the_waveform_by_the_rest():
    shift = np.array([130, -130, 64])  # samples (hop 64): the onsets below to align_s 15 s
    onset = 15.0 - shift / FS
    hold = fs.FlowSamplerParams(timing="roll", canvas="hold")
    wave, frames = rep.canvas_shift(onset, None, hold)
    np.testing.assert_array_equal(wave, [2, 62, 0])
    np.testing.assert_allclose(frames, [1.28, -1.92, 0.64])
    wave, frames = rep.canvas_shift(onset, None, fs.FlowSamplerParams(timing="roll"))
    np.testing.assert_array_equal(wave, shift)
    assert not frames.any()


@pytest.mark.parametrize("timing", ["roll", "pslot"])
def test_held_canvas_keeps_a_quiet_start_quiet_where_the_wrapped_one_fills_it(timing):
    """A record as real ones are: 20 s of quiet pre-event noise, then strong motion whose coda
    is still loud at the record's end (onset later than align_s). Rolled onto the canvas, its
    start follows its coda there, and decoding (long-period steps off) leaves coda energy in
    the record's first seconds (measured: 47-56 x the noise's rms); with the ends held they
    keep about the noise level (0.9-1.7 x), unless the long-period steps, which act on the whole
    record at once, spread the coda's long periods over it again (20-92 x)."""
    rng = np.random.default_rng(3)
    t = np.arange(T) / FS
    env = np.where(t < 20.0, 1e-3, np.exp(-(t - 20.0) / 40.0))
    x = (rng.standard_normal((2, 3, T)) * env).astype(np.float32)

    def first_seconds_gain(canvas: str, steps_off: bool = True) -> np.ndarray:
        p = fs.FlowSamplerParams(timing=timing, canvas=canvas)
        if steps_off:
            p = fs.FlowSamplerParams(timing=timing, canvas=canvas, long_period_hz=0.0,
                                     random_phase_hz=0.0)
        y = decode_features(rep.encode(x, p), p)
        return np.sqrt((y[..., :300] ** 2).mean(axis=(1, 2)) / (x[..., :300] ** 2).mean(
            axis=(1, 2)))

    assert (first_seconds_gain("wrap") > 10.0).all()
    assert (first_seconds_gain("hold") < 3.0).all()
    assert (first_seconds_gain("hold", steps_off=False) > 10.0).all()


@pytest.mark.parametrize("bad, match", [
    (np.full((1, 3, T), np.nan, np.float32), "NaN"),
    (np.zeros((1, 3, T), np.float32), "all zeros"),
    (np.ones((1, 2, T), np.float32), "shape"),
])
def test_encode_refuses_bad_records(bad, match):
    with pytest.raises(fs.FlowSamplerError, match=match):
        rep.encode(bad, fs.FlowSamplerParams())


@pytest.mark.parametrize("m, r, match", [
    ([np.nan], [10.0], "magnitude must be finite"),
    ([5.0], [-1.0], "distance_km must be finite and > 0"),
    ([5.0, 6.0], [10.0], "equal"),
    ([], [], "n must be >= 1"),
])
def test_check_scenario_refuses(m, r, match):
    with pytest.raises(UserError, match=match):
        fs.check_scenario(np.array(m), np.array(r))


def test_params_from_a_mapping_refuse_unknown_keys_and_wrong_types():
    """A checkpoint's params are checked as params.yaml's are: an unknown key, a string where a
    bool is wanted (it would be truthy) and a float where an int is wanted are refused."""
    with pytest.raises(fs.FlowSamplerError, match="unknown key generators.flow.bogus"):
        fs.FlowSamplerParams.from_dict({"d_model": 8, "bogus": 1})
    with pytest.raises(fs.FlowSamplerError, match="quiet_before_p: expected bool, got str"):
        fs.FlowSamplerParams.from_dict({"quiet_before_p": "yes"})
    with pytest.raises(fs.FlowSamplerError, match="prior_fine: expected int, got float 1.5"):
        fs.FlowSamplerParams.from_dict({"prior_fine": 1.5})
    assert fs.FlowSamplerParams.from_dict({"lr": 1}).lr == 1.0  # an int is a float


# --------------------------------------------------------------------------------------------
# training and sampling


def test_training_writes_checkpoint_and_both_phases(trained):
    sampler, out = trained
    ckpt = torch.load(out / "model.pt", weights_only=True)
    assert ckpt["kind"] == "timesnet-flow" and ckpt["format"] == 1
    losses = pd.read_csv(out / "losses.tsv", sep="\t")
    assert list(losses["phase"]) == ["pretrain", "finetune", "finetune"]
    assert np.isfinite(losses["train_loss"]).all()
    assert sampler.stations == ["A", "B"]


def test_training_without_validation_records_skips_the_validation_loss(prepared, tmp_path):
    """A corpus whose pre-training stations have no val split (few records per station, as a
    real corpus can have) trains: the validation loss is left empty, and the sampler draws."""
    no_val = resplit(prepared, tmp_path / "no_val", "split", "val", "train")
    sampler = fs.train_sampler(no_val, tiny_params(), tmp_path / "m", raw_dir=tmp_path / "none",
                               log=lambda _: None)
    losses = pd.read_csv(tmp_path / "m" / "losses.tsv", sep="\t")
    assert losses["val_loss"].isna().all() and np.isfinite(losses["train_loss"]).all()
    sample_and_reload(sampler, tmp_path / "m" / "model.pt", "A", np.array([5.0]),
                      np.array([30.0]), seed=1)


def test_scenarios_are_the_training_rows_of_the_station(trained, prepared):
    sampler, _ = trained
    index = pd.read_csv(prepared / "index.csv")
    rows = index[(index["station"] == "B") & (index["split"] == "train")]
    np.testing.assert_allclose(sampler.scenarios("B"), rows[["magnitude", "distance_km"]])


def test_sample_shape_determinism_and_conditioning(trained):
    sampler, _ = trained
    m, r = np.array([5.0, 5.5, 4.5]), np.array([20.0, 40.0, 80.0])
    a = sampler.sample("A", m, r, seed=3)
    assert a.shape == (3, 3, T) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, sampler.sample("A", m, r, seed=3))
    assert not np.allclose(a, sampler.sample("A", m, r, seed=4))
    assert not np.allclose(a, sampler.sample("B", m, r, seed=3))  # station reaches the output
    assert not np.allclose(a, sampler.sample("A", m + 1.0, r, seed=3))  # so does M


@pytest.mark.parametrize("timing, n_timing", [("warp", 2), ("stretch", 3), ("pslot", 2)])
def test_warped_timings_train_sample_and_round_trip_their_state(prepared, tmp_path, timing,
                                                                n_timing):
    """timing "warp" / "stretch" end to end: 2 / 3 timing scalars in the static part, seeded
    records that start and end where a record can (finite, peak exp(level)), a state that
    reloads, and a retrain with the same seed that writes the same losses.tsv bytes."""
    p = tiny_params(timing=timing, align_s=20.0, end_align_s=30.0)
    sampler = fs.train_sampler(prepared, p, tmp_path / "m", raw_dir=tmp_path / "none",
                               log=lambda _: None)
    assert sampler.net.n_scalars == 1 + n_timing
    assert sampler.stats["static_std"].numel() == 1 + n_timing + 3 * p.n_fine
    m, r = np.array([5.0, 5.5, 4.5]), np.array([20.0, 40.0, 80.0])
    sample_and_reload(sampler, tmp_path / "m" / "model.pt", "B", m, r, seed=3)
    if timing == "stretch":
        fs.train_sampler(prepared, p, tmp_path / "m2", raw_dir=tmp_path / "none",
                         log=lambda _: None)
        assert (tmp_path / "m" / "losses.tsv").read_bytes() == \
            (tmp_path / "m2" / "losses.tsv").read_bytes()


def test_real_records_profile_trains_samples_and_round_trips_its_state(prepared, tmp_path,
                                                                      trained):
    """The decoder settings for real records (REAL_RECORDS: canvas hold, long_gap shift, the
    long-period steps off, quiet before the P knot) end to end: trained (the decoder-bias fit
    included), seeded records, a state that reloads with them; a checkpoint from before the
    canvas option loads as wrap."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "ingest.json").write_text("{}\n")  # what `ingest` writes beside real records
    lines = []
    sampler = fs.train_sampler(prepared, tiny_params(**fs.REAL_RECORDS), tmp_path / "m",
                               raw_dir=raw, log=lines.append)
    assert sampler.params.canvas == "hold" and not any("warning" in x for x in lines)
    sample_and_reload(sampler, tmp_path / "m" / "model.pt", "A", np.array([5.0, 4.5]),
                      np.array([20.0, 60.0]), seed=3)
    old = trained[0].state()
    del old["params"]["canvas"]
    assert fs.FlowSampler.from_state(old).params.canvas == "wrap"


def test_real_records_decoded_with_the_simulated_corpus_settings_get_a_warning(tmp_path):
    """Beside ingested records (ingest.json) every setting of the simulated corpus's is named
    with the real records' ones; the real records' settings, or a corpus that `ingest` did not
    write, get none."""
    assert fs.real_records_warning(tmp_path, fs.FlowSamplerParams()) is None
    (tmp_path / "ingest.json").write_text("{}\n")
    message = fs.real_records_warning(tmp_path, fs.FlowSamplerParams(long_gap="shift"))
    assert message == (
        f"warning: {tmp_path} holds real records (ingest.json), decoded with the simulated "
        "corpus's canvas 'wrap', long_period_hz 0.6, random_phase_hz 0.3, quiet_before_p False; "
        "real records take canvas 'hold', long_gap 'shift', long_period_hz 0.0, "
        "random_phase_hz 0.0, quiet_before_p True (README \"Run it on your own AFAD records\")")
    assert fs.real_records_warning(tmp_path, fs.FlowSamplerParams(**fs.REAL_RECORDS)) is None


def test_aic_knot_and_quadratic_mean_train_sample_and_round_trip_their_state(prepared,
                                                                            tmp_path):
    """p_knot "aic" with mean_quadratic end to end: five scenario terms in the stats, finite
    seeded records of the checkpoint's peak, a state that reloads to the same records; a
    checkpoint without p_knot (older) loads with the 1 % Arias knot it was trained with."""
    p = tiny_params(p_knot="aic", mean_quadratic=True)
    sampler = fs.train_sampler(prepared, p, tmp_path / "m", raw_dir=tmp_path / "none",
                               log=lambda _: None)
    assert sampler.stats["coarse_slope"].shape[0] == 5
    m, r = np.array([5.0, 7.5]), np.array([20.0, 40.0])
    sample_and_reload(sampler, tmp_path / "m" / "model.pt", "A", m, r, seed=1)
    old = sampler.state()  # written before p_knot existed: trained with the 1 % Arias knot
    del old["params"]["p_knot"]
    assert fs.FlowSampler.from_state(old).params.p_knot == "arias"


def test_fixed_periods_train_from_the_data_and_do_not_depend_on_the_batch(prepared, tmp_path):
    """period_selection "fixed": the frequencies come from the training features and travel in
    the checkpoint; a record's velocity is the same alone and in a batch (with "batch" it is
    not: the batch picks the periods)."""
    sampler = fs.train_sampler(prepared, tiny_params(period_selection="fixed"), tmp_path / "m",
                               raw_dir=tmp_path / "none", log=lambda _: None)
    freq = [b.freq.tolist() for b in sampler.net.blocks]
    assert all(f == freq[0] and len(f) == 2 and min(f) >= 1 for f in freq)
    again = fs.FlowSampler.from_state(torch.load(tmp_path / "m" / "model.pt",
                                                 weights_only=True)["state"])
    assert [b.freq.tolist() for b in again.net.blocks] == freq
    torch.manual_seed(1)
    n, t = 6, sampler.n_frames
    n_coarse, n_static = lat.latent_sizes(sampler.stats, t, sampler.net.n_scalars)
    args = (torch.randn(n, t, n_coarse), torch.randn(n, n_static), torch.rand(n),
            torch.tensor([1, 2, 1, 2, 1, 2]), torch.randn(n, 2))
    with torch.no_grad():
        together = again.net(*args)[0]
        for i in range(n):
            alone = again.net(*(a[i:i + 1] for a in args))[0]
            torch.testing.assert_close(alone[0], together[i], rtol=1e-5, atol=1e-5)


def test_principal_latent_round_trips_whitens_and_keeps_the_scalars():
    """coarse_pcs, fine_pcs, record_pcs at full rank: to_latent then from_latent is the
    identity; every kept component has unit rms on the data it was fit to; the scalars (level,
    timing) pass unchanged; the axes are the same for the same data. Truncated: the part
    rebuilt is the projection onto the leading axes, whose variance is the largest."""
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(6, 6, generator=g)  # correlated channels
    coarse = torch.randn(40, 10, 6, generator=g) @ mix
    static = torch.randn(40, 3 + 8, generator=g) * torch.linspace(0.5, 3.0, 11)
    stats = {"coarse_std": torch.ones(60), "static_std": torch.ones(11)}
    p = fs.FlowSamplerParams(coarse_pcs=6, fine_pcs=8, record_pcs=5)
    full = stats | lat.fit_latent(coarse, static, p)
    lc, ls = lat.to_latent(coarse, static, full, 3)
    assert lat.latent_sizes(full, 10, 3) == (6, 3 + 5 + 8) == (lc.shape[-1], ls.shape[1])
    torch.testing.assert_close(ls[:, :3], static[:, :3])
    torch.testing.assert_close(lc.reshape(-1, 6).pow(2).mean(0), torch.ones(6), atol=1e-3,
                               rtol=0)
    torch.testing.assert_close(ls[:, 3:].pow(2).mean(0), torch.ones(13), atol=1e-3, rtol=0)
    back = lat.from_latent(lc, ls, full, 3)
    torch.testing.assert_close(back[0], coarse, atol=1e-4, rtol=0)
    torch.testing.assert_close(back[1], static, atol=1e-4, rtol=0)
    for key, axes in lat.fit_latent(coarse, static, p).items():
        torch.testing.assert_close(axes, full[key], atol=0, rtol=0)
    two = stats | lat.fit_latent(coarse, static, fs.FlowSamplerParams(
        coarse_pcs=2, record_pcs=0, record_prior=False, remainder_gauss=False))
    rebuilt = lat.from_latent(*lat.to_latent(coarse, static, two, 3), two, 3)[0]
    resid = (coarse - rebuilt).reshape(-1, 6)
    total = coarse.reshape(-1, 6).pow(2).sum()
    assert resid.pow(2).sum() < 0.5 * total  # 2 of 6 correlated channels hold most of it
    torch.testing.assert_close(resid @ two["coarse_axes"], torch.zeros(400, 2), atol=1e-4,
                               rtol=0)


def test_remainder_scale_gives_every_cell_unit_rms_and_round_trips():
    """What the record components leave is divided by its per-(frame, channel) training rms:
    each cell of the latent has rms 1 on the fitting data (here the cells' scales differ 20x),
    from_latent undoes it; remainder_scale False leaves the remainder as it is."""
    g = torch.Generator().manual_seed(0)
    scale = torch.linspace(0.1, 2.0, 10 * 6).reshape(10, 6)
    coarse = torch.randn(200, 10, 6, generator=g) * scale
    static = torch.randn(200, 3 + 4, generator=g)
    stats = {"coarse_std": torch.ones(60), "static_std": torch.ones(7)}
    on = stats | lat.fit_latent(coarse, static, fs.FlowSamplerParams(
        record_pcs=4, remainder_scale=True, remainder_gauss=False))
    lc, ls = lat.to_latent(coarse, static, on, 3)
    torch.testing.assert_close(lc.pow(2).mean(0), torch.ones(10, 6), atol=1e-4, rtol=0)
    back = lat.from_latent(lc, ls, on, 3)
    torch.testing.assert_close(back[0], coarse, atol=1e-4, rtol=0)
    off = stats | lat.fit_latent(coarse, static, fs.FlowSamplerParams(
        record_pcs=4, remainder_scale=False, remainder_gauss=False))
    assert "remainder_rms" not in off
    rms_off = lat.to_latent(coarse, static, off, 3)[0].pow(2).mean(0).sqrt()
    assert rms_off.max() / rms_off.min() > 10  # the cells keep their own scales


def test_remainder_ar_whitens_a_known_autoregression_and_round_trips():
    """Frames drawn from a known VAR(1) y_t = A y_(t-1) + L e_t: fit_ar recovers A and L,
    to_latent turns the frames into innovations with identity covariance and no lag-1
    correlation (the frames have 0.6), and from_latent colours them back exactly."""
    g = torch.Generator().manual_seed(0)
    c, t, n = 4, 30, 400
    a = 0.6 * torch.eye(c) + 0.1 * torch.diag(torch.ones(c - 1), 1)
    chol = torch.linalg.cholesky(torch.eye(c) * 0.5 + 0.2)
    frames = [torch.randn(n, c, generator=g)]
    for _ in range(1, t):
        frames.append(frames[-1] @ a.T + torch.randn(n, c, generator=g) @ chol.T)
    y = torch.stack(frames, dim=1)
    static = torch.randn(n, 3, generator=g)
    stats = {"coarse_std": torch.ones(t * c), "static_std": torch.ones(3)}
    stats |= lat.fit_latent(y, static, fs.FlowSamplerParams(
        record_pcs=0, record_prior=False, remainder_ar=True, remainder_gauss=False))
    torch.testing.assert_close(stats["ar_coef"], a, atol=0.03, rtol=0)
    torch.testing.assert_close(stats["ar_chol"], chol, atol=0.03, rtol=0)
    lag1 = lambda x: float((x[:, 1:] * x[:, :-1]).mean() / x.pow(2).mean())  # noqa: E731
    assert lag1(y) > 0.5
    e, _ = lat.to_latent(y, static, stats, 3)
    assert abs(lag1(e)) < 0.02
    torch.testing.assert_close(torch.cov(e.reshape(-1, c).T), torch.eye(c), atol=0.05, rtol=0)
    torch.testing.assert_close(lat.from_latent(e, static, stats, 3)[0], y, atol=1e-3, rtol=0)


def test_remainder_gauss_maps_a_skewed_marginal_onto_a_normal_and_back():
    """Channels with skewed marginals of different scales (negative gamma, skewness -1.4):
    to_latent gives every channel mean 0, std 1 and no skew; from_latent inverts it to float
    precision; standard-normal latents decode to the channels' own skewness (the flow's Gaussian
    output gets the real marginal), including values beyond the end knots (linear tails)."""
    g = torch.Generator().manual_seed(2)
    scale = torch.linspace(0.5, 2.0, 4)
    y = -torch._standard_gamma(torch.full((500, 20, 4), 2.0), generator=g) * scale
    static = torch.randn(500, 3, generator=g)
    stats = {"coarse_std": torch.ones(80), "static_std": torch.ones(3)}
    stats |= lat.fit_latent(y, static, fs.FlowSamplerParams(record_pcs=0, record_prior=False,
                                                            remainder_gauss=True))
    skew = lambda x: ((x - x.mean(0)) ** 3).mean(0) / x.std(0) ** 3  # noqa: E731
    z, _ = lat.to_latent(y, static, stats, 3)
    flat = z.reshape(-1, 4)
    torch.testing.assert_close(flat.mean(0), torch.zeros(4), atol=0.02, rtol=0)
    torch.testing.assert_close(flat.std(0), torch.ones(4), atol=0.03, rtol=0)
    assert skew(flat).abs().max() < 0.05 and skew(y.reshape(-1, 4)).max() < -1.2
    torch.testing.assert_close(lat.from_latent(z, static, stats, 3)[0], y, atol=1e-4, rtol=0)
    normal = torch.randn(500, 20, 4, generator=g)
    back = lat.from_latent(normal, static, stats, 3)[0].reshape(-1, 4)
    torch.testing.assert_close(skew(back), skew(y.reshape(-1, 4)), atol=0.2, rtol=0)
    tails = torch.tensor([-6.0, -3.5, 0.0, 3.5, 6.0])[None, :, None].expand(1, 5, 4)
    out = lat.gaussianise(tails, stats, inverse=True)[0]  # beyond the end knots at +-3
    assert torch.isfinite(out).all() and (out.diff(dim=0) > 0).all()


class _StillFlow(torch.nn.Module):
    """A velocity of zero: integrate returns its starting noise (unit rms in every cell)."""

    def forward(self, xc, xs, t, station, scenario):
        return torch.zeros_like(xc), torch.zeros_like(xs)


def test_calibrate_frames_gives_each_cell_the_training_rms():
    """The gain is the training records' rms over the flow's, cell by cell: with a flow whose
    samples are its unit-rms starting noise, the gain recovers the records' per-cell scales
    (0.2-2.0, 10x apart) to the sampling error of 3000 draws."""
    g = torch.Generator().manual_seed(1)
    n, t, c = 3000, 6, 5
    scale = torch.linspace(0.2, 2.0, t * c).reshape(t, c)
    real = lat.Batchable(coarse=torch.randn(n, t, c, generator=g) * scale,
                        static=torch.randn(n, 4, generator=g),
                        station=torch.ones(n, dtype=torch.long), scenario=torch.zeros(n, 2))
    gain = cal.calibrate_frames(_StillFlow(), real, tiny_params(batch_generate=500))
    assert gain.shape == (t, c)
    torch.testing.assert_close(gain, scale, rtol=0.06, atol=0)
    assert not torch.allclose(gain, torch.ones(t, c), rtol=0.5)


def test_remainder_calibrate_leaves_the_flow_and_scales_its_frames(trained, prepared, tmp_path):
    """The gain (on by default) is fitted after training: the network's weights are those of the
    same run without it; sampling multiplies the flow's frame coordinates by it; a checkpoint
    whose params and stats disagree is refused; an older checkpoint loads with the option off."""
    sampler, out = trained
    plain = retrained(sampler, prepared, tmp_path, remainder_calibrate=False)
    gain = sampler.stats["frame_gain"]
    assert gain.shape == (plain.n_frames, plain.stats["coarse_std"].numel() // plain.n_frames)
    assert torch.isfinite(gain).all() and (gain >= 0).all() and gain.max() > 0
    assert "frame_gain" not in plain.stats
    scenario = lat.standardise_scenario(np.array([[5.0, 30.0], [5.5, 60.0]]), sampler.stats)

    def frames(stats):
        s = fs.FlowSampler(sampler.params, sampler.net, stats, sampler.stations,
                           sampler._scenarios, sampler.n_frames, sampler.n_samples)
        return s.features(1, scenario, torch.Generator().manual_seed(3))[0]

    zero, base, doubled = (frames(sampler.stats | {"frame_gain": k * torch.ones_like(gain)})
                           for k in (0.0, 1.0, 2.0))
    # the gain scales the frame remainder; the record components (record_pcs) are left
    torch.testing.assert_close(doubled - base, base - zero, atol=1e-5, rtol=0)
    assert (base - zero).abs().max() > 0.1
    assert_state_refused(sampler, lambda st: st["stats"].pop("frame_gain"),
                         "remainder_calibrate = True, but the statistics lack the frame gain")
    assert_state_refused(sampler, lambda st: st["stats"].update(frame_gain=gain[1:]),
                         "frame_gain has shape")
    old = sampler.state()  # written before the option existed: trained without it
    del old["params"]["remainder_calibrate"], old["stats"]["frame_gain"]
    assert fs.FlowSampler.from_state(old).params.remainder_calibrate is False
    m, r = np.array([5.0]), np.array([40.0])
    again = fs.FlowSampler.from_state(torch.load(out / "model.pt", weights_only=True)["state"])
    np.testing.assert_array_equal(again.sample("A", m, r, seed=4), sampler.sample("A", m, r, 4))


@pytest.mark.parametrize("prior_records", ["target", "all"])
def test_record_prior_learns_a_station_and_scenario_conditional_distribution(prior_records):
    """Two stations with different means and spreads, a mean that moves with the first
    scenario value and a second value that moves with a given value (prior_records "all": and
    records of station 0, "any station", centred elsewhere): draws from the fitted prior have
    each station's mean and its shifts with the scenario and the given value (within 0.15) and
    its spread (within 25 %; the fit narrows it by 15-20 % here)."""
    g = torch.Generator().manual_seed(0)
    first = 0 if prior_records == "all" else 1
    n = 1200 if first else 1800
    station = torch.randint(first, 3, (n,), generator=g)
    scenario = torch.randn(n, 2, generator=g)
    centre = torch.tensor([[0.0, 3.0], [2.0, -1.0], [-2.0, 1.0]])[station]
    spread = torch.tensor([0.5, 0.3, 0.6])[station, None]
    x = centre + spread * torch.randn(n, 2, generator=g)
    given = torch.randn(n, 1, generator=g)
    x[:, 0] += scenario[:, 0]
    x[:, 1] -= given[:, 0]
    p = tiny_params(prior_hidden=64, prior_steps=3000, prior_records=prior_records)
    prior = fnet.fit_record_prior(x, station, scenario, given, p, n_stations=2)
    assert prior.n_classes == 3 - first
    cases = ((1, (2.0, -1.0), 0.3), (2, (-2.0, 1.0), 0.6)) + ((0, (0.0, 3.0), 0.5),) * (1 - first)
    for s, mean, sd in cases:
        for shift, lift in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)):
            st = torch.full((2000,), s)
            sc = torch.tensor([[shift, 0.0]]).expand(2000, 2)
            gv = torch.full((2000, 1), lift)
            draw = fnet.draw_record_prior(prior, st, sc, gv, 30, torch.Generator().manual_seed(s),
                                        2)
            torch.testing.assert_close(draw.mean(0),
                                       torch.tensor([mean[0] + shift, mean[1] - lift]),
                                       atol=0.15, rtol=0)
            torch.testing.assert_close(draw.std(0), torch.tensor([sd, sd]), atol=0, rtol=0.25)


def test_calibrate_gives_the_draws_the_spread_of_the_records():
    """The gain is the records' rms over the draws' rms, per trailing cell, the draws taken in
    chunks of batch_generate with one seeded generator: the same seed, the same gain."""
    g = torch.Generator().manual_seed(0)
    real = torch.randn(600, 3, generator=g) * torch.tensor([1.0, 2.0, 3.0])
    p = fs.FlowSamplerParams(batch_generate=7)
    parts = []

    def draw(part, generator):
        parts.append(part)
        return 0.5 * torch.randn(len(real[part]), 3, generator=generator)

    gain = cal.calibrate(real, draw, p)
    assert gain.shape == (3,) and gain.dtype == torch.float32
    torch.testing.assert_close(gain, torch.tensor([2.0, 4.0, 6.0]), rtol=0.1, atol=0)
    assert parts[0] == slice(0, 7) and parts[-1] == slice(595, 602) and len(parts) == 86
    torch.testing.assert_close(cal.calibrate(real, draw, p), gain, rtol=0, atol=0)


def ar1_frames(rho: torch.Tensor, n: int, t: int, generator: torch.Generator) -> torch.Tensor:
    """(n, t, C) unit-variance first-order autoregressive frames, lag-1 correlation rho (C,)."""
    e = torch.randn(n, t, len(rho), generator=generator, dtype=torch.float64)
    out = [e[:, 0]]
    for k in range(1, t):
        out.append(rho * out[-1] + (1 - rho ** 2).sqrt() * e[:, k])
    return torch.stack(out, dim=1).float()


@pytest.mark.parametrize("drawn_rho", [0.0, 0.2, 0.6])
def test_smoothing_gives_the_frames_the_records_lag1_correlation_at_the_same_variance(
        drawn_rho):
    """Draws whose frames are white (the flow's, measured), correlated or more correlated than
    the records' get the records' per-channel lag-1 correlation (0.35, 0.50, 0.10) within 0.01
    and keep their variance within 2 %; the first frame is left."""
    g = torch.Generator().manual_seed(0)
    target = torch.tensor([0.35, 0.5, 0.1], dtype=torch.float64)
    real = ar1_frames(target, 2000, 94, g)
    drawn = ar1_frames(torch.full((3,), drawn_rho, dtype=torch.float64), 2000, 94, g)
    coef = cal.smoothing(real, drawn)
    assert coef.shape == (2, 3) and coef.dtype == torch.float32
    y = cal.smooth_frames(drawn, coef)
    torch.testing.assert_close(cal.lag1(y), target, atol=0.01, rtol=0)
    torch.testing.assert_close(y.pow(2).mean(dim=(0, 1)), torch.ones(3), atol=0, rtol=0.02)
    torch.testing.assert_close(y[:, 0], drawn[:, 0], rtol=0, atol=0)
    assert (coef[0] < 0).all() == (drawn_rho > 0.5)  # less correlation wanted: a < 0


def test_smooth_frames_is_the_recursion():
    """The one-product form equals y_0 = x_0, y_t = a y_(t-1) + b x_t run frame by frame, for
    coefficients of either sign."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 30, 6, generator=g)
    coef = torch.tensor([[0.5, -0.4, 0.0, 0.9, 0.2, -0.9], [0.8, 1.1, 1.0, 0.4, 0.97, 0.3]])
    frames = [x[:, 0]]
    for t in range(1, x.shape[1]):
        frames.append(coef[0] * frames[-1] + coef[1] * x[:, t])
    torch.testing.assert_close(cal.smooth_frames(x, coef), torch.stack(frames, dim=1),
                               rtol=1e-5, atol=1e-5)


def test_remainder_smooth_leaves_the_flow_and_correlates_its_frames(trained, prepared, tmp_path):
    """The smoothing (on by default) is fitted after training: the network's weights and the
    frame gain are those of the same run without it; sampling passes the flow's frame
    coordinates (after the gain) through `smooth_frames`, raising their lag-1 correlation
    towards the training records'; a checkpoint whose params and stats disagree is refused; an
    older checkpoint loads with the option off and samples as it did."""
    sampler, out = trained
    plain = retrained(sampler, prepared, tmp_path, remainder_smooth=False)
    torch.testing.assert_close(sampler.stats["frame_gain"], plain.stats["frame_gain"],
                               rtol=0, atol=0)
    coef = sampler.stats["frame_smooth"]
    channels = plain.stats["coarse_std"].numel() // plain.n_frames
    assert coef.shape == (2, channels) and torch.isfinite(coef).all()
    assert "frame_smooth" not in plain.stats
    station = torch.ones(64, dtype=torch.long)
    scenario = lat.standardise_scenario(np.tile([[5.0, 30.0]], (64, 1)), sampler.stats)
    (xc, xs), (xc0, xs0) = (s.latent(station, scenario, torch.Generator().manual_seed(3))
                            for s in (sampler, plain))
    torch.testing.assert_close(xc, cal.smooth_frames(xc0, coef), rtol=0, atol=0)
    torch.testing.assert_close(xs, xs0, rtol=0, atol=0)
    assert cal.lag1(xc).mean() > cal.lag1(xc0).mean() + 0.1
    assert_state_refused(sampler, lambda st: st["stats"].pop("frame_smooth"),
                         "remainder_smooth = True, but the statistics lack the frame smoothing")
    assert_state_refused(sampler, lambda st: st["stats"].update(frame_smooth=coef[:, 1:]),
                         "frame_smooth has shape")
    assert_older_state_loads_off(plain, "remainder_smooth")


def test_decoder_bias_leaves_the_flow_and_asks_the_decoder_for_less(trained, prepared,
                                                                   tmp_path):
    """decoder_bias (on by default) is fitted after training: the network's weights are those
    of the same run without it; sampling decodes the flow's frames less the fitted mean error
    (`FlowSampler.decode`); a checkpoint whose params and stats disagree is refused; an older
    checkpoint loads with the option off and samples as it did."""
    sampler, _ = trained
    plain = retrained(sampler, prepared, tmp_path, decoder_bias=False)
    bias = sampler.stats["decoder_bias"]
    assert "decoder_bias" not in plain.stats
    assert bias.shape == (plain.n_frames, plain.stats["coarse_std"].numel() // plain.n_frames)
    assert float(bias.abs().max()) > 0.01
    scenario = lat.standardise_scenario(np.array([[5.0, 30.0], [5.5, 60.0]]), sampler.stats)
    _, coarse, static = plain.features(1, scenario, torch.Generator().manual_seed(3))
    mine = sampler.decode(coarse, static, torch.Generator().manual_seed(4))
    np.testing.assert_array_equal(mine, plain.decode(coarse - bias, static,
                                                     torch.Generator().manual_seed(4)))
    assert np.abs(mine - plain.decode(coarse, static, torch.Generator().manual_seed(4))
                  ).max() > 0
    assert_state_refused(sampler, lambda st: st["stats"].pop("decoder_bias"),
                         "decoder_bias = True, but the statistics lack the decoder's mean error")
    assert_state_refused(sampler, lambda st: st["stats"].update(decoder_bias=bias[1:]),
                         "decoder_bias has shape")
    assert_older_state_loads_off(plain, "decoder_bias")


def test_site_intercepts_leave_the_flow_and_move_only_the_frames_intercepts(trained, prepared,
                                                                            tmp_path):
    """site_intercepts (off by default) changes what sampling starts from, not what the flow
    learns: the network's weights are those of the same run without it, the statistics differ
    in the coarse intercepts alone; an older checkpoint loads with the option off."""
    sampler, _ = trained
    site = retrained(sampler, prepared, tmp_path, site_intercepts=True)
    differ = [k for k, v in site.stats.items() if not torch.equal(v, sampler.stats[k])]
    assert differ == ["coarse_icpt"]
    assert_older_state_loads_off(sampler, "site_intercepts")


def test_prior_calibrate_scales_the_prior_draws_by_its_gain(trained, prepared, tmp_path):
    """prior_calibrate (on by default) is fitted after the prior: the network's and the prior's
    weights are those of the same run without it; the prior's record components are multiplied
    by the gain, the rest of the latent left; a checkpoint whose params and stats disagree is
    refused; an older checkpoint loads with the option off; without a prior there is no gain."""
    sampler, _ = trained
    plain = fs.train_sampler(prepared, tiny_params(prior_calibrate=False), tmp_path / "m",
                             raw_dir=tmp_path / "none", log=lambda _: None)
    for mine, theirs in ((sampler.net, plain.net), (sampler.prior, plain.prior)):
        for key, value in theirs.state_dict().items():
            torch.testing.assert_close(mine.state_dict()[key], value, rtol=0, atol=0)
    gain = sampler.stats["prior_gain"]
    n_rec, k = sampler.params.record_pcs, fs.n_scalars(sampler.params)
    assert gain.shape == (n_rec,) and torch.isfinite(gain).all() and (gain > 0).all()
    assert "prior_gain" not in plain.stats
    station = torch.tensor([1, 2, 2])
    scenario = lat.standardise_scenario(np.array([[5.0, 30.0], [5.5, 60.0], [4.5, 10.0]]),
                                       sampler.stats)
    (xc, xs), (xc0, xs0) = (s.latent(station, scenario, torch.Generator().manual_seed(3))
                            for s in (sampler, plain))
    torch.testing.assert_close(xs[:, k:k + n_rec], xs0[:, k:k + n_rec] * gain, rtol=1e-6,
                               atol=1e-7)
    torch.testing.assert_close(xs[:, :k], xs0[:, :k], rtol=0, atol=0)
    torch.testing.assert_close(xs[:, k + n_rec:], xs0[:, k + n_rec:], rtol=0, atol=0)
    torch.testing.assert_close(xc, xc0, rtol=0, atol=0)
    assert_state_refused(sampler, lambda st: st["stats"].pop("prior_gain"),
                         "prior_calibrate = True with record_prior = True, but the statistics "
                         "lack the record prior's gain")
    assert_state_refused(sampler, lambda st: st["stats"].update(prior_gain=gain[:2]),
                         f"prior_gain has shape \\(2,\\), expected \\({n_rec},\\)")
    old = sampler.state()  # written before the option existed: trained without it
    del old["params"]["prior_calibrate"], old["stats"]["prior_gain"]
    assert fs.FlowSampler.from_state(old).params.prior_calibrate is False
    none = fs.train_sampler(prepared, tiny_params(record_prior=False), tmp_path / "n",
                            raw_dir=tmp_path / "none", log=lambda _: None)
    assert none.params.prior_calibrate and "prior_gain" not in none.stats


def test_scalar_calibrate_scales_the_flows_scalars_before_the_prior_sees_them(trained, prepared,
                                                                              tmp_path):
    """scalar_calibrate (off by default) is fitted after training: the network's and the prior's
    weights are those of the same run without it; the flow's level and timing scalars are
    multiplied by the gain and the record prior is given the scaled ones; the frames are left;
    a checkpoint whose params and stats disagree is refused; an older checkpoint loads with the
    option off and samples as before."""
    plain, _ = trained
    assert not plain.params.scalar_calibrate and "scalar_gain" not in plain.stats
    sampler = fs.train_sampler(prepared, tiny_params(scalar_calibrate=True), tmp_path / "m",
                               raw_dir=tmp_path / "none", log=lambda _: None)
    for mine, theirs in ((sampler.net, plain.net), (sampler.prior, plain.prior)):
        for key, value in theirs.state_dict().items():
            torch.testing.assert_close(mine.state_dict()[key], value, rtol=0, atol=0)
    gain, k = sampler.stats["scalar_gain"], fs.n_scalars(sampler.params)
    assert gain.shape == (k,) and torch.isfinite(gain).all() and (gain > 0).all()
    assert not torch.allclose(gain, torch.ones(k), rtol=0.01)  # the tiny flow is not calibrated
    station = torch.tensor([1, 2, 2])
    scenario = lat.standardise_scenario(np.array([[5.0, 30.0], [5.5, 60.0], [4.5, 10.0]]),
                                       sampler.stats)
    (xc, xs), (xc0, xs0) = (s.latent(station, scenario, torch.Generator().manual_seed(3))
                            for s in (sampler, plain))
    torch.testing.assert_close(xs[:, :k], xs0[:, :k] * gain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xc, xc0, rtol=0, atol=0)
    # the prior draws from the same noise given the scaled scalars (and refits its own gain)
    n_rec = sampler.params.record_pcs
    same_gain = fs.FlowSampler(plain.params, plain.net,
                               plain.stats | {"prior_gain": sampler.stats["prior_gain"]},
                               plain.stations, plain._scenarios, plain.n_frames,
                               plain.n_samples, plain.prior)
    unscaled = same_gain.latent(station, scenario, torch.Generator().manual_seed(3))[1]
    assert (xs[:, k:k + n_rec] - unscaled[:, k:k + n_rec]).abs().max() > 1e-4
    assert_state_refused(sampler, lambda st: st["stats"].pop("scalar_gain"),
                         "scalar_calibrate = True, but the statistics lack the scalar gain")
    assert_state_refused(sampler, lambda st: st["stats"].update(scalar_gain=gain[:1]),
                         f"scalar_gain has shape \\(1,\\), expected \\({k},\\)")
    assert_older_state_loads_off(plain, "scalar_calibrate")


def test_group_rms_keeps_real_differences_and_shrinks_noise():
    """group_rms: spreads that differ far more than n records' noise (1 / (2 n) in ln) are
    kept; spreads within the noise go to their geometric mean; in between, partly."""
    far = cal.group_rms(torch.tensor([0.2, 0.8, 3.2]), torch.tensor([1000, 1000, 1000]))
    torch.testing.assert_close(far, torch.tensor([0.2, 0.8, 3.2], dtype=torch.float64),
                               rtol=2e-3, atol=0)
    near = cal.group_rms(torch.tensor([0.95, 1.0, 1.05]), torch.tensor([10, 10, 10]))
    torch.testing.assert_close(near, torch.full((3,), (0.95 * 1.0 * 1.05) ** (1 / 3),
                                                dtype=torch.float64))
    part = cal.group_rms(torch.tensor([0.7, 1.0, 1.4]), torch.tensor([20, 20, 20])).numpy()
    assert 0.7 < part[0] < 0.99 and 1.01 < part[2] < 1.4 and part[1] == pytest.approx(1.0, abs=0.01)
    # a group with fewer records is shrunk more
    few = cal.group_rms(torch.tensor([0.7, 1.0, 1.4]), torch.tensor([20, 20, 5])).numpy()
    assert few[2] < part[2]


def test_calibrate_by_group_gives_each_group_its_own_spread():
    """calibrate with groups: one gain per group, its draws given its own records' rms as
    group_rms shrinks it, 1 for a group with none; without groups, one gain from all."""
    p = tiny_params()
    spread = torch.tensor([0.5, 2.0, 1.0])
    groups = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    real = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))

    def draw(part, generator):
        return torch.randn(len(groups[part]), 2, generator=generator) * spread[groups[part], None]

    drawn = cal.draws(8, draw, p).double()
    gain = cal.calibrate(real, draw, p, groups, 3)
    assert gain.shape == (3, 2)
    rms = lambda x: x.double().pow(2).mean(0).sqrt()  # noqa: E731
    target = cal.group_rms(torch.stack([rms(real[groups == g]) for g in (0, 1)]),
                          torch.tensor([4, 4]))
    for g in (0, 1):
        torch.testing.assert_close(gain[g], (target[g] / rms(drawn[groups == g])).float())
    torch.testing.assert_close(gain[2], torch.ones(2))  # no records of group 2
    assert gain[0].mean() > 2 * gain[1].mean()  # the narrow group is widened, the wide narrowed
    torch.testing.assert_close(cal.calibrate(real, draw, p), (rms(real) / rms(drawn)).float())


def test_station_scatter_gives_each_station_its_own_level_spread(trained, prepared, tmp_path):
    """station_scatter (off by default) is fitted after training: the network's weights are
    those of the same run without it; each target station's level scalar is multiplied by its
    own gain (`calibrate` by station, tested above); the other scalars and the frames are left;
    a checkpoint whose params and stats disagree is refused; an older one loads with it off."""
    off, _ = trained
    assert not off.params.station_scatter and "station_gain" not in off.stats
    sampler = fs.train_sampler(prepared, tiny_params(station_scatter=True), tmp_path / "m",
                               raw_dir=tmp_path / "none", log=lambda _: None)
    for key, value in off.net.state_dict().items():
        torch.testing.assert_close(sampler.net.state_dict()[key], value, rtol=0, atol=0)
    gain = sampler.stats["station_gain"]
    n_st = len(sampler.stations)
    assert gain.shape == (n_st, 1) and torch.isfinite(gain).all() and (gain >= 0).all()
    station = torch.tensor([1, 2, 2])
    scenario = lat.standardise_scenario(np.array([[5.0, 30.0], [5.5, 60.0], [4.5, 10.0]]),
                                       sampler.stats)
    (xc, xs), (xc0, xs0) = (s.latent(station, scenario, torch.Generator().manual_seed(3))
                            for s in (sampler, off))
    torch.testing.assert_close(xs[:, 0], xs0[:, 0] * gain[station - 1, 0], rtol=1e-6, atol=1e-7)
    k = fs.n_scalars(sampler.params)
    torch.testing.assert_close(xs[:, 1:k], xs0[:, 1:k], rtol=0, atol=0)
    torch.testing.assert_close(xc, xc0, rtol=0, atol=0)
    assert_state_refused(sampler, lambda st: st["stats"].pop("station_gain"),
                         "station_scatter = True, but the statistics lack the station gains")
    assert_state_refused(sampler, lambda st: st["stats"].update(station_gain=gain[:1]),
                         f"station_gain has shape \\(1, 1\\), expected \\({n_st}, 1\\)")
    assert_older_state_loads_off(off, "station_scatter")


def test_record_scale_changes_only_the_scale_of_each_sampled_record(trained):
    """record_scale is a sampling setting: the same checkpoint read with "peak" gives the same
    waveforms, each scaled so that its peak is exp(level) rather than its spectrum level + fine
    spectrum; an older checkpoint (no record_scale) loads with "peak"."""
    sampler, _ = trained
    assert sampler.params.record_scale == "spectrum"
    state = sampler.state()
    state["params"]["record_scale"] = "peak"
    by_peak = fs.FlowSampler.from_state(state)
    m, r = np.array([5.0, 4.5, 6.0]), np.array([40.0, 20.0, 90.0])
    x, y = sampler.sample("A", m, r, seed=4), by_peak.sample("A", m, r, seed=4)
    ratio = np.abs(x).max(axis=(1, 2)) / np.abs(y).max(axis=(1, 2))
    assert np.abs(np.log(ratio)).max() > 0.01  # the scales differ
    np.testing.assert_allclose(x, y * ratio[:, None, None], rtol=1e-4,
                               atol=1e-5 * np.abs(x).max())
    assert_older_state_loads_off(by_peak, "record_scale", off="peak")


@pytest.mark.parametrize("prior_records", ["target", "all"])
def test_record_prior_trains_samples_and_round_trips_its_state(prepared, tmp_path,
                                                               prior_records):
    """record_prior: the sampler holds a prior (prior_records "all": one that also knows
    station 0, the pre-training stations; here with prior_scalars and prior_fine, given the
    record's scalars and fine-spectrum components),
    draws the record components from it (the records
    differ from the same flow without it), and reloads from the checkpoint to the same
    records; a checkpoint whose params and weights disagree is refused in one line; an older
    checkpoint loads with the option off, and one with a prior but no prior_records,
    prior_scalars or prior_fine with the target-only, scenario-only prior it was written with;
    without record components it is refused."""
    every = prior_records == "all"
    p = tiny_params(record_prior=True, prior_records=prior_records, prior_scalars=every,
                    prior_fine=3 if every else 0)
    sampler = fs.train_sampler(prepared, p, tmp_path / "m", raw_dir=tmp_path / "none",
                               log=lambda _: None)
    assert isinstance(sampler.prior, fnet.RecordPrior)
    assert sampler.prior.n_classes == (3 if every else 2)
    assert sampler.prior.n_given == (fs.n_scalars(p) + 3 if every else 0)
    if not every:  # written before prior_records, prior_scalars and prior_fine existed
        old = sampler.state()
        del old["params"]["prior_records"], old["params"]["prior_scalars"]
        del old["params"]["prior_fine"]
        assert fs.FlowSampler.from_state(old).prior.n_classes == 2
    else:
        assert_state_refused(sampler, lambda st: st["params"].update(prior_records="target"),
                             "not a valid timesnet-flow sampler state")
    m, r = np.array([5.0, 5.5]), np.array([20.0, 60.0])
    a = sample_and_reload(sampler, tmp_path / "m" / "model.pt", "A", m, r, seed=2)
    without = fs.FlowSampler(sampler.params, sampler.net, sampler.stats, sampler.stations,
                             sampler._scenarios, sampler.n_frames, sampler.n_samples)
    assert not np.allclose(without.sample("A", m, r, seed=2), a)
    assert_state_refused(sampler, lambda st: st.pop("prior_weights"),
                         "record_prior = True, but the checkpoint lacks the record prior's")
    assert_state_refused(sampler, lambda st: st["params"].update(record_prior=False),
                         "record_prior = False, but the checkpoint holds the record prior's")
    old = sampler.state()  # written before the option (and prior_calibrate, prior_fine) existed
    del old["params"]["record_prior"], old["prior_weights"]
    del old["params"]["prior_calibrate"], old["stats"]["prior_gain"]
    if every:
        del old["params"]["prior_fine"], old["stats"]["prior_fine_axes"]
        del old["stats"]["prior_fine_rms"]
    assert fs.FlowSampler.from_state(old).prior is None
    with pytest.raises(fs.FlowSamplerError, match="record_prior = True needs record_pcs > 0"):
        tiny_params(record_pcs=0, record_prior=True)
    with pytest.raises(fs.FlowSamplerError, match="prior_steps = 0 \\(must be > 0\\)"):
        tiny_params(prior_steps=0)
    with pytest.raises(fs.FlowSamplerError, match="prior_records = 'pretrain' \\(not one of"):
        tiny_params(prior_records="pretrain")


def test_prior_given_is_the_scalars_and_the_fine_spectrum_projections():
    """prior_given reads the scalars (prior_scalars) and the fine spectrum (after the record
    components) projected on the prior_fine axes and whitened by their rms."""
    g = torch.Generator().manual_seed(0)
    p = tiny_params(prior_fine=2)
    k, n_rec, n_fine = fs.n_scalars(p), 4, 3 * p.n_fine
    static = torch.randn(5, k + n_rec + n_fine, generator=g)
    axes = torch.linalg.qr(torch.randn(n_fine, 2, generator=g))[0]
    stats = {"record_axes": torch.zeros(10, n_rec), "prior_fine_axes": axes,
             "prior_fine_rms": torch.tensor([2.0, 0.5])}
    given = lat.prior_given(static, stats, p)
    assert given.shape == (5, fs.n_given(p)) == (5, k + 2)
    torch.testing.assert_close(given[:, :k], static[:, :k], rtol=0, atol=0)
    torch.testing.assert_close(given[:, k:],
                               static[:, k + n_rec:] @ axes / stats["prior_fine_rms"])
    alone = lat.prior_given(static, stats, tiny_params(prior_fine=2, prior_scalars=False))
    torch.testing.assert_close(alone, given[:, k:], rtol=0, atol=0)


def test_prior_fine_gives_the_record_prior_the_flows_fine_spectrum(prepared, tmp_path,
                                                                  monkeypatch):
    """prior_fine: the fine spectrum's principal axes are fitted with the other axes, the prior
    is given its projections (of the training records when fitted, of the flow's draw when
    sampling: a different fine spectrum changes the record components drawn, nothing else);
    the checkpoint reloads to the same records; a checkpoint whose params and stats disagree is
    refused; an older checkpoint loads with prior_fine 0 and samples as it did; without a record
    prior the option is ignored; bad values are refused."""
    p = tiny_params(prior_fine=3)
    sampler = fs.train_sampler(prepared, p, tmp_path / "m", raw_dir=tmp_path / "none",
                               log=lambda _: None)
    k, n_rec = fs.n_scalars(p), p.record_pcs
    assert sampler.stats["prior_fine_axes"].shape == (3 * p.n_fine, 3)
    assert sampler.prior.n_given == k + 3
    m, r = np.array([5.0, 5.5]), np.array([20.0, 60.0])
    sample_and_reload(sampler, tmp_path / "m" / "model.pt", "A", m, r, seed=2)
    station = torch.tensor([1, 2])
    scenario = lat.standardise_scenario(np.stack([m, r], axis=1), sampler.stats)
    xc, xs = sampler.latent(station, scenario, torch.Generator().manual_seed(3))
    integrate = fnet.integrate

    def shifted_fine(*args, **kwargs):  # the flow's draw with its fine spectrum moved
        c, s = integrate(*args, **kwargs)
        return c, torch.cat([s[:, :k + n_rec], s[:, k + n_rec:] + 1.0], dim=1)

    monkeypatch.setattr(fs.sampler, "integrate", shifted_fine)
    xc2, xs2 = sampler.latent(station, scenario, torch.Generator().manual_seed(3))
    monkeypatch.undo()
    torch.testing.assert_close(xc2, xc, rtol=0, atol=0)
    torch.testing.assert_close(xs2[:, :k], xs[:, :k], rtol=0, atol=0)
    assert (xs2[:, k:k + n_rec] - xs[:, k:k + n_rec]).abs().max() > 1e-3
    assert_state_refused(sampler, lambda st: st["stats"].pop("prior_fine_axes"),
                         "prior_fine = 3 but the statistics hold 0 such components "
                         "\\(expected 3\\)")
    axes = sampler.stats["prior_fine_axes"]
    assert_state_refused(sampler, lambda st: st["stats"].update(prior_fine_axes=axes[:10]),
                         f"prior_fine_axes has shape \\(10, 3\\), expected \\({len(axes)}, 3\\)")
    assert_state_refused(sampler, lambda st: st["stats"].update(
        prior_fine_rms=sampler.stats["prior_fine_rms"][:2]), "prior_fine_rms has shape")
    old = fs.train_sampler(prepared, tiny_params(prior_fine=0), tmp_path / "o",
                           raw_dir=tmp_path / "none", log=lambda _: None)
    state = old.state()  # written before the option existed: trained without it
    del state["params"]["prior_fine"]
    loaded = fs.FlowSampler.from_state(state)
    assert loaded.params.prior_fine == 0 and loaded.prior.n_given == k
    np.testing.assert_array_equal(loaded.sample("A", m, r, seed=4), old.sample("A", m, r, 4))
    none = fs.train_sampler(prepared, tiny_params(record_prior=False), tmp_path / "n",
                            raw_dir=tmp_path / "none", log=lambda _: None)
    assert none.params.prior_fine == 3 and "prior_fine_axes" not in none.stats  # ignored
    with pytest.raises(fs.FlowSamplerError, match="prior_fine = -1 \\(must be >= 0\\)"):
        tiny_params(prior_fine=-1)
    with pytest.raises(fs.FlowSamplerError, match="prior_fine = 500: at most"):
        fs.train_sampler(prepared, tiny_params(prior_fine=500), tmp_path / "x",
                         raw_dir=tmp_path / "none", log=lambda _: None)
    assert not (tmp_path / "x").exists()


def test_remainder_ar_keeps_an_explosive_fit_bounded():
    """A random walk along the frames (A = 1) is fitted with spectral radius AR_MAX_RADIUS, so
    colouring 94 frames of noise cannot blow up."""
    g = torch.Generator().manual_seed(1)
    y = torch.randn(100, 94, 3, generator=g).cumsum(dim=1)
    stats = lat.fit_ar(y)
    radius = torch.linalg.eigvals(stats["ar_coef"]).abs().max()
    assert float(radius) == pytest.approx(lat.AR_MAX_RADIUS, abs=1e-5)
    assert torch.isfinite(lat.ar_colour(torch.randn(5, 94, 3, generator=g), stats)).all()


@pytest.mark.parametrize("weight, coarse_weight", [(0.0, 1.0), (3.0, 0.5)])
def test_record_components_weigh_as_their_own_part_with_record_weight(weight, coarse_weight):
    """The loss is the mean squared velocity error of the spectrogram (times coarse_weight),
    plus that of the fine part, plus each scalar's; the record components join the fine part,
    or with record_weight > 0 form their own part with that weight (recomputed here from the
    same noise draws)."""
    p = fs.FlowSamplerParams(timing="roll", record_pcs=2, record_weight=weight,
                             coarse_weight=coarse_weight)
    torch.manual_seed(0)
    net = fnet.VelocityNet(p, n_frames=10, n_coarse=4, n_static=2 + 2 + 5, n_stations=1).eval()
    b = lat.Batchable(torch.randn(5, 10, 4), torch.randn(5, 9), torch.zeros(5, dtype=torch.long),
                     torch.randn(5, 2))
    idx = torch.arange(5)
    loss = fnet.flow_loss(net, b, idx, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    x0c, x0s = torch.randn(5, 10, 4, generator=g), torch.randn(5, 9, generator=g)
    t = torch.rand(5, generator=g)
    vc, vs = net((1 - t[:, None, None]) * x0c + t[:, None, None] * b.coarse,
                 (1 - t[:, None]) * x0s + t[:, None] * b.static, t, b.station, b.scenario)
    err_c, err_s = (vc - (b.coarse - x0c)) ** 2, (vs - (b.static - x0s)) ** 2
    rest = (weight * err_s[:, 2:4].mean() + err_s[:, 4:].mean()) if weight else err_s[:, 2:].mean()
    torch.testing.assert_close(loss, coarse_weight * err_c.mean() + err_s[:, 0].mean()
                               + err_s[:, 1].mean() + rest)


def test_too_many_principal_components_is_refused(prepared, tmp_path):
    with pytest.raises(fs.FlowSamplerError, match="record_pcs = 500: at most"):
        fs.train_sampler(prepared, tiny_params(record_pcs=500), tmp_path / "m",
                         raw_dir=tmp_path / "none", log=lambda _: None)
    assert not (tmp_path / "m").exists()
    with pytest.raises(fs.FlowSamplerError, match="coarse_pcs = -1 \\(must be >= 0\\)"):
        tiny_params(coarse_pcs=-1)
    with pytest.raises(fs.FlowSamplerError, match="coarse_weight = -0.5 \\(must be >= 0\\)"):
        tiny_params(coarse_weight=-0.5)
    with pytest.raises(fs.FlowSamplerError, match="coarse_weight = nan"):
        tiny_params(coarse_weight=float("nan"))
    with pytest.raises(fs.FlowSamplerError) as nan_knot:  # named once, with its range
        tiny_params(p_align_s=float("nan"))
    assert str(nan_knot.value).count("p_align_s") == 1
    assert "p_align_s = nan (pslot: must be in (0, align_s" in str(nan_knot.value)


def test_principal_latent_trains_samples_and_round_trips_its_state(prepared, tmp_path):
    p = tiny_params(coarse_pcs=4, fine_pcs=6, record_pcs=3, remainder_scale=True,
                    remainder_gauss=True)
    sampler = fs.train_sampler(prepared, p, tmp_path / "m", raw_dir=tmp_path / "none",
                               log=lambda _: None)
    assert sampler.net.embed.in_features == 4 * p.patch
    assert sampler.net.skip.out_features == 4 + 3 + 3 + 6
    m, r = np.array([5.0, 5.5]), np.array([20.0, 60.0])
    sample_and_reload(sampler, tmp_path / "m" / "model.pt", "A", m, r, seed=2)
    state = sampler.state()
    state["params"]["record_pcs"] = 5  # params that disagree with the stored axes
    with pytest.raises(fs.FlowSamplerError, match="record_pcs = 5 but the statistics hold 3"):
        fs.FlowSampler.from_state(state)
    state = sampler.state()
    assert "remainder_rms" in state["stats"] and "marginal_knots" in state["stats"]
    state["params"]["remainder_scale"] = False  # params that disagree with the stored stats
    with pytest.raises(fs.FlowSamplerError, match="remainder_scale = False with record_pcs = 3, "
                                                  "but the statistics hold the remainder rms"):
        fs.FlowSampler.from_state(state)
    old = sampler.state()  # a checkpoint written before remainder_scale: trained without it
    del old["params"]["remainder_scale"], old["stats"]["remainder_rms"]
    del old["params"]["remainder_ar"], old["params"]["remainder_gauss"]
    del old["stats"]["marginal_knots"]
    del old["params"]["coarse_weight"]
    assert fs.FlowSampler.from_state(old).params.remainder_scale is False
    assert fs.FlowSampler.from_state(old).params.remainder_ar is False
    assert_state_refused(sampler, lambda st: st["params"].update(remainder_ar=True),
                         "remainder_ar = True, but the statistics lack the autoregression")
    assert_state_refused(sampler, lambda st: st["params"].update(remainder_gauss=False),
                         "remainder_gauss = False, but the statistics hold the marginal knots")


def test_unknown_period_selection_is_refused():
    with pytest.raises(fs.FlowSamplerError, match="period_selection = 'median' \\(not one of"):
        fs.FlowSamplerParams(period_selection="median")


def test_result_does_not_depend_on_the_number_of_workers(trained):

    sampler, _ = trained
    m, r = np.full(5, 5.0), np.full(5, 30.0)  # 3 chunks of 2
    one = fs.FlowSampler.from_state(sampler.state())
    one.params = replace(one.params, workers=1)
    two = fs.FlowSampler.from_state(sampler.state())
    two.params = replace(two.params, workers=2)
    np.testing.assert_array_equal(one.sample("A", m, r, 9), two.sample("A", m, r, 9))


def test_unknown_station_names_the_known_ones(trained):
    sampler, _ = trained
    with pytest.raises(fs.FlowSamplerError, match="unknown station 'Z'.*A, B"):
        sampler.sample("Z", np.array([5.0]), np.array([10.0]), seed=0)


def test_state_round_trips_through_torch_save(trained, tmp_path):
    sampler, _ = trained
    path = tmp_path / "state.pt"
    torch.save({"kind": sampler.kind, "format": 1, "state": sampler.state()}, path)
    again = fs.FlowSampler.from_state(torch.load(path, weights_only=True)["state"])
    m, r = np.array([5.0]), np.array([30.0])
    np.testing.assert_array_equal(sampler.sample("B", m, r, 7), again.sample("B", m, r, 7))
    np.testing.assert_array_equal(sampler.scenarios("A"), again.scenarios("A"))


def test_from_state_refuses_a_broken_state(trained):
    sampler, _ = trained
    state = sampler.state()
    del state["weights"]
    with pytest.raises(fs.FlowSamplerError, match="not a valid timesnet-flow sampler state"):
        fs.FlowSampler.from_state(state)
    # NaN in a statistic or a weight would reach the decoder: named, not sampled (new tensors:
    # the state holds the sampler's own)
    bias = sampler.stats["decoder_bias"].clone()
    bias[3, 3] = float("nan")
    assert_state_refused(sampler, lambda st: st["stats"].update(decoder_bias=bias),
                         "NaN or inf in the statistics decoder_bias\\)")
    key = next(iter(sampler.net.state_dict()))
    assert_state_refused(sampler, lambda st: st["weights"].update(
        {key: torch.full_like(st["weights"][key], float("inf"))}),
        f"NaN or inf in the weights {key}\\)")
    assert torch.isfinite(sampler.stats["decoder_bias"]).all()


def test_scenarios_joined_from_raw_records(prepared, tmp_path):
    index = pd.read_csv(prepared / "index.csv", dtype={"station": str})
    raw = tmp_path / "raw"
    raw.mkdir()
    index[["record_id", "magnitude", "distance_km"]].to_csv(raw / "records.csv", index=False)
    bare = index.drop(columns=["magnitude", "distance_km"])
    values = fs.scenario_table(prepared, raw, bare)
    np.testing.assert_allclose(values, index[["magnitude", "distance_km"]])
    with pytest.raises(fs.FlowSamplerError, match="records.csv: needed for the scenario"):
        fs.scenario_table(prepared, tmp_path / "absent", bare)
    index.loc[3, "magnitude"] = np.nan
    with pytest.raises(fs.FlowSamplerError, match="record P1_0|invalid magnitude"):
        fs.scenario_table(prepared, raw, index)


@pytest.mark.parametrize("device, match", [
    ("cuda", "generators.flow.device=cuda but CUDA is not available"),
    ("tpu9", "generators.flow.device='tpu9': not a device"),
])
def test_training_device_errors_name_the_key(prepared, tmp_path, device, match):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(UserError, match=match):
        fs.train_sampler(prepared, tiny_params(device=device), tmp_path / "m",
                         raw_dir=prepared.parent / "none", log=lambda _: None)
    assert not (tmp_path / "m").exists()


def test_gmm_scaling_is_the_ratio_of_the_published_medians():
    """No ratio at the magnitude drawn; a larger magnitude is stronger at every period and
    longer; periods beyond ASB14's 4 s take its 4 s ratio."""
    freqs = np.array([0.1, 0.25, 1.0, 5.0, 200.0])
    zero = fs.gmm_scaling(5.0, 5.0, 30.0, freqs)
    np.testing.assert_array_equal(zero[0], 0.0)
    assert zero[1] == 0.0 and zero[2] == 0.0
    d_psa, d_pga, d_dur = fs.gmm_scaling(6.0, 5.0, 30.0, freqs)
    assert np.all(d_psa > 0) and d_pga > 0 and d_dur > 0
    assert d_psa[0] == d_psa[1] and d_psa[2] > d_psa[4]  # long periods grow most with M


def test_extrapolate_gmm_draws_at_the_range_end_and_scales_by_the_gmm_ratios(trained):
    """Inside the station's training magnitudes `gmm` draws what `linear` draws, bit for bit.
    Beyond them it draws at the range's end and `scaled` moves those features: the fine
    spectrum by ASB14's PSA ratio and half AS16's ln D5-95 ratio, the frames before the onset by
    the PSA ratio at their bands, the frames from the onset on stretched by the D5-95 ratio;
    the level and the timing are kept (record_scale spectrum). The sampled record is that one,
    decoded. An unknown value is refused; a checkpoint without the option samples linearly."""
    sampler, _ = trained
    p = replace(sampler.params, extrapolate="gmm")
    gmm = fs.FlowSampler.from_state(sampler.state() | {"params": asdict(p)})
    top = sampler.scenarios("A")[:, 0].max()
    r = np.array([40.0])
    np.testing.assert_array_equal(gmm.sample("A", np.array([top - 0.1]), r, seed=3),
                                  sampler.sample("A", np.array([top - 0.1]), r, seed=3))
    big = np.array([top + 1.0])
    scenario = lat.standardise_scenario(np.array([[top, 40.0]]), sampler.stats)
    generator = torch.Generator().manual_seed(5 * 1_000_003)  # `sample`'s first chunk, seed 5
    _, coarse, static = sampler.features(sampler.station_index("A"), scenario, generator)
    coarse2, static2 = gmm.scaled(coarse, static, big, np.array([top]), r)
    np.testing.assert_array_equal(gmm.sample("A", big, r, seed=5),
                                  gmm.decode(coarse2, static2, generator))
    bands = rep.band_centers(p)
    d_psa, _, d_dur = fs.gmm_scaling(top + 1.0, top, 40.0, np.r_[bands, rep.fine_centers(p)])
    k, nb = fs.n_scalars(p), len(bands)
    np.testing.assert_allclose((static2 - static)[0, :k], 0.0)
    np.testing.assert_allclose((static2 - static)[0, k:].reshape(3, -1),
                               np.tile(d_psa[nb:] + 0.5 * d_dur, (3, 1)), atol=1e-5)
    onset = int(np.ceil(p.align_s * FS / p.hop))
    np.testing.assert_allclose((coarse2 - coarse)[0, :onset].numpy(),
                               np.tile(d_psa[:nb], (onset, 3)), atol=1e-5)
    stretched = rep.stretch_after_onset(coarse.numpy(), np.exp([d_dur]), p)
    np.testing.assert_allclose(coarse2[0, onset:].numpy(),
                               stretched[0, onset:] + np.tile(d_psa[:nb], 3), atol=1e-5)
    with pytest.raises(fs.FlowSamplerError, match="extrapolate = 'cubic' \\(not one of"):
        tiny_params(extrapolate="cubic")
    assert_older_state_loads_off(gmm, "extrapolate", "linear")


def test_checkpoint_weights_are_on_the_cpu(trained):
    sampler, _ = trained
    assert {str(v.device) for v in sampler.state()["weights"].values()} == {"cpu"}
