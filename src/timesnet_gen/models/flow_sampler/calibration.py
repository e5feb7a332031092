"""The fits after training, on the target stations' training records: a per-cell gain that
gives the flow's draws the training records' spread (`calibrate`: "The frame gain", "The
record prior's gain") and a recursion along the frames that gives them the training records'
correlation from one frame to the next (`smoothing`, "The frame smoothing")."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from timesnet_gen.models.flow_sampler.latent import AR_MAX_RADIUS, Batchable, eb_weight
from timesnet_gen.models.flow_sampler.network import VelocityNet, integrate
from timesnet_gen.models.flow_sampler.params import CALIBRATION_SEED, FlowSamplerParams
from timesnet_gen.runtime import set_up_torch


def draws(n: int, draw: Callable[[slice, torch.Generator], torch.Tensor], p: FlowSamplerParams
          ) -> torch.Tensor:
    """draw(part, generator) for the slices of n records in chunks of p.batch_generate, as
    sampling draws them (one draw per record, at its station and scenario; seeded by p.seed),
    concatenated: what the fits after training compare with the training records."""
    set_up_torch(p.num_threads)
    generator = torch.Generator().manual_seed(p.seed + CALIBRATION_SEED)
    return torch.cat([draw(slice(start, start + p.batch_generate), generator)
                      for start in range(0, n, p.batch_generate)])


def calibrate(real: torch.Tensor, draw: Callable[[slice, torch.Generator], torch.Tensor],
              p: FlowSamplerParams, groups: torch.Tensor | None = None, n_groups: int = 0
              ) -> torch.Tensor:
    """Gain, shaped as real's trailing dimensions, that gives a sampler's draws (`draws`) the
    spread of the records `real` (n, ...): their rms divided by the draws' rms. groups (n,)
    0..n_groups-1: one gain per group, (n_groups, ...), each group's draws given its own
    records' rms shrunk toward the groups' (`group_rms`); 1 for a group with none."""
    drawn = draws(len(real), draw, p).double()
    real = real.double()
    if groups is None:
        return (real.pow(2).mean(dim=0).sqrt()
                / drawn.pow(2).mean(dim=0).sqrt().clamp_min(1e-6)).float()
    member = groups[None] == torch.arange(n_groups)[:, None]  # (groups, n)
    have = member.any(dim=1)
    real_rms, drawn_rms = (torch.stack([x[m].pow(2).mean(dim=0).sqrt() for m in member[have]])
                           for x in (real, drawn))
    gains = torch.ones((n_groups,) + real.shape[1:], dtype=torch.float64)
    gains[have] = group_rms(real_rms, member[have].sum(dim=1)) / drawn_rms.clamp_min(1e-6)
    return gains.float()


def group_rms(rms: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The rms (G, ...) of G groups of counts (G,) records each, shrunk toward their geometric
    mean on the log scale by empirical Bayes (`eb_weight`; the sampling variance of the ln rms
    of n records is 1 / (2 n)): a group's own spread counts as far as the groups' spreads
    differ by more than their records' noise."""
    ln = rms.clamp_min(1e-12).log().numpy()
    centre = ln.mean(axis=0)
    noise = (1.0 / (2.0 * counts.double().numpy())).reshape((-1,) + (1,) * (ln.ndim - 1))
    weight = eb_weight(ln - centre, np.broadcast_to(noise, ln.shape))
    return torch.from_numpy(np.exp(centre + weight * (ln - centre)))


def lag1(x: torch.Tensor) -> torch.Tensor:
    """(C,) correlation of frames x (n, T, C) with the next frame, per channel, pooled over the
    records and frames."""
    x = x.double()
    cross = (x[:, 1:] * x[:, :-1]).sum(dim=(0, 1))
    return cross / (x[:, 1:].pow(2).sum(dim=(0, 1)) * x[:, :-1].pow(2).sum(dim=(0, 1))
                    ).sqrt().clamp_min(1e-30)


def smoothing(real: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
    """(2, C) float32 [a, b] of the recursion y_t = a y_(t-1) + b x_t (`smooth_frames`) that takes
    frames x whose correlation with the next frame is drawn's (n, T, C) to frames with real's
    at the same variance (exact for first-order autoregressive x: lag-1 (a + r) / (1 + a r))."""
    rho, rho_x = lag1(real), lag1(drawn)
    a = ((rho - rho_x) / (1 - rho * rho_x)).clamp(-AR_MAX_RADIUS, AR_MAX_RADIUS)
    b = ((1 - a ** 2) * (1 - a * rho_x) / (1 + a * rho_x)).sqrt()
    return torch.stack([a, b]).float()


def smooth_frames(x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """Frames (n, T, C) through y_0 = x_0, y_t = a y_(t-1) + b x_t per channel; coef (2, C).

    As one product with the recursion's (T, T, C) lower-triangular weights a^(t-j) (times b for
    j > 0): a loop over the frames would hold the interpreter lock that the sampling threads
    share."""
    a, b = coef
    t = x.shape[1]
    lag = (torch.arange(t)[:, None] - torch.arange(t)[None, :]).to(x.dtype)
    weight = a ** lag.clamp_min(0)[..., None] * (lag >= 0)[..., None]
    weight[:, 1:] = weight[:, 1:] * b
    return torch.einsum("tjc,njc->ntc", weight, x)


def calibrate_frames(net: VelocityNet, real: Batchable, p: FlowSamplerParams) -> torch.Tensor:
    """(T, C) gain of the flow's frame coordinates (`calibrate`): real holds the flow's
    coordinates of the target stations' training records. The flow leaves their rms nearly the
    same in every frame (0.70-0.72 on the CPU profile), where the training records' runs
    0.58-0.85 along the frames (measured, benchmarks/diagnose_flow.py); the gain gives each
    cell its training spread."""
    _, t, c = real.coarse.shape
    return calibrate(real.coarse, lambda part, generator: integrate(
        net, real.station[part], real.scenario[part], t, c, real.static.shape[1], p,
        generator)[0], p)
