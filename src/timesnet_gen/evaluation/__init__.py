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
from timesnet_gen.evaluation.intensity import (
    arias_intensity,
    fourier_amplitude,
    husid,
    intensity_measures,
    pga,
    pgv,
    psa,
    sdof_displacement,
    significant_duration,
    smoothed_fas,
    velocity,
)
from timesnet_gen.evaluation.smoothing import (
    SmoothingOperator,
    get_operator,
    kernel_weights,
    smooth,
)
from timesnet_gen.evaluation.specificity import (
    f0_histogram,
    histogram_edges,
    ideal_matrix,
    interleaved_matrix,
    js_similarity,
    log_rmse,
    lognormal_stats,
    median_f0_difference,
    nearest_station_accuracy,
    nearest_station_accuracy_real,
    similarity_matrix,
    specificity_score,
    specificity_scores,
    true_f0_error,
)
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
    "f0_histogram", "histogram_edges", "ideal_matrix", "interleaved_matrix", "js_similarity",
    "log_rmse", "lognormal_stats", "median_f0_difference", "nearest_station_accuracy",
    "nearest_station_accuracy_real", "similarity_matrix", "specificity_score",
    "specificity_scores", "true_f0_error",
    "arias_intensity", "fourier_amplitude", "husid", "intensity_measures", "pga", "pgv", "psa",
    "sdof_displacement", "significant_duration", "smoothed_fas", "velocity",
    "evaluate_sources", "hvsr_torch",
]


def __getattr__(name: str):
    # Imported on first use: evaluate_sources pulls in obspy (corpus IO), hvsr_torch torch.
    if name == "evaluate_sources":
        from timesnet_gen.evaluation.evaluate import evaluate_sources

        return evaluate_sources
    if name == "hvsr_torch":
        from timesnet_gen.evaluation.torch_hvsr import hvsr_torch

        return hvsr_torch
    raise AttributeError(f"module 'timesnet_gen.evaluation' has no attribute {name!r}")
