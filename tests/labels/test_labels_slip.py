"""The patient's token slip: paper sizes, content, and a QR code that leads to the link."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from labels import SLIP_PAPERS, LabelLayout, TokenSlipFields, render_token_slip
from labels.slip import compose_token_slip

LINK = "https://pacs.example.org:3000/token?" + "Zq9_" * 16


def _fields(name: str = "Doe^John") -> TokenSlipFields:
    return TokenSlipFields(
        link=LINK,
        patient_name=name,
        study_date="20240501",
        expires=dt.date(2024, 6, 30),
        institution="St. Example General Hospital",
        department="Radiology",
    )


@pytest.mark.parametrize(("paper", "size_mm"), [("A4", (210, 297)), ("Letter", (215.9, 279.4))])
def test_page_slips(
    paper: str,
    size_mm: tuple[float, float],
    tmp_path: Path,
    pdf_text: Callable[[Path], str],
    pdf_png: Callable[[Path, int], Image.Image],
    decode_qr: Callable[[Image.Image | Path], list[str]],
) -> None:
    out = render_token_slip(_fields(), paper, tmp_path / "slip.pdf")
    assert out == tmp_path / "slip.pdf"
    text = pdf_text(out)
    for value in (
        "St. Example General Hospital",
        "Radiology",
        "Your images online",
        "DOE, John",
        "2024-05-01",
        "Available until",
        "2024-06-30",
        "Scan the QR code with your phone camera",
        "Keep this slip private",
    ):
        assert value in " ".join(text.split()), value
    assert LINK in "".join(text.split())  # the link is wrapped over lines, never cut
    image = pdf_png(out, 150)
    assert abs(image.width - size_mm[0] / 25.4 * 150) < 1 and abs(image.height - size_mm[1] / 25.4 * 150) < 1
    assert decode_qr(image) == [LINK]


def test_receipt_is_80mm_wide_and_as_long_as_its_content(
    tmp_path: Path,
    pdf_text: Callable[[Path], str],
    pdf_png: Callable[[Path, int], Image.Image],
    decode_qr: Callable[[Image.Image | Path], list[str]],
) -> None:
    out = render_token_slip(_fields("Иванова^Анна"), "receipt80", tmp_path / "receipt.pdf")
    drawing = compose_token_slip(_fields("Иванова^Анна"), "receipt80")
    assert drawing.width == 80 and 100 < drawing.height < 200
    lowest = min(line.box.y0 for line in drawing.lines)
    assert 0 < lowest < 10  # the roll is cut just below the last line
    for line in drawing.lines:
        assert line.box.x0 >= 4 - 1e-9 and line.box.x1 <= 76 + 1e-9, line.text
    assert "ИВАНОВА, Анна" in pdf_text(out)
    image = pdf_png(out, 203)  # a typical thermal printer
    assert abs(image.width - 80 / 25.4 * 203) < 1
    assert decode_qr(image) == [LINK]


def test_cjk_name_and_site_settings(has_cjk_font: None, tmp_path: Path, pdf_text: Callable[[Path], str]) -> None:
    Image.new("RGB", (120, 40), "teal").save(tmp_path / "logo.png")
    layout = LabelLayout.from_options(
        {"logo": "logo.png", "date_format": "%d.%m.%Y", "name_style": "given_family"}, base_dir=tmp_path
    )
    fields = _fields("Yamada^Tarou=山田^太郎")
    drawing = compose_token_slip(fields, "A4", layout)
    assert len(drawing.pictures) == 1
    text = " ".join(pdf_text(render_token_slip(fields, "A4", tmp_path / "slip.pdf", layout)).split())
    assert "Tarou Yamada (山田 太郎)" in text
    assert "01.05.2024" in text and "30.06.2024" in text


def test_unknown_paper(tmp_path: Path) -> None:
    assert set(SLIP_PAPERS) == {"A4", "Letter", "receipt80"}
    with pytest.raises(ValueError, match="unknown paper 'A5'"):
        render_token_slip(_fields(), "A5", tmp_path / "slip.pdf")
