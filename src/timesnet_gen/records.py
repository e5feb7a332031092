"""Records in memory and the constants of the canonical record (no obspy: models, evaluation
and plotting use these without importing any format code)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from timesnet_gen.errors import UserError

COMPONENTS = ("E", "N", "U")
CHANNELS = ("HNE", "HNN", "HNZ")
SAMPLING_RATE = 100.0  # Hz
N_SAMPLES = 6000
DEFAULT_COUNTS_PER_CM_S2 = 1.0e5  # 1 count = 1e-5 cm/s^2; int32 range covers +-21 g
DEFAULT_STARTTIME = "2000-01-01T00:00:00"


class CorpusError(UserError):
    """A corpus folder or record file is missing, malformed or inconsistent."""


@dataclass
class Corpus:
    """Records in memory: waveforms (n, 3, T) float32 cm/s^2, rows aligned with `records`."""

    waveforms: np.ndarray
    records: pd.DataFrame
    stations: pd.DataFrame

    def station_mask(self, station: str) -> np.ndarray:
        return (self.records["station"] == station).to_numpy()

    def subset(self, keep: np.ndarray) -> Corpus:
        """The records where `keep` (bool mask or indices) selects; the station table unchanged."""
        keep = np.asarray(keep)
        index = np.flatnonzero(keep) if keep.dtype == bool else keep
        return Corpus(self.waveforms[index], self.records.iloc[index].reset_index(drop=True),
                      self.stations)
