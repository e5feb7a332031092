"""A record-free sampler: conditional flow matching over a compressed time-frequency record,
with TimesBlocks along the frame axis as the velocity network's backbone. Section names in
quotes ("The frame gain") are those of docs/flow_sampler.md, the design record.

Representation of one record (3, 6000) cm/s^2 (E, N, U, 100 Hz), `encode`:
    level   ln(peak |acc| over the three components)                     (1,)   ln cm/s^2
    coarse  ln(band RMS of |STFT(x / peak)| + eps): Hann n_fft, hop;     (frames, 3 * bands)
            bins pooled onto log-spaced bands (empty bands merged)
    fine    ln of the full-record Fourier amplitude of x / peak, smoothed   (3 * n_fine,)
            (Gaussian in ln f) on log-spaced frequencies: the site resonance at 1/20 Hz
            resolution that the coarse bands cannot hold
Each feature's residual from a linear site and scenario mean (`fit_stats`) is standardised.

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
"The station's own scatter"); `scalar_calibrate`, the same gain for the flow's level and
timing scalars ("The scalar gain"); and `long_gap: shift` and `squeeze`, which keep the P of a
record whose P-to-onset gap is longer than the canvas before the onset inside the P slot,
shift by rolling the record later, squeeze by reading the frames before the onset from the
record's start ("Far records in the P slot", "The far records' P squeezed into the slot").
`canvas` (wrap) rolls the waveform onto the canvas, as the simulated corpus's circular filters
do; real records take `canvas: hold` (their frames moved, the ends held), `long_gap: shift`,
the long-period steps off and `quiet_before_p` (`REAL_RECORDS`; "Real records: the canvas and
the long-period steps").
`coarse_pcs` and `fine_pcs` optionally keep only the leading components of a frame's
channels and of the fine spectrum.

Model (`VelocityNet`): rectified flow x_t = (1 - t) x0 + t x1 (x0 ~ N(0, I), x1 = data),
velocity target x1 - x0. The coarse frames are embedded (Linear + positional embedding) with
the embedded static part (level, fine) and the condition added to every frame; e_layers
TimesBlocks (models/timesnet.py) + a shared LayerNorm + FiLM from the condition run along the
frames; a linear head gives the coarse velocity, an MLP on the frame-mean the static velocity.
Condition = MLP(sinusoidal flow time, station embedding, standardised M, ln R). Station 0 is
"any station" (pre-training on the non-target stations); target stations 1..S start from it
at fine-tuning.

Synthesis (`decode`): band magnitudes -> STFT bins -> fast Griffin-Lim from seeded random phase
(models/cvae.py) -> `envelope_rounds` alternations of two projections: a zero-phase
equalisation that sets the record's smoothed Fourier amplitude to `fine` (`equalise`), then a
rescaling of every (band, frame) cell of its STFT to the band magnitude (`envelope_project`) ->
the long-period steps (`long_period_hz`, `random_phase_hz`) -> optionally the envelope before
the P knot capped at the pre-event level (`quiet_before_p`, off) -> the amplitude
(`record_scale`): by default the record is scaled so that its fine spectrum is exp(level) x
`fine` on average over every value, and its peak follows; "peak" sets the peak to exp(level).
A generated record's frames, fine spectrum and level need not agree the way a real record's
do, and the decoded waveform's crest factor (peak over spectrum) is the decoder's, not the
drawn one: scaled by its peak, its spectrum carried that miss, which widened the ASB14 PSA
residuals most at 1.5-4 s ("The record's scale").
The equalisation alone (`envelope_rounds: 0`) filters a generated record whose fine and coarse
parts disagree with a gain that is jagged in frequency; its long impulse response smeared the
energy in time (D5-95 1.2 x real); the last envelope projection puts it back where the
spectrogram has it (1.0 x, "The first ablations"). The decoder does not give a record exactly
the frames it is asked for, and what it misses has a mean over records; `decoder_bias` (on)
fits that mean on the training records after training (`fit_decoder_bias`), and sampling asks
the decoder for the flow's frames less it (`FlowSampler.decode`; "The decoder's mean error").

Everything here is a pure function or an nn.Module; files are written by `train_sampler` and the
`timesnet-gen sample` CLI (sample.py) through timesnet_gen.atomic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from timesnet_gen.config import Params, ParamsError, section
from timesnet_gen.errors import UserError
from timesnet_gen.evaluation.realism_phases import aic_curve, p_onset_index
from timesnet_gen.evaluation.smoothing import get_operator
from timesnet_gen.models.cvae import griffin_lim, istft, stft
from timesnet_gen.models.timesnet import (PERIOD_SELECTIONS, TimesBlock, TimesNetConfig,
                                         data_frequencies)
from timesnet_gen.records import N_SAMPLES, SAMPLING_RATE
from timesnet_gen.runtime import set_up_torch

KIND = "timesnet-flow"
FORMAT = 1
SCENARIO_COLUMNS = ("magnitude", "distance_km")


class FlowSamplerError(UserError):
    """Bad input to the flow sampler (scenario, station, data, state)."""


@dataclass
class FlowSamplerParams:
    """Every choice of the flow sampler. Defaults: the CPU profile (2 cores, minutes).

    Paper-scale (GPU) profile: params.yaml, the comment above generators.flow.
    """

    # representation
    n_fft: int = 256  # STFT window, samples (2.56 s; bins 0.39 Hz apart)
    hop: int = 64  # frame step, samples (0.64 s): 94 frames of a 60 s record
    n_bands: int = 24  # log-spaced coarse bands before merging empty ones
    band_fmin: float = 0.3  # Hz
    band_fmax: float = 45.0  # Hz
    n_fine: int = 196  # log-spaced frequencies of the fine spectrum (2.6 % apart)
    fine_fmin: float = 0.2  # Hz
    fine_fmax: float = 30.0  # Hz
    fine_bandwidth: float = 150.0  # b of exp(-b ln(f/fc)^2): sigma 0.058 in ln f
    log_eps: float = 1e-4  # of the unit-peak STFT magnitude
    align_s: float = 15.0  # s: the onset of every spectrogram is moved here
    align_fraction: float = 0.05  # onset = time of this fraction of the Arias intensity
    timing: str = "pslot"  # roll: circular shift of the onset to align_s | warp: piecewise-
    #                       linear time warp, P knot to p_align_s and onset to align_s |
    #                       stretch: warp plus the end knot to end_align_s | pslot: roll,
    #                       then the P knot warped to p_align_s (TIMINGS)
    p_fraction: float = 0.01  # warp, stretch, pslot: P knot = time of this fraction of Arias
    p_knot: str = "picker"  # arias: the P knot is the p_fraction time | aic: the onset
    #                         that Maeda's AIC finds on the vertical before the p_fraction
    #                         time + P_PICK_AFTER_S (`p_knot_time`), nearer the P arrival |
    #                         picker: the realism picker's P onset (`p_onset_index`), its
    #                         window ending past the vertical's half-maximum RMS (P_KNOTS)
    p_align_s: float = 8.0  # warp, stretch, pslot: s, the P knot's place in warped time (< align_s)
    long_gap: str = "clip"  # pslot: a P-to-onset gap longer than the canvas before the onset
    #                         (align_s less MIN_GAP_S; 16 % of the target training records) is
    #                         clipped to it, its P outside the slot (clip); or kept (squeeze):
    #                         the frames before the onset are read from the record's start, so
    #                         the slot holds its P and the frames from the onset on are clip's
    #                         (`canvas_start`); or kept (shift): a record whose P knot would sit
    #                         less than an STFT window into the canvas is rolled later so that
    #                         it sits there, and its last seconds leave the canvas
    #                         (`rolled_knots`). Three training seeds: squeeze raises S-P picks
    #                         91-92 -> 97-98 % but the held-out AUC by 0.010 and f0's misses at
    #                         0205; shift raised the AUC by 0.011 / 0.024 (measured; "Far records
    #                         in the P slot", "The far records' P squeezed into the slot"), so
    #                         clip (LONG_GAPS)
    canvas: str = "wrap"  # roll, pslot: how the record is moved onto the canvas. wrap: the
    #                       waveform rolled circularly (what leaves one end comes back at the
    #                       other: the coda's end before the pre-event part, or the pre-event
    #                       part after the coda); right for the simulated corpus, whose filters
    #                       are circular. hold: the frames are moved by whole hops with the
    #                       first and last frame held (the waveform by the rest, under a hop,
    #                       its edge mirrored), and decoding fills what lies outside the canvas
    #                       the same way (`canvas_shift`). Real records: hold, with the rest
    #                       of REAL_RECORDS ("Real records: the canvas and the long-period
    #                       steps") (CANVASES)
    end_fraction: float = 0.95  # stretch: end knot = time of this fraction of Arias intensity
    end_align_s: float = 40.0  # stretch: s, where the end knot sits in warped time (> align_s)
    coarse_pcs: int = 0  # flow over this many principal components of a frame's standardised
    #                      channels (whitened; fit on the training residuals); 0 = every channel
    fine_pcs: int = 0  # the same for the fine spectrum's 3 * n_fine values; 0 = every value
    record_pcs: int = 32  # this many principal components of the whole standardised spectrogram
    #                      (record-level modes: P strength, duration) move from the frames to
    #                      the static part, where the flow models them as scalars; 0 = none
    remainder_scale: bool = False  # True: what the record components leave of each (frame,
    #                      channel) is divided by its training rms, so the flow sees unit variance
    #                      in every cell (that rms runs 0.38-0.71 along the frames; the flow gave
    #                      every frame the same 0.51, measured); "The frame remainder"
    remainder_gauss: bool = False  # True: the remainder (after remainder_scale) is mapped cell by
    #                      cell through its channel's fitted marginal (`fit_marginal`) onto a
    #                      standard normal, so the flow's Gaussian output decodes to the
    #                      remainder's skewed marginals (real skewness -0.63; the flow gave 0.00,
    #                      with it -0.59, measured); off: "The frame remainder"
    remainder_ar: bool = False  # True: the remainder (after remainder_scale) is whitened by a
    #                      first-order vector autoregression along the frames fitted on the
    #                      training residuals (`fit_ar`), so the flow's white noise decodes to the
    #                      remainder's frame-to-frame and channel correlations (real lag-1
    #                      correlation 0.46; the flow alone gave 0.00, measured); ablated: worse
    #                      f0 (worst station 7-11 %), no AUC gain, so off
    remainder_calibrate: bool = True  # after training, the flow's frame coordinates are
    #                      multiplied cell by cell by a gain fitted on the target stations'
    #                      training scenarios (`calibrate_frames`: the training records' rms over
    #                      the flow's rms there), so each (frame, channel) gets the training
    #                      spread that the flow left flat ("The frame gain")
    scalar_calibrate: bool = False  # after training, the flow's level and timing scalars (their
    #                      standardised residuals about the mean model) are multiplied by a gain
    #                      fitted on the target stations' training scenarios (`calibrate`, as
    #                      remainder_calibrate does for the frames), before the record prior
    #                      is given them: the flow left their rms at 1.00, 0.81, 0.40 against
    #                      the training records' 1.06, 0.95, 0.71; the gain moved the PGA
    #                      residual spread +0.02 at two training seeds, out of the realism band
    #                      at one (measured; "The scalar gain"), so off
    station_scatter: bool = False  # after training (and after scalar_calibrate's gain), the
    #                      flow's level scalar is multiplied by a gain per target station fitted
    #                      on that station's training records (`calibrate` by station), so each
    #                      station's records get its own scatter of ln peak about the mean (a
    #                      single-station sigma; the stations' training rms shrunk toward their
    #                      mean by empirical Bayes, `group_rms`), not the flat 0.31-0.32 the
    #                      flow draws everywhere ("The station's own scatter"). Off since
    #                      record_scale: it made up for the peak's crest-factor miss, and with
    #                      the record scaled by its spectrum it only widens the PGA spread
    #                      (+0.009 in 12 paired draws; no nearer the truth's, measured)
    remainder_smooth: bool = True  # after the frame gain, the flow's frame coordinates go through
    #                      a first-order recursion along the frames per channel (`smooth_frames`)
    #                      fitted after training (`smoothing`) so that they get the training
    #                      records' correlation from one frame to the next at the same rms: the
    #                      flow's is 0.00, the records' 0.35-0.55; without it each record's frames
    #                      scatter more about their mean, and the band energies came out +0.13
    #                      (ln) at 0.4-2.7 Hz with the right mean log (measured; "The frame
    #                      smoothing")
    record_prior: bool = True  # True: the record components are drawn by a conditional flow of
    #                      their own (`RecordPrior`: an MLP over the whitened components, given
    #                      the station and the scenario), fitted after training, instead of by
    #                      the TimesBlock flow, whose joint draw of them loses each record's
    #                      sharp P onset ("Where the records still differ: the P wave");
    #                      needs record_pcs > 0
    prior_records: str = "all"  # record_prior fitted on: target (the target stations' training
    #                      records) | all (also the pre-training stations', as station 0, "any
    #                      station", as the TimesBlock flow learns them): 2.3x the records, so
    #                      it copies less ("The record prior on every station") (PRIOR_RECORDS)
    prior_scalars: bool = True  # record_prior: the prior is also given the record's level and
    #                      timing scalars (the TimesBlock flow's draw, at sampling), so the
    #                      spectrogram's modes stay coupled to its amplitude: without them the
    #                      prior widened the spread of ln PGV and ln PSA(1 s) about a station +
    #                      scenario fit to 0.35 and 0.44 (real 0.27 and 0.25), with them 0.29 and
    #                      0.32 (measured; "The record prior on every station")
    prior_fine: int = 3  # record_prior: the prior is also given this many leading principal
    #                      components of the record's fine spectrum (`prior_given`; the
    #                      TimesBlock flow's draw, at sampling), so the spectrogram's record modes
    #                      are drawn with the spectrum that the decoder imposes, not apart from
    #                      it: nearest-station accuracy +0.01 at two training seeds, 8 components
    #                      +0.02 but a higher held-out AUC (measured; "The record prior
    #                      given the fine spectrum"); 0 = not given
    prior_calibrate: bool = True  # record_prior: after the prior is fitted, its draws are
    #                      multiplied component by component by a gain fitted on the target
    #                      stations' training scenarios (`calibrate`: the training records' rms
    #                      over the draws' rms, as remainder_calibrate does for the frames):
    #                      the prior alone gave a mean variance of 0.76 per whitened component
    #                      against the training records' 1.01 (measured; "The record
    #                      prior's gain")
    prior_hidden: int = 256  # record_prior: width of the MLP's three hidden layers
    prior_steps: int = 4000  # record_prior: optimiser steps (batches of 64 records)
    prior_ode_steps: int = 50  # record_prior: Heun steps when sampling
    record_weight: float = 1.0  # weight of the record components' mean squared velocity error in
    #                      the loss (the spectrogram's weighs 1); 0 = pooled with the fine part
    coarse_weight: float = 1.0  # weight of the spectrogram's (frame part's) mean squared velocity
    #                      error in the loss; 0.5 with remainder_scale gives back to the fine
    #                      spectrum (the site signature) the weight that the unit-variance
    #                      remainder took from it (ablation: every station's median f0 within
    #                      5 % in 24 of 32 seeds, 17 of 32 at weight 1)
    # network
    d_model: int = 32
    d_ff: int = 32
    num_kernels: int = 2  # Inception kernels 1, 3
    e_layers: int = 2
    top_k: int = 2
    d_cond: int = 64
    period_selection: str = "batch"  # batch | sample | fixed (models/timesnet.fft_periods;
    #                                  fixed: chosen once on the training features)
    patch: int = 2  # frames per token of the backbone (94 frames -> 47 tokens)
    time_mixing: bool = True  # a linear token mix after each TimesBlock (global context)
    dropout: float = 0.0  # after each TimesBlock, training only
    # training (both phases: AdamW, cosine per step, grad-norm clip)
    pretrain_epochs: int = 300
    finetune_epochs: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    finetune_lr: float = 5e-4
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    mean_model: bool = True  # site + scenario linear mean under the flow (fit_stats)
    mean_quadratic: bool = False  # the mean's scenario terms add M'^2, lnR'^2 and M' lnR'
    #                      (held at the training range's edge outside it; `scenario_terms`)
    site_intercepts: bool = False  # sampling uses the frames' station intercepts estimated
    #                      as a site term (`site_intercepts`: the stations' mean, the station's
    #                      own mean over the frames, its rest shrunk by empirical Bayes); the
    #                      flow is trained about the free fit. Held-out AUC -0.006 at three
    #                      training seeds, but D5-95 1.04 -> 1.13 x the simulator's (measured;
    #                      "The site term"), so off
    ema: float = 0.995  # weight EMA used for sampling (0 = none)
    time_sampling: str = "logit-normal"  # uniform | logit-normal (flow time t of training)
    seed: int = 0
    device: str = "cpu"  # training: cpu | cuda | cuda:N | auto (sampling runs on the CPU)
    num_threads: int = 1  # torch threads; 0 = torch's default. 2 trains 1.2-1.3x faster on 2
    #                       free cores (7 Dec 2026) but sums in another order, so the weights
    #                       differ from the committed checkpoint's; the records sampled from a
    #                       checkpoint are the same bit for bit with 1 or 2 threads and 1 or 2
    #                       workers (measured)
    # sampling
    n_steps: int = 12  # ODE steps (Heun: 23 network evaluations)
    solver: str = "heun"  # euler | heun
    griffin_lim_iters: int = 2  # 8 gave the same realism scores, 1.5x slower (measured)
    griffin_lim_momentum: float = 0.99
    envelope_rounds: int = 4  # (equalise, envelope projection) pairs after Griffin-Lim; 0 = one
    #                           equalisation only (the decoder before Dec 2026)
    long_period_hz: float = 0.6  # after the envelope rounds the fine spectrum is imposed once
    #                              more below this frequency (fully below half of it); the
    #                              rounds' last band projection lifts ln PSA(5 s) by 0.3
    #                              (measured); 0 = off
    random_phase_hz: float = 0.3  # last, the phase below this frequency (all of it below half,
    #                              tapering to none at it) is drawn at random, keeping every
    #                              bin's magnitude: the STFT has no bin there to place the energy
    #                              in time, and the band-0 envelope made the content below 0.3 Hz
    #                              0.90 x as long as real and ln PSA(5 s) +0.09 on the round trip
    #                              (random: 1.00 x and +0.00, measured); 0 = off
    quiet_before_p: bool = False  # last (timing other than roll), each component's envelope in
    #                              the STFT window's length (n_fft) before the drawn P knot is
    #                              capped at its rms over the window's length before that (the
    #                              pre-event level; `quiet_before_p`): the decoder's frames
    #                              spread the P wave's onset over the window, backwards too.
    #                              S-P picks +3.5 points, classifier AUC +0.005 (measured;
    #                              "Quiet before the P knot"), so off
    record_scale: str = "spectrum"  # last, what sets the decoded record's amplitude. peak: its
    #                            peak is the drawn level. spectrum: its fine spectrum is the
    #                            drawn level + fine spectrum in the least-squares sense
    #                            (`decode`) and its peak follows: the ASB14 PSA residual
    #                            spread 0.050 -> 0.019 above real, PGA -0.029 -> -0.005 (mean
    #                            of 12 draws, measured; "The record's scale")
    decoder_bias: bool = True  # after training, the mean error of the decoder on the training
    #                            records' frames is fitted (`fit_decoder_bias`), and sampling
    #                            asks the decoder for the flow's frames less it
    #                            ("The decoder's mean error")
    batch_generate: int = 16  # records per chunk (each chunk seeded by (seed, chunk start))
    workers: int = 2  # threads generating chunks in parallel (num_threads torch threads each)

    def __post_init__(self) -> None:
        """FlowSamplerError naming a NaN/inf value or a rate or size that cannot train."""
        bad = [f"{f.name} = {getattr(self, f.name)}" for f in fields(self)
               if isinstance(getattr(self, f.name), float)
               and not math.isfinite(getattr(self, f.name))]
        bad += [f"{name} = {getattr(self, name)} (must be > 0)"
                for name in ("lr", "finetune_lr", "batch_size", "n_steps", "n_fine", "n_bands",
                             "prior_hidden", "prior_steps", "prior_ode_steps", "batch_generate",
                             "workers")
                if getattr(self, name) <= 0]  # NaN is named above
        bad += [f"{name} = {getattr(self, name)} (must be >= 0)"
                for name in ("envelope_rounds", "griffin_lim_iters", "coarse_pcs", "fine_pcs",
                             "record_pcs", "record_weight", "coarse_weight", "long_period_hz",
                             "random_phase_hz", "prior_fine", "num_threads")
                if getattr(self, name) < 0]
        if self.record_prior and not self.record_pcs > 0:
            bad.append(f"record_prior = True needs record_pcs > 0 (got {self.record_pcs}; "
                       f"set record_prior: false)")
        if not 0.0 <= self.dropout < 1.0:  # NaN fails here too
            bad.append(f"dropout = {self.dropout} (must be in [0, 1))")
        if self.period_selection not in PERIOD_SELECTIONS:
            bad.append(f"period_selection = {self.period_selection!r} (not one of "
                       f"{PERIOD_SELECTIONS})")
        if self.prior_records not in PRIOR_RECORDS:
            bad.append(f"prior_records = {self.prior_records!r} (not one of {PRIOR_RECORDS})")
        if self.p_knot not in P_KNOTS:
            bad.append(f"p_knot = {self.p_knot!r} (not one of {P_KNOTS})")
        if self.long_gap not in LONG_GAPS:
            bad.append(f"long_gap = {self.long_gap!r} (not one of {LONG_GAPS})")
        if self.record_scale not in RECORD_SCALES:
            bad.append(f"record_scale = {self.record_scale!r} (not one of {RECORD_SCALES})")
        if self.canvas not in CANVASES:
            bad.append(f"canvas = {self.canvas!r} (not one of {CANVASES})")
        if self.timing not in TIMINGS:
            bad.append(f"timing = {self.timing!r} (not one of {TIMINGS})")
        if self.timing != "roll" and not 0 < self.p_align_s < self.align_s:
            bad.append(f"p_align_s = {self.p_align_s} ({self.timing}: must be in (0, align_s = "
                       f"{self.align_s}))")
        if self.timing != "roll" and not 0 < self.p_fraction < self.align_fraction:
            bad.append(f"p_fraction = {self.p_fraction} ({self.timing}: must be in (0, "
                       f"align_fraction = {self.align_fraction}))")
        if self.timing == "stretch" and not self.align_s < self.end_align_s:
            bad.append(f"end_align_s = {self.end_align_s} (stretch: must be > align_s = "
                       f"{self.align_s})")
        if self.timing == "stretch" and not self.align_fraction < self.end_fraction < 1:
            bad.append(f"end_fraction = {self.end_fraction} (stretch: must be in (align_fraction"
                       f" = {self.align_fraction}, 1))")
        if bad:  # one message per parameter: the last, which says most (a NaN fails twice)
            named = {msg.split(" ")[0]: msg for msg in bad}
            raise FlowSamplerError(f"flow-sampler parameter(s) {'; '.join(named.values())}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FlowSamplerParams:
        """The params of a generators.flow mapping (a checkpoint's), each value checked against
        its annotation as params.yaml's are (`config.section`): FlowSamplerError naming an
        unknown key or a wrong type."""
        try:
            return section(Params(generators={"flow": raw}), "flow", cls)
        except ParamsError as exc:
            raise FlowSamplerError(str(exc)) from None


# --------------------------------------------------------------------------------------------
# representation


def band_of_bin(p: FlowSamplerParams, fs: float = SAMPLING_RATE) -> np.ndarray:
    """Coarse band (0..B-1) of every STFT bin 1..n_fft/2 (DC dropped); empty bands merged."""
    freqs = np.arange(1, p.n_fft // 2 + 1) * fs / p.n_fft
    edges = np.geomspace(p.band_fmin, p.band_fmax, p.n_bands + 1)
    raw = np.clip(np.searchsorted(edges, freqs, side="right") - 1, 0, p.n_bands - 1)
    return np.unique(raw, return_inverse=True)[1]


def pooling_matrix(bands: np.ndarray) -> torch.Tensor:
    """(B, bins) row-normalised membership: band mean of per-bin power."""
    m = torch.zeros(int(bands.max()) + 1, len(bands), dtype=torch.float32)
    m[torch.as_tensor(bands), torch.arange(len(bands))] = 1.0
    return m / m.sum(dim=1, keepdim=True)


def band_magnitude(spec: torch.Tensor, p: FlowSamplerParams) -> torch.Tensor:
    """RMS magnitude per coarse band of complex STFTs (..., bins, frames) -> (..., B, frames);
    the DC bin is left out."""
    power = spec.abs()[..., 1:, :] ** 2
    return torch.einsum("kb,...bt->...kt", pooling_matrix(band_of_bin(p)), power).sqrt()


def fine_centers(p: FlowSamplerParams) -> np.ndarray:
    return np.geomspace(p.fine_fmin, p.fine_fmax, p.n_fine)


def fine_operator(p: FlowSamplerParams, n_samples: int, fs: float = SAMPLING_RATE):
    """Smoothing operator: rFFT grid of the record -> fine centres (Gaussian in ln f)."""
    freqs = np.fft.rfftfreq(n_samples, 1.0 / fs)
    return get_operator(freqs, fine_centers(p), "paper", p.fine_bandwidth, True)


def fine_spectrum(x: np.ndarray, p: FlowSamplerParams, fs: float = SAMPLING_RATE) -> np.ndarray:
    """ln smoothed Fourier amplitude (ln cm/s) of records (n, 3, T) -> (n, 3, n_fine)."""
    amp = np.abs(np.fft.rfft(np.asarray(x, dtype=np.float64), axis=-1)) / fs
    return np.log(fine_operator(p, x.shape[-1], fs).apply(amp) + 1e-12)


def onset_time(x: np.ndarray, fraction: float, fs: float = SAMPLING_RATE) -> np.ndarray:
    """Time (s) at which the 3-component Arias intensity of records (n, 3, T) first reaches
    `fraction` of its total -> (n,)."""
    energy = np.cumsum((np.asarray(x, dtype=np.float64) ** 2).sum(axis=1), axis=-1)
    return np.argmax(energy >= fraction * energy[:, -1:], axis=-1) / fs


def roll(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Circular shift of every record (n, 3, T) by shift[i] samples (positive = later)."""
    t = np.arange(x.shape[-1])
    return np.take_along_axis(x, ((t[None] - shift[:, None]) % x.shape[-1])[:, None], axis=-1)


def align_shift(onset_s: np.ndarray, p: FlowSamplerParams, at_s: np.ndarray | None = None,
                fs: float = SAMPLING_RATE):
    """Samples that move each record's onset to at_s (n,) s, by default p.align_s."""
    at = p.align_s if at_s is None else np.asarray(at_s, dtype=np.float64)
    return np.rint((at - np.asarray(onset_s, dtype=np.float64)) * fs).astype(np.int64)


def canvas_shift(onset_s: np.ndarray, knots: np.ndarray | None, p: FlowSamplerParams
                 ) -> tuple[np.ndarray, np.ndarray]:
    """How records with the onset (n,) s and the knots of `timing_knots` are moved onto the
    canvas (roll, pslot: by `align_shift`; warp, stretch: not at all): (the waveform's move
    (n,) samples, `move`; the frames' shift (n,) s). canvas wrap: the waveform rolls all of
    it. hold: the frames move by the whole hops in it, ends held (`resample_frames`; no
    interpolation between frames), and the waveform by the rest (0 to hop - 1 samples), its
    edge mirrored."""
    if p.timing not in ("roll", "pslot"):
        return np.zeros(len(knots), dtype=np.int64), np.zeros(len(knots))
    shift = align_shift(onset_s, p, knots[:, 1] if p.timing == "pslot" else None)
    if p.canvas == "wrap":
        return shift, np.zeros(len(shift))
    whole = np.floor_divide(shift, p.hop) * p.hop
    return shift - whole, whole / SAMPLING_RATE


def move(x: np.ndarray, shift: np.ndarray, p: FlowSamplerParams) -> np.ndarray:
    """Records (n, 3, T) moved by shift (n,) samples: canvas wrap rolls them (`roll`); hold
    shifts them, the vacated samples mirroring the record's own edge."""
    if p.canvas == "wrap":
        return roll(x, shift)
    t = x.shape[-1]
    idx = np.arange(t)[None] - np.asarray(shift)[:, None]  # (n, T) source sample
    idx = np.where(idx < 0, -idx, np.where(idx >= t, 2 * (t - 1) - idx, idx))
    return np.take_along_axis(x, idx[:, None], axis=-1)


TIMINGS = ("roll", "warp", "stretch", "pslot")
P_KNOTS = ("arias", "aic", "picker")
LONG_GAPS = ("clip", "shift", "squeeze")
CANVASES = ("wrap", "hold")
RECORD_SCALES = ("peak", "spectrum")
# the decoder's settings for real records ("Real records: the canvas and the long-period steps")
REAL_RECORDS = {"canvas": "hold", "long_gap": "shift", "long_period_hz": 0.0,
                "random_phase_hz": 0.0, "quiet_before_p": True}
MAX_GAP_S = 40.0  # pslot, long_gap shift: the longest P-to-onset gap the canvas takes (s)
P_PICK_AFTER_S = 1.0  # p_knot aic: the AIC window ends this long after the p_fraction time
P_PICK_WINDOW_S = 1.0  # p_knot picker: its RMS window (evaluate.realism.pick_window_s's default)
MIN_GAP_S = 0.3  # warp, stretch, pslot: consecutive knots at least this far apart in real time (s)


def n_given(p: FlowSamplerParams) -> int:
    """How many values the record prior is given besides the station and the scenario
    (`prior_given`): the record's scalars (its first n_scalars(p) static values) with
    p.prior_scalars, and p.prior_fine fine-spectrum components."""
    return (n_scalars(p) if p.prior_scalars else 0) + n_prior_fine(p)


def n_prior_fine(p: FlowSamplerParams) -> int:
    """Fine-spectrum components the record prior is given: p.prior_fine with a record prior,
    else none (the option is then ignored, as prior_scalars is)."""
    return p.prior_fine if p.record_prior else 0


def n_scalars(p: FlowSamplerParams) -> int:
    """Scalars at the head of the static part: the level and the timing (roll: the onset;
    warp: ln onset and ln(onset - P knot); stretch: those and ln(end knot - onset); pslot: the
    onset and ln(onset - P knot))."""
    return 1 + len(warped_knots(p)) if p.timing != "roll" else 2


def warped_knots(p: FlowSamplerParams) -> np.ndarray:
    """Warped time (s) of the P knot, the onset and (stretch) the end knot."""
    knots = [p.p_align_s, p.align_s] + ([p.end_align_s] if p.timing == "stretch" else [])
    return np.array(knots)


def p_knot_time(xn: np.ndarray, p: FlowSamplerParams, fs: float = SAMPLING_RATE) -> np.ndarray:
    """Real time (s) of the P knot of records (n, 3, T): the p_fraction time of the Arias
    intensity (p_knot arias), or (aic) the sample minimising Maeda's AIC of the vertical (the
    realism metrics' picker, `aic_curve`) between the record's start and P_PICK_AFTER_S after
    that time. The Arias time lags the P arrival by a varying amount (on the simulated corpus
    the AIC onset precedes it by a median 0.7-1.2 s, interquartile range 1.3-2.0 s), which
    smears the P onset over 2-3 frames of the slot. (picker) the realism metrics' own P onset,
    `p_onset_index`: its AIC window ends past the vertical's half-maximum RMS instead, so
    pre-event noise that holds more than p_fraction of the Arias intensity (which puts that
    time before the P arrival) does not end the window before the P."""
    arias = onset_time(xn, p.p_fraction, fs)
    if p.p_knot == "arias":
        return arias
    vertical = np.asarray(xn[:, 2], dtype=np.float64)
    vertical = vertical - vertical.mean(axis=-1, keepdims=True)
    if p.p_knot == "picker":
        return p_onset_index(vertical, fs, P_PICK_WINDOW_S) / fs
    end = np.clip(np.rint((arias + P_PICK_AFTER_S) * fs).astype(np.int64), 8,
                  vertical.shape[-1])
    aic = aic_curve(vertical, np.zeros(len(vertical), dtype=np.int64), end)
    return np.argmin(aic, axis=1) / fs


def real_knots(xn: np.ndarray, p: FlowSamplerParams) -> np.ndarray:
    """Real time (s) of the P knot, the onset and (stretch) the end knot of records (n, 3, T)
    -> (n, K), each at least MIN_GAP_S after the one before."""
    fractions = [p.align_fraction] + ([p.end_fraction] if p.timing == "stretch" else [])
    knots = np.stack([p_knot_time(xn, p)] + [onset_time(xn, f) for f in fractions], axis=1)
    for k in range(1, knots.shape[1]):
        knots[:, k] = np.maximum(knots[:, k], knots[:, k - 1] + MIN_GAP_S)
    return knots


def rolled_knots(gap_s: np.ndarray, p: FlowSamplerParams, onset_s: np.ndarray) -> np.ndarray:
    """pslot: the P knot and the onset (n, 2) in the time of the rolled record, from the
    P-to-onset gaps (n,) s and the records' own onsets (n,) s. The onset sits at align_s, and a
    gap longer than the canvas before it (align_s less MIN_GAP_S) is clipped to it (long_gap
    clip: the P falls outside the slot, and within an STFT window of the canvas's start the P
    knot's frames hold the wrapped end of the record). squeeze: gaps are kept up to MAX_GAP_S
    and to the record's onset less MIN_GAP_S, so the P knot may lie before the canvas's start;
    `canvas_start` then reads the slot from the record's start (the frames from the onset on as
    clip's). shift: gaps are kept up to MAX_GAP_S, and one that would put the P knot less than
    an STFT window (n_fft) into the canvas puts the onset that much later instead, so that the
    frames before the knot hold the pre-event part and the frames from the onset on are read
    later (the record's last seconds leave the canvas)."""
    if p.long_gap in ("clip", "squeeze"):
        gap = np.asarray(gap_s, dtype=np.float64)
        if p.long_gap == "clip":
            gap = np.clip(gap, MIN_GAP_S, p.align_s - MIN_GAP_S)
        else:
            gap = np.clip(gap, MIN_GAP_S, np.minimum(MAX_GAP_S, np.maximum(
                np.asarray(onset_s, dtype=np.float64) - MIN_GAP_S, MIN_GAP_S)))
        return np.column_stack([p.align_s - gap, np.full(len(gap), p.align_s)])
    gap = np.clip(np.asarray(gap_s, dtype=np.float64), MIN_GAP_S, MAX_GAP_S)
    onset = np.maximum(p.align_s, gap + p.n_fft / SAMPLING_RATE)
    return np.column_stack([onset - gap, onset])


def canvas_start(onset_s: np.ndarray | None, knots: np.ndarray, p: FlowSamplerParams
                 ) -> np.ndarray:
    """The time (n,) s of the moved record at which the warped canvas starts (`frame_times`),
    for records with the onset (n,) s and the knots of `timing_knots`: 0, but with long_gap
    squeeze, for a record whose P knot lies less than MIN_GAP_S into the moved canvas (or
    before it), the record's own start (align_s less the onset; negative: canvas wrap reads it
    from the rolled record's end, hold from the record's frames, which do not move): the
    frames before the P knot then hold the pre-event part, and the P-to-onset slot the P
    wave, however long the gap."""
    if p.timing != "pslot" or p.long_gap != "squeeze":
        return np.zeros(len(knots))
    far = knots[:, 0] < MIN_GAP_S
    return np.where(far, knots[:, 1] - np.asarray(onset_s, dtype=np.float64), 0.0)


def knot_features(knots: np.ndarray) -> np.ndarray:
    """Real knots (n, K) -> the timing features (n, K): ln onset, ln(onset - P knot) and
    (stretch) ln(end knot - onset)."""
    return np.log(np.column_stack([knots[:, 1], np.diff(knots, axis=1)]))


def knots_of_features(features: np.ndarray, duration: float) -> np.ndarray:
    """Inverse of `knot_features`, clipped to increasing knots with the onset in the record."""
    t_s = np.exp(features[:, 0]).clip(MIN_GAP_S, duration)
    gaps = np.exp(features[:, 1:]).clip(MIN_GAP_S)
    return np.column_stack([np.maximum(t_s - gaps[:, 0], 0.0), t_s, t_s[:, None] + gaps[:, 1:]])


def frame_times(knots: np.ndarray, p: FlowSamplerParams, n_frames: int, inverse: bool = False,
                shift_s: np.ndarray | float = 0.0, start_s: np.ndarray | float = 0.0,
                period_s: float = np.inf, fs: float = SAMPLING_RATE) -> np.ndarray:
    """Real time (s) of every warped frame of each record with real knots (n, K) -> (n,
    n_frames); inverse=True: the warped time of every real frame. The knots are in the time
    of the moved record; the real time returned (inverse: given) is that less shift_s (n,) s,
    the frames' own shift (`canvas_shift`; 0 for a rolled waveform). The warped canvas starts
    at real time start_s (n,) s (`canvas_start`); a record with a negative one is read on a
    circle of period_s: its real times before 0 are those before period_s (resample them with
    period_s), and inverse=True reads its real times from period_s + start_s on as that much
    earlier.

    The warp is piecewise linear through (start_s, 0), each (real knot, `warped_knots`) and has
    slope 1 after the last knot: warp gives the P wave a fixed slot and keeps the real durations
    of strong motion and coda; stretch also gives the strong motion (onset to end knot) a
    fixed slot and keeps the coda's real duration; pslot (knots in rolled time, `rolled_knots`)
    is a shift from the onset on (the identity unless long_gap shift moved the onset), so
    only the frames before it are interpolated."""
    far = 1e4  # s, beyond any record
    start = np.broadcast_to(np.asarray(start_s, dtype=np.float64), (len(knots),))
    real = np.column_stack([start, knots, knots[:, -1] + far])
    warped = np.r_[0.0, warped_knots(p), warped_knots(p)[-1] + far]
    grid = np.arange(n_frames) * p.hop / fs
    shift = np.broadcast_to(np.asarray(shift_s, dtype=np.float64), (len(knots),))
    if inverse:
        return np.stack([np.interp(np.where((r[0] < 0) & (grid + d >= period_s + r[0]),
                                            grid + d - period_s, grid + d), r, warped)
                         for r, d in zip(real, shift)])
    return np.stack([np.interp(grid, warped, r) - d for r, d in zip(real, shift)])


def resample_frames(frames: np.ndarray, at_s: np.ndarray, p: FlowSamplerParams,
                    fs: float = SAMPLING_RATE, period_s: float | None = None) -> np.ndarray:
    """Frames (n, ..., t) at times k * hop -> linearly interpolated at times at_s (n, t') s;
    held at the first and last frame outside them, or (period_s) read on a circle of that
    length, the first frame again at period_s."""
    t = frames.shape[-1]
    if period_s is None:
        idx = np.clip(np.asarray(at_s) * fs / p.hop, 0, t - 1)
        lo = np.floor(idx).astype(np.int64)
        w, hi = idx - lo, np.minimum(lo + 1, t - 1)
    else:
        idx = np.mod(np.asarray(at_s, dtype=np.float64), period_s) * fs / p.hop
        lo = np.minimum(np.floor(idx).astype(np.int64), t - 1)
        span = np.where(lo < t - 1, 1.0, period_s * fs / p.hop - (t - 1))
        w, hi = np.clip((idx - lo) / span, 0.0, 1.0), np.where(lo < t - 1, lo + 1, 0)
    shape = (len(frames),) + (1,) * (frames.ndim - 2) + (idx.shape[1],)
    w = w.reshape(shape)
    below = np.take_along_axis(frames, lo.reshape(shape), axis=-1)
    above = np.take_along_axis(frames, hi.reshape(shape), axis=-1)
    return (below * (1 - w) + above * w).astype(frames.dtype)


def encode(waveforms: np.ndarray, p: FlowSamplerParams) -> dict[str, np.ndarray]:
    """Records (n, 3, T) cm/s^2 -> {"level" (n, 1), "onset" (n, 1 | 2 | 3), "coarse"
    (n, frames, 3 B), "fine" (n, 3 F)}. timing "roll": the spectrogram is of the record
    moved so that its onset (align_fraction of the Arias intensity) sits at p.align_s (p.canvas:
    rolled, or its frames moved with the ends held); the onset (s) is a feature. timing "warp"
    and "stretch": the spectrogram is resampled onto warped time (`frame_times`); the features
    are `knot_features`. "pslot": moved as roll, then the frames before the onset resampled so
    that the P knot sits at p_align_s; the features are the onset (s) and ln(onset - P knot)."""
    x = np.asarray(waveforms, dtype=np.float32)
    if x.ndim != 3 or x.shape[1] != 3:
        raise FlowSamplerError(f"records must have shape (n, 3, T), got {x.shape}")
    if not np.isfinite(x).all():
        raise FlowSamplerError("records contain NaN or inf samples")
    peak = np.abs(x).max(axis=(1, 2))
    if (peak <= 0).any():
        raise FlowSamplerError(f"record {int(np.argmax(peak <= 0))} is all zeros")
    xn = x / peak[:, None, None]
    onset, knots = None, None
    if p.timing in ("warp", "stretch"):
        knots = real_knots(xn, p)
        timing = knot_features(knots)
    else:
        onset = onset_time(xn, p.align_fraction)
        timing = onset[:, None]
        if p.timing == "pslot":
            knots = rolled_knots(onset - p_knot_time(xn, p), p, onset)
            timing = np.column_stack([onset, np.log(knots[:, 1] - knots[:, 0])])
    return {
        "level": np.log(peak)[:, None].astype(np.float32),
        "onset": timing.astype(np.float32),
        "coarse": canvas_frames(xn, onset, knots, p),
        "fine": fine_spectrum(xn, p).reshape(len(xn), -1).astype(np.float32),
    }


def timing_knots(timing: np.ndarray, p: FlowSamplerParams, duration: float
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Timing features (n, K) as `encode` returns them -> the onset (n,) s, clipped to the
    record, and the knots (n, K) that place the frames (pslot: in rolled time; warp, stretch:
    in real time; roll: None)."""
    timing = np.asarray(timing, dtype=np.float64)
    if p.timing in ("warp", "stretch"):
        knots = knots_of_features(timing, duration)
        return knots[:, 1], knots
    onset = timing[:, 0].clip(0.0, duration)
    knots = rolled_knots(np.exp(timing[:, 1]), p, onset) if p.timing == "pslot" else None
    return onset, knots


def canvas_frames(xn: np.ndarray, onset: np.ndarray | None, knots: np.ndarray | None,
                  p: FlowSamplerParams) -> np.ndarray:
    """The coarse frames (n, frames, 3 B) of unit-peak records xn (n, 3, T) with the onset (n,)
    s (roll, pslot) and the knots (n, K) of `timing_knots` (not roll): the log band
    magnitudes of the record moved (roll, pslot; p.canvas) so that its onset sits at align_s
    (pslot: at the onset knot), resampled onto warped time (not roll). `encode` gives it the
    records' own timing; `fit_decoder_bias` the timing that decoded records were made with."""
    wave_shift, frame_shift = canvas_shift(onset, knots, p)
    if p.timing in ("roll", "pslot"):
        xn = move(xn, wave_shift, p)
    band = band_magnitude(stft(torch.from_numpy(np.asarray(xn, dtype=np.float32)), p.n_fft,
                               p.hop), p)  # (n, 3, B, t)
    coarse = torch.log(band + p.log_eps).numpy()
    n, c, b, t = coarse.shape
    if p.timing != "roll":
        start = canvas_start(onset, knots, p)
        at = frame_times(knots, p, t, shift_s=frame_shift, start_s=start)
        wrap = p.canvas == "wrap" and (start < 0).any()  # hold: the frames are the record's
        period = xn.shape[-1] / SAMPLING_RATE if wrap else None
        coarse = resample_frames(coarse, at, p, period_s=period)
    elif p.canvas == "hold":
        grid = np.arange(t) * p.hop / SAMPLING_RATE
        coarse = resample_frames(coarse, grid[None] - frame_shift[:, None], p)
    return coarse.transpose(0, 3, 1, 2).reshape(n, t, c * b)


def low_taper(freqs: np.ndarray, below_hz: float) -> np.ndarray:
    """Weight 1 below below_hz / 2, falling linearly to 0 at below_hz (and 0 above)."""
    return np.clip(2.0 * (below_hz - freqs) / below_hz, 0.0, 1.0)


def equalise(x: torch.Tensor, target: torch.Tensor, p: FlowSamplerParams,
             fs: float = SAMPLING_RATE, below_hz: float | None = None) -> torch.Tensor:
    """Zero-phase filter records (n, 3, T) so their smoothed ln FAS becomes target (n, 3, F).

    The ln ratio on the fine centres is interpolated linearly in ln f onto the rFFT grid (held
    flat outside fine_fmin..fine_fmax); DC is left at zero. below_hz: only below this frequency
    (the ln ratio at full weight below below_hz / 2, tapering linearly to none at below_hz).
    """
    spec = np.fft.rfft(x.double().numpy(), axis=-1)
    current = np.log(fine_operator(p, x.shape[-1], fs).apply(np.abs(spec) / fs) + 1e-12)
    delta = target.double().numpy() - current  # (n, 3, F)
    freqs = np.fft.rfftfreq(x.shape[-1], 1.0 / fs)
    logf = np.log(np.maximum(freqs, freqs[1]))
    ln_c = np.log(fine_centers(p))
    hi = np.clip(np.searchsorted(ln_c, logf), 1, len(ln_c) - 1)
    w = np.clip((logf - ln_c[hi - 1]) / (ln_c[hi] - ln_c[hi - 1]), 0.0, 1.0)
    ln_gain = delta[..., hi - 1] * (1 - w) + delta[..., hi] * w
    if below_hz is not None:
        ln_gain *= low_taper(freqs, below_hz)
    gain = np.exp(ln_gain)
    gain[..., 0] = 0.0
    return torch.from_numpy(np.fft.irfft(spec * gain, n=x.shape[-1], axis=-1)).float()


def random_phase(x: torch.Tensor, below_hz: float, generator: torch.Generator,
                 fs: float = SAMPLING_RATE) -> torch.Tensor:
    """Records (n, 3, T) whose Fourier phase below below_hz is drawn uniformly from generator
    (blended with the record's own by `low_taper`); every bin keeps its magnitude, and the DC
    bin (real) is left as it is."""
    spec = torch.fft.rfft(x.double(), dim=-1)
    w = torch.from_numpy(low_taper(np.fft.rfftfreq(x.shape[-1], 1.0 / fs), below_hz))
    k = int(torch.count_nonzero(w))  # the taper is a prefix of the bins
    w[0] = 0.0
    head = spec[..., :k]
    drawn = torch.rand(head.shape, generator=generator, dtype=torch.float64) * (2 * math.pi)
    mixed = head * (1 - w[:k]) + torch.polar(head.abs(), drawn) * w[:k]
    spec = torch.cat([torch.polar(head.abs(), torch.angle(mixed)), spec[..., k:]], dim=-1)
    return torch.fft.irfft(spec, n=x.shape[-1], dim=-1).float()


def decoded_p_knot(timing: np.ndarray, p: FlowSamplerParams, duration: float) -> np.ndarray:
    """Real time (s) of the P knot of records decoded from their timing features (n, K)
    (timing warp, stretch or pslot), as `decode` places it."""
    onset, knots = timing_knots(timing, p, duration)
    if p.timing == "pslot":
        return onset - np.diff(knots, axis=1)[:, 0]
    return knots[:, 0]


def quiet_before_p(x: torch.Tensor, p_knot: np.ndarray, guard_s: float,
                   fs: float = SAMPLING_RATE, smooth_s: float = 0.32) -> torch.Tensor:
    """Records (n, 3, T) whose envelope (the rms over smooth_s, centred) in the guard_s before
    their P knot p_knot (n,) s is capped, component by component, at their rms over the guard_s
    before that (the pre-event level). Records with less than 0.5 s of that reference are
    left as they are; nothing at or after the P knot changes."""
    xs = x.double().numpy()
    n, _, length = xs.shape
    w = max(int(round(smooth_s * fs)), 1)
    c = np.concatenate([np.zeros((n, 3, 1)), np.cumsum(xs ** 2, axis=-1)], axis=-1)
    lo = np.clip(np.arange(length) - w // 2, 0, length)
    hi = np.clip(np.arange(length) - w // 2 + w, 0, length)
    env = np.sqrt((c[..., hi] - c[..., lo]) / np.maximum(hi - lo, 1))
    t = np.arange(length) / fs
    tp = np.asarray(p_knot, dtype=np.float64)[:, None, None]
    ref_mask = (t >= tp - 2 * guard_s) & (t < tp - guard_s)  # (n, 1, T)
    count = ref_mask.sum(axis=-1)
    ref = np.sqrt((xs ** 2 * ref_mask).sum(axis=-1) / np.maximum(count, 1))  # (n, 3)
    region = (t >= tp - guard_s) & (t < tp) & (count >= 0.5 * fs)[..., None]
    gain = np.where(region, np.minimum(1.0, ref[..., None] / np.maximum(env, 1e-30)), 1.0)
    return torch.from_numpy(xs * gain).float()


def envelope_project(x: torch.Tensor, band_mag: torch.Tensor, p: FlowSamplerParams
                     ) -> torch.Tensor:
    """Records (n, 3, T) whose STFT has every (band, frame) cell scaled to the band magnitude
    band_mag (n, 3, B, frames); the phase and the shape within a band are kept, the DC bin
    takes band 0's gain (it holds the leakage of the lowest frequencies)."""
    spec = stft(x, p.n_fft, p.hop)
    gain = (band_mag / band_magnitude(spec, p).clamp_min(1e-12))[:, :, band_of_bin(p)]
    gain = torch.cat([gain[:, :, :1], gain], dim=2)  # (n, 3, bins + DC, frames)
    return istft(spec * gain, p.n_fft, p.hop, x.shape[-1])


def decode(level: torch.Tensor, onset: torch.Tensor, coarse: torch.Tensor, fine: torch.Tensor,
           p: FlowSamplerParams, generator: torch.Generator, n_samples: int = N_SAMPLES
           ) -> np.ndarray:
    """Physical features (as `encode` returns, as tensors) -> records (n, 3, T) float32 cm/s^2."""
    n, t, cb = coarse.shape
    bands = torch.as_tensor(band_of_bin(p))
    logmag = coarse.reshape(n, t, 3, cb // 3).permute(0, 2, 3, 1)  # (n, 3, B, frames)
    duration = n_samples / SAMPLING_RATE
    onset_s, knots = timing_knots(onset.double().numpy(), p, duration)
    wave_shift, frame_shift = canvas_shift(onset_s, knots, p)
    if p.timing != "roll":  # warped frames back to real time (pslot: the moved record's)
        at = frame_times(knots, p, t, inverse=True, shift_s=frame_shift,
                         start_s=canvas_start(onset_s, knots, p),
                         period_s=duration if p.canvas == "wrap" else np.inf)
        logmag = torch.from_numpy(resample_frames(logmag.numpy(), at, p))
    elif p.canvas == "hold":
        at = np.arange(t) * p.hop / SAMPLING_RATE + frame_shift[:, None]
        logmag = torch.from_numpy(resample_frames(logmag.numpy(), at, p))
    band_mag = (torch.exp(logmag) - p.log_eps).clamp_min(0.0)  # (n, 3, B, frames)
    mag = F.pad(band_mag[:, :, bands], (0, 0, 1, 0))  # every bin of its band; DC zero
    x = griffin_lim(mag, p.n_fft, p.hop, n_samples, p.griffin_lim_iters,
                    p.griffin_lim_momentum, generator)
    target = fine.reshape(n, 3, -1)
    x = equalise(x, target, p)
    for k in range(p.envelope_rounds):  # alternate projections; the envelope's comes last
        if k:
            x = equalise(x, target, p)
        x = envelope_project(x, band_mag, p)
    if p.long_period_hz > 0:
        x = equalise(x, target, p, below_hz=p.long_period_hz)
    if p.random_phase_hz > 0:
        x = random_phase(x, p.random_phase_hz, generator)
    if p.timing in ("roll", "pslot"):
        x = torch.from_numpy(move(x.numpy(), -wave_shift, p))
    if p.quiet_before_p and p.timing != "roll":
        x = quiet_before_p(x, decoded_p_knot(onset.double().numpy(), p, duration),
                           p.n_fft / SAMPLING_RATE)
    if p.record_scale == "spectrum":  # the amplitude at which x's fine spectrum is the unit-peak
        #                               target on average over every value; the peak follows
        miss = fine_spectrum(x.numpy(), p) - target.double().numpy()  # ln, (n, 3, n_fine)
        unit = torch.from_numpy(np.exp(miss.mean(axis=(1, 2)))).float()
    else:
        unit = x.abs().amax(dim=(1, 2)).clamp_min(1e-20)
    return (x * (torch.exp(level[:, 0]) / unit)[:, None, None]).numpy().astype(np.float32)


def fit_decoder_bias(feats: dict[str, np.ndarray], p: FlowSamplerParams, n_samples: int
                     ) -> torch.Tensor:
    """(frames, 3 B) float32: the mean over records of the coarse frames of their decoded
    records (`canvas_frames` at the timing they were decoded with) less their own, for
    records' features feats (as `encode` returns them). `decode` does not give a record
    exactly the frames it is asked for, and what it misses has a mean (leakage of the loud
    frames into the quiet ones, among others) that a linear classifier sees; sampling asks the
    decoder for the flow's frames less this mean (`FlowSampler.decode`, p.decoder_bias)."""
    generator = torch.Generator().manual_seed(p.seed + CALIBRATION_SEED)
    n = len(feats["coarse"])
    total = np.zeros(feats["coarse"].shape[1:])
    for start in range(0, n, DECODE_CHUNK):
        part = {k: v[start:start + DECODE_CHUNK] for k, v in feats.items()}
        x = decode(*(torch.from_numpy(part[k]) for k in ("level", "onset", "coarse", "fine")),
                   p, generator, n_samples)
        xn = x / np.abs(x).max(axis=(1, 2), keepdims=True).clip(1e-30)
        onset, knots = timing_knots(part["onset"], p, n_samples / SAMPLING_RATE)
        total += (canvas_frames(xn, onset, knots, p) - part["coarse"]).sum(axis=0)
    return torch.from_numpy(total / n).float()


DECODE_CHUNK = 128  # records decoded at once by `fit_decoder_bias`


# --------------------------------------------------------------------------------------------
# the velocity network


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


# --------------------------------------------------------------------------------------------
# data: standardised tensors


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


# --------------------------------------------------------------------------------------------
# training


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


# --------------------------------------------------------------------------------------------
# sampling


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


PRIOR_RECORDS = ("target", "all")
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


CALIBRATION_SEED = 7919  # added to p.seed for the draws the fits after training read (`draws`)


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


SOLVERS = ("euler", "heun")
TIME_SAMPLING = ("uniform", "logit-normal")


def check_scenario(magnitude: np.ndarray, distance_km: np.ndarray) -> tuple[np.ndarray, ...]:
    """Validated float64 (n,) arrays of equal length; NaN, inf, negative or zero is an error."""
    m = np.atleast_1d(np.asarray(magnitude, dtype=np.float64))
    r = np.atleast_1d(np.asarray(distance_km, dtype=np.float64))
    if m.ndim != 1 or r.shape != m.shape:
        raise FlowSamplerError(f"magnitude {m.shape} and distance_km {r.shape} need one value "
                               "per record (equal 1-D shapes)")
    if len(m) < 1:
        raise FlowSamplerError("n must be >= 1 (no scenario given)")
    for name, v in (("magnitude", m), ("distance_km", r)):
        bad = ~np.isfinite(v) | (v <= 0)
        if bad.any():
            raise FlowSamplerError(f"{name} must be finite and > 0, got {v[bad][0]}")
    return m, r


# the options' values before each existed: a checkpoint written then was trained with these
BEFORE_OPTIONS = {"remainder_scale": False, "remainder_ar": False, "remainder_gauss": False,
                  "coarse_weight": 1.0, "remainder_calibrate": False, "record_prior": False,
                  "prior_records": "target", "prior_scalars": False, "prior_calibrate": False,
                  "p_knot": "arias", "mean_quadratic": False, "random_phase_hz": 0.0,
                  "remainder_smooth": False, "prior_fine": 0, "quiet_before_p": False,
                  "scalar_calibrate": False, "long_gap": "clip", "decoder_bias": False,
                  "canvas": "wrap", "site_intercepts": False, "station_scatter": False,
                  "record_scale": "peak"}


class FlowSampler:
    """The deep record-free sampler (see the module docstring); sample.py's sampler contract."""

    kind: ClassVar[str] = KIND

    def __init__(self, params: FlowSamplerParams, net: VelocityNet, stats: dict[str, torch.Tensor],
                 stations: list[str], scenarios: dict[str, np.ndarray], n_frames: int,
                 n_samples: int = N_SAMPLES, prior: RecordPrior | None = None) -> None:
        self.params, self.net, self.stats = params, net.eval(), stats
        self.prior = prior
        self.stations, self._scenarios = list(stations), scenarios
        self.n_frames, self.n_samples = n_frames, n_samples

    def station_index(self, station: str) -> int:
        if station not in self.stations:
            raise FlowSamplerError(f"unknown station {station!r} (known: "
                                   f"{', '.join(self.stations)})")
        return self.stations.index(station) + 1

    def scenarios(self, station: str) -> np.ndarray:
        """(n_train, 2) [magnitude, distance_km] of the station's training records."""
        self.station_index(station)
        return self._scenarios[station].copy()

    def sample(self, station: str, magnitude: np.ndarray, distance_km: np.ndarray,
               seed: int) -> np.ndarray:
        """(n, 3, T) float32 cm/s^2 records at the station for the scenarios; seeded."""
        s = self.station_index(station)
        m, r = check_scenario(magnitude, distance_km)
        p = self.params
        set_up_torch(p.num_threads)
        scenario = standardise_scenario(np.stack([m, r], axis=1), self.stats)
        starts = range(0, len(m), p.batch_generate)
        if p.workers > 1 and len(starts) > 1:  # torch and numpy FFTs release the GIL
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(p.workers) as pool:
                out = list(pool.map(lambda k: self._chunk(s, scenario, k, int(seed)), starts))
        else:
            out = [self._chunk(s, scenario, k, int(seed)) for k in starts]
        return np.concatenate(out)

    def _chunk(self, s: int, scenario: torch.Tensor, start: int, seed: int) -> np.ndarray:
        """Records start..start+batch_generate; their own generator (seed, start), so the result
        does not depend on the number of workers."""
        p = self.params
        generator = torch.Generator().manual_seed(seed * 1_000_003 + start)
        _, coarse, static = self.features(s, scenario[start:start + p.batch_generate], generator)
        return self.decode(coarse, static, generator)

    def decode(self, coarse: torch.Tensor, static: torch.Tensor, generator: torch.Generator
               ) -> np.ndarray:
        """Records (n, 3, T) from physical coarse frames (n, frames, C) and static parts (n, S)
        (as `features` returns them): `decode`, asked for the frames less the decoder's mean
        error when the checkpoint holds it (p.decoder_bias, `fit_decoder_bias`)."""
        k = n_scalars(self.params)
        if "decoder_bias" in self.stats:
            coarse = coarse - self.stats["decoder_bias"]
        return decode(static[:, :1], static[:, 1:k], coarse, static[:, k:], self.params,
                      generator, self.n_samples)

    def latent(self, station: torch.Tensor, scenario: torch.Tensor, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The flow's latent coordinates (frames (n, frames, C), static (n, S)) at station
        indices (n,) and standardised scenarios (n, 2), gains applied, the record components
        drawn by the record prior when there is one."""
        p, k = self.params, n_scalars(self.params)
        xc, xs = integrate(self.net, station, scenario, self.n_frames,
                           *latent_sizes(self.stats, self.n_frames, k), p, generator)
        if "frame_gain" in self.stats:
            xc = xc * self.stats["frame_gain"]
        if "frame_smooth" in self.stats:
            xc = smooth_frames(xc, self.stats["frame_smooth"])
        if "scalar_gain" in self.stats:
            xs = torch.cat([xs[:, :k] * self.stats["scalar_gain"], xs[:, k:]], dim=1)
        if "station_gain" in self.stats:  # the level scalar, by the station's own gain
            xs = torch.cat([xs[:, :1] * self.stats["station_gain"][station - 1], xs[:, 1:]],
                           dim=1)
        if self.prior is not None:  # the record components from their own flow
            n_rec = self.stats["record_axes"].shape[1]
            drawn = draw_record_prior(self.prior, station, scenario,
                                      prior_given(xs, self.stats, p), p.prior_ode_steps,
                                      generator, n_rec)
            if "prior_gain" in self.stats:
                drawn = drawn * self.stats["prior_gain"]
            xs = torch.cat([xs[:, :k], drawn, xs[:, k + n_rec:]], dim=1)
        return xc, xs

    def features(self, s: int, scenario: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Generated features at station index s (1..S) and standardised scenarios (n, 2),
        before decoding: the flow's standardised residuals (n, frames, C), and the physical
        coarse frames (n, frames, C) and static part (n, S) that `decode` takes."""
        station_t = torch.full((len(scenario),), s, dtype=torch.long)
        xc, xs = from_latent(*self.latent(station_t, scenario, generator), self.stats,
                             n_scalars(self.params))
        mean_c, mean_s = mean_prediction(self.stats, station_t, scenario)
        coarse = (xc.reshape(len(scenario), -1) * self.stats["coarse_std"] + mean_c)
        return xc, coarse.reshape(xc.shape), xs * self.stats["static_std"] + mean_s

    def state(self) -> dict:
        return {
            "params": asdict(self.params), "stations": list(self.stations),
            "scenarios": {k: torch.as_tensor(v, dtype=torch.float64)
                          for k, v in self._scenarios.items()},
            "stats": dict(self.stats), "weights": self.net.state_dict(),
            "n_frames": int(self.n_frames), "n_samples": int(self.n_samples),
        } | ({"prior_weights": self.prior.state_dict()} if self.prior is not None else {})

    @classmethod
    def from_state(cls, state: dict) -> FlowSampler:
        try:
            params = FlowSamplerParams.from_dict(BEFORE_OPTIONS | state["params"])
            if params.record_prior != ("prior_weights" in state):
                raise FlowSamplerError(
                    f"record_prior = {params.record_prior}, but the checkpoint "
                    f"{'lacks' if params.record_prior else 'holds'} the record prior's weights")
            stats = {k: torch.as_tensor(v) for k, v in state["stats"].items()}
            tensors = {"statistics": stats, "weights": state["weights"],
                       "prior weights": state.get("prior_weights", {})}
            bad = [f"{part} {key}" for part, group in tensors.items()
                   for key, v in group.items() if not torch.isfinite(torch.as_tensor(v)).all()]
            if bad:
                raise FlowSamplerError(f"NaN or inf in the {', '.join(bad[:3])}"
                                       + (f" and {len(bad) - 3} more" if len(bad) > 3 else ""))
            net = build_net(params, int(state["n_frames"]), stats, len(state["stations"]))
            net.load_state_dict(state["weights"])
            scenarios = {k: np.asarray(v, dtype=np.float64)
                         for k, v in state["scenarios"].items()}
            prior = None
            if params.record_prior:
                prior = RecordPrior(stats["record_axes"].shape[1], len(state["stations"]),
                                    params.prior_hidden, params.prior_records == "all",
                                    n_given(params))
                prior.load_state_dict(state["prior_weights"])
                prior.eval()
            return cls(params, net, stats, list(state["stations"]), scenarios,
                       int(state["n_frames"]), int(state["n_samples"]), prior)
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise FlowSamplerError(f"not a valid {KIND} sampler state ({exc})") from None


def build_net(p: FlowSamplerParams, n_frames: int, stats: dict[str, torch.Tensor],
              n_stations: int, calibrated: bool = True) -> VelocityNet:
    if p.solver not in SOLVERS:
        raise FlowSamplerError(f"solver {p.solver!r} not one of {SOLVERS}")
    if p.time_sampling not in TIME_SAMPLING:
        raise FlowSamplerError(f"time_sampling {p.time_sampling!r} not one of {TIME_SAMPLING}")
    check_latent(p, stats, calibrated)
    sizes = latent_sizes(stats, n_frames, n_scalars(p))
    n_fine = sizes[1] - n_scalars(p) - p.record_pcs  # the fine part of the static coordinates
    for key, shape in (("frame_gain", (n_frames, sizes[0])), ("prior_gain", (p.record_pcs,)),
                       ("scalar_gain", (n_scalars(p),)), ("station_gain", (n_stations, 1)),
                       ("frame_smooth", (2, sizes[0])),
                       ("prior_fine_axes", (n_fine, n_prior_fine(p))),
                       ("prior_fine_rms", (n_prior_fine(p),)),
                       ("decoder_bias", (n_frames, stats["coarse_std"].numel() // n_frames))):
        if key in stats and tuple(stats[key].shape) != shape:
            raise FlowSamplerError(f"the statistics' {key} has shape {tuple(stats[key].shape)}, "
                                   f"expected {shape}")
    return VelocityNet(p, n_frames, *sizes, n_stations)


# --------------------------------------------------------------------------------------------
# the training entry point the pipeline calls


def scenario_table(prepared_dir: Path, raw_dir: Path, index: pd.DataFrame) -> np.ndarray:
    """(n, 2) [magnitude, distance_km] of every index row: index.csv's columns, else joined on
    record_id from the raw corpus's records.csv."""
    if all(c in index.columns for c in SCENARIO_COLUMNS):
        table = index
    else:
        path = Path(raw_dir) / "records.csv"
        if not path.exists():
            raise FlowSamplerError(f"{path}: needed for the scenario columns "
                                   f"{SCENARIO_COLUMNS} (absent from {prepared_dir}/index.csv)")
        raw = pd.read_csv(path, dtype={"record_id": str, "station": str})
        missing = [c for c in SCENARIO_COLUMNS if c not in raw.columns]
        if missing:
            raise FlowSamplerError(f"{path}: no column(s) {missing}")
        table = index[["record_id"]].merge(raw[["record_id", *SCENARIO_COLUMNS]],
                                           on="record_id", how="left")
    values = table[list(SCENARIO_COLUMNS)].to_numpy(np.float64)
    bad = ~np.isfinite(values).all(axis=1) | (values <= 0).any(axis=1)
    if bad.any():
        raise FlowSamplerError(f"record {index['record_id'].iloc[int(np.argmax(bad))]}: missing "
                               f"or invalid {'/'.join(SCENARIO_COLUMNS)}")
    return values


def val_fit(index: pd.DataFrame, rows: dict[str, np.ndarray], stats: dict[str, torch.Tensor],
            fit_c: torch.Tensor, fit_s: torch.Tensor, scen: np.ndarray
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-model fit of the validation records: their station's training intercept (the
    training fit minus its scenario term, averaged) plus their own scenario term."""
    z_train = scenario_terms(standardise_scenario(scen[rows["pretrain"]], stats), stats)
    z_val = scenario_terms(standardise_scenario(scen[rows["val"]], stats), stats)
    codes_train = index["station"].to_numpy()[rows["pretrain"]]
    codes_val = index["station"].to_numpy()[rows["val"]]
    out = []
    for fit, name in ((fit_c, "coarse"), (fit_s, "static")):
        icpt = fit - z_train @ stats[f"{name}_slope"]
        by_station = {c: icpt[torch.from_numpy(codes_train == c)].mean(dim=0)
                      for c in set(codes_train)}
        mean_icpt = icpt.mean(dim=0)
        base = torch.stack([by_station.get(c, mean_icpt) for c in codes_val])
        out.append(base + z_val @ stats[f"{name}_slope"])
    return out[0], out[1]


def real_records_warning(raw_dir: Path, params: FlowSamplerParams) -> str | None:
    """A warning when raw_dir holds ingested records (its ingest.json) and params decode them
    with a setting of the simulated corpus's (not REAL_RECORDS); None otherwise."""
    if not (Path(raw_dir) / "ingest.json").exists():
        return None
    other = [f"{key} {getattr(params, key)!r}" for key, value in REAL_RECORDS.items()
             if getattr(params, key) != value]
    if not other:
        return None
    wanted = ", ".join(f"{key} {value!r}" for key, value in REAL_RECORDS.items())
    return (f"warning: {raw_dir} holds real records (ingest.json), decoded with the simulated "
            f"corpus's {', '.join(other)}; real records take {wanted} (README \"Run it on your "
            "own AFAD records\")")


def train_sampler(prepared_dir: str | Path, params: FlowSamplerParams, out_dir: str | Path,
                  raw_dir: str | Path = "data/raw", log: Callable[[str], None] = print
                  ) -> FlowSampler:
    """Pre-train on the non-target stations' train split (validation: their val split), then
    fine-tune on the target stations' train split (holdout never read). Writes
    out_dir/model.pt (the sampler checkpoint) and losses.tsv (phase, epoch, train_loss,
    val_loss; the epoch times go to the log only, so the same seed writes the same bytes)
    atomically; returns the sampler. Logs `real_records_warning` first when it has one."""
    from timesnet_gen.atomic import check_out, staged_dir
    from timesnet_gen.prepare import load_prepared, select
    from timesnet_gen.runtime import resolve_device

    prepared_dir, raw_dir = Path(prepared_dir), Path(raw_dir)
    check_out(out_dir, [prepared_dir, raw_dir])
    device = resolve_device(params.device, "generators.flow.device")
    warning = real_records_warning(raw_dir, params)
    if warning:
        log(warning)
    set_up_torch(params.num_threads)
    waveforms, index = load_prepared(prepared_dir)
    scen = scenario_table(prepared_dir, raw_dir, index)
    rows = {name: select(index, role, split) for name, role, split in (
        ("pretrain", "pretrain", "train"), ("val", "pretrain", "val"),
        ("finetune", "target", "train"))}
    for name in ("pretrain", "finetune"):
        if len(rows[name]) == 0:
            raise FlowSamplerError(f"{prepared_dir}: no records for the {name} phase")
    targets = index[index["role"] == "target"].sort_values("station_index")
    stations = list(dict.fromkeys(targets["station"]))
    t0 = time.perf_counter()
    feats = {name: encode(waveforms[r], params) for name, r in rows.items() if len(r)}
    train = np.concatenate([rows["pretrain"], rows["finetune"]])
    both = {k: np.concatenate([feats["pretrain"][k], feats["finetune"][k]])
            for k in feats["pretrain"]}
    stats = fit_stats(both, index["station"].to_numpy()[train], scen[train], stations,
                      params.mean_model, params.mean_quadratic, params.site_intercepts)
    fit_c, fit_s = stats.pop("_coarse_fit"), stats.pop("_static_fit")
    n_pre = len(rows["pretrain"])
    fits = {"pretrain": (fit_c[:n_pre], fit_s[:n_pre]), "finetune": (fit_c[n_pre:], fit_s[n_pre:])}
    if len(rows["val"]):  # validation stations are the pretrain ones: their fitted intercepts
        fits["val"] = val_fit(index, rows, stats, fit_c[:n_pre], fit_s[:n_pre], scen)
    station_of = {name: np.zeros(len(r), dtype=np.int64) for name, r in rows.items()}
    station_of["finetune"] = index["station"].iloc[rows["finetune"]].map(
        {s: i + 1 for i, s in enumerate(stations)}).to_numpy()
    data = {name: to_batchable(feats[name], station_of[name], scen[rows[name]], stats,
                               *fits[name]) for name in fits}
    stats |= fit_latent(torch.cat([data["pretrain"].coarse, data["finetune"].coarse]),
                        torch.cat([data["pretrain"].static, data["finetune"].static]), params)
    k = n_scalars(params)
    for b in data.values():
        b.coarse, b.static = to_latent(b.coarse, b.static, stats, k)
    data = {name: b.to(device) for name, b in data.items()}
    log(f"features of {sum(len(r) for r in rows.values())} records "
        f"({time.perf_counter() - t0:.1f} s); training on {device}")

    torch.manual_seed(params.seed)
    n_frames = data["pretrain"].coarse.shape[1]
    net = build_net(params, n_frames, stats, len(stations), calibrated=False).to(device)
    if params.period_selection == "fixed":
        log(f"fixed TimesBlock frequencies {net.fix_frequencies(data['pretrain'].coarse)} "
            f"(of {-(-n_frames // params.patch)} tokens)")
    history = fit(net, data["pretrain"], data["val"] if len(rows["val"]) else None,
                  params.pretrain_epochs, params.lr, params, "pretrain", log)
    with torch.no_grad():  # every target station starts from "any station"
        net.station.weight[1:] = net.station.weight[0]
    history += fit(net, data["finetune"], None, params.finetune_epochs, params.finetune_lr,
                   params, "finetune", log)
    net.cpu()  # the checkpoint and sampling are on the CPU
    fine = data["finetune"].to(torch.device("cpu"))  # the fits after training
    if params.remainder_calibrate:
        stats["frame_gain"] = calibrate_frames(net, fine, params)
    prior = None
    if params.record_prior:
        n_rec = stats["record_axes"].shape[1]
        own = ([data["pretrain"].to(torch.device("cpu"))]
               if params.prior_records == "all" else []) + [fine]
        prior = fit_record_prior(torch.cat([b.static[:, k:k + n_rec] for b in own]),
                                 torch.cat([b.station for b in own]),
                                 torch.cat([b.scenario for b in own]),
                                 torch.cat([prior_given(b.static, stats, params)
                                            for b in own]),
                                 params, len(stations))
    fine_rows = index.iloc[rows["finetune"]]
    scenarios = {s: scen[rows["finetune"]][(fine_rows["station"] == s).to_numpy()]
                 for s in stations}
    sampler = FlowSampler(params, net, stats, stations, scenarios, n_frames, waveforms.shape[-1],
                          prior)
    if params.scalar_calibrate:  # before the prior's gain: the prior is given the scalars
        stats["scalar_gain"] = calibrate(fine.static[:, :k], lambda part, generator:
                                         sampler.latent(fine.station[part], fine.scenario[part],
                                                        generator)[1][:, :k], params)
    if params.station_scatter:  # after the pooled gain, before the prior's: it is given the level
        stats["station_gain"] = calibrate(
            fine.static[:, :1], lambda part, generator: sampler.latent(
                fine.station[part], fine.scenario[part], generator)[1][:, :1], params,
            fine.station - 1, len(stations))
    if prior is not None and params.prior_calibrate:
        n_rec = stats["record_axes"].shape[1]
        stats["prior_gain"] = calibrate(fine.static[:, k:k + n_rec], lambda part, generator:
                                        sampler.latent(fine.station[part], fine.scenario[part],
                                                       generator)[1][:, k:k + n_rec], params)
    if params.decoder_bias:  # the training records of both phases
        stats["decoder_bias"] = fit_decoder_bias(both, params, waveforms.shape[-1])
    if params.remainder_smooth:
        stats["frame_smooth"] = smoothing(fine.coarse, draws(
            len(fine.coarse), lambda part, generator: sampler.latent(
                fine.station[part], fine.scenario[part], generator)[0], params))
    with staged_dir(out_dir, [prepared_dir, raw_dir]) as tmp:
        torch.save({"kind": KIND, "format": FORMAT, "state": sampler.state()}, tmp / "model.pt")
        losses = pd.DataFrame(history).drop(columns="seconds")
        losses.to_csv(tmp / "losses.tsv", sep="\t", index=False, float_format="%.6g")
    return sampler
