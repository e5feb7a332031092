"""The flow sampler's fits after training: the gains and the frame smoothing."""

from __future__ import annotations

import pytest
import torch

from flow_common import tiny_params

from timesnet_gen.models import flow_sampler as fs
from timesnet_gen.models.flow_sampler import calibration as cal
from timesnet_gen.models.flow_sampler import latent as lat


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
