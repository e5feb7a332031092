"""The flow sampler's mean model and latent coordinates: the scenario terms, the station
intercepts, the principal components and the remainder's transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flow_common import tiny_params

from timesnet_gen.models import flow_sampler as fs
from timesnet_gen.models.flow_sampler import latent as lat
from timesnet_gen.models.flow_sampler import network as fnet


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
