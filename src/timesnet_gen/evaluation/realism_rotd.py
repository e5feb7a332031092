"""RotD50 pseudo-spectral acceleration of many records at once, and pyrotd as its reference.

RotD50 (Boore 2010): the two horizontal oscillator responses are rotated over 0-179 deg, the
peak of each rotated response is taken, and RotD50 is the median of the 180 peaks.

`rotd50` uses pyrotd's method (the oscillator's transfer function applied to the record's
Fourier spectrum, Kottke's `calc_oscillator_resp`) batched over records: one rFFT per record,
one inverse FFT per period. Two differences, both on purpose:
  - the record is zero padded by `pad_s` before the FFT, so the response of the end of the
    record does not wrap around onto its start (pyrotd pads nothing: at 5 s on a 60 s record
    that moves RotD50 by up to ~15 %);
  - the response is evaluated at >= `samples_per_cycle` samples per oscillator period (band-
    limited interpolation by zero-extending the spectrum), so the sampled peak is within
    1 - cos(pi / spc) of the continuous one (1.2 % worst case, ~0.3 % typical at 20).
The rotation is exact but looks only at the blocks (1/16 period long) of largest vector
amplitude: a rotated response is never larger than the vector amplitude, so every angle whose
peak reaches the largest vector amplitude left out is exact; when the median angle's peak does
not, more blocks are taken (the whole response if need be). pyrotd (pinned) is the checked
reference (`pyrotd_rotd50`).
"""

from __future__ import annotations

import importlib.metadata
import sys
import types

import numpy as np
import scipy.fft

ANGLES_DEG = np.arange(180)
_ROTATION = np.stack([np.cos(np.radians(ANGLES_DEG)), np.sin(np.radians(ANGLES_DEG))], axis=1)
N_BLOCKS = 8  # blocks of largest vector amplitude tried first per record


def psa_transfer(freqs: np.ndarray, period: float, damping: float) -> np.ndarray:
    """Ground acceleration -> pseudo-acceleration w0^2 u of a damped oscillator (complex, (F,))."""
    w = 2 * np.pi * np.asarray(freqs, dtype=np.float64)
    w0 = 2 * np.pi / period
    return -(w0**2) / (w**2 - w0**2 - 2j * damping * w0 * w)


def upsampling(period: float, fs: float, samples_per_cycle: float) -> int:
    """Integer factor q so that q * fs gives >= samples_per_cycle samples per period."""
    return max(1, int(np.ceil(samples_per_cycle / (period * fs) - 1e-9)))


def padded_length(n_samples: int, fs: float, pad_s: float) -> int:
    """FFT length >= n_samples + pad_s * fs, a multiple of 256 (even, as pyrotd's frequency grid
    assumes, and whole blocks for the peak search) with small prime factors."""
    return 256 * scipy.fft.next_fast_len(-(-(n_samples + int(round(pad_s * fs))) // 256))


def _block_max(v: np.ndarray, levels: int) -> np.ndarray:
    """Maxima over contiguous blocks of 2**levels samples (c, L) -> (c, L / 2**levels)."""
    for _ in range(levels):  # pairwise halving: vectorised, unlike a reduce over a short axis
        v = np.maximum(v[:, 0::2], v[:, 1::2])
    return v


def _median_of_peaks(
    resp: np.ndarray, n_blocks: int, levels: int
) -> tuple[np.ndarray, np.ndarray]:
    """RotD50 of responses (c, 2, L) from the n_blocks blocks of largest vector amplitude.

    Returns (rotd50 (c,), exact (c,)): exact where the two middle angles' peaks reach the
    largest vector amplitude left out (so no left-out sample can change them).
    """
    c, _, length = resp.shape
    block = 2**levels
    total = -(-length // block)
    if total * block != length:  # zeros never change a peak
        resp = np.concatenate([resp, np.zeros((c, 2, total * block - length), resp.dtype)], -1)
    block_max = _block_max(np.einsum("ckl,ckl->cl", resp, resp), levels)  # (c, total)
    if n_blocks >= total:
        idx = np.broadcast_to(np.arange(total), (c, total))
        level = np.zeros(c)
    else:
        idx = np.argpartition(block_max, total - n_blocks - 1, axis=-1)[:, total - n_blocks - 1:]
        # idx[:, 0] is the (n_blocks + 1)-th largest block: the largest one left out.
        level = np.sqrt(np.take_along_axis(block_max, idx[:, :1], axis=-1)[:, 0])
        idx = idx[:, 1:]
    blocks = resp.reshape(c, 2, total, block)
    picked = np.take_along_axis(blocks, idx[:, None, :, None], axis=2).reshape(c, 2, -1)
    # One GEMM (c * k, 2) @ (2, 180): far faster than a batched matmul with inner size 2.
    points = np.ascontiguousarray(picked.transpose(0, 2, 1)).reshape(-1, 2)
    rotated = (points @ _ROTATION.T.astype(resp.dtype)).reshape(c, -1, len(ANGLES_DEG))
    peaks = np.maximum(rotated.max(axis=1), -rotated.min(axis=1))  # (c, 180)
    peaks.sort(axis=1)
    mid = len(ANGLES_DEG) // 2
    return 0.5 * (peaks[:, mid - 1] + peaks[:, mid]), peaks[:, mid - 1] >= level


def rotd50_of_response(resp: np.ndarray, samples_per_cycle: float = 20.0) -> np.ndarray:
    """RotD50 (c,) of two-component responses (c, 2, L), exact (more blocks until it is).

    Blocks span about a sixteenth of the oscillator's period (samples_per_cycle samples).
    """
    levels = int(np.clip(np.round(np.log2(samples_per_cycle / 16)), 1, 8))
    out, ok = _median_of_peaks(resp, N_BLOCKS, levels)
    todo, n_blocks = np.flatnonzero(~ok), N_BLOCKS * 4
    while len(todo):
        out[todo], ok = _median_of_peaks(resp[todo], n_blocks, levels)
        todo, n_blocks = todo[~ok], n_blocks * 4
    return out


def _checked(horizontals: np.ndarray, periods: np.ndarray | list[float], damping: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """Records (n, 2, T) and periods as float64; ValueError on a wrong shape, a period <= 0 s or
    a damping outside [0, 1)."""
    x = np.asarray(horizontals, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] != 2:
        raise ValueError(f"horizontals must have shape (n, 2, T), got {x.shape}")
    periods = np.asarray(periods, dtype=np.float64)
    if np.any(periods <= 0) or not 0 <= damping < 1:
        raise ValueError(f"periods must be > 0 s and damping in [0, 1), got {periods}, {damping}")
    return x, periods


def rotd50(
    horizontals: np.ndarray,
    fs: float,
    periods: np.ndarray | list[float],
    damping: float = 0.05,
    samples_per_cycle: float = 20.0,
    pad_s: float = 60.0,
    chunk: int = 64,
) -> np.ndarray:
    """RotD50 PSA (same unit as the input, e.g. cm/s^2) of records (n, 2, T) -> (n, P)."""
    x, periods = _checked(horizontals, periods, damping)
    n_fft = padded_length(x.shape[-1], fs, pad_s)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / fs)
    transfer = [psa_transfer(freqs, p, damping).astype(np.complex64) for p in periods]
    factors = [upsampling(p, fs, samples_per_cycle) for p in periods]
    out = np.empty((len(x), len(periods)))
    for start in range(0, len(x), chunk):
        spec = scipy.fft.rfft(x[start:start + chunk], n=n_fft, axis=-1).astype(np.complex64)
        for j, (p, h, q) in enumerate(zip(periods, transfer, factors)):
            # Zero-extending the spectrum to q * n_fft samples interpolates the (band-limited)
            # response; irfft's 1 / n scaling is undone by q.
            resp = scipy.fft.irfft(spec * h, n=q * n_fft, axis=-1) * q
            out[start:start + chunk, j] = rotd50_of_response(resp, q * fs * p)
    return out


def import_pyrotd():
    """pyrotd 0.6.1 reads its version through pkg_resources, which setuptools >= 81 no longer
    ships; give it importlib.metadata's answer instead (only when pkg_resources is absent)."""
    if "pyrotd" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            shim = types.ModuleType("pkg_resources")
            shim.get_distribution = lambda name: types.SimpleNamespace(
                version=importlib.metadata.version(name))
            sys.modules["pkg_resources"] = shim
    import pyrotd

    pyrotd.processes = 1  # no multiprocessing pool: callers batch and the tests share cores
    return pyrotd


def pyrotd_rotd50(
    horizontals: np.ndarray,
    fs: float,
    periods: np.ndarray | list[float],
    damping: float = 0.05,
    pad_s: float = 60.0,
    max_freq_ratio: float = 10.0,
) -> np.ndarray:
    """Reference RotD50 (n, P) by pyrotd, one record at a time, on the same zero-padded input.

    max_freq_ratio 10 gives pyrotd's response >= 20 samples per oscillator period (its default
    of 5 gives 10). method='rigorous': every time step enters the rotation.
    """
    pyrotd = import_pyrotd()
    x, periods = _checked(horizontals, periods, damping)
    n_fft = padded_length(x.shape[-1], fs, pad_s)
    padded = np.zeros(x.shape[:-1] + (n_fft,))
    padded[..., : x.shape[-1]] = x
    freqs = 1.0 / periods
    out = np.empty((len(x), len(freqs)))
    for i, (a, b) in enumerate(padded):
        res = pyrotd.calc_rotated_spec_accels(
            1.0 / fs, a, b, freqs, damping, percentiles=[50], max_freq_ratio=max_freq_ratio,
            method="rigorous")
        out[i] = res.spec_accel
    return out
