"""DICOM values shown as people write them: person names (PN) and dates (DA)."""

from __future__ import annotations

import datetime as dt

import pytest

from labels import DiscLabelFields, format_da, format_person_name
from labels.fields import join_name_groups, normalise_text


@pytest.mark.parametrize(
    ("pn", "style", "expected"),
    [
        ("Doe^John", "family_comma_given", ("DOE, John",)),
        ("Doe^John", "given_family", ("John Doe",)),
        ("Doe^John", "family_given", ("Doe John",)),
        ("Doe^John^Alan^Dr.^Jr.", "given_family", ("Dr. John Alan Doe, Jr.",)),
        ("Doe^John^Alan^Dr.^Jr.", "family_comma_given", ("DOE, Dr. John Alan, Jr.",)),
        ("Doe", "family_comma_given", ("DOE",)),
        ("^John", "family_comma_given", ("John",)),
        ("Doe^John^^^", "given_family", ("John Doe",)),
        ("  Doe ^ John  ", "given_family", ("John Doe",)),
        ("Παπαδόπουλος^Γεώργιος", "family_comma_given", ("ΠΑΠΑΔΟΠΟΥΛΟΣ, Γεώργιος",)),
        ("Иванова^Анна^Сергеевна", "given_family", ("Анна Сергеевна Иванова",)),
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", "given_family", ("Tarou Yamada", "山田 太郎")),
        ("=山田^太郎", "family_comma_given", ("山田 太郎",)),
        ("", "family_comma_given", ()),
    ],
)
def test_person_name_styles(pn: str, style: str, expected: tuple[str, ...]) -> None:
    assert format_person_name(pn, style) == expected


def test_person_name_groups_in_the_order_asked() -> None:
    pn = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert format_person_name(pn, groups=("ideographic", "phonetic", "alphabetic")) == (
        "山田 太郎",
        "やまだ たろう",
        "YAMADA, Tarou",
    )
    assert join_name_groups(format_person_name(pn)) == "YAMADA, Tarou (山田 太郎)"
    assert join_name_groups(()) == ""


def test_person_name_rejects_unknown_style() -> None:
    with pytest.raises(ValueError, match="unknown name style"):
        format_person_name("Doe^John", "surname_first")


@pytest.mark.parametrize(
    ("da", "pattern", "expected"),
    [
        ("19700131", "%Y-%m-%d", "1970-01-31"),
        ("19700131", "%d.%m.%Y", "31.01.1970"),
        ("18991231", "%Y-%m-%d", "1899-12-31"),  # pre-1900 birth dates crashed other products
        ("1970.01.31", "%Y-%m-%d", "1970-01-31"),  # ACR-NEMA style
        ("197001", "%Y-%m-%d", "1970-01"),
        ("1970", "%d.%m.%Y", "1970"),
        ("19701331", "%Y-%m-%d", "19701331"),  # not a date: shown as sent, not hidden
        ("19700230", "%Y-%m-%d", "19700230"),
        ("197013", "%Y-%m-%d", "197013"),
        ("", "%Y-%m-%d", ""),
        ("  19700131 ", "%Y-%m-%d", "1970-01-31"),
        ("unknown", "%Y-%m-%d", "unknown"),
    ],
)
def test_format_da(da: str, pattern: str, expected: str) -> None:
    assert format_da(da, pattern) == expected


def test_normalise_text_flattens_line_breaks_and_controls() -> None:
    assert normalise_text(" CT\r\nThorax\t\x00 abdomen ") == "CT Thorax abdomen"
    assert normalise_text("e\u0301") == "é"  # NFC: one character, as fonts and encodings expect


def test_disc_number_must_be_within_count() -> None:
    with pytest.raises(ValueError, match="disc 3 of 2"):
        DiscLabelFields(disc_number=3, disc_count=2)
    assert DiscLabelFields(created=None).creation_date == dt.date.today()


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("Παπαδόπουλος", "ΠΑΠΑΔΟΠΟΥΛΟΣ"),
        ("Ἀθηνᾶ", "ΑΘΗΝΑ"),
        ("Αϋπνία", "ΑΫΠΝΙΑ"),
        ("Müller", "MÜLLER"),
        ("Éric", "ÉRIC"),
    ],
)
def test_family_names_in_capitals_follow_their_script(family: str, expected: str) -> None:
    assert format_person_name(f"{family}^X") == (f"{expected}, X",)
