"""What the flow sampler's test modules share: tiny parameters, synthetic records, state
checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from timesnet_gen.models import flow_sampler as fs
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
