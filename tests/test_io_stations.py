"""Station codes from headers and file names: whole tokens only, never inside a date."""

import pytest

from timesnet_gen.io.stations import name_tokens, normalize_station, station_from_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("20201030115124_0905_mp_RawAcc_E.asc", "0905"),
        ("AFAD.0205.02_HNE.mseed", "0205"),
        ("AFAD.0205.02_2020-10-30.mseed", "0205"),
        ("event_1716_E.sac", "1716"),
        ("2020-10-30_0905.mat", "0905"),
        ("20201030_0905_E.asc", "0905"),
        ("20181002152903_4615.mat", "4615"),
        ("rec_2020_20181002152903.mat", "2020"),  # station 2020 as its own token is fine
        ("a_12020_b.mseed", None),  # '2020' inside a longer token is not a station
        ("20201030115124.mseed", None),  # a timestamp alone holds no station
        ("2020_0205.mat", None),  # two candidates: ambiguous
    ],
)
def test_station_from_name(name, expected):
    assert station_from_name(name) == expected


def test_known_codes_resolve_ambiguity_and_folder_fallback():
    assert station_from_name("2020_0205.mat", known=["0205"]) == "0205"
    assert station_from_name("2020_0205.mat", known=["2020"]) == "2020"
    # nothing in the file name: the folder name is used
    assert station_from_name("GuestUser_RawAcc_20201030115124_3524/acc.mseed") == "3524"


def test_dates_are_blanked_before_tokenising():
    assert "2020" not in name_tokens("x_2020-10-30T11:51:24_y.sac")
    assert name_tokens("20201030115124_0905_mp_RawAcc_E.asc") == ["0905", "mp", "RawAcc", "E"]


@pytest.mark.parametrize(("value", "expected"), [(205, "0205"), ("205.0", "0205"),
                                                 (" 1716 ", "1716"), ("ANK1", "ANK1")])
def test_normalize_station(value, expected):
    assert normalize_station(value) == expected
