"""Disc labels: every field readable back from the PDF, images of the right size, nothing outside the ring."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from labels import (
    DiscLabelFields,
    LabelFormat,
    LabelLayout,
    LabelStudy,
    compose_disc_label,
    render_disc_label,
)
from labels.drawing import Box, Ring

#: Patient names in the scripts a label must handle, as DICOM PN values, with what must show.
NAMES = {
    "latin": ("Müller-Lüdenscheidt^Jürgen^Ole", ["MÜLLER-LÜDENSCHEIDT, Jürgen Ole"]),
    "greek": ("Παπαδόπουλος^Γεώργιος", ["ΠΑΠΑΔΟΠΟΥΛΟΣ, Γεώργιος"]),
    "cyrillic": ("Иванова^Анна^Сергеевна", ["ИВАНОВА, Анна Сергеевна"]),
    "cjk": ("Yamada^Tarou=山田^太郎", ["YAMADA, Tarou", "山田 太郎"]),
}


def _squash(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("script", sorted(NAMES))
def test_every_field_is_in_the_pdf(
    script: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    make_fields: Callable[..., DiscLabelFields],
    pdf_text: Callable[[Path], str],
) -> None:
    if script == "cjk":
        request.getfixturevalue("has_cjk_font")
    pn, shown = NAMES[script]
    fields = make_fields(patient_name=pn)
    rendered = render_disc_label(fields, LabelLayout(), tmp_path)
    assert rendered.pdf == tmp_path / "label.pdf"
    assert rendered.warnings == ()
    text = _squash(pdf_text(tmp_path / "label.pdf"))
    expected = [
        *shown,
        "St. Example General Hospital",
        "Radiology",
        "ID PID-0012345",
        "Born 1970-01-31",
        "2024-05-01 CT/SR CT Thorax Abdomen",
        "2024-05-02 MR MR Knee left",
        "Disc 1 of 2",
        "DICOM + VIEWER",
        "Created 2024-05-03",
    ]
    for value in expected:
        assert value in text, f"{value!r} not found in {text!r}"


def test_dicom_only_and_hidden_fields(
    tmp_path: Path, make_fields: Callable[..., DiscLabelFields], pdf_text: Callable[[Path], str]
) -> None:
    layout = LabelLayout.from_options(
        {"top": ["patient_name"], "left": [], "right": [], "bottom": ["content_type", "accession_number"]}
    )
    render_disc_label(make_fields(with_viewer=False), layout, tmp_path)
    text = _squash(pdf_text(tmp_path / "label.pdf"))
    assert text == "DOE, John DICOM ONLY Acc. ACC-1; ACC-2"


def test_pdf_page_is_the_disc_square(
    tmp_path: Path, make_fields: Callable[..., DiscLabelFields], pdf_png: Callable[[Path, int], Image.Image]
) -> None:
    render_disc_label(make_fields(), LabelLayout(), tmp_path)
    for dpi in (100, 300):
        # pdftoppm rounds the page up to whole pixels: 120 mm is 472.4 px at 100 dpi, 1417.3 at 300.
        width, height = pdf_png(tmp_path / "label.pdf", dpi).size
        assert width == height
        assert abs(width - 120 / 25.4 * dpi) < 1


@pytest.mark.parametrize("dpi", [300, 600])
def test_robot_images_have_the_pixel_size_of_their_dpi(
    dpi: int, tmp_path: Path, make_fields: Callable[..., DiscLabelFields]
) -> None:
    layout = LabelLayout.from_options({"primera_dpi": dpi, "epson_dpi": 150})
    formats = [LabelFormat.PRIMERA_JPG, LabelFormat.EPSON_JPG] + ([LabelFormat.PRIMERA_BMP] if dpi == 300 else [])
    rendered = render_disc_label(make_fields(), layout, tmp_path, formats)
    side = round(120 / 25.4 * dpi)
    with Image.open(tmp_path / "label-primera.jpg") as jpg:
        assert (jpg.format, jpg.size, jpg.mode) == ("JPEG", (side, side), "RGB")
        assert jpg.info["dpi"] == pytest.approx((dpi, dpi))
    with Image.open(tmp_path / "label-epson.jpg") as jpg:
        assert jpg.size == (709, 709)
    if dpi == 300:
        with Image.open(tmp_path / "label-primera.bmp") as bmp:
            assert (bmp.format, bmp.size, bmp.mode) == ("BMP", (1417, 1417), "RGB")
            assert bmp.info["dpi"] == pytest.approx((300, 300), abs=0.1)
    assert rendered.pdf is None and rendered.epson_fields is None
    assert rendered.path(LabelFormat.PRIMERA_JPG) == tmp_path / "label-primera.jpg"


def test_qr_code_decodes_to_the_token_link(
    tmp_path: Path,
    make_fields: Callable[..., DiscLabelFields],
    decode_qr: Callable[[Image.Image | Path], list[str]],
    pdf_png: Callable[[Path, int], Image.Image],
) -> None:
    fields = make_fields()
    render_disc_label(fields, LabelLayout(), tmp_path, ["pdf", "primera_jpg"])
    assert decode_qr(tmp_path / "label-primera.jpg") == [fields.token_url]
    assert decode_qr(pdf_png(tmp_path / "label.pdf", 300)) == [fields.token_url]


def test_no_qr_code_without_a_link(tmp_path: Path, make_fields: Callable[..., DiscLabelFields]) -> None:
    composed = compose_disc_label(make_fields(token_url=""), LabelLayout())
    assert composed.drawing.qr_codes == ()


def _overlong(make_fields: Callable[..., DiscLabelFields]) -> DiscLabelFields:
    long = "Wolfeschlegelsteinhausenbergerdorff"
    return make_fields(
        patient_name=f"{long}-{long}^Hubert Blaine Charles David Earl Frederick^Gerald^Dr.^Sr.",
        patient_id="X" * 64,
        institution="The Extraordinarily Long Named Regional University Hospital and Research Centre " * 2,
        department="Department of Diagnostic and Interventional Radiology and Nuclear Medicine",
        studies=tuple(
            LabelStudy(f"2024050{i}", "Very long study description " * 6, ("CT", "MR", "PT", "SR")) for i in range(1, 7)
        ),
        disc_number=12,
        disc_count=13,
    )


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"inner_diameter_mm": 23, "outer_diameter_mm": 116},
        {"inner_diameter_mm": 50, "outer_diameter_mm": 100, "margin_mm": 0, "qr_size_mm": 30},
        {
            "top": ["patient_name", "patient_id", "birth_date", "institution", "department", "studies"],
            "bottom": [],
        },
    ],
)
def test_overlong_text_stays_inside_the_ring(
    options: dict[str, object],
    tmp_path: Path,
    make_fields: Callable[..., DiscLabelFields],
    ink_radii: Callable[[Image.Image, int], tuple[float, float]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    layout = LabelLayout.from_options(options)
    fields = _overlong(make_fields)
    composed = compose_disc_label(fields, layout)
    ring = Ring(layout.outer_radius, layout.inner_radius)
    boxes = [line.box for line in composed.drawing.lines] + [q.box for q in composed.drawing.qr_codes]
    assert len(boxes) >= 8
    for box in boxes:
        assert ring.contains(box.moved(-60, -60)), box
    for line in composed.drawing.lines:
        assert all(run.size >= layout.min_font_size for run in line.runs)
    cut = {line.field for line in composed.drawing.lines if line.ellipsised}
    assert {"institution", "patient_name"} <= cut
    assert all(line.text.endswith("…") for line in composed.drawing.lines if line.field == "patient_name")
    assert "institution was too long and was shortened" in composed.warnings

    # The same in ink: render the robot image and measure where dark pixels are.
    with caplog.at_level(logging.WARNING):
        rendered = render_disc_label(fields, layout, tmp_path, [LabelFormat.PRIMERA_JPG])
    assert "patient_name was too long and was shortened" in caplog.text
    with Image.open(rendered.primera_jpg or "") as image:
        nearest, farthest = ink_radii(image, layout.primera_dpi)
    pixel = 25.4 / layout.primera_dpi
    assert nearest >= layout.inner_radius - pixel
    assert farthest <= layout.outer_radius + pixel


def test_combined_line_shortens_the_long_value_and_keeps_the_other(
    make_fields: Callable[..., DiscLabelFields],
) -> None:
    composed = compose_disc_label(make_fields(patient_id="7" * 90), LabelLayout())
    (line,) = [line for line in composed.drawing.lines if line.field == "patient_id+birth_date"]
    assert line.ellipsised
    assert line.text.startswith("ID 7777") and "…" in line.text and line.text.endswith("Born 1970-01-31")


def test_many_studies_end_with_a_count_of_the_rest(
    make_fields: Callable[..., DiscLabelFields], pdf_text: Callable[[Path], str], tmp_path: Path
) -> None:
    studies = tuple(LabelStudy(f"2024010{i}", f"Study {i}", ("CR",)) for i in range(1, 8))
    render_disc_label(make_fields(studies=studies), LabelLayout(), tmp_path)
    text = _squash(pdf_text(tmp_path / "label.pdf"))
    assert "2024-01-01 CR Study 1" in text and "2024-01-02 CR Study 2" in text
    assert "Study 3" not in text
    assert "+ 5 more" in text


def test_text_is_centred_in_its_chord(make_fields: Callable[..., DiscLabelFields]) -> None:
    composed = compose_disc_label(make_fields(), LabelLayout())
    for line in composed.drawing.lines:
        if line.field in ("institution", "patient_name", "created"):
            assert (line.box.x0 + line.box.x1) / 2 == pytest.approx(60, abs=1e-6)
    (left,) = [line for line in composed.drawing.lines if line.field == "content_type"]
    (qr,) = composed.drawing.qr_codes
    assert left.box.x1 < 60 - 43 / 2 and qr.box.x0 > 60 + 43 / 2


def test_logo_is_drawn_inside_the_ring(
    tmp_path: Path,
    make_fields: Callable[..., DiscLabelFields],
) -> None:
    Image.new("RGB", (300, 100), (200, 30, 30)).save(tmp_path / "logo.png")
    layout = LabelLayout.from_options({"logo": "logo.png", "logo_height_mm": 10}, base_dir=tmp_path)
    composed = compose_disc_label(make_fields(), layout)
    (picture,) = composed.drawing.pictures
    assert picture.box.y1 - picture.box.y0 == pytest.approx(10)
    assert (picture.box.x1 - picture.box.x0) == pytest.approx(30)
    assert composed.ring.contains(picture.box.moved(-60, -60))
    rendered = render_disc_label(make_fields(), layout, tmp_path, ["primera_jpg"])
    with Image.open(rendered.primera_jpg or "") as image:
        dpi = layout.primera_dpi
        centre = ((picture.box.x0 + picture.box.x1) / 2 / 25.4 * dpi, (120 - picture.box.y1 + 5) / 25.4 * dpi)
        r, g, b = image.getpixel((round(centre[0]), round(centre[1])))  # type: ignore[misc]
        assert r > 150 and g < 80 and b < 80


def test_without_a_cjk_font_the_latin_name_remains(
    no_cjk_font: None,
    tmp_path: Path,
    make_fields: Callable[..., DiscLabelFields],
    pdf_text: Callable[[Path], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        rendered = render_disc_label(make_fields(patient_name="Yamada^Tarou=山田^太郎"), LabelLayout(), tmp_path)
    assert "no font with Chinese/Japanese/Korean glyphs found" in caplog.text
    assert any("山田 太郎" in warning and "fonts-wqy-zenhei" in warning for warning in rendered.warnings)
    text = _squash(pdf_text(tmp_path / "label.pdf"))
    assert "YAMADA, Tarou" in text and "(" not in text


def test_same_label_same_bytes(tmp_path: Path, make_fields: Callable[..., DiscLabelFields]) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = render_disc_label(make_fields(), LabelLayout(), tmp_path / "a")
    second = render_disc_label(make_fields(), LabelLayout(), tmp_path / "b")
    assert first.pdf and second.pdf
    assert first.pdf.read_bytes() == second.pdf.read_bytes()
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_unknown_format_is_refused(tmp_path: Path, make_fields: Callable[..., DiscLabelFields]) -> None:
    with pytest.raises(ValueError, match="'png'"):
        render_disc_label(make_fields(), LabelLayout(), tmp_path, ["png"])


def test_ring_segments() -> None:
    ring = Ring(outer=50, inner=20)
    assert ring.segments(30, 40) == [(-30.0, 30.0)]
    left, right = ring.segments(-5, 5)
    assert left == (pytest.approx(-math.sqrt(50**2 - 25)), -20.0)
    assert right == (20.0, pytest.approx(math.sqrt(50**2 - 25)))
    assert ring.segments(45, 51) == []
    beside_hub = Box(21, -1, 40, 1)
    assert ring.contains(beside_hub)
    assert not ring.contains(beside_hub.moved(-2, 0))  # its inner edge now reaches into the hub
    assert not ring.contains(Box(-10, 44, 10, 49.9))  # the top corners are beyond the outer edge
