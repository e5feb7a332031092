"""The HVSR protocol in torch: same numbers as `hvsr.hvsr`, differentiable, runs on a GPU.

The high-pass is applied as the Butterworth filter's |H|^2 on the spectrum ('spectral',
equal to filtfilt within ~1e-9 here, see spectra.py), and smoothing reuses the numpy
operator's compressed blocks as tensors, so both implementations share one definition.
"""

from __future__ import annotations

import numpy as np
import torch

from timesnet_gen.config import EvaluateParams
from timesnet_gen.evaluation.hvsr import hvsr_operator
from timesnet_gen.evaluation.smoothing import SmoothingOperator
from timesnet_gen.evaluation.spectra import RecordError, _highpass_gain, _tukey, fft_length

_TENSORS: dict[tuple, list] = {}


def _blocks(op: SmoothingOperator, device: torch.device, dtype: torch.dtype) -> list:
    key = (id(op), str(device), dtype)
    if key not in _TENSORS:
        if len(_TENSORS) > 16:
            _TENSORS.clear()

        def t(a):
            return None if a is None else torch.as_tensor(a, device=device, dtype=dtype)

        _TENSORS[key] = [(b.cols, t(b.dense), t(b.left), t(b.right)) for b in op.blocks]
    return _TENSORS[key]


def smooth_torch(spectra: torch.Tensor, op: SmoothingOperator) -> torch.Tensor:
    """Apply a SmoothingOperator to spectra (..., F) -> (..., F_out), differentiable."""
    lead = spectra.shape[:-1]
    x = spectra.reshape(-1, spectra.shape[-1]).transpose(0, 1)  # (F, m)
    parts = []
    for cols, dense, left, right in _blocks(op, spectra.device, spectra.dtype):
        xb = x[cols]
        parts.append(dense @ xb if dense is not None else left @ (right @ xb))
    return torch.cat(parts, dim=0).transpose(0, 1).reshape(*lead, len(op.centers))


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    # sqrt has an infinite slope at 0 (the DC bin after detrending): keep gradients finite.
    positive = x > 0
    return torch.sqrt(torch.where(positive, x, torch.ones_like(x))) * positive


def _horizontal(e: torch.Tensor, n: torch.Tensor, how: str) -> torch.Tensor:
    if how == "geometric":
        return _safe_sqrt(e * n)
    if how == "quadratic":
        return _safe_sqrt(0.5 * (e**2 + n**2))
    if how == "arithmetic":
        return 0.5 * (e + n)
    if how == "total":
        return _safe_sqrt(e**2 + n**2)
    raise ValueError(f"unknown horizontal combination {how!r}")


def hvsr_torch(
    records: torch.Tensor, fs: float = 100.0, params: EvaluateParams | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """HVSR of records (n, 3, T) -> (freqs (F,), curves (n, F)) on the records' device/dtype.

    No per-record screening (NaN records raise; see hvsr_details for the batch reasons).
    """
    params = params or EvaluateParams()
    if records.ndim != 3 or records.shape[1] != 3:
        raise RecordError(f"records must have shape (n, 3, T), got {tuple(records.shape)}")
    if not torch.isfinite(records).all():
        raise RecordError("records contain NaN or inf samples")
    if not records.is_floating_point():
        records = records.double()
    n_samples = records.shape[-1]
    op = hvsr_operator(n_samples, fs, params)
    kw = {"device": records.device, "dtype": records.dtype}
    # Linear detrend, closed form with centred time (as spectra.detrend).
    t = torch.arange(n_samples, **kw) - (n_samples - 1) / 2.0
    slope = (records @ t) / (t @ t)
    x = records - records.mean(dim=-1, keepdim=True) - slope[..., None] * t
    if params.taper > 0:
        x = x * torch.as_tensor(_tukey(n_samples, params.taper), **kw)
    nfft = fft_length(n_samples, fs, params)
    spectra = torch.fft.rfft(x, n=nfft, dim=-1).abs()  # (n, 3, F); zeros placed by rfft
    if params.highpass_hz > 0:
        gain = _highpass_gain(nfft, float(fs), params.highpass_order, params.highpass_hz)
        spectra = spectra * torch.as_tensor(gain, **kw)
    h = _horizontal(spectra[:, 0], spectra[:, 1], params.horizontal)
    smoothed = smooth_torch(torch.stack([h, spectra[:, 2]]), op)  # (2, n, F_out)
    curves = smoothed[0] / torch.clamp(smoothed[1], min=params.v_floor)
    return torch.as_tensor(np.asarray(op.centers), **kw), curves


def f0_torch(freqs: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
    """Frequency of the global maximum of each curve (n,), not differentiable."""
    return freqs[torch.argmax(curves, dim=-1)]
