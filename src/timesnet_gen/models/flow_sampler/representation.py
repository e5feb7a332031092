"""Representation of one record (3, 6000) cm/s^2 (E, N, U, 100 Hz), `encode`:
    level   ln(peak |acc| over the three components)                     (1,)   ln cm/s^2
    coarse  ln(band RMS of |STFT(x / peak)| + eps): Hann n_fft, hop;     (frames, 3 * bands)
            bins pooled onto log-spaced bands (empty bands merged)
    fine    ln of the full-record Fourier amplitude of x / peak, smoothed   (3 * n_fine,)
            (Gaussian in ln f) on log-spaced frequencies: the site resonance at 1/20 Hz
            resolution that the coarse bands cannot hold
The frames before the onset are resampled so that the P knot sits at a fixed place (the P
slot; `timing: pslot`, `frame_times`). `long_gap: shift` and `squeeze` keep the P of a
record whose P-to-onset gap is longer than the canvas before the onset inside the P slot,
shift by rolling the record later, squeeze by reading the frames before the onset from the
record's start ("Far records in the P slot", "The far records' P squeezed into the slot");
`clip` (the default) leaves it outside.
`canvas` (wrap) rolls the waveform onto the canvas, as the simulated corpus's circular filters
do; real records take `canvas: hold` (their frames moved, the ends held), `long_gap: shift`,
the long-period steps off and `quiet_before_p` (`REAL_RECORDS`; "Real records: the canvas and
the long-period steps").

Synthesis (`decode`): band magnitudes -> STFT bins -> fast Griffin-Lim from seeded random phase
(models/cvae.py) -> `envelope_rounds` alternations of two projections: a zero-phase
equalisation that sets the record's smoothed Fourier amplitude to `fine` (`equalise`), then a
rescaling of every (band, frame) cell of its STFT to the band magnitude (`envelope_project`) ->
the long-period steps (`long_period_hz`, `random_phase_hz`) -> optionally the envelope before
the P knot capped at the pre-event level (`quiet_before_p`, off) -> the amplitude
(`record_scale`): by default the record is scaled so that its fine spectrum is exp(level) x
`fine` on average over every value, and its peak follows; "peak" sets the peak to exp(level).
A generated record's frames, fine spectrum and level need not agree the way a real record's
do, and the decoded waveform's crest factor (peak over spectrum) is the decoder's, not the
drawn one: scaled by its peak, its spectrum carried that miss, which widened the ASB14 PSA
residuals most at 1.5-4 s ("The record's scale").
The equalisation alone (`envelope_rounds: 0`) filters a generated record whose fine and coarse
parts disagree with a gain that is jagged in frequency; its long impulse response smeared the
energy in time (D5-95 1.2 x real); the last envelope projection puts it back where the
spectrogram has it (1.0 x, "The first ablations"). The decoder does not give a record exactly
the frames it is asked for, and what it misses has a mean over records; `decoder_bias` (on)
fits that mean on the training records after training (`fit_decoder_bias`), and sampling asks
the decoder for the flow's frames less it (`FlowSampler.decode`; "The decoder's mean error").
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from timesnet_gen.evaluation.realism_phases import aic_curve, p_onset_index
from timesnet_gen.evaluation.smoothing import get_operator
from timesnet_gen.models.cvae import griffin_lim, istft, stft
from timesnet_gen.models.flow_sampler.params import (CALIBRATION_SEED, FlowSamplerError,
                                                     FlowSamplerParams, warped_knots)
from timesnet_gen.records import N_SAMPLES, SAMPLING_RATE


def band_of_bin(p: FlowSamplerParams, fs: float = SAMPLING_RATE) -> np.ndarray:
    """Coarse band (0..B-1) of every STFT bin 1..n_fft/2 (DC dropped); empty bands merged."""
    freqs = np.arange(1, p.n_fft // 2 + 1) * fs / p.n_fft
    edges = np.geomspace(p.band_fmin, p.band_fmax, p.n_bands + 1)
    raw = np.clip(np.searchsorted(edges, freqs, side="right") - 1, 0, p.n_bands - 1)
    return np.unique(raw, return_inverse=True)[1]


def band_centers(p: FlowSamplerParams, fs: float = SAMPLING_RATE) -> np.ndarray:
    """(B,) Hz: the geometric mean frequency of each coarse band's STFT bins (`band_of_bin`)."""
    freqs = np.arange(1, p.n_fft // 2 + 1) * fs / p.n_fft
    bands = band_of_bin(p, fs)
    return np.exp(np.bincount(bands, np.log(freqs)) / np.bincount(bands))


def pooling_matrix(bands: np.ndarray) -> torch.Tensor:
    """(B, bins) row-normalised membership: band mean of per-bin power."""
    m = torch.zeros(int(bands.max()) + 1, len(bands), dtype=torch.float32)
    m[torch.as_tensor(bands), torch.arange(len(bands))] = 1.0
    return m / m.sum(dim=1, keepdim=True)


def band_magnitude(spec: torch.Tensor, p: FlowSamplerParams) -> torch.Tensor:
    """RMS magnitude per coarse band of complex STFTs (..., bins, frames) -> (..., B, frames);
    the DC bin is left out."""
    power = spec.abs()[..., 1:, :] ** 2
    return torch.einsum("kb,...bt->...kt", pooling_matrix(band_of_bin(p)), power).sqrt()


def fine_centers(p: FlowSamplerParams) -> np.ndarray:
    return np.geomspace(p.fine_fmin, p.fine_fmax, p.n_fine)


def fine_operator(p: FlowSamplerParams, n_samples: int, fs: float = SAMPLING_RATE):
    """Smoothing operator: rFFT grid of the record -> fine centres (Gaussian in ln f)."""
    freqs = np.fft.rfftfreq(n_samples, 1.0 / fs)
    return get_operator(freqs, fine_centers(p), "paper", p.fine_bandwidth, True)


def fine_spectrum(x: np.ndarray, p: FlowSamplerParams, fs: float = SAMPLING_RATE) -> np.ndarray:
    """ln smoothed Fourier amplitude (ln cm/s) of records (n, 3, T) -> (n, 3, n_fine)."""
    amp = np.abs(np.fft.rfft(np.asarray(x, dtype=np.float64), axis=-1)) / fs
    return np.log(fine_operator(p, x.shape[-1], fs).apply(amp) + 1e-12)


def onset_time(x: np.ndarray, fraction: float, fs: float = SAMPLING_RATE) -> np.ndarray:
    """Time (s) at which the 3-component Arias intensity of records (n, 3, T) first reaches
    `fraction` of its total -> (n,)."""
    energy = np.cumsum((np.asarray(x, dtype=np.float64) ** 2).sum(axis=1), axis=-1)
    return np.argmax(energy >= fraction * energy[:, -1:], axis=-1) / fs


def roll(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Circular shift of every record (n, 3, T) by shift[i] samples (positive = later)."""
    t = np.arange(x.shape[-1])
    return np.take_along_axis(x, ((t[None] - shift[:, None]) % x.shape[-1])[:, None], axis=-1)


def align_shift(onset_s: np.ndarray, p: FlowSamplerParams, at_s: np.ndarray | None = None,
                fs: float = SAMPLING_RATE):
    """Samples that move each record's onset to at_s (n,) s, by default p.align_s."""
    at = p.align_s if at_s is None else np.asarray(at_s, dtype=np.float64)
    return np.rint((at - np.asarray(onset_s, dtype=np.float64)) * fs).astype(np.int64)


def canvas_shift(onset_s: np.ndarray, knots: np.ndarray | None, p: FlowSamplerParams
                 ) -> tuple[np.ndarray, np.ndarray]:
    """How records with the onset (n,) s and the knots of `timing_knots` are moved onto the
    canvas (roll, pslot: by `align_shift`; warp, stretch: not at all): (the waveform's move
    (n,) samples, `move`; the frames' shift (n,) s). canvas wrap: the waveform rolls all of
    it. hold: the frames move by the whole hops in it, ends held (`resample_frames`; no
    interpolation between frames), and the waveform by the rest (0 to hop - 1 samples), its
    edge mirrored."""
    if p.timing not in ("roll", "pslot"):
        return np.zeros(len(knots), dtype=np.int64), np.zeros(len(knots))
    shift = align_shift(onset_s, p, knots[:, 1] if p.timing == "pslot" else None)
    if p.canvas == "wrap":
        return shift, np.zeros(len(shift))
    whole = np.floor_divide(shift, p.hop) * p.hop
    return shift - whole, whole / SAMPLING_RATE


def move(x: np.ndarray, shift: np.ndarray, p: FlowSamplerParams) -> np.ndarray:
    """Records (n, 3, T) moved by shift (n,) samples: canvas wrap rolls them (`roll`); hold
    shifts them, the vacated samples mirroring the record's own edge."""
    if p.canvas == "wrap":
        return roll(x, shift)
    t = x.shape[-1]
    idx = np.arange(t)[None] - np.asarray(shift)[:, None]  # (n, T) source sample
    idx = np.where(idx < 0, -idx, np.where(idx >= t, 2 * (t - 1) - idx, idx))
    return np.take_along_axis(x, idx[:, None], axis=-1)


MAX_GAP_S = 40.0  # pslot, long_gap shift: the longest P-to-onset gap the canvas takes (s)
P_PICK_AFTER_S = 1.0  # p_knot aic: the AIC window ends this long after the p_fraction time
P_PICK_WINDOW_S = 1.0  # p_knot picker: its RMS window (evaluate.realism.pick_window_s's default)
MIN_GAP_S = 0.3  # warp, stretch, pslot: consecutive knots at least this far apart in real time (s)


def p_knot_time(xn: np.ndarray, p: FlowSamplerParams, fs: float = SAMPLING_RATE) -> np.ndarray:
    """Real time (s) of the P knot of records (n, 3, T): the p_fraction time of the Arias
    intensity (p_knot arias), or (aic) the sample minimising Maeda's AIC of the vertical (the
    realism metrics' picker, `aic_curve`) between the record's start and P_PICK_AFTER_S after
    that time. The Arias time lags the P arrival by a varying amount (on the simulated corpus
    the AIC onset precedes it by a median 0.7-1.2 s, interquartile range 1.3-2.0 s), which
    smears the P onset over 2-3 frames of the slot. (picker) the realism metrics' own P onset,
    `p_onset_index`: its AIC window ends past the vertical's half-maximum RMS instead, so
    pre-event noise that holds more than p_fraction of the Arias intensity (which puts that
    time before the P arrival) does not end the window before the P."""
    arias = onset_time(xn, p.p_fraction, fs)
    if p.p_knot == "arias":
        return arias
    vertical = np.asarray(xn[:, 2], dtype=np.float64)
    vertical = vertical - vertical.mean(axis=-1, keepdims=True)
    if p.p_knot == "picker":
        return p_onset_index(vertical, fs, P_PICK_WINDOW_S) / fs
    end = np.clip(np.rint((arias + P_PICK_AFTER_S) * fs).astype(np.int64), 8,
                  vertical.shape[-1])
    aic = aic_curve(vertical, np.zeros(len(vertical), dtype=np.int64), end)
    return np.argmin(aic, axis=1) / fs


def real_knots(xn: np.ndarray, p: FlowSamplerParams) -> np.ndarray:
    """Real time (s) of the P knot, the onset and (stretch) the end knot of records (n, 3, T)
    -> (n, K), each at least MIN_GAP_S after the one before."""
    fractions = [p.align_fraction] + ([p.end_fraction] if p.timing == "stretch" else [])
    knots = np.stack([p_knot_time(xn, p)] + [onset_time(xn, f) for f in fractions], axis=1)
    for k in range(1, knots.shape[1]):
        knots[:, k] = np.maximum(knots[:, k], knots[:, k - 1] + MIN_GAP_S)
    return knots


def rolled_knots(gap_s: np.ndarray, p: FlowSamplerParams, onset_s: np.ndarray) -> np.ndarray:
    """pslot: the P knot and the onset (n, 2) in the time of the rolled record, from the
    P-to-onset gaps (n,) s and the records' own onsets (n,) s. The onset sits at align_s, and a
    gap longer than the canvas before it (align_s less MIN_GAP_S) is clipped to it (long_gap
    clip: the P falls outside the slot, and within an STFT window of the canvas's start the P
    knot's frames hold the wrapped end of the record). squeeze: gaps are kept up to MAX_GAP_S
    and to the record's onset less MIN_GAP_S, so the P knot may lie before the canvas's start;
    `canvas_start` then reads the slot from the record's start (the frames from the onset on as
    clip's). shift: gaps are kept up to MAX_GAP_S, and one that would put the P knot less than
    an STFT window (n_fft) into the canvas puts the onset that much later instead, so that the
    frames before the knot hold the pre-event part and the frames from the onset on are read
    later (the record's last seconds leave the canvas)."""
    if p.long_gap in ("clip", "squeeze"):
        gap = np.asarray(gap_s, dtype=np.float64)
        if p.long_gap == "clip":
            gap = np.clip(gap, MIN_GAP_S, p.align_s - MIN_GAP_S)
        else:
            gap = np.clip(gap, MIN_GAP_S, np.minimum(MAX_GAP_S, np.maximum(
                np.asarray(onset_s, dtype=np.float64) - MIN_GAP_S, MIN_GAP_S)))
        return np.column_stack([p.align_s - gap, np.full(len(gap), p.align_s)])
    gap = np.clip(np.asarray(gap_s, dtype=np.float64), MIN_GAP_S, MAX_GAP_S)
    onset = np.maximum(p.align_s, gap + p.n_fft / SAMPLING_RATE)
    return np.column_stack([onset - gap, onset])


def canvas_start(onset_s: np.ndarray | None, knots: np.ndarray, p: FlowSamplerParams
                 ) -> np.ndarray:
    """The time (n,) s of the moved record at which the warped canvas starts (`frame_times`),
    for records with the onset (n,) s and the knots of `timing_knots`: 0, but with long_gap
    squeeze, for a record whose P knot lies less than MIN_GAP_S into the moved canvas (or
    before it), the record's own start (align_s less the onset; negative: canvas wrap reads it
    from the rolled record's end, hold from the record's frames, which do not move): the
    frames before the P knot then hold the pre-event part, and the P-to-onset slot the P
    wave, however long the gap."""
    if p.timing != "pslot" or p.long_gap != "squeeze":
        return np.zeros(len(knots))
    far = knots[:, 0] < MIN_GAP_S
    return np.where(far, knots[:, 1] - np.asarray(onset_s, dtype=np.float64), 0.0)


def knot_features(knots: np.ndarray) -> np.ndarray:
    """Real knots (n, K) -> the timing features (n, K): ln onset, ln(onset - P knot) and
    (stretch) ln(end knot - onset)."""
    return np.log(np.column_stack([knots[:, 1], np.diff(knots, axis=1)]))


def knots_of_features(features: np.ndarray, duration: float) -> np.ndarray:
    """Inverse of `knot_features`, clipped to increasing knots with the onset in the record."""
    t_s = np.exp(features[:, 0]).clip(MIN_GAP_S, duration)
    gaps = np.exp(features[:, 1:]).clip(MIN_GAP_S)
    return np.column_stack([np.maximum(t_s - gaps[:, 0], 0.0), t_s, t_s[:, None] + gaps[:, 1:]])


def frame_times(knots: np.ndarray, p: FlowSamplerParams, n_frames: int, inverse: bool = False,
                shift_s: np.ndarray | float = 0.0, start_s: np.ndarray | float = 0.0,
                period_s: float = np.inf, fs: float = SAMPLING_RATE) -> np.ndarray:
    """Real time (s) of every warped frame of each record with real knots (n, K) -> (n,
    n_frames); inverse=True: the warped time of every real frame. The knots are in the time
    of the moved record; the real time returned (inverse: given) is that less shift_s (n,) s,
    the frames' own shift (`canvas_shift`; 0 for a rolled waveform). The warped canvas starts
    at real time start_s (n,) s (`canvas_start`); a record with a negative one is read on a
    circle of period_s: its real times before 0 are those before period_s (resample them with
    period_s), and inverse=True reads its real times from period_s + start_s on as that much
    earlier.

    The warp is piecewise linear through (start_s, 0), each (real knot, `warped_knots`) and has
    slope 1 after the last knot: warp gives the P wave a fixed slot and keeps the real durations
    of strong motion and coda; stretch also gives the strong motion (onset to end knot) a
    fixed slot and keeps the coda's real duration; pslot (knots in rolled time, `rolled_knots`)
    is a shift from the onset on (the identity unless long_gap shift moved the onset), so
    only the frames before it are interpolated."""
    far = 1e4  # s, beyond any record
    start = np.broadcast_to(np.asarray(start_s, dtype=np.float64), (len(knots),))
    real = np.column_stack([start, knots, knots[:, -1] + far])
    warped = np.r_[0.0, warped_knots(p), warped_knots(p)[-1] + far]
    grid = np.arange(n_frames) * p.hop / fs
    shift = np.broadcast_to(np.asarray(shift_s, dtype=np.float64), (len(knots),))
    if inverse:
        return np.stack([np.interp(np.where((r[0] < 0) & (grid + d >= period_s + r[0]),
                                            grid + d - period_s, grid + d), r, warped)
                         for r, d in zip(real, shift)])
    return np.stack([np.interp(grid, warped, r) - d for r, d in zip(real, shift)])


def resample_frames(frames: np.ndarray, at_s: np.ndarray, p: FlowSamplerParams,
                    fs: float = SAMPLING_RATE, period_s: float | None = None) -> np.ndarray:
    """Frames (n, ..., t) at times k * hop -> linearly interpolated at times at_s (n, t') s;
    held at the first and last frame outside them, or (period_s) read on a circle of that
    length, the first frame again at period_s."""
    t = frames.shape[-1]
    if period_s is None:
        idx = np.clip(np.asarray(at_s) * fs / p.hop, 0, t - 1)
        lo = np.floor(idx).astype(np.int64)
        w, hi = idx - lo, np.minimum(lo + 1, t - 1)
    else:
        idx = np.mod(np.asarray(at_s, dtype=np.float64), period_s) * fs / p.hop
        lo = np.minimum(np.floor(idx).astype(np.int64), t - 1)
        span = np.where(lo < t - 1, 1.0, period_s * fs / p.hop - (t - 1))
        w, hi = np.clip((idx - lo) / span, 0.0, 1.0), np.where(lo < t - 1, lo + 1, 0)
    shape = (len(frames),) + (1,) * (frames.ndim - 2) + (idx.shape[1],)
    w = w.reshape(shape)
    below = np.take_along_axis(frames, lo.reshape(shape), axis=-1)
    above = np.take_along_axis(frames, hi.reshape(shape), axis=-1)
    return (below * (1 - w) + above * w).astype(frames.dtype)


def stretch_after_onset(coarse: np.ndarray, ratio: np.ndarray, p: FlowSamplerParams,
                        fs: float = SAMPLING_RATE) -> np.ndarray:
    """Canvas frames (n, frames, C) with the part from the onset on (the frames at and after
    p.align_s, which hold the record's own time axis) lengthened ratio (n,) times: the frame at
    align_s + t reads the frame at align_s + t / ratio (linearly interpolated, the last frame
    held). The frames before the onset (the P slot and the pre-event part) are kept."""
    t = np.arange(coarse.shape[1]) * p.hop / fs  # (frames,) s
    after = t >= p.align_s
    at = np.where(after, p.align_s + (t - p.align_s) / np.asarray(ratio)[:, None], t)
    return resample_frames(np.swapaxes(coarse, 1, 2), at, p, fs).swapaxes(1, 2)


def encode(waveforms: np.ndarray, p: FlowSamplerParams) -> dict[str, np.ndarray]:
    """Records (n, 3, T) cm/s^2 -> {"level" (n, 1), "onset" (n, 1 | 2 | 3), "coarse"
    (n, frames, 3 B), "fine" (n, 3 F)}. timing "roll": the spectrogram is of the record
    moved so that its onset (align_fraction of the Arias intensity) sits at p.align_s (p.canvas:
    rolled, or its frames moved with the ends held); the onset (s) is a feature. timing "warp"
    and "stretch": the spectrogram is resampled onto warped time (`frame_times`); the features
    are `knot_features`. "pslot": moved as roll, then the frames before the onset resampled so
    that the P knot sits at p_align_s; the features are the onset (s) and ln(onset - P knot)."""
    x = np.asarray(waveforms, dtype=np.float32)
    if x.ndim != 3 or x.shape[1] != 3:
        raise FlowSamplerError(f"records must have shape (n, 3, T), got {x.shape}")
    if not np.isfinite(x).all():
        raise FlowSamplerError("records contain NaN or inf samples")
    peak = np.abs(x).max(axis=(1, 2))
    if (peak <= 0).any():
        raise FlowSamplerError(f"record {int(np.argmax(peak <= 0))} is all zeros")
    xn = x / peak[:, None, None]
    onset, knots = None, None
    if p.timing in ("warp", "stretch"):
        knots = real_knots(xn, p)
        timing = knot_features(knots)
    else:
        onset = onset_time(xn, p.align_fraction)
        timing = onset[:, None]
        if p.timing == "pslot":
            knots = rolled_knots(onset - p_knot_time(xn, p), p, onset)
            timing = np.column_stack([onset, np.log(knots[:, 1] - knots[:, 0])])
    return {
        "level": np.log(peak)[:, None].astype(np.float32),
        "onset": timing.astype(np.float32),
        "coarse": canvas_frames(xn, onset, knots, p),
        "fine": fine_spectrum(xn, p).reshape(len(xn), -1).astype(np.float32),
    }


def timing_knots(timing: np.ndarray, p: FlowSamplerParams, duration: float
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Timing features (n, K) as `encode` returns them -> the onset (n,) s, clipped to the
    record, and the knots (n, K) that place the frames (pslot: in rolled time; warp, stretch:
    in real time; roll: None)."""
    timing = np.asarray(timing, dtype=np.float64)
    if p.timing in ("warp", "stretch"):
        knots = knots_of_features(timing, duration)
        return knots[:, 1], knots
    onset = timing[:, 0].clip(0.0, duration)
    knots = rolled_knots(np.exp(timing[:, 1]), p, onset) if p.timing == "pslot" else None
    return onset, knots


def canvas_frames(xn: np.ndarray, onset: np.ndarray | None, knots: np.ndarray | None,
                  p: FlowSamplerParams) -> np.ndarray:
    """The coarse frames (n, frames, 3 B) of unit-peak records xn (n, 3, T) with the onset (n,)
    s (roll, pslot) and the knots (n, K) of `timing_knots` (not roll): the log band
    magnitudes of the record moved (roll, pslot; p.canvas) so that its onset sits at align_s
    (pslot: at the onset knot), resampled onto warped time (not roll). `encode` gives it the
    records' own timing; `fit_decoder_bias` the timing that decoded records were made with."""
    wave_shift, frame_shift = canvas_shift(onset, knots, p)
    if p.timing in ("roll", "pslot"):
        xn = move(xn, wave_shift, p)
    band = band_magnitude(stft(torch.from_numpy(np.asarray(xn, dtype=np.float32)), p.n_fft,
                               p.hop), p)  # (n, 3, B, t)
    coarse = torch.log(band + p.log_eps).numpy()
    n, c, b, t = coarse.shape
    if p.timing != "roll":
        start = canvas_start(onset, knots, p)
        at = frame_times(knots, p, t, shift_s=frame_shift, start_s=start)
        wrap = p.canvas == "wrap" and (start < 0).any()  # hold: the frames are the record's
        period = xn.shape[-1] / SAMPLING_RATE if wrap else None
        coarse = resample_frames(coarse, at, p, period_s=period)
    elif p.canvas == "hold":
        grid = np.arange(t) * p.hop / SAMPLING_RATE
        coarse = resample_frames(coarse, grid[None] - frame_shift[:, None], p)
    return coarse.transpose(0, 3, 1, 2).reshape(n, t, c * b)


def low_taper(freqs: np.ndarray, below_hz: float) -> np.ndarray:
    """Weight 1 below below_hz / 2, falling linearly to 0 at below_hz (and 0 above)."""
    return np.clip(2.0 * (below_hz - freqs) / below_hz, 0.0, 1.0)


def equalise(x: torch.Tensor, target: torch.Tensor, p: FlowSamplerParams,
             fs: float = SAMPLING_RATE, below_hz: float | None = None) -> torch.Tensor:
    """Zero-phase filter records (n, 3, T) so their smoothed ln FAS becomes target (n, 3, F).

    The ln ratio on the fine centres is interpolated linearly in ln f onto the rFFT grid (held
    flat outside fine_fmin..fine_fmax); DC is left at zero. below_hz: only below this frequency
    (the ln ratio at full weight below below_hz / 2, tapering linearly to none at below_hz).
    """
    spec = np.fft.rfft(x.double().numpy(), axis=-1)
    current = np.log(fine_operator(p, x.shape[-1], fs).apply(np.abs(spec) / fs) + 1e-12)
    delta = target.double().numpy() - current  # (n, 3, F)
    freqs = np.fft.rfftfreq(x.shape[-1], 1.0 / fs)
    logf = np.log(np.maximum(freqs, freqs[1]))
    ln_c = np.log(fine_centers(p))
    hi = np.clip(np.searchsorted(ln_c, logf), 1, len(ln_c) - 1)
    w = np.clip((logf - ln_c[hi - 1]) / (ln_c[hi] - ln_c[hi - 1]), 0.0, 1.0)
    ln_gain = delta[..., hi - 1] * (1 - w) + delta[..., hi] * w
    if below_hz is not None:
        ln_gain *= low_taper(freqs, below_hz)
    gain = np.exp(ln_gain)
    gain[..., 0] = 0.0
    return torch.from_numpy(np.fft.irfft(spec * gain, n=x.shape[-1], axis=-1)).float()


def random_phase(x: torch.Tensor, below_hz: float, generator: torch.Generator,
                 fs: float = SAMPLING_RATE) -> torch.Tensor:
    """Records (n, 3, T) whose Fourier phase below below_hz is drawn uniformly from generator
    (blended with the record's own by `low_taper`); every bin keeps its magnitude, and the DC
    bin (real) is left as it is."""
    spec = torch.fft.rfft(x.double(), dim=-1)
    w = torch.from_numpy(low_taper(np.fft.rfftfreq(x.shape[-1], 1.0 / fs), below_hz))
    k = int(torch.count_nonzero(w))  # the taper is a prefix of the bins
    w[0] = 0.0
    head = spec[..., :k]
    drawn = torch.rand(head.shape, generator=generator, dtype=torch.float64) * (2 * math.pi)
    mixed = head * (1 - w[:k]) + torch.polar(head.abs(), drawn) * w[:k]
    spec = torch.cat([torch.polar(head.abs(), torch.angle(mixed)), spec[..., k:]], dim=-1)
    return torch.fft.irfft(spec, n=x.shape[-1], dim=-1).float()


def decoded_p_knot(timing: np.ndarray, p: FlowSamplerParams, duration: float) -> np.ndarray:
    """Real time (s) of the P knot of records decoded from their timing features (n, K)
    (timing warp, stretch or pslot), as `decode` places it."""
    onset, knots = timing_knots(timing, p, duration)
    if p.timing == "pslot":
        return onset - np.diff(knots, axis=1)[:, 0]
    return knots[:, 0]


def quiet_before_p(x: torch.Tensor, p_knot: np.ndarray, guard_s: float,
                   fs: float = SAMPLING_RATE, smooth_s: float = 0.32) -> torch.Tensor:
    """Records (n, 3, T) whose envelope (the rms over smooth_s, centred) in the guard_s before
    their P knot p_knot (n,) s is capped, component by component, at their rms over the guard_s
    before that (the pre-event level). Records with less than 0.5 s of that reference are
    left as they are; nothing at or after the P knot changes."""
    xs = x.double().numpy()
    n, _, length = xs.shape
    w = max(int(round(smooth_s * fs)), 1)
    c = np.concatenate([np.zeros((n, 3, 1)), np.cumsum(xs ** 2, axis=-1)], axis=-1)
    lo = np.clip(np.arange(length) - w // 2, 0, length)
    hi = np.clip(np.arange(length) - w // 2 + w, 0, length)
    env = np.sqrt((c[..., hi] - c[..., lo]) / np.maximum(hi - lo, 1))
    t = np.arange(length) / fs
    tp = np.asarray(p_knot, dtype=np.float64)[:, None, None]
    ref_mask = (t >= tp - 2 * guard_s) & (t < tp - guard_s)  # (n, 1, T)
    count = ref_mask.sum(axis=-1)
    ref = np.sqrt((xs ** 2 * ref_mask).sum(axis=-1) / np.maximum(count, 1))  # (n, 3)
    region = (t >= tp - guard_s) & (t < tp) & (count >= 0.5 * fs)[..., None]
    gain = np.where(region, np.minimum(1.0, ref[..., None] / np.maximum(env, 1e-30)), 1.0)
    return torch.from_numpy(xs * gain).float()


def envelope_project(x: torch.Tensor, band_mag: torch.Tensor, p: FlowSamplerParams
                     ) -> torch.Tensor:
    """Records (n, 3, T) whose STFT has every (band, frame) cell scaled to the band magnitude
    band_mag (n, 3, B, frames); the phase and the shape within a band are kept, the DC bin
    takes band 0's gain (it holds the leakage of the lowest frequencies)."""
    spec = stft(x, p.n_fft, p.hop)
    gain = (band_mag / band_magnitude(spec, p).clamp_min(1e-12))[:, :, band_of_bin(p)]
    gain = torch.cat([gain[:, :, :1], gain], dim=2)  # (n, 3, bins + DC, frames)
    return istft(spec * gain, p.n_fft, p.hop, x.shape[-1])


def decode(level: torch.Tensor, onset: torch.Tensor, coarse: torch.Tensor, fine: torch.Tensor,
           p: FlowSamplerParams, generator: torch.Generator, n_samples: int = N_SAMPLES
           ) -> np.ndarray:
    """Physical features (as `encode` returns, as tensors) -> records (n, 3, T) float32 cm/s^2."""
    n, t, cb = coarse.shape
    bands = torch.as_tensor(band_of_bin(p))
    logmag = coarse.reshape(n, t, 3, cb // 3).permute(0, 2, 3, 1)  # (n, 3, B, frames)
    duration = n_samples / SAMPLING_RATE
    onset_s, knots = timing_knots(onset.double().numpy(), p, duration)
    wave_shift, frame_shift = canvas_shift(onset_s, knots, p)
    if p.timing != "roll":  # warped frames back to real time (pslot: the moved record's)
        at = frame_times(knots, p, t, inverse=True, shift_s=frame_shift,
                         start_s=canvas_start(onset_s, knots, p),
                         period_s=duration if p.canvas == "wrap" else np.inf)
        logmag = torch.from_numpy(resample_frames(logmag.numpy(), at, p))
    elif p.canvas == "hold":
        at = np.arange(t) * p.hop / SAMPLING_RATE + frame_shift[:, None]
        logmag = torch.from_numpy(resample_frames(logmag.numpy(), at, p))
    band_mag = (torch.exp(logmag) - p.log_eps).clamp_min(0.0)  # (n, 3, B, frames)
    mag = F.pad(band_mag[:, :, bands], (0, 0, 1, 0))  # every bin of its band; DC zero
    x = griffin_lim(mag, p.n_fft, p.hop, n_samples, p.griffin_lim_iters,
                    p.griffin_lim_momentum, generator)
    target = fine.reshape(n, 3, -1)
    x = equalise(x, target, p)
    for k in range(p.envelope_rounds):  # alternate projections; the envelope's comes last
        if k:
            x = equalise(x, target, p)
        x = envelope_project(x, band_mag, p)
    if p.long_period_hz > 0:
        x = equalise(x, target, p, below_hz=p.long_period_hz)
    if p.random_phase_hz > 0:
        x = random_phase(x, p.random_phase_hz, generator)
    if p.timing in ("roll", "pslot"):
        x = torch.from_numpy(move(x.numpy(), -wave_shift, p))
    if p.quiet_before_p and p.timing != "roll":
        x = quiet_before_p(x, decoded_p_knot(onset.double().numpy(), p, duration),
                           p.n_fft / SAMPLING_RATE)
    if p.record_scale == "spectrum":  # the amplitude at which x's fine spectrum is the unit-peak
        #                               target on average over every value; the peak follows
        miss = fine_spectrum(x.numpy(), p) - target.double().numpy()  # ln, (n, 3, n_fine)
        unit = torch.from_numpy(np.exp(miss.mean(axis=(1, 2)))).float()
    else:
        unit = x.abs().amax(dim=(1, 2)).clamp_min(1e-20)
    return (x * (torch.exp(level[:, 0]) / unit)[:, None, None]).numpy().astype(np.float32)


def fit_decoder_bias(feats: dict[str, np.ndarray], p: FlowSamplerParams, n_samples: int
                     ) -> torch.Tensor:
    """(frames, 3 B) float32: the mean over records of the coarse frames of their decoded
    records (`canvas_frames` at the timing they were decoded with) less their own, for
    records' features feats (as `encode` returns them). `decode` does not give a record
    exactly the frames it is asked for, and what it misses has a mean (leakage of the loud
    frames into the quiet ones, among others) that a linear classifier sees; sampling asks the
    decoder for the flow's frames less this mean (`FlowSampler.decode`, p.decoder_bias)."""
    generator = torch.Generator().manual_seed(p.seed + CALIBRATION_SEED)
    n = len(feats["coarse"])
    total = np.zeros(feats["coarse"].shape[1:])
    for start in range(0, n, DECODE_CHUNK):
        part = {k: v[start:start + DECODE_CHUNK] for k, v in feats.items()}
        x = decode(*(torch.from_numpy(part[k]) for k in ("level", "onset", "coarse", "fine")),
                   p, generator, n_samples)
        xn = x / np.abs(x).max(axis=(1, 2), keepdims=True).clip(1e-30)
        onset, knots = timing_knots(part["onset"], p, n_samples / SAMPLING_RATE)
        total += (canvas_frames(xn, onset, knots, p) - part["coarse"]).sum(axis=0)
    return torch.from_numpy(total / n).float()


DECODE_CHUNK = 128  # records decoded at once by `fit_decoder_bias`
