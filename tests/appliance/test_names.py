"""One display rule for person names (issue 20, item 11): web pages, staff lists, the CLI and the disc README."""

from __future__ import annotations

import pytest

from appliance.discs.pdi import person
from appliance.names import display_name
from webui import create_app


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("DOE^JOHN", "DOE, JOHN"),  # the case is kept as stored: never upper- or title-cased
        ("Müller^Jürgen", "Müller, Jürgen"),
        ("MÜLLER^Jürgen", "MÜLLER, Jürgen"),
        ("Doe^John^Alan^Dr.^Jr.", "Doe, Dr. John Alan, Jr."),
        ("DOE^JOHN^^^", "DOE, JOHN"),  # empty components are dropped
        ("  DOE ^ JOHN  A ", "DOE, JOHN A"),  # spaces trimmed, inner runs made one
        ("DOE", "DOE"),
        ("^John", "John"),
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", "Yamada, Tarou"),  # ideographic and phonetic groups not shown
        ("=山田^太郎", "山田, 太郎"),  # ... unless the alphabetic group is empty
        ("", "(no name)"),
        ("^^^", "(no name)"),
        (None, "(no name)"),
    ],
)
def test_display_rule(stored: str | None, shown: str) -> None:
    assert display_name(stored) == shown


def test_pages_and_disc_readme_use_the_rule() -> None:
    """The staff and patient pages' ``pn`` filter and the disc README/INDEX.HTM call the one function."""
    app = create_app()
    assert app.jinja_env.filters["pn"] is display_name
    assert person("MÜLLER^Jürgen") == "MÜLLER, Jürgen"
