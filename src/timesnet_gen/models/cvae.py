"""The spectrogram-based conditional VAE baseline (the paper's comparison model).

Pipeline of one record (3, T) in cm/s^2 at 100 Hz:
    scale = peak |acc| over the three components (cm/s^2)      kept, restored at the output
    x / scale -> STFT (Hann, n_fft, hop) -> log(|X| + eps)      (3, n_fft/2, frames); Nyquist bin
                                                                dropped (no energy at 50 Hz)
    standardise per (component, frequency) with training-set mean/std
    encoder: strided Conv2d stack -> mean, log-variance of z (latent_dim)
    decoder: [z, station one-hot] -> Linear -> ConvTranspose2d stack -> standardised log-magnitude
    undo the standardisation -> |X| -> Griffin-Lim (torch.stft/istft) -> waveform, peak set to scale
Everything here is a pure function or an nn.Module over tensors; file IO lives in vae.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------------
# STFT features


def amplitude_scale(x: torch.Tensor) -> torch.Tensor:
    """Per-record peak |acc| over components and time: (n, 3, T) -> (n,), same units (cm/s^2)."""
    if not torch.isfinite(x).all():
        raise ValueError("waveforms contain NaN or inf samples")
    scale = x.abs().amax(dim=(1, 2))
    if (scale <= 0).any():
        raise ValueError(f"{int((scale <= 0).sum())} record(s) are all zeros (no amplitude scale)")
    return scale


def _window(n_fft: int, like: torch.Tensor) -> torch.Tensor:
    return torch.hann_window(n_fft, dtype=like.real.dtype, device=like.device)


def stft(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Complex STFT of (..., T) -> (..., n_fft/2 + 1, 1 + T // hop); centred, Hann window."""
    shape = x.shape
    spec = torch.stft(x.reshape(-1, shape[-1]), n_fft, hop, window=_window(n_fft, x),
                      center=True, return_complex=True)
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def istft(spec: torch.Tensor, n_fft: int, hop: int, length: int) -> torch.Tensor:
    """Inverse of `stft`: (..., n_fft/2 + 1, frames) complex -> (..., length)."""
    shape = spec.shape
    x = torch.istft(spec.reshape(-1, *shape[-2:]), n_fft, hop, window=_window(n_fft, spec),
                    center=True, length=length)
    return x.reshape(*shape[:-2], length)


def log_magnitude(x: torch.Tensor, n_fft: int, hop: int, eps: float) -> torch.Tensor:
    """(n, 3, T) unit-peak waveforms -> (n, 3, n_fft/2, frames) log(|STFT| + eps), no Nyquist."""
    return torch.log(stft(x, n_fft, hop).abs()[..., :-1, :] + eps)


def magnitude_from_log(logmag: torch.Tensor, eps: float) -> torch.Tensor:
    """Undo `log_magnitude`'s log; appends a zero Nyquist bin -> (..., n_fft/2 + 1, frames)."""
    mag = (torch.exp(logmag) - eps).clamp_min(0.0)
    return F.pad(mag, (0, 0, 0, 1))


def griffin_lim(
    mag: torch.Tensor,
    n_fft: int,
    hop: int,
    length: int,
    n_iter: int = 64,
    momentum: float = 0.99,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Waveform (..., length) whose STFT magnitude approximates `mag` (..., n_fft/2 + 1, frames).

    Fast Griffin-Lim (Perraudin et al. 2013): alternate projections with momentum; the initial
    phase is uniform random from `generator`, so a seeded generator gives a deterministic result.
    """
    if not torch.isfinite(mag).all():
        raise ValueError("magnitude contains NaN or inf")
    phase = torch.rand(mag.shape, generator=generator, dtype=mag.dtype) * (2 * math.pi)
    angles = torch.polar(torch.ones_like(mag), phase.to(mag.device))
    previous = torch.zeros_like(angles)
    alpha = momentum / (1.0 + momentum)
    for _ in range(n_iter):
        rebuilt = stft(istft(mag * angles, n_fft, hop, length), n_fft, hop)
        angles = rebuilt - alpha * previous
        angles = angles / (angles.abs() + 1e-16)
        previous = rebuilt
    return istft(mag * angles, n_fft, hop, length)


def spectral_convergence(mag: torch.Tensor, x: torch.Tensor, n_fft: int, hop: int) -> float:
    """|| mag - |STFT(x)| ||_F / || mag ||_F (0 = the waveform has exactly the target magnitude)."""
    rebuilt = stft(x, n_fft, hop).abs()
    return float(torch.linalg.vector_norm(mag - rebuilt) / torch.linalg.vector_norm(mag))


# --------------------------------------------------------------------------------------------
# the model


class SpecCVAE(nn.Module):
    """Conditional VAE over standardised log-magnitude spectrograms (n, 3, n_freq, n_frames).

    The input is zero-padded (zero = the training mean after standardisation) to a multiple of
    2**len(channels) in both axes so every stride-2 layer halves exactly; the decoder output is
    cropped back, so the loss never sees the padding.
    """

    def __init__(
        self,
        n_freq: int,
        n_frames: int,
        n_classes: int,
        latent_dim: int = 64,
        channels: tuple[int, ...] = (16, 32, 64, 64),
        condition_encoder: bool = False,
    ) -> None:
        super().__init__()
        self.n_freq, self.n_frames, self.n_classes = n_freq, n_frames, n_classes
        self.latent_dim, self.condition_encoder = latent_dim, condition_encoder
        factor = 2 ** len(channels)
        self.pad_freq = -n_freq % factor
        self.pad_frames = -n_frames % factor
        self.bottom = (channels[-1], (n_freq + self.pad_freq) // factor,
                       (n_frames + self.pad_frames) // factor)
        flat = math.prod(self.bottom)

        # stride-2 4x4 convolutions halve both axes; GELU keeps gradients alive at init
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.GELU()]
            c_in = c_out
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        self.to_stats = nn.Linear(flat + (n_classes if condition_encoder else 0), 2 * latent_dim)

        self.from_latent = nn.Linear(latent_dim + n_classes, flat)
        layers = []
        widths = list(channels[::-1]) + [3]
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if i < len(channels) - 1:
                layers.append(nn.GELU())  # no activation on the output: log-magnitude is signed
        self.decoder = nn.Sequential(*layers)

    def encode(self, spec: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 3, F, T), (n, classes) -> mean, log-variance (n, latent_dim)."""
        h = self.encoder(F.pad(spec, (0, self.pad_frames, 0, self.pad_freq)))
        if self.condition_encoder:
            h = torch.cat([h, onehot], dim=1)
        mean, logvar = self.to_stats(h).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # keeps exp() finite early in training

    def decode(self, z: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """(n, latent_dim), (n, classes) -> standardised log-magnitude (n, 3, F, T)."""
        h = self.from_latent(torch.cat([z, onehot], dim=1)).view(-1, *self.bottom)
        return self.decoder(F.gelu(h))[..., : self.n_freq, : self.n_frames]

    def forward(
        self, spec: torch.Tensor, onehot: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reparameterised pass: returns (reconstruction, mean, log-variance)."""
        mean, logvar = self.encode(spec, onehot)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        z = mean + torch.exp(0.5 * logvar) * noise
        return self.decode(z, onehot), mean, logvar


def station_onehot(station_index: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Condition vector: (n,) integer station classes -> (n, n_classes) float one-hot."""
    station_index = torch.as_tensor(station_index, dtype=torch.long)
    bad = (station_index < 0) | (station_index >= n_classes)
    if bad.any():
        raise ValueError(
            f"station class {int(station_index[bad][0])} outside 0..{n_classes - 1} "
            "(unknown station: not one of data.target_stations)"
        )
    return F.one_hot(station_index, n_classes).float()


def kl_per_dim(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) in nats per latent dimension, averaged over the batch: (latent,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean(dim=0)


def vae_loss(
    recon: torch.Tensor,
    target: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    beta: float,
    free_bits: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, recon MSE, KL nats per record).

    loss = MSE (per spectrogram element) + beta * KL_fb / elements, where KL_fb clamps each latent
    dimension's batch-mean KL at `free_bits` nats from below (no gradient pushes a dimension under
    it, which prevents posterior collapse). Dividing by the element count makes beta = 1 the ELBO
    of a Gaussian decoder with variance 1/2 in standardised units.
    """
    mse = F.mse_loss(recon, target)
    kl = kl_per_dim(mean, logvar)
    kl_fb = kl.clamp_min(free_bits).sum()
    loss = mse + beta * kl_fb / target[0].numel()
    return loss, mse, kl.sum()
