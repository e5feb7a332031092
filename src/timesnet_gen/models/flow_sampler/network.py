"""Model (`VelocityNet`): rectified flow x_t = (1 - t) x0 + t x1 (x0 ~ N(0, I), x1 = data),
velocity target x1 - x0. The coarse frames are embedded (Linear + positional embedding) with
the embedded static part (level, fine) and the condition added to every frame; e_layers
TimesBlocks (models/timesnet.py) + a shared LayerNorm + FiLM from the condition run along the
frames; a linear head gives the coarse velocity, an MLP on the frame-mean the static velocity.
Condition = MLP(sinusoidal flow time, station embedding, standardised M, ln R). Station 0 is
"any station" (pre-training on the non-target stations); target stations 1..S start from it
at fine-tuning.

Its training (`fit`: flow matching with EMA weights), the ODE solver (`solve_flow`) and
the record prior (`RecordPrior`), a small conditional flow of its own over the record
components ("The record prior").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from timesnet_gen.models.flow_sampler.latent import Batchable
from timesnet_gen.models.flow_sampler.params import FlowSamplerError, FlowSamplerParams, n_scalars
from timesnet_gen.models.timesnet import TimesBlock, TimesNetConfig, data_frequencies


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the flow time t in [0, 1]: (B,) -> (B, dim)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32,
                                                       device=t.device) / half)
    angle = 1000.0 * t[:, None] * freq[None]  # t scaled to 0..1000 steps, as in DDPM
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


class VelocityNet(nn.Module):
    """v(x_t, t | station, M, ln R): coarse (B, frames, C), static (B, S) -> same shapes.

    v = backbone(x_t, c) + a(c) * x_t, with c the condition (flow time, station, M, ln R)."""

    def __init__(self, p: FlowSamplerParams, n_frames: int, n_coarse: int, n_static: int,
                 n_stations: int) -> None:
        super().__init__()
        self.d_cond, self.patch, self.n_frames = p.d_cond, p.patch, n_frames
        self.n_scalars = n_scalars(p)
        self.n_record, self.record_weight = p.record_pcs, p.record_weight
        self.coarse_weight = p.coarse_weight
        n_tokens = -(-n_frames // p.patch)
        cfg = TimesNetConfig(d_model=p.d_model, d_ff=p.d_ff, num_kernels=p.num_kernels,
                             e_layers=p.e_layers, top_k=p.top_k, dropout=p.dropout,
                             seq_len=n_tokens,
                             conditioning="none", period_selection=p.period_selection,
                             n_stations=0, c_in=n_coarse)
        self.station = nn.Embedding(n_stations + 1, p.d_cond)  # 0 = any station
        self.cond = nn.Sequential(nn.Linear(2 * p.d_cond + 2, p.d_cond), nn.GELU(),
                                  nn.Linear(p.d_cond, p.d_cond))
        self.embed = nn.Linear(n_coarse * p.patch, p.d_model)
        self.embed_static = nn.Linear(n_static, p.d_model)
        self.embed_cond = nn.Linear(p.d_cond, p.d_model)
        self.pos = nn.Parameter(torch.randn(1, n_tokens, p.d_model) * 0.02)
        self.blocks = nn.ModuleList(TimesBlock(cfg) for _ in range(p.e_layers))
        self.films = nn.ModuleList(nn.Linear(p.d_cond, 2 * p.d_model) for _ in range(p.e_layers))
        # A TimesBlock sees a few neighbouring tokens and periods; a linear mix along the whole
        # token axis after each block tells every token where the strong motion is.
        self.mixes = nn.ModuleList(nn.Linear(n_tokens, n_tokens) if p.time_mixing else
                                   nn.Identity() for _ in range(p.e_layers))
        for mix in self.mixes:
            if isinstance(mix, nn.Linear):
                nn.init.zeros_(mix.weight)
                nn.init.zeros_(mix.bias)
        for film in self.films:  # identity at init
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
        self.norm = nn.LayerNorm(p.d_model)
        self.drop = nn.Dropout(p.dropout) if p.dropout > 0 else nn.Identity()
        self.head = nn.Linear(p.d_model, n_coarse * p.patch)
        self.head_static = nn.Sequential(nn.Linear(2 * p.d_model + p.d_cond, 2 * p.d_model),
                                         nn.GELU(), nn.Linear(2 * p.d_model, n_static))
        # Per-feature linear skips a(c) * x_t: the Gaussian part of the optimal velocity is
        # linear in x_t and full rank, which a d_model-wide backbone alone cannot give.
        self.skip = nn.Linear(p.d_cond, n_coarse + n_static)

    def tokens(self, coarse: torch.Tensor) -> torch.Tensor:
        """Frames (B, T, C) grouped `patch` at a time into tokens (B, ceil(T/patch), patch C)."""
        B, T, _ = coarse.shape
        pad = -T % self.patch
        return F.pad(coarse, (0, 0, 0, pad)).reshape(B, (T + pad) // self.patch, -1)

    def fix_frequencies(self, coarse: torch.Tensor) -> list[int]:
        """period_selection "fixed": every TimesBlock's frequencies from the training features
        (B, T, C) (`timesnet.data_frequencies` of their tokens); returns them."""
        freq = data_frequencies(self.tokens(coarse), self.blocks[0].k)
        for block in self.blocks:
            block.fix_frequencies(freq)
        return freq.tolist()

    def forward(self, coarse: torch.Tensor, static: torch.Tensor, t: torch.Tensor,
                station: torch.Tensor, scenario: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # coarse (B, T, C), static (B, S), t (B,), station (B,) 0..S, scenario (B, 2) standardised
        c = self.cond(torch.cat([time_embedding(t, self.d_cond), self.station(station),
                                 scenario], dim=1))  # (B, d_cond)
        B, T, C = coarse.shape
        pad = -T % self.patch
        tokens = self.tokens(coarse)
        s = self.embed_static(static)  # (B, D)
        h = self.embed(tokens) + self.pos + (s + self.embed_cond(c))[:, None]
        for block, film, mix in zip(self.blocks, self.films, self.mixes):
            gamma, beta = film(c)[:, None].chunk(2, dim=-1)
            h = self.drop(self.norm(block(h)) * (1 + gamma) + beta)
            if isinstance(mix, nn.Linear):
                h = h + mix(h.transpose(1, 2)).transpose(1, 2)  # (B, T', D) mixed along T'
        pooled = torch.cat([h.mean(dim=1), s, c], dim=1)
        v = self.head(h).reshape(B, T + pad, C)[:, :T]
        a_coarse, a_static = self.skip(c).split([C, static.shape[1]], dim=1)
        return v + a_coarse[:, None] * coarse, self.head_static(pooled) + a_static * static


def flow_times(n: int, how: str, generator: torch.Generator) -> torch.Tensor:
    """Training flow times (n,): uniform, or logit-normal (SD3; more weight on mid t)."""
    if how == "uniform":
        return torch.rand(n, generator=generator)
    return torch.sigmoid(torch.randn(n, generator=generator))


def flow_loss(net: VelocityNet, b: Batchable, idx: torch.Tensor, generator: torch.Generator,
              time_sampling: str = "uniform") -> torch.Tensor:
    """Rectified-flow loss of records idx: MSE of coarse, fine and level velocities, each part
    averaged over its own elements (so the 1-D level weighs as much as the spectrogram; the
    spectrogram's part weighted by coarse_weight); the record components pooled with the fine
    part, or (record_weight > 0) their own part with that weight."""
    x1c, x1s = b.coarse[idx], b.static[idx]
    # noise from the CPU generator on every device: the same draws on CPU and GPU
    x0c = torch.randn(x1c.shape, generator=generator).to(x1c.device)
    x0s = torch.randn(x1s.shape, generator=generator).to(x1c.device)
    t = flow_times(len(idx), time_sampling, generator).to(x1c.device)
    xc = (1 - t[:, None, None]) * x0c + t[:, None, None] * x1c
    xs = (1 - t[:, None]) * x0s + t[:, None] * x1s
    vc, vs = net(xc, xs, t, b.station[idx], b.scenario[idx])
    err_s = (vs - (x1s - x0s)) ** 2
    k = net.n_scalars
    scalars = err_s[:, :k].mean(dim=0).sum()  # level, timing
    coarse = net.coarse_weight * ((vc - (x1c - x0c)) ** 2).mean()
    if net.record_weight and net.n_record:  # record components as a group of their own
        r = k + net.n_record
        return coarse + net.record_weight * err_s[:, k:r].mean() + err_s[:, r:].mean() + scalars
    return coarse + err_s[:, k:].mean() + scalars


@torch.no_grad()
def eval_loss(net: VelocityNet, b: Batchable, seed: int, batch_size: int) -> float:
    """Flow loss over all records with fixed noise (comparable across epochs)."""
    net.eval()
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, len(b.station), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(b.station)))
        total += float(flow_loss(net, b, idx, g, "uniform")) * len(idx)
    net.train()
    return total / len(b.station)


def fit(net: VelocityNet, train: Batchable, val: Batchable | None, epochs: int, lr: float,
        p: FlowSamplerParams, phase: str, log: Callable[[str], None] = print) -> list[dict]:
    """One training phase (seeded); returns rows phase, epoch, train_loss, val_loss, seconds.

    With p.ema > 0 the weights left in `net` are the exponential moving average of the
    iterates (validation uses them too)."""
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()} if p.ema > 0 else None
    live = net.state_dict()
    g = torch.Generator().manual_seed(p.seed + (0 if phase == "pretrain" else 1))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=p.weight_decay)
    steps = epochs * math.ceil(len(train.station) / p.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    rows = []
    net.train()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = torch.randperm(len(train.station), generator=g)
        total = 0.0
        for start in range(0, len(order), p.batch_size):
            idx = order[start:start + p.batch_size]
            loss = flow_loss(net, train, idx, g, p.time_sampling)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), p.grad_clip)
            opt.step()
            sched.step()
            if ema is not None:
                with torch.no_grad():
                    for k, v in live.items():
                        if v.is_floating_point():  # not the fixed frequencies
                            ema[k].lerp_(v, 1.0 - p.ema)
            total += float(loss.detach()) * len(idx)
        train_loss = total / len(order)
        if not math.isfinite(train_loss):
            raise FlowSamplerError(f"{phase} diverged at epoch {epoch}; lower lr")
        last = epoch == epochs or epoch % 10 == 0
        val_loss = float("nan")
        if val is not None and last:
            backup = {k: v.clone() for k, v in live.items()}
            if ema is not None:
                net.load_state_dict(ema)
            val_loss = eval_loss(net, val, p.seed, 128)
            net.load_state_dict(backup)
        rows.append({"phase": phase, "epoch": epoch, "train_loss": train_loss,
                     "val_loss": val_loss, "seconds": time.perf_counter() - t0})
        if last:
            log(f"{phase} epoch {epoch}/{epochs}: train {train_loss:.4f} val {val_loss:.4f} "
                f"({rows[-1]['seconds']:.2f} s/epoch)")
    if ema is not None:
        net.load_state_dict(ema)
    return rows


@torch.no_grad()
def solve_flow(velocity: Callable[..., tuple[torch.Tensor, ...]], x: tuple[torch.Tensor, ...],
               steps: int, heun: bool) -> tuple[torch.Tensor, ...]:
    """Solve dx/dt = velocity(x, t) for the tensors x (leading axis: records) from t = 0 to 1
    with `steps` Euler or Heun steps (Heun's correction on every step but the last)."""
    dt = 1.0 / steps
    for k in range(steps):
        t = torch.full((len(x[0]),), k * dt)
        v = velocity(x, t)
        if heun and k < steps - 1:
            v2 = velocity(tuple(a + dt * b for a, b in zip(x, v)), t + dt)
            v = tuple(0.5 * (a + b) for a, b in zip(v, v2))
        x = tuple(a + dt * b for a, b in zip(x, v))
    return x


def integrate(net: VelocityNet, station: torch.Tensor, scenario: torch.Tensor, n_frames: int,
              n_coarse: int, n_static: int, p: FlowSamplerParams,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The flow's coordinates (frames, static) from seeded noise: p.n_steps of p.solver."""
    n = len(station)
    xc = torch.randn((n, n_frames, n_coarse), generator=generator)
    xs = torch.randn((n, n_static), generator=generator)
    return solve_flow(lambda x, t: net(*x, t, station, scenario), (xc, xs), p.n_steps,
                      p.solver == "heun")


PRIOR_SEED = 4099  # added to p.seed for the record prior's initial weights and batches
PRIOR_BATCH = 64
PRIOR_TIME_DIM = 16


class RecordPrior(nn.Module):
    """Velocity of a conditional rectified flow over the whitened record components (n, D):
    an MLP (three hidden layers, SiLU) of the components, the sinusoidal flow time, the
    station (one-hot over the target stations 1..S, and with any_station over 0, "any station",
    too), the standardised scenario and n_given more values (the record's scalars)."""

    def __init__(self, n_components: int, n_stations: int, hidden: int,
                 any_station: bool = False, n_given: int = 0) -> None:
        super().__init__()
        self.first = 0 if any_station else 1
        self.n_classes = n_stations + 1 - self.first
        self.n_given = n_given
        self.mlp = nn.Sequential(
            nn.Linear(n_components + PRIOR_TIME_DIM + self.n_classes + 2 + n_given, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, n_components))

    def forward(self, x: torch.Tensor, t: torch.Tensor, station: torch.Tensor,
                scenario: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(station - self.first, self.n_classes).to(x.dtype)
        return self.mlp(torch.cat([x, time_embedding(t, PRIOR_TIME_DIM), onehot, scenario,
                                   given], 1))


def fit_record_prior(components: torch.Tensor, station: torch.Tensor, scenario: torch.Tensor,
                     given: torch.Tensor, p: FlowSamplerParams, n_stations: int) -> RecordPrior:
    """The record prior fitted (seeded, on the CPU) to whitened components (n, D) of records at
    stations 1..S (the target stations) or 0 (any other; p.prior_records "all") and
    standardised scenarios (n, 2), given the values given (n, G; G = 0: none): p.prior_steps
    AdamW steps (lr 1e-3, cosine) on the
    rectified-flow loss, flow times as p.time_sampling draws them."""
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, the caller's RNG left alone
        torch.manual_seed(p.seed + PRIOR_SEED)
        prior = RecordPrior(components.shape[1], n_stations, p.prior_hidden,
                            p.prior_records == "all", given.shape[1])
    generator = torch.Generator().manual_seed(p.seed + PRIOR_SEED)
    opt = torch.optim.AdamW(prior.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p.prior_steps)
    for _ in range(p.prior_steps):
        idx = torch.randint(0, len(components), (PRIOR_BATCH,), generator=generator)
        x1 = components[idx]
        x0 = torch.randn(x1.shape, generator=generator)
        t = flow_times(PRIOR_BATCH, p.time_sampling, generator)
        xt = (1 - t[:, None]) * x0 + t[:, None] * x1
        loss = ((prior(xt, t, station[idx], scenario[idx], given[idx]) - (x1 - x0)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    if not math.isfinite(float(loss.detach())):
        raise FlowSamplerError("the record prior diverged; lower prior_steps or check the data")
    return prior.eval()


def draw_record_prior(prior: RecordPrior, station: torch.Tensor, scenario: torch.Tensor,
                      given: torch.Tensor, steps: int, generator: torch.Generator,
                      n_components: int) -> torch.Tensor:
    """Whitened record components (n, D) from the prior: Heun from seeded noise, `steps` steps."""
    x = torch.randn((len(station), n_components), generator=generator)
    return solve_flow(lambda x, t: (prior(x[0], t, station, scenario, given),), (x,), steps,
                      True)[0]
