"""One size formatter for the CLI and the web (issue 20, item 9): the same job shows the same size in both."""

from __future__ import annotations

from appliance.units import human_size


def test_decimal_units_as_discs_are_sold() -> None:
    assert human_size(0) == "-"
    assert human_size(812) == "812 B"
    assert human_size(2_600_000) == "2.6 MB"
    assert human_size(2_750_000) == "2.8 MB"
    assert human_size(4_700_000_000) == "4.7 GB"
