"""The mean model and the flow's coordinates. Each feature's residual from a linear site and
scenario mean (`fit_stats`: a station intercept and slopes on M and ln R) is standardised.

The flow's coordinates (`to_latent`): the leading `record_pcs` principal components of the
whole standardised spectrogram (record-level modes: how strong the P wave is, how long the
strong motion lasts) are taken out of the frames and join the static part as whitened
scalars. The flow models the frame-level remainder along the frames. Without them the flow
left the record-to-record spread of such modes too small and put independent noise in
every cell (benchmarks/diagnose_flow.py; "Principal-component latent"). The remainder
can be divided by its per-cell training rms (`remainder_scale`), mapped through each channel's
fitted marginal onto a standard normal (`remainder_gauss`) or whitened by a fitted
autoregression along the frames (`remainder_ar`), so that the flow's output gets the
remainder's per-frame spread, skewed marginals or correlations; all three are off by default
("The frame remainder"). What is on (`remainder_calibrate`) corrects the spread after
training instead: `calibrate_frames` fits a per-cell gain, the training records' rms over the
flow's own, that sampling applies to the flow's frame output ("The frame gain"), and
`remainder_smooth` (on) a recursion along the frames that gives that output the training
records' correlation from one frame to the next, which the flow leaves at zero (`smoothing`,
"The frame smoothing").
`record_prior` (on by default) draws the record components by a small conditional flow of
their own (`RecordPrior`: an MLP over the whitened components given the station and the
scenario, fitted after training on every training record, the pre-training stations' as "any
station"), whose joint draw keeps more of each record's sharp P onset than the TimesBlock
flow's ("The record prior", "The record prior on every station"). The prior is also
given the record's level and timing scalars (`prior_scalars`) and the leading components of its
fine spectrum (`prior_fine`), both the TimesBlock flow's draw at sampling, so the record modes
agree with the amplitude and the spectrum that the decoder imposes ("The record prior
given the fine spectrum"); `prior_calibrate`
(on) then gives the prior's draws the training records' spread, component by component, as
the frame gain does for the frames ("The record prior's gain"). Options measured and left
off: `station_scatter`, which gives the flow's level scalar each target station's own spread,
its training records' shrunk toward the stations' by empirical Bayes (on until `record_scale`;
"The station's own scatter"); and `scalar_calibrate`, the same gain for the flow's level and
timing scalars ("The scalar gain").
`coarse_pcs` and `fine_pcs` optionally keep only the leading components of a frame's
channels and of the fine spectrum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from timesnet_gen.models.flow_sampler.params import (FlowSamplerError, FlowSamplerParams,
                                                     n_prior_fine, n_scalars)


@dataclass
class Batchable:
    """Standardised training tensors of one phase."""

    coarse: torch.Tensor  # (n, T, C)
    static: torch.Tensor  # (n, S) = [level, timing, fine]
    station: torch.Tensor  # (n,) long, 0 = any
    scenario: torch.Tensor  # (n, 2) standardised [M, ln R]

    def to(self, device: torch.device) -> Batchable:
        return Batchable(*(getattr(self, f.name).to(device) for f in fields(self)))


def scenario_features(scenario: np.ndarray) -> np.ndarray:
    """(n, 2) [M, distance km] -> (n, 2) [M, ln R]."""
    return np.stack([scenario[:, 0], np.log(scenario[:, 1])], axis=1)


def standardise_scenario(scenario: np.ndarray, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """(n, 2) [M, distance km] -> (n, 2) standardised [M, ln R]."""
    cond = torch.as_tensor(scenario_features(scenario), dtype=torch.float32)
    return (cond - stats["cond_mean"]) / stats["cond_std"]


def static_of(feats: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([feats["level"], feats["onset"], feats["fine"]], axis=1)


def scenario_terms(z: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mean model's scenario terms of standardised scenarios z (n, 2) [M', lnR']: z itself,
    or where stats holds the training range (cond_lo, cond_hi; `mean_quadratic`) also M'^2,
    lnR'^2 and M' lnR' of z clipped to that range (n, 5), so that the mean is held linear
    outside the range the records support rather than extrapolated as a parabola."""
    if "cond_lo" not in stats:
        return z
    c = torch.maximum(torch.minimum(z, stats["cond_hi"]), stats["cond_lo"])
    return torch.cat([z, c * c, c[:, :1] * c[:, 1:]], dim=1)


def eb_weight(dev: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Empirical-Bayes weight tau^2 / (tau^2 + noise) of the deviations dev (S, ...) of S
    groups from their mean, each with the sampling variance noise (S, ...): tau^2 is their
    variance over the groups less the mean sampling variance (0 where negative), so a group's
    deviation keeps this share of itself and the rest goes to the mean."""
    tau2 = np.clip((dev ** 2).mean(axis=0) - noise.mean(axis=0), 0.0, None)
    return tau2 / np.maximum(tau2 + noise, 1e-30)


def site_intercepts(icpt: np.ndarray, resid_var: np.ndarray, counts: np.ndarray
                    ) -> np.ndarray:
    """Station intercepts of the aligned frames (S, T, C) re-estimated as a site term: the
    mean over the S stations, plus each station's own deviation from it averaged over the T
    frames (a site's amplification acts on every frame alike), plus the rest of its deviation
    shrunk by the empirical-Bayes weight tau^2 / (tau^2 + s^2 / n) per cell. s^2 (T, C): the
    residual variance; n (S,): the station's training records; tau^2: the rest's variance over
    the stations less its mean sampling variance s^2 / n (0 where negative). Where the
    stations' time-varying deviations are no larger than a mean of n records' noise, the
    weight is near 0 and the frames of a station move together. tau^2 is one value for all
    stations: fitted over many stations with few records, it also takes the real deviations of
    the stations with many (on the simulated corpus, the targets' durations; "The site
    term")."""
    dev = icpt - icpt.mean(axis=0)
    site = dev.mean(axis=1, keepdims=True)
    rest = dev - site
    noise = resid_var[None] / np.asarray(counts, dtype=np.float64)[:, None, None]
    return icpt - rest * (1.0 - eb_weight(rest, noise))


def fit_stats(feats: dict[str, np.ndarray], codes: np.ndarray, scenario: np.ndarray,
              targets: list[str], mean_model: bool, quadratic: bool = False,
              site: bool = False) -> dict[str, torch.Tensor]:
    """Feature statistics of the training records of both phases (holdout excluded).

    The mean model: per feature (the static part, and every frame and channel of the aligned
    coarse spectrogram), a least-squares fit  y = a_station + b_M * M' + b_R * lnR'  (M', lnR'
    standardised) over every training station, the GMPE-style site and scenario term; the flow
    learns the residuals (standardised by their std). Kept: the targets' intercepts and the slopes.
    `mean_model=False`: one global mean, no slopes (the ablation). quadratic: the scenario
    terms of `scenario_terms` (magnitude saturation and magnitude-dependent distance scaling,
    as ground-motion models have them) instead of M' and lnR' alone. site: the kept coarse
    intercepts are `site_intercepts` of every station's (the residuals, "_coarse_fit", stay
    those of the free fit: the flow learns about it, sampling starts from the site term).
    """
    cond = scenario_features(scenario)
    cond_mean, cond_std = cond.mean(axis=0), cond.std(axis=0).clip(1e-3)
    z = (cond - cond_mean) / cond_std
    out = {"cond_mean": cond_mean, "cond_std": cond_std}
    if quadratic and mean_model:
        out |= {"cond_lo": z.min(axis=0), "cond_hi": z.max(axis=0)}
        z = scenario_terms(torch.from_numpy(z), {k: torch.from_numpy(v) for k, v in out.items()}
                           ).numpy()
    stations = sorted(set(codes))
    onehot = (codes[:, None] == np.array(stations)[None]).astype(np.float64)
    design = np.concatenate([onehot, z], axis=1) if mean_model else np.ones((len(codes), 1))
    n = len(codes)
    for name, y in (("coarse", feats["coarse"].reshape(n, -1)), ("static", static_of(feats))):
        coef = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)[0]
        if mean_model:
            icpt = coef[:len(stations)]
            if site and name == "coarse":
                frames = feats["coarse"].shape[1:]
                icpt = site_intercepts(
                    icpt.reshape(len(stations), *frames),
                    (y - design @ coef).var(axis=0).reshape(frames),
                    onehot.sum(axis=0)).reshape(len(stations), -1)
            icpt = icpt[[stations.index(s) for s in targets]]
            slope = coef[-z.shape[1]:]
        else:
            icpt, slope = np.repeat(coef, len(targets), axis=0), np.zeros((2, y.shape[1]))
        out[f"{name}_icpt"], out[f"{name}_slope"] = icpt, slope
        out[f"{name}_std"] = (y - design @ coef).std(axis=0).clip(1e-3)
        out[f"{name}_fit"] = design @ coef  # per record, dropped below
    fits = {k: out.pop(f"{k}_fit") for k in ("coarse", "static")}
    stats = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in out.items()}
    return stats | {f"_{k}_fit": torch.as_tensor(v, dtype=torch.float32)
                    for k, v in fits.items()}


def mean_prediction(stats: dict[str, torch.Tensor], station: torch.Tensor,
                    scenario: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean model at target stations (1..S) and standardised scenarios: (coarse (n, C),
    static (n, S))."""
    terms = scenario_terms(scenario, stats)
    return tuple(stats[f"{k}_icpt"][station - 1] + terms @ stats[f"{k}_slope"]
                 for k in ("coarse", "static"))


def to_batchable(feats: dict[str, np.ndarray], station: np.ndarray, scenario: np.ndarray,
                 stats: dict[str, torch.Tensor], fit_coarse: torch.Tensor,
                 fit_static: torch.Tensor) -> Batchable:
    """Standardised residuals of the features from the mean model's fit (n, C), (n, S)."""
    n, t, c = feats["coarse"].shape
    coarse = (torch.as_tensor(feats["coarse"]).reshape(n, -1) - fit_coarse) / stats["coarse_std"]
    static = torch.as_tensor(static_of(feats)) - fit_static
    return Batchable(
        coarse=coarse.reshape(n, t, c), static=static / stats["static_std"],
        station=torch.tensor(np.asarray(station), dtype=torch.long),
        scenario=standardise_scenario(scenario, stats),
    )


def principal_axes(x: torch.Tensor, k: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading k principal axes (D, k) of rows x (N, D) about zero (x are residuals) and the
    rms of x along each (k,). Signs fixed (largest element of each axis positive), so the same
    data give the same basis."""
    if k > min(x.shape):
        raise FlowSamplerError(f"{name} = {k}: at most {min(x.shape)} for {x.shape[1]} values "
                               f"of {x.shape[0]} training rows (lower generators.flow.{name})")
    _, s, vh = torch.linalg.svd(x.double(), full_matrices=False)
    axes = vh[:k].T
    sign = torch.sign(axes.gather(0, axes.abs().argmax(dim=0, keepdim=True)))
    rms = (s[:k] / math.sqrt(len(x))).clamp_min(1e-6)
    return (axes * sign).float(), rms.float()


GAIN_KEYS = ("frame_gain", "scalar_gain", "station_gain", "prior_gain", "frame_smooth",
             "decoder_bias")  # fitted after training
LATENT_KEYS = {"record_pcs": "record_axes", "coarse_pcs": "coarse_axes", "fine_pcs": "fine_axes"}


def fit_latent(coarse: torch.Tensor, static: torch.Tensor, p: FlowSamplerParams
               ) -> dict[str, torch.Tensor]:
    """The principal axes of the training residuals coarse (n, T, C), static (n, S) that p asks
    for -> stats entries: record_pcs over whole spectrograms, coarse_pcs over every frame's
    channels (of what the record components leave), fine_pcs over the fine spectrum; and the
    remainder's rms (remainder_scale), marginal knots (remainder_gauss, `fit_marginal`) and
    autoregression (remainder_ar, `fit_ar`)."""
    out = {}
    if p.record_pcs:
        out["record_axes"], out["record_rms"] = principal_axes(
            coarse.reshape(len(coarse), -1), p.record_pcs, "record_pcs")
        coarse = split_records(coarse, out)[0]
        if p.remainder_scale:
            out["remainder_rms"] = coarse.pow(2).mean(dim=0).sqrt().clamp_min(1e-6)
            coarse = coarse / out["remainder_rms"]
    if p.remainder_gauss:
        out["marginal_knots"] = fit_marginal(coarse)
        coarse = gaussianise(coarse, out)
    if p.remainder_ar:
        out |= fit_ar(coarse)
        coarse = ar_whiten(coarse, out)
    if p.coarse_pcs:
        out["coarse_axes"], out["coarse_rms"] = principal_axes(
            coarse.reshape(-1, coarse.shape[-1]), p.coarse_pcs, "coarse_pcs")
    fine = static[:, n_scalars(p):]
    if p.fine_pcs:
        out["fine_axes"], out["fine_rms"] = principal_axes(fine, p.fine_pcs, "fine_pcs")
        fine = fine @ out["fine_axes"] / out["fine_rms"]
    if n_prior_fine(p):
        out["prior_fine_axes"], out["prior_fine_rms"] = principal_axes(
            fine, p.prior_fine, "prior_fine")
    return out


def prior_given(static: torch.Tensor, stats: dict[str, torch.Tensor], p: FlowSamplerParams
                ) -> torch.Tensor:
    """(n, n_given(p)) what the record prior is given of records whose static part (n, S) is in
    the flow's coordinates (`to_latent`): the scalars (p.prior_scalars) and the whitened
    projections of the fine spectrum on its p.prior_fine principal axes (`fit_latent`)."""
    k = n_scalars(p)
    given = static[:, :k if p.prior_scalars else 0]
    if n_prior_fine(p):
        n_rec = stats["record_axes"].shape[1]
        fine = static[:, k + n_rec:] @ stats["prior_fine_axes"] / stats["prior_fine_rms"]
        given = torch.cat([given, fine], dim=1)
    return given


def check_latent(p: FlowSamplerParams, stats: dict[str, torch.Tensor],
                 calibrated: bool = True) -> None:
    """FlowSamplerError unless stats holds exactly the principal axes (the record prior's fine
    axes included), the remainder rms and the gains that p asks for; calibrated False: before
    training (no gains yet)."""
    counts = [(name, key, getattr(p, name)) for name, key in LATENT_KEYS.items()]
    for name, key, want in counts + [("prior_fine", "prior_fine_axes", n_prior_fine(p))]:
        have = stats[key].shape[1] if key in stats else 0
        if have != want:
            raise FlowSamplerError(f"{name} = {getattr(p, name)} but the statistics hold {have} "
                                   f"such components (expected {want})")
    for name, key, what in (("remainder_gauss", "marginal_knots", "the marginal knots"),
                            ("remainder_ar", "ar_coef", "the autoregression"),
                            ("remainder_calibrate", "frame_gain", "the frame gain"),
                            ("remainder_smooth", "frame_smooth", "the frame smoothing"),
                            ("scalar_calibrate", "scalar_gain", "the scalar gain"),
                            ("station_scatter", "station_gain", "the station gains"),
                            ("prior_calibrate", "prior_gain", "the record prior's gain"),
                            ("decoder_bias", "decoder_bias", "the decoder's mean error")):
        if key in GAIN_KEYS and not calibrated:
            continue
        wanted = getattr(p, name) and (key != "prior_gain" or p.record_prior)
        if wanted != (key in stats):
            given = f"{name} = {getattr(p, name)}" + (
                f" with record_prior = {p.record_prior}" if key == "prior_gain" else "")
            raise FlowSamplerError(f"{given}, but the statistics {'lack' if wanted else 'hold'} "
                                   f"{what}")
    wanted = bool(p.remainder_scale and p.record_pcs)
    if wanted != ("remainder_rms" in stats):
        raise FlowSamplerError(f"remainder_scale = {p.remainder_scale} with record_pcs = "
                               f"{p.record_pcs}, but the statistics "
                               f"{'lack' if wanted else 'hold'} the remainder rms")


def split_records(coarse: torch.Tensor, stats: dict[str, torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectrogram residuals (n, T, C) -> (what the record axes leave (n, T, C), the whitened
    record components (n, record_pcs))."""
    axes, rms = stats["record_axes"], stats["record_rms"]
    a = coarse.reshape(len(coarse), -1) @ axes
    return coarse - (a @ axes.T).reshape(coarse.shape), a / rms


MARGINAL_Z = torch.linspace(-3.0, 3.0, 61)  # standard-normal quantiles of the marginal knots


def fit_marginal(y: torch.Tensor) -> torch.Tensor:
    """Knots (C, len(MARGINAL_Z)) of each channel's empirical marginal of frames y (n, T, C),
    pooled over records and frames: the values at the normal probabilities of MARGINAL_Z, made
    strictly increasing."""
    q = torch.special.ndtr(MARGINAL_Z.double()).numpy()
    # numpy: torch.quantile refuses inputs of more than 2**24 values (a larger corpus)
    knots = np.quantile(y.double().reshape(-1, y.shape[-1]).numpy(), q, axis=0).T  # (C, K)
    ramp = 1e-6 * np.arange(knots.shape[1])
    return torch.from_numpy(np.maximum.accumulate(knots, axis=1) + ramp).float()


def interp_rows(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear map of every row of x (C, N) through (xp[c], fp[c]) (C, K), xp and fp
    increasing; extrapolated linearly beyond the end knots."""
    idx = torch.searchsorted(xp.contiguous(), x.contiguous()).clamp(1, xp.shape[1] - 1)
    x0, x1 = xp.gather(1, idx - 1), xp.gather(1, idx)
    f0, f1 = fp.gather(1, idx - 1), fp.gather(1, idx)
    return f0 + (x - x0) / (x1 - x0) * (f1 - f0)


def gaussianise(y: torch.Tensor, stats: dict[str, torch.Tensor], inverse: bool = False
                ) -> torch.Tensor:
    """Frames (n, T, C) through their channel's marginal onto standard-normal values
    (`fit_marginal`); inverse=True maps back."""
    knots = stats["marginal_knots"]
    z = MARGINAL_Z.to(knots).expand_as(knots)
    xp, fp = (z, knots) if inverse else (knots, z)
    flat = y.reshape(-1, y.shape[-1]).T  # (C, n T)
    return interp_rows(flat, xp, fp).T.reshape(y.shape)


AR_MAX_RADIUS = 0.98  # largest |eigenvalue| of the fitted autoregression (colouring stays bounded)


def fit_ar(y: torch.Tensor) -> dict[str, torch.Tensor]:
    """First-order vector autoregression of residual frames y (n, T, C) along the frames:
    y_t = A y_(t-1) + L e_t and y_0 = L0 e_0 with e white, fitted by least squares over every
    record and frame (A scaled down to spectral radius AR_MAX_RADIUS if it exceeds it) ->
    {"ar_coef": A, "ar_chol": L, "ar_chol0": L0}, each (C, C) float32."""
    y = y.double()
    c = y.shape[-1]
    prev, cur = y[:, :-1].reshape(-1, c), y[:, 1:].reshape(-1, c)
    coef = torch.linalg.lstsq(prev, cur).solution.T  # cur ~ prev @ coef.T
    radius = float(torch.linalg.eigvals(coef).abs().max())
    coef = coef * min(1.0, AR_MAX_RADIUS / radius)

    def chol(x: torch.Tensor) -> torch.Tensor:  # of x's second moments, ridged to stay definite
        cov = x.T @ x / len(x)
        return torch.linalg.cholesky(cov + 1e-6 * cov.diagonal().mean() * torch.eye(c).double())

    return {"ar_coef": coef.float(), "ar_chol": chol(cur - prev @ coef.T).float(),
            "ar_chol0": chol(y[:, 0]).float()}


def ar_whiten(y: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """Frames (n, T, C) -> the autoregression's white innovations e (n, T, C) (`fit_ar`)."""
    a, chol, chol0 = stats["ar_coef"], stats["ar_chol"], stats["ar_chol0"]
    n, t, c = y.shape
    first = torch.linalg.solve_triangular(chol0, y[:, 0].T, upper=False).T
    innov = (y[:, 1:] - y[:, :-1] @ a.T).reshape(-1, c)
    rest = torch.linalg.solve_triangular(chol, innov.T, upper=False).T
    return torch.cat([first[:, None], rest.reshape(n, t - 1, c)], dim=1)


def ar_colour(e: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """The inverse of `ar_whiten`: innovations (n, T, C) -> frames (n, T, C)."""
    a = stats["ar_coef"]
    innov = e @ stats["ar_chol"].T
    frames = [e[:, 0] @ stats["ar_chol0"].T]
    for k in range(1, e.shape[1]):
        frames.append(frames[-1] @ a.T + innov[:, k])
    return torch.stack(frames, dim=1)


def to_latent(coarse: torch.Tensor, static: torch.Tensor, stats: dict[str, torch.Tensor],
              k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised residuals (n, T, C), (n, S) -> the flow's coordinates: whitened principal
    components where stats holds axes. Static: [the first k values (the scalars), record
    components, fine]."""
    rec = static[:, :0]
    if "record_axes" in stats:
        coarse, rec = split_records(coarse, stats)
    if "remainder_rms" in stats:
        coarse = coarse / stats["remainder_rms"]
    if "marginal_knots" in stats:
        coarse = gaussianise(coarse, stats)
    if "ar_coef" in stats:
        coarse = ar_whiten(coarse, stats)
    if "coarse_axes" in stats:
        coarse = coarse @ stats["coarse_axes"] / stats["coarse_rms"]
    fine = static[:, k:]
    if "fine_axes" in stats:
        fine = fine @ stats["fine_axes"] / stats["fine_rms"]
    return coarse, torch.cat([static[:, :k], rec, fine], dim=1)


def from_latent(coarse: torch.Tensor, static: torch.Tensor, stats: dict[str, torch.Tensor],
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of `to_latent` (on the span of the kept components)."""
    n_rec = stats["record_axes"].shape[1] if "record_axes" in stats else 0
    rec, fine = static[:, k:k + n_rec], static[:, k + n_rec:]
    if "coarse_axes" in stats:
        coarse = (coarse * stats["coarse_rms"]) @ stats["coarse_axes"].T
    if "ar_coef" in stats:
        coarse = ar_colour(coarse, stats)
    if "marginal_knots" in stats:
        coarse = gaussianise(coarse, stats, inverse=True)
    if "remainder_rms" in stats:
        coarse = coarse * stats["remainder_rms"]
    if n_rec:
        coarse = coarse + ((rec * stats["record_rms"]) @ stats["record_axes"].T
                           ).reshape(coarse.shape)
    if "fine_axes" in stats:
        fine = (fine * stats["fine_rms"]) @ stats["fine_axes"].T
    return coarse, torch.cat([static[:, :k], fine], dim=1)


def latent_sizes(stats: dict[str, torch.Tensor], n_frames: int, k: int) -> tuple[int, int]:
    """(channels per frame, static size) of the flow's coordinates (`to_latent`)."""
    n_coarse = (stats["coarse_axes"].shape[1] if "coarse_axes" in stats
                else stats["coarse_std"].numel() // n_frames)
    n_fine = (stats["fine_axes"].shape[1] if "fine_axes" in stats
              else stats["static_std"].numel() - k)
    n_rec = stats["record_axes"].shape[1] if "record_axes" in stats else 0
    return n_coarse, k + n_rec + n_fine
