"""The torch HVSR matches the numpy one and is differentiable."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from timesnet_gen.config import EvaluateParams  # noqa: E402
from timesnet_gen.evaluation import f0, hvsr  # noqa: E402
from timesnet_gen.evaluation.spectra import RecordError  # noqa: E402
from timesnet_gen.evaluation.torch_hvsr import f0_torch, hvsr_torch  # noqa: E402

torch.set_num_threads(1)
FS = 100.0


def _records(n: int = 3, t: int = 6000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rec = rng.standard_normal((n, 3, t))
    rec[:, :2] += np.cumsum(rng.standard_normal((n, 2, t)), axis=-1) * 0.05  # some drift
    return rec


@pytest.mark.parametrize("horizontal", ["geometric", "total"])
def test_torch_matches_numpy_float64(horizontal):
    rec = _records()
    params = EvaluateParams(horizontal=horizontal)
    freqs, ref = hvsr(rec, FS, params)
    tf, curves = hvsr_torch(torch.from_numpy(rec), FS, params)
    assert np.array_equal(tf.numpy(), freqs)
    assert np.max(np.abs(curves.numpy() / ref - 1)) < 1e-9
    assert np.array_equal(f0_torch(tf, curves).numpy(), f0(freqs, ref))


def test_torch_float32_close_and_taper():
    rec = _records(seed=1)
    params = EvaluateParams(taper=0.05, grid="log", n_grid_points=100)
    _, ref = hvsr(rec, FS, params)
    _, curves = hvsr_torch(torch.from_numpy(rec).float(), FS, params)
    assert curves.dtype == torch.float32
    assert np.max(np.abs(curves.double().numpy() / ref - 1)) < 1e-3


def test_gradients_are_finite_and_correct():
    rng = np.random.default_rng(2)
    params = EvaluateParams(fmin=5.0, fmax=20.0, min_cycles=1.0, highpass_hz=1.0,
                            grid="log", n_grid_points=12)
    x = torch.tensor(rng.standard_normal((1, 3, 150)), requires_grad=True)
    _, curves = hvsr_torch(x, FS, params)
    curves.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    x = x.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda r: hvsr_torch(r, FS, params)[1], (x,))


def test_bad_input():
    with pytest.raises(RecordError, match="shape"):
        hvsr_torch(torch.zeros(2, 2, 6000))
    rec = torch.from_numpy(_records(1))
    rec[0, 0, 3] = float("nan")
    with pytest.raises(RecordError, match="NaN"):
        hvsr_torch(rec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_cuda_matches_cpu():
    rec = torch.from_numpy(_records())
    _, cpu = hvsr_torch(rec)
    _, gpu = hvsr_torch(rec.cuda())
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-9)
