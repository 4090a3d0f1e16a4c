"""C-FIND answers written by hand (appliance.dicom.fast.codec): the bytes pydicom writes for the same data set.

Each case is checked against ``pynetdicom.dsutils.encode(answer.dataset(), ...)``, the path pynetdicom takes;
the encoder may decline (None) only where it says it does, and then the caller encodes with pydicom.
"""

from __future__ import annotations

from typing import Any

import pytest
from pynetdicom.dsutils import encode

from appliance.dicom.fast.codec import AnswerEncoder
from appliance.query import Answer, Field

LEVEL = Field(0x00080052, "CS")


def _answer(fields: list[tuple[int, str, Any]], charset: str = "") -> Answer:
    ordered = sorted(fields, key=lambda f: f[0])
    return Answer(tuple(Field(tag, vr) for tag, vr, _ in ordered), [v for *_, v in ordered], charset)


def _check(answer: Answer, by_hand: bool = True) -> None:
    for implicit in (True, False):
        raw = AnswerEncoder(answer.fields, implicit).encode(answer)
        expected = encode(answer.dataset(), implicit, True)
        if by_hand:
            assert raw == expected
        else:
            assert raw is None


STUDY_ANSWER = [
    (0x00080020, "DA", "20070208"),
    (0x00080030, "TM", "100000.5"),
    (0x00080050, "SH", "A101"),
    (0x00080052, "CS", "STUDY"),
    (0x00080054, "AE", "DISCPACS"),
    (0x00080056, "CS", "ONLINE"),
    (0x00080061, "CS", ["CT", "PT"]),
    (0x00080062, "UI", ["1.2.840.10008.5.1.4.1.1.2", "1.2.3"]),
    (0x00080090, "PN", ""),
    (0x00081030, "LO", "MR HEAD"),
    (0x00081110, "SQ", []),
    (0x00090010, "UN", None),
    (0x00100010, "PN", "DOE^JOHN"),
    (0x00100020, "LO", "PID001"),
    (0x00100030, "DA", None),
    (0x00104000, "LT", None),
    (0x0020000D, "UI", "1.2.3.44"),
    (0x00200010, "SH", "1"),
    (0x00201206, "IS", 2),
    (0x00201208, "IS", 0),
    (0x00200013, "IS", "12"),
]


@pytest.mark.parametrize("charset", ["", "ISO_IR 100", "ISO 2022 IR 6\\ISO 2022 IR 100"])
def test_ascii_answer(charset: str) -> None:
    _check(_answer(STUDY_ANSWER, charset))


@pytest.mark.parametrize(
    ("charset", "name", "description"),
    [
        ("ISO_IR 100", "MÜLLER^HANS", "Übersicht\\Röntgen"),  # fits: the caller's charset
        ("ISO_IR 100", "Test-éüäöò^ΔЖ", "ÜBERSICHT"),  # does not fit: ISO_IR 192
        ("", "Test-éüäöò^ΔЖ=テスト", "ÜBERSICHT"),  # none asked: ISO_IR 192
        ("ISO 2022 IR 6\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎=やまだ^たろう", "山田\\太郎"),
        ("\\ISO 2022 IR 149", "Hong^Gildong=洪^吉洞=홍^길동", "홍길동"),
        ("ISO_IR 144", "Иванов^Иван", "Рентген"),
        ("GB18030", "Wang^XiaoDong=王^小东=", "胸部"),
    ],
)
def test_non_ascii_answer(charset: str, name: str, description: str) -> None:
    answer = _answer(
        [
            (0x00100010, "PN", name),
            (0x00081030, "LO", description),
            (0x00104000, "LT", description),
            (0x00100020, "LO", "PID"),
            (0x00080052, "CS", "STUDY"),
        ],
        charset,
    )
    assert answer.charset()
    _check(answer)


@pytest.mark.parametrize(
    ("field", "by_hand"),
    [
        ((0x00100010, "PN", "DOE^JOHN="), False),  # pydicom drops the empty trailing group
        ((0x00100010, "PN", "DOE^JOHN\\ROE^JANE"), True),
        ((0x00200013, "IS", " 7"), False),  # pydicom strips it
        ((0x00200013, "IS", "007"), True),
        ((0x00200013, "IS", "1.0"), False),
        ((0x0020000D, "UI", "1.2.3 "), True),  # stripped, as pydicom.uid.UID does
        ((0x00100040, "CS", "Ω"), False),  # pydicom cannot write it either: its encoder reports it
        ((0x00281050, "DS", "1.5"), False),  # no index key has this VR
        ((0x00280106, "US or SS", None), False),  # ambiguous VR
        ((0x00080001, "UN", None), False),  # pydicom writes a known tag's own VR
        ((0x00091001, "UN", None), True),  # an unknown (private) key
        ((0x00081030, "LO", "x" * 70000), False),  # over a 16-bit length in explicit VR
        ((0x00104000, "LT", "a\\b"), True),
        ((0x00081030, "LO", 12), False),  # not text
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_declines_what_pydicom_must_write(field: tuple[int, str, Any], by_hand: bool) -> None:
    answer = _answer([field, (0x00080052, "CS", "STUDY")])
    if by_hand:
        _check(answer)
        return
    implicit_raw = AnswerEncoder(answer.fields, True).encode(answer)
    explicit_raw = AnswerEncoder(answer.fields, False).encode(answer)
    if field[2] == "x" * 70000:
        assert implicit_raw is not None and explicit_raw is None  # only the explicit VR length overflows
    else:
        assert implicit_raw is None and explicit_raw is None


def test_charset_placed_in_tag_order() -> None:
    # Before every field, between fields, and after the last one.
    for fields in (
        [(0x00100010, "PN", "Ünal")],
        [(0x00080001, "UL", None), (0x00100010, "PN", "Ünal")],
        [(0x00080001, "UL", None), (0x00080002, "LO", "Ünal")],
    ):
        answer = _answer(fields, "ISO_IR 100")
        _check(answer)
        assert b"ISO_IR 100" in (AnswerEncoder(answer.fields, False).encode(answer) or b"")
