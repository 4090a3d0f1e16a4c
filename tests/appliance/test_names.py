"""One display rule for person names (issue 20, item 11): web pages, staff lists, the CLI and the disc README."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import parse_config
from appliance.discs.pdi import person
from appliance.names import NAME_STYLE, display_name
from labels import LabelLayout, format_person_name
from webui import create_app


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("DOE^JOHN", "DOE, JOHN"),
        ("Müller^Jürgen", "MÜLLER, Jürgen"),  # the family name in capitals, the rest as stored
        ("MÜLLER^Jürgen", "MÜLLER, Jürgen"),  # ... so both spellings seen in issue 20 look the same
        ("Παπαδόπουλος^Γεώργιος", "ΠΑΠΑΔΟΠΟΥΛΟΣ, Γεώργιος"),  # Greek capitals without accents
        ("Doe^John^Alan^Dr.^Jr.", "DOE, Dr. John Alan, Jr."),
        ("DOE^JOHN^^^", "DOE, JOHN"),  # empty components are dropped
        ("  Doe ^ John  A ", "DOE, John A"),  # spaces trimmed, inner runs made one
        ("Doe", "DOE"),
        ("^John", "John"),
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", "YAMADA, Tarou"),  # ideographic and phonetic groups not shown
        ("=山田^太郎", "山田 太郎"),  # ... unless the alphabetic group is empty
        ("", "(no name)"),
        ("^^^", "(no name)"),
        (None, "(no name)"),
    ],
)
def test_display_rule(stored: str | None, shown: str) -> None:
    assert display_name(stored) == shown


def test_pages_disc_readme_and_labels_use_the_rule(tmp_path: Path) -> None:
    """The pages' ``pn`` filter, the disc README/INDEX.HTM and a label with the default name style agree."""
    app = create_app(parse_config({"appliance": {"data_dir": str(tmp_path)}}))
    assert app.jinja_env.filters["pn"] is display_name
    assert person("Müller^Jürgen") == "MÜLLER, Jürgen"
    assert LabelLayout().name_style == NAME_STYLE
    assert format_person_name("Müller^Jürgen^^Dr.", LabelLayout().name_style) == (display_name("Müller^Jürgen^^Dr."),)
