import numpy as np
import pandas as pd
import pytest

from timesnet_gen.config import DataParams
from timesnet_gen.corpus.format import CorpusError, write_corpus
from timesnet_gen.prepare import load_prepared, make_index, prepare, select


def _records(counts: dict[str, int]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"record_id": f"{s}_{i:03d}", "station": s} for s, n in counts.items() for i in range(n)]
    )


COUNTS = {"0205": 10, "1716": 5, "S001": 20, "S002": 8}
DATA = DataParams(target_stations=["0205", "1716"], holdout_fraction=0.2, val_fraction=0.25)


def test_splits_roles_and_classes():
    index = make_index(_records(COUNTS), DATA)
    assert len(index) == sum(COUNTS.values())
    by = index.groupby(["station", "split"]).size()
    assert by[("0205", "holdout")] == 2 and by[("0205", "train")] == 8
    assert by[("1716", "holdout")] == 1 and by[("S001", "val")] == 5
    assert set(index.loc[index.role == "pretrain", "split"]) == {"train", "val"}
    assert set(index.loc[index.role == "target", "split"]) == {"train", "holdout"}
    classes = index.drop_duplicates("station").set_index("station")["station_index"]
    assert classes.to_dict() == {"0205": 0, "1716": 1, "S001": -1, "S002": -1}


def test_same_seed_same_split_other_seed_differs():
    a = make_index(_records(COUNTS), DATA)
    b = make_index(_records(COUNTS), DATA)
    c = make_index(_records(COUNTS), DataParams(**{**DATA.__dict__, "split_seed": 1}))
    pd.testing.assert_frame_equal(a, b)
    assert not a["split"].equals(c["split"])


def test_slicing_for_the_tiny_profile():
    data = DataParams(target_stations=["0205", "1716"], max_records_per_station=4,
                      max_pretrain_stations=1)
    index = make_index(_records(COUNTS), data)
    assert index.groupby("station").size().max() == 4
    assert index.loc[index.role == "pretrain", "station"].nunique() == 1


def test_missing_target_station_is_named():
    with pytest.raises(CorpusError, match=r"\['4628'\]"):
        make_index(_records(COUNTS), DataParams(target_stations=["0205", "4628"]))


def test_prepare_writes_aligned_arrays(tmp_path):
    records = _records({"0205": 4, "1716": 3, "S001": 4})
    rng = np.random.default_rng(0)
    waveforms = rng.normal(size=(len(records), 3, 6000))
    waveforms[:, 0, 0] = np.arange(len(records))  # tag each record
    stations = pd.DataFrame({"station": ["0205", "1716", "S001"]})
    write_corpus(tmp_path / "raw", waveforms, records, stations)
    prepare(tmp_path / "raw", tmp_path / "prep", DATA)
    array, index = load_prepared(tmp_path / "prep")
    assert array.shape == (11, 3, 6000) and array.dtype == np.float32
    for row, wave in zip(index.itertuples(), array):
        original = records.index[records.record_id == row.record_id][0]
        assert wave[0, 0] == pytest.approx(original)
    assert len(select(index, "target", "holdout")) == 2
    with pytest.raises(ValueError, match="unknown split"):
        select(index, "target", "test")
    with pytest.raises(CorpusError, match="run the prepare stage"):
        load_prepared(tmp_path / "nothing")
