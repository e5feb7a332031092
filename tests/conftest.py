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
