import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"



@pytest.fixture(autouse=True)
def _torch_threads():
    """Tests share 2 cores: keep torch from oversubscribing them."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (real AFAD test records live in ../shared/data)")
    return path


@functools.lru_cache(maxsize=1)
def samos_records():
    """The 26 real AFAD records of the Samos 2020 event in ../shared/data (skipped when absent):
    (their first 6000 samples (26, 3, 6000) cm/s^2 at 100 Hz, zero-padded; a table with station
    'SAMOS', magnitude and distance_km)."""
    import numpy as np
    import pandas as pd

    from timesnet_gen.io.readers import RawRecord, parse_afad_asc, read_afad_asc

    folder = shared_data("afad_asc", "samos_2020")
    files = sorted(p for p in folder.rglob("*.asc") if not p.name.startswith("._"))
    recs = [r for _, r in read_afad_asc([parse_afad_asc(p) for p in files])]
    assert all(isinstance(r, RawRecord) for r in recs)
    waves = np.stack([np.pad(r.data[:, :6000], ((0, 0), (0, max(0, 6000 - r.data.shape[1]))))
                      for r in recs])
    table = pd.DataFrame({"station": "SAMOS", "magnitude": [r.meta["magnitude"] for r in recs],
                          "distance_km": [r.meta["distance_km"] for r in recs]})
    return waves, table


def resplit(prepared: Path, dst: Path, column: str, value: str, split: str) -> Path:
    """A copy of a prepared folder in which rows with index[column] == value get `split`."""
    import numpy as np
    import pandas as pd

    dst.mkdir()
    index = pd.read_csv(prepared / "index.csv")
    index.loc[index[column] == value, "split"] = split
    index.to_csv(dst / "index.csv", index=False)
    np.save(dst / "waveforms.npy", np.load(prepared / "waveforms.npy"))
    return dst
