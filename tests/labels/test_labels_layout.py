"""The [labels] config table: every key parsed, every mistake reported by name."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from PIL import Image

from labels import LabelConfigError, LabelLayout
from labels.layout import _SPECS, FIELD_NAMES


def test_empty_table_gives_the_defaults() -> None:
    assert LabelLayout.from_options({}) == LabelLayout()


def test_every_layout_field_is_a_config_key() -> None:
    # A field the parser does not know could never be set from the config, and vice versa.
    assert set(_SPECS) == {f.name for f in dataclasses.fields(LabelLayout)}


def test_full_table_from_toml(tmp_path: Path) -> None:
    Image.new("RGB", (40, 20), "navy").save(tmp_path / "logo.png")
    text = """
    outer_diameter_mm = 116
    inner_diameter_mm = 24
    margin_mm = 1
    top = ["logo", "institution", "patient_name", "patient_id+birth_date"]
    left = ["disc_number"]
    right = ["qr"]
    bottom = ["study_date+modalities", "study_description", "content_type", "created"]
    min_font_size = 6
    name_style = "given_family"
    name_groups = ["ideographic", "alphabetic"]
    date_format = "%d.%m.%Y"
    max_study_lines = 2
    logo = "logo.png"
    logo_height_mm = 7.5
    qr_size_mm = 20
    qr_min_size_mm = 15
    font_paths = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf#0"]
    primera_dpi = 600
    epson_dpi = 360
    jpeg_quality = 90
    epson_encoding = "cp932"
    primera_merge_order = ["patient_name", "patient_id"]
    [font_sizes]
    patient_name = 12
    [captions]
    birth_date = "DOB"
    disc_number = "CD {n}/{m}"
    [epson_fields]
    patient_name = "Name"
    token_url = ""
    [field_replace]
    ";" = " "
    """
    layout = LabelLayout.from_options(tomllib.loads(text), base_dir=tmp_path)
    assert layout.outer_diameter_mm == 116 and layout.inner_diameter_mm == 24 and layout.margin_mm == 1
    assert layout.outer_radius == 57 and layout.inner_radius == 13
    assert layout.top == (("logo",), ("institution",), ("patient_name",), ("patient_id", "birth_date"))
    assert layout.bottom[0] == ("study_date", "modalities")
    assert layout.logo == tmp_path / "logo.png"
    assert layout.font_size("patient_name") == 12 and layout.font_size("institution") == 9.5
    assert layout.caption("birth_date") == "DOB" and layout.caption("patient_id") == "ID"
    assert layout.epson_field_names["patient_name"] == "Name"
    assert "token_url" not in layout.epson_field_names
    assert layout.replacements == {",": " ", '"': "'", "=": "-", ";": " "}
    assert (layout.primera_dpi, layout.epson_dpi, layout.jpeg_quality) == (600, 360, 90)
    assert layout.name_groups == ("ideographic", "alphabetic")
    assert layout.font_paths == ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf#0",)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"outer_diameter": 118}, "labels.outer_diameter: unknown key (did you mean 'outer_diameter_mm'?)"),
        ({"outer_diameter_mm": 130}, "labels.outer_diameter_mm: 130 is out of range (allowed 70 to 120)"),
        (
            {"inner_diameter_mm": "43"},
            "labels.inner_diameter_mm: expected a number from 15 to 50, got '43' (str)",
        ),
        ({"margin_mm": True}, "labels.margin_mm: expected a number"),
        ({"primera_dpi": 300.5}, "labels.primera_dpi: expected an integer from 50 to 1200"),
        ({"top": ["institution", "name"]}, "labels.top: unknown field 'name' in 'name'"),
        ({"top": "institution"}, "labels.top: expected a list of field names"),
        (
            {"bottom": ["studies+created"]},
            "labels.bottom: 'studies+created': logo, qr and studies need a line",
        ),
        ({"left": ["institution"]}, "labels.left: field 'institution' is listed twice"),
        ({"name_style": "surname"}, "labels.name_style: 'surname' is not one of family_comma_given"),
        ({"name_groups": []}, "labels.name_groups: expected a non-empty list"),
        ({"date_format": "%b %d %Y"}, "labels.date_format: '%b %d %Y': use %Y, %m and %d only"),
        ({"font_sizes": {"patient": 12}}, "labels.font_sizes: unknown entry 'patient'"),
        ({"font_sizes": {"created": 2}}, "labels.font_sizes: entry 'created': 2 is out of range"),
        (
            {"font_sizes": {"created": 5}},
            "labels.font_sizes: every size must be at least min_font_size = 5.5",
        ),
        ({"captions": {"disc_number": "Disc {x}"}}, "labels.captions: entry 'disc_number': bad placeholder"),
        ({"logo": "missing.png"}, "labels.logo: no such file:"),
        ({"font_paths": ["nofont.ttf"]}, "labels.font_paths: no such font file:"),
        ({"epson_encoding": "ansi"}, "labels.epson_encoding: unknown encoding 'ansi'"),
        (
            {"epson_fields": {"patient_name": "a=b"}},
            "labels.epson_fields: entry 'patient_name': 'a=b' cannot be",
        ),
        (
            {"epson_fields": {"patient_name": "名前"}},
            "labels.epson_fields: patient_name = '名前' cannot be written",
        ),
        ({"field_replace": {"ab": ""}}, "labels.field_replace: keys must be single characters"),
        ({"field_replace": {";": ","}}, "labels.field_replace: the replacement for ';' must not"),
        (
            {"inner_diameter_mm": 50, "outer_diameter_mm": 70},
            "labels.inner_diameter_mm: 50 leaves less than 10 mm",
        ),
        (
            {"qr_size_mm": 12, "qr_min_size_mm": 14},
            "labels.qr_min_size_mm: must not be larger than qr_size_mm",
        ),
    ],
)
def test_bad_values_are_named(tmp_path: Path, options: dict[str, object], message: str) -> None:
    with pytest.raises(LabelConfigError) as raised:
        LabelLayout.from_options(options, base_dir=tmp_path)
    assert message in str(raised.value)


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(LabelConfigError) as raised:
        LabelLayout.from_options({"jpeg_quality": 101, "logo": "notes.txt", "colour": "red"}, base_dir=tmp_path)
    lines = str(raised.value).splitlines()
    assert lines[0] == "invalid [labels] options:"
    assert len(lines) == 4
    assert any("labels.logo:" in line and "is not an image Pillow can read" in line for line in lines)
    assert any(line.strip() == "labels.colour: unknown key" for line in lines)


def test_every_key_and_field_is_documented() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "labels.md").read_text(encoding="utf-8")
    for key in _SPECS:
        assert f"| `{key}` |" in docs, f"docs/labels.md has no row for labels.{key}"
    for name in FIELD_NAMES:
        assert f"`{name}`" in docs, f"docs/labels.md does not mention the field {name}"
