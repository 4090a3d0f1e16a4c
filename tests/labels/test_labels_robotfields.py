"""Robot template fields: the Epson REPLACE_FIELD file byte for byte, and Primera MergeField values."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from labels import (
    DiscLabelFields,
    LabelFormat,
    LabelLayout,
    LabelStudy,
    epson_field_file,
    primera_merge_fields,
    render_disc_label,
)
from labels.robotfields import clean_field_value

GOLDEN_CP1252 = (
    b"institution=St. Example General Hospital\r\n"
    b"department=Radiology\r\n"
    b"patientName=M\xdcLLER-L\xdcDENSCHEIDT J\xfcrgen Ole\r\n"
    b"patientId=PID-0012345\r\n"
    b"patientDOB=1970-01-31\r\n"
    b"studyDate=2024-05-01\r\n"
    b"studyDate2=2024-05-02\r\n"
    b"studyDescription=CT Thorax 'native' - plain\r\n"
    b"studyDescription2=MR Knee left\r\n"
    b"modalities=CT/SR\r\n"
    b"modalities2=MR\r\n"
    b"accessionNumber=ACC-1\r\n"
    b"accessionNumber2=ACC-2\r\n"
    b"contentType=DICOM + VIEWER\r\n"
    b"discNumber=Disc 1 of 2\r\n"
    b"creationDate=2024-05-03\r\n"
    b"tokenUrl=https://pacs.example.org:3000/token?Ab3-Ab3-Ab3-Ab3-Ab3-Ab3-Ab3-Ab3-Ab3-Ab3-Ab3-Ab3-Ab3-Ab3-Ab3-Ab3-\r\n"
)


@pytest.fixture
def tricky(make_fields: Callable[..., DiscLabelFields]) -> DiscLabelFields:
    """A disc whose values carry everything that breaks robot fields: commas, quotes, '=', line breaks."""
    return make_fields(
        patient_name="Müller-Lüdenscheidt^Jürgen^Ole",
        studies=(
            LabelStudy("20240501", 'CT Thorax,\r\n"native" = plain', ("CT", "SR"), "ACC-1"),
            LabelStudy("20240502", "MR Knee left", ("MR",), "ACC-2"),
        ),
    )


def test_epson_field_file_golden_bytes(tricky: DiscLabelFields, tmp_path: Path) -> None:
    data, warnings = epson_field_file(tricky, LabelLayout())
    assert data == GOLDEN_CP1252
    assert warnings == ()
    rendered = render_disc_label(tricky, LabelLayout(), tmp_path, [LabelFormat.EPSON_FIELDS])
    assert rendered.epson_fields == tmp_path / "label-epson.dat"
    assert rendered.epson_fields.read_bytes() == GOLDEN_CP1252


def test_epson_utf8_with_bom_keeps_every_script(make_fields: Callable[..., DiscLabelFields]) -> None:
    layout = LabelLayout.from_options(
        {
            "epson_encoding": "utf-8-sig",
            "epson_fields": {
                key: ""
                for key in (
                    "institution",
                    "department",
                    "birth_date",
                    "study_date",
                    "study_description",
                    "modalities",
                    "accession_number",
                    "content_type",
                    "disc_number",
                    "created",
                    "token_url",
                )
            },
        }
    )
    fields = make_fields(patient_name="Yamada^Tarou=山田^太郎", patient_id="Ж-1", studies=())
    data, warnings = epson_field_file(fields, layout)
    assert data == "\ufeffpatientName=YAMADA Tarou (山田 太郎)\r\npatientId=Ж-1\r\n".encode()
    assert warnings == ()


def test_epson_name_falls_back_to_a_group_the_code_page_can_hold(
    make_fields: Callable[..., DiscLabelFields],
) -> None:
    data, warnings = epson_field_file(make_fields(patient_name="Yamada^Tarou=山田^太郎"), LabelLayout())
    assert b"patientName=YAMADA Tarou\r\n" in data
    assert warnings == (
        "Epson field patientName: 'YAMADA Tarou (山田 太郎)' does not fit cp1252; wrote 'YAMADA Tarou'",
    )

    data, _ = epson_field_file(make_fields(patient_name="Yamada^Tarou=山田^太郎"), LabelLayout(epson_encoding="cp932"))
    assert "patientName=YAMADA Tarou (山田 太郎)\r\n".encode("cp932") in data


def test_epson_unencodable_text_is_marked_not_dropped(make_fields: Callable[..., DiscLabelFields]) -> None:
    data, warnings = epson_field_file(
        make_fields(patient_name="Παπαδόπουλος^Γεώργιος", institution="Café"), LabelLayout()
    )
    # cp1252 has no Greek: the letters become '?' (accents go first) and the user is told; it has "é".
    assert b"patientName=???????????? ????????\r\n" in data
    assert b"institution=Caf\xe9\r\n" in data
    assert len(warnings) == 1 and "unknown characters became '?'" in warnings[0]

    data, _ = epson_field_file(make_fields(institution="Zürich Ōsaka"), LabelLayout(epson_encoding="ascii"))
    assert b"institution=Zurich Osaka\r\n" in data


def test_epson_disc_without_studies_still_writes_empty_study_fields(
    make_fields: Callable[..., DiscLabelFields],
) -> None:
    data, _ = epson_field_file(make_fields(studies=(), created=dt.date(1999, 12, 31)), LabelLayout())
    assert b"\r\nstudyDate=\r\nstudyDescription=\r\nmodalities=\r\naccessionNumber=\r\n" in data
    assert b"creationDate=1999-12-31\r\n" in data


def test_epson_value_length_limit(make_fields: Callable[..., DiscLabelFields]) -> None:
    data, _ = epson_field_file(make_fields(department="x" * 2000), LabelLayout())
    line = next(part for part in data.split(b"\r\n") if part.startswith(b"department="))
    assert line == b"department=" + b"x" * 1021 + b"..."


def test_primera_merge_fields(tricky: DiscLabelFields) -> None:
    assert primera_merge_fields(tricky, LabelLayout()) == (
        "St. Example General Hospital",
        "MÜLLER-LÜDENSCHEIDT Jürgen Ole",
        "PID-0012345",
        "1970-01-31",
        "2024-05-01; 2024-05-02",
        "CT/SR/MR",
        "CT Thorax 'native' - plain; MR Knee left",
        "Disc 1 of 2",
        "2024-05-03",
        "DICOM + VIEWER",
        tricky.token_url,  # the patient link goes to the last merge field
    )
    layout = LabelLayout.from_options({"primera_merge_order": ["patient_id", "token_url"]})
    long_url = "https://example.org/" + "t" * 300
    values = primera_merge_fields(replace(tricky, token_url=long_url), layout)
    assert values[0] == "PID-0012345"
    assert len(values[1]) == 260 and values[1].endswith("...")


def test_clean_field_value() -> None:
    rules = {",": " ", '"': "'", "=": "-"}
    assert clean_field_value('  DOE,\tJohn\n"Jr" =x ', rules, 100) == "DOE John 'Jr' -x"
    assert clean_field_value("abcdef", rules, 5) == "ab..."
