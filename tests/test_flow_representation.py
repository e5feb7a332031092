"""The flow sampler's representation: encode, decode, the P slot's timing, the canvas."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.signal import butter, sosfiltfilt

from flow_common import FS, T, tiny_params, synthetic_records, decode_features, p_and_s_records

from timesnet_gen.evaluation.realism_phases import horizontal_envelope, pick_p_s
from timesnet_gen.models import flow_sampler as fs
from timesnet_gen.models.flow_sampler import representation as rep


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
