"""Site-signature evaluation: HVSR, f0, station-specificity scores, intensity measures.

The modules follow PAPER.md's protocol step by step: spectra -> smoothing -> hvsr -> specificity
(distributions and scores) -> intensity (ground-motion measures). Pure functions over arrays;
the command line (`timesnet-gen evaluate`) lives in cli.py.
"""

from timesnet_gen.evaluation.hvsr import (
    f0,
    hvsr,
    hvsr_details,
    hvsr_operator,
    interpolate_curves,
    median_hvsr,
)
from timesnet_gen.evaluation.smoothing import SmoothingOperator, get_operator, kernel_weights, smooth
from timesnet_gen.evaluation.spectra import (
    RecordError,
    amplitude_spectra,
    combine_horizontal,
    detrend,
    fft_freqs,
    record_problems,
)

__all__ = [
    "RecordError", "SmoothingOperator", "amplitude_spectra", "combine_horizontal", "detrend",
    "f0", "fft_freqs", "get_operator", "hvsr", "hvsr_details", "hvsr_operator",
    "interpolate_curves", "kernel_weights", "median_hvsr", "record_problems", "smooth",
]
