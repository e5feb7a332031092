"""TimesNet-Gen: a TimesNet encoder with station conditioning and a per-step linear decoder.

Read top to bottom: Inception (parallel 2D kernels, computed as one fused convolution),
conditioning (one-hot concat | FiLM | none), TimesBlock (FFT periods -> 2D -> Inception ->
GELU -> Inception -> 1D, softmax-weighted over periods, residual), and the generator
(instance norm -> embedding -> TimesBlocks + shared LayerNorm = latent -> Linear head ->
de-standardisation). Shapes: B batch, T time samples, C channels (3 = E, N, U), D = d_model,
S = number of target stations (conditioning classes).

Station conditioning input is a float tensor (B, S): a one-hot row for a target station, or
all zeros / None for "no station" (pre-training), which makes every conditioning path the
identity, so one set of weights serves both phases.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from timesnet_gen.errors import from_known_keys

EPS = 1e-5  # instance normalisation: divide by sqrt(var + EPS)


@dataclass
class TimesNetConfig:
    d_model: int = 16
    d_ff: int = 32
    num_kernels: int = 3  # kernels 1x1, 3x3, ..., (2n-1)x(2n-1)
    e_layers: int = 2
    top_k: int = 2
    dropout: float = 0.1
    seq_len: int = 6000  # samples (60 s at 100 Hz)
    conditioning: str = "concat"  # concat | film | none
    period_selection: str = "batch"  # batch (paper) | sample (per record)
    fused_inception: bool = True
    n_stations: int = 5
    c_in: int = 3

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TimesNetConfig:
        return from_known_keys(cls, raw, ValueError, "model config key")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Inception


class Inception(nn.Module):
    """Mean of parallel 'same' Conv2d with kernels 1, 3, ..., 2n-1 (TimesNet's Inception_Block_V1).

    The mean of convolutions is one convolution whose kernel is the mean of the kernels, each
    zero-padded to the largest size (and whose bias is the mean bias). The separate kernels stay
    the parameters (the paper's parameterisation, same checkpoints); `fused=True` computes one
    conv, `fused=False` the naive n convs (kept for tests and the benchmark).

    `n_cond` extra input channels carry the station one-hot maps (concat conditioning).
    """

    def __init__(self, c_in: int, c_out: int, num_kernels: int, n_cond: int = 0,
                 fused: bool = True) -> None:
        super().__init__()
        self.c_in, self.n_cond, self.fused = c_in, n_cond, fused
        self.num_kernels = num_kernels
        self.kernels = nn.ModuleList(
            nn.Conv2d(c_in + n_cond, c_out, kernel_size=2 * i + 1, padding=i)
            for i in range(num_kernels)
        )
        for conv in self.kernels:  # TimesNet's init
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def fused_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_out, c_in + n_cond, K, K) mean of zero-padded kernels, K = 2n-1; mean bias."""
        n = self.num_kernels
        weight = sum(F.pad(conv.weight, [n - 1 - i] * 4) for i, conv in enumerate(self.kernels))
        bias = sum(conv.bias for conv in self.kernels)
        return weight / n, bias / n

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, c_in, H, W), cond (B, S) or None -> (B, c_out, H, W)
        # Without a station the one-hot channels are zero: dropping their weights is exact.
        use_cond = cond is not None and self.n_cond > 0
        if not self.fused:  # the reference: literal concat, n convolutions, mean
            if use_cond:
                B, _, H, W = x.shape
                x = torch.cat([x, cond[:, :, None, None].expand(B, self.n_cond, H, W)], dim=1)
            c = x.shape[1]
            outs = [F.conv2d(x, conv.weight[:, :c], conv.bias, padding=i)
                    for i, conv in enumerate(self.kernels)]
            return torch.stack(outs, dim=-1).mean(dim=-1)
        weight, bias = self.fused_weight()
        pad = self.num_kernels - 1
        out = F.conv2d(x, weight[:, :self.c_in], bias, padding=pad)
        if use_cond:
            # A one-hot channel is a constant map, so its convolution is the same for every
            # record of that station: convolve one map of ones per station (not per record)
            # and add it, weighted by the one-hot row. Exact by linearity; the per-record cost
            # of the S extra channels disappears.
            H, W = x.shape[-2:]
            S, c_out, K = self.n_cond, weight.shape[0], weight.shape[-1]
            w_cond = weight[:, self.c_in:].transpose(0, 1).reshape(S * c_out, 1, K, K)
            response = F.conv2d(x.new_ones(1, 1, H, W), w_cond, padding=pad)  # (1, S*c_out, H, W)
            out = out + torch.einsum("bs,sohw->bohw", cond, response.view(S, c_out, H, W))
        return out


class FiLM(nn.Module):
    """Channel-wise scale and shift from the station: x * (1 + gamma) + beta.

    No bias and zero init: a zero (no-station) condition is the identity, and fine-tuning
    starts from the pre-trained function.
    """

    def __init__(self, n_stations: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(n_stations, 2 * channels, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        # x (B, C, H, W), cond (B, S)
        if cond is None:
            return x
        gamma, beta = self.proj(cond)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + gamma) + beta


# --------------------------------------------------------------------------------------------
# TimesBlock


PERIOD_SELECTIONS = ("batch", "sample", "fixed")


def check_top_k(k: int, T: int) -> None:
    if k > T // 2:
        raise ValueError(f"top_k={k} exceeds the {T // 2} non-DC frequencies of T={T}")


def fft_periods(x: torch.Tensor, k: int, per_sample: bool, freq: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dominant periods and their amplitudes.

    x (B, T, D) -> periods (B, k) int64 samples, weights (B, k) mean rFFT amplitude over D.
    `per_sample=False` (the paper): one set of frequencies from the amplitude averaged over the
    batch; `True`: each record's own top-k, so its output does not depend on its batch;
    `freq` (k,) given: those frequencies (the "fixed" selection, see `data_frequencies`).
    """
    T = x.shape[1]
    amp = torch.fft.rfft(x, dim=1).abs().mean(dim=-1)  # (B, F)
    check_top_k(k, T)
    if freq is not None:
        freq = freq.expand(x.shape[0], k)
        return T // freq, torch.gather(amp, 1, freq)
    score = amp.detach().clone()
    score[:, 0] = 0  # remove DC
    if per_sample:
        freq = torch.topk(score, k, dim=1).indices  # (B, k)
    else:
        freq = torch.topk(score.mean(dim=0), k).indices.expand(x.shape[0], k)
    return T // freq, torch.gather(amp, 1, freq)


def data_frequencies(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k non-DC rFFT frequencies (k,) int64 of largest amplitude along T of x (B, T, D),
    averaged over records and channels: the periods of the "fixed" selection, chosen once on
    the training data, so that a record's output depends neither on its batch nor, through a
    changing period, on small changes of its own input (the flow's noisy early steps)."""
    check_top_k(k, x.shape[1])
    amp = torch.fft.rfft(x.double(), dim=1).abs().mean(dim=(0, 2))
    amp[0] = 0  # remove DC
    return torch.topk(amp, k).indices.sort().values


class TimesBlock(nn.Module):
    def __init__(self, cfg: TimesNetConfig) -> None:
        super().__init__()
        if cfg.period_selection not in PERIOD_SELECTIONS:
            raise ValueError(f"unknown period_selection {cfg.period_selection!r} (one of "
                             f"{PERIOD_SELECTIONS})")
        self.k = cfg.top_k
        self.per_sample = cfg.period_selection == "sample"
        self.fixed = cfg.period_selection == "fixed"
        if self.fixed:  # set by fix_frequencies; kept in the state dict (the checkpoint)
            self.register_buffer("freq", torch.zeros(cfg.top_k, dtype=torch.long))
        n_cond = cfg.n_stations if cfg.conditioning == "concat" else 0
        self.conv1 = Inception(cfg.d_model, cfg.d_ff, cfg.num_kernels, n_cond, cfg.fused_inception)
        self.conv2 = Inception(cfg.d_ff, cfg.d_model, cfg.num_kernels, n_cond, cfg.fused_inception)
        self.film1 = FiLM(cfg.n_stations, cfg.d_model) if cfg.conditioning == "film" else None
        self.film2 = FiLM(cfg.n_stations, cfg.d_ff) if cfg.conditioning == "film" else None

    def branch(self, x: torch.Tensor, period: int, cond: torch.Tensor | None) -> torch.Tensor:
        """One period: (B, T, D) -> zero-pad to a multiple of period -> 2D -> convs -> (B, T, D)."""
        B, T, D = x.shape
        rows = -(-T // period)
        x = F.pad(x, (0, 0, 0, rows * period - T))
        x = x.reshape(B, rows, period, D).permute(0, 3, 1, 2)  # (B, D, rows, period)
        if self.film1 is not None:
            x = self.film1(x, cond)
        x = F.gelu(self.conv1(x, cond))  # (B, d_ff, rows, period)
        if self.film2 is not None:
            x = self.film2(x, cond)
        x = self.conv2(x, cond)  # (B, D, rows, period)
        return x.permute(0, 2, 3, 1).reshape(B, rows * period, D)[:, :T]

    def fix_frequencies(self, freq: torch.Tensor) -> None:
        """The "fixed" selection's frequencies (k,), e.g. `data_frequencies` of the training data."""
        if not self.fixed:
            raise ValueError("fix_frequencies needs period_selection 'fixed'")
        self.freq.copy_(torch.as_tensor(freq, dtype=torch.long))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, T, D), cond (B, S) or None
        if self.fixed and not bool((self.freq > 0).all()):
            raise ValueError("period_selection 'fixed': frequencies not set (fix_frequencies)")
        periods, amp = fft_periods(x, self.k, self.per_sample, self.freq if self.fixed else None)
        branches = []
        for j in range(self.k):
            if not self.per_sample:
                branches.append(self.branch(x, int(periods[0, j]), cond))
                continue
            # records sharing a period run together; the rest of the batch does not matter
            out, order = [], []
            for p in torch.unique(periods[:, j]).tolist():
                idx = torch.nonzero(periods[:, j] == p).squeeze(1)
                out.append(self.branch(x[idx], p, None if cond is None else cond[idx]))
                order.append(idx)
            inverse = torch.argsort(torch.cat(order))
            branches.append(torch.cat(out)[inverse])
        res = torch.stack(branches, dim=-1)  # (B, T, D, k)
        weight = torch.softmax(amp, dim=1)[:, None, None, :]  # (B, 1, 1, k)
        return (res * weight).sum(dim=-1) + x


# --------------------------------------------------------------------------------------------
# the generator


def instance_norm(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, C, T) cm/s^2 -> (normalised x, mean (B, C, 1), std (B, C, 1) cm/s^2)."""
    mean = x.mean(dim=-1, keepdim=True)
    std = torch.sqrt(x.var(dim=-1, keepdim=True, unbiased=False) + EPS)
    return (x - mean) / std, mean, std


class TimesNetGen(nn.Module):
    """Encoder (instance norm, embedding, TimesBlocks) -> latent (B, T, D) -> per-step head."""

    def __init__(self, cfg: TimesNetConfig) -> None:
        super().__init__()
        if cfg.conditioning not in ("concat", "film", "none"):
            raise ValueError(f"unknown conditioning {cfg.conditioning!r}")
        if cfg.period_selection not in ("batch", "sample"):  # "fixed": the flow sampler's
            raise ValueError(f"period_selection {cfg.period_selection!r}: TimesNet-Gen takes "
                             "batch | sample")
        self.cfg = cfg
        self.embed = nn.Linear(cfg.c_in, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(1, cfg.seq_len, cfg.d_model) * 0.02)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(TimesBlock(cfg) for _ in range(cfg.e_layers))
        self.norm = nn.LayerNorm(cfg.d_model)  # shared by all blocks, as in TimesNet
        self.head = nn.Linear(cfg.d_model, cfg.c_in)

    def condition(self, station: torch.Tensor | None) -> torch.Tensor | None:
        """station (B,) class indices, -1 = none -> one-hot (B, S), or None when unused."""
        if station is None or self.cfg.conditioning == "none" or not bool((station >= 0).any()):
            return None
        if int(station.max()) >= self.cfg.n_stations:
            raise ValueError(f"station index {int(station.max())} >= n_stations "
                             f"{self.cfg.n_stations}")
        return F.one_hot(station.clamp(min=0), self.cfg.n_stations).float() * (
            station[:, None] >= 0)

    def encode(self, x: torch.Tensor, station: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, C, T) cm/s^2 -> latent (B, T, D), mean (B, C, 1), std (B, C, 1) cm/s^2."""
        B, C, T = x.shape
        if C != self.cfg.c_in or T != self.cfg.seq_len:
            raise ValueError(f"input shape (B, {C}, {T}) but the model expects "
                             f"(B, {self.cfg.c_in}, {self.cfg.seq_len})")
        xn, mean, std = instance_norm(x)
        cond = self.condition(station)
        h = self.drop(self.embed(xn.transpose(1, 2)) + self.pos)  # (B, T, D)
        for block in self.blocks:
            h = self.norm(block(h, cond))
        return h, mean, std

    def decode(self, z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """latent (B, T, D), mean/std (B, C, 1) cm/s^2 -> record (B, C, T) cm/s^2."""
        return self.head(z).transpose(1, 2) * std + mean

    def forward(self, x: torch.Tensor, station: torch.Tensor | None = None,
                noise_std: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction (B, C, T) cm/s^2; `noise_std` (D,) adds N(0, noise_std^2) to every
        latent time step (phase-1 training)."""
        z, mean, std = self.encode(x, station)
        if noise_std is not None:
            z = z + torch.randn_like(z) * noise_std
        return self.decode(z, mean, std)


def latent_std(model: TimesNetGen, waveforms: torch.Tensor, batch_size: int,
               station: torch.Tensor | None = None) -> torch.Tensor:
    """(D,) std over records of the time-averaged latent (the paper's "std vector")."""
    was_training = model.training
    model.eval()
    feats = []
    with torch.no_grad():
        for i in range(0, len(waveforms), batch_size):
            s = None if station is None else station[i:i + batch_size]
            z, _, _ = model.encode(waveforms[i:i + batch_size], s)
            feats.append(z.mean(dim=1))  # (b, D)
    model.train(was_training)
    return torch.cat(feats).std(dim=0)
