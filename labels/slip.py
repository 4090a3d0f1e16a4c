"""The patient's token slip: a page (A4, Letter) or an 80 mm receipt with the link and its QR code."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from labels.drawing import PT, Box, Drawing, Picture, QRCode, Span, TextLine, load_logo, place_line, wrap_text
from labels.fields import (
    TokenSlipFields,
    format_da,
    format_date,
    format_person_name,
    join_name_groups,
    normalise_text,
)
from labels.fonts import FontSet, font_set
from labels.layout import LabelLayout
from labels.render import write_pdf

__all__ = ["SLIP_PAPERS", "render_token_slip"]

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Paper:
    width: float
    height: float | None  # None: as long as the content (a receipt roll)
    margin: float
    scale: float  # font sizes relative to a full page
    qr: float  # QR code size, mm


#: Paper names accepted by :func:`render_token_slip` and their size in mm (a receipt is as long as it needs).
SLIP_PAPERS = {
    "A4": _Paper(210.0, 297.0, 20.0, 1.0, 60.0),
    "Letter": _Paper(215.9, 279.4, 20.0, 1.0, 60.0),
    "receipt80": _Paper(80.0, None, 4.0, 0.72, 46.0),
}


class _Flow:
    """Lays blocks out from the top of the page down; y is negative below the top edge."""

    def __init__(self, paper: _Paper, fonts: FontSet) -> None:
        self.paper = paper
        self.fonts = fonts
        self.left = paper.margin
        self.width = paper.width - 2 * paper.margin
        self.y = -paper.margin
        self.lines: list[TextLine] = []
        self.pictures: list[Picture] = []
        self.qr_codes: list[QRCode] = []
        self.rules: list[Box] = []

    def space(self, mm: float) -> None:
        self.y -= mm * self.paper.scale

    def _line(self, field: str, spans: list[Span], size: float, left: float, width: float, centre: bool) -> None:
        ascent, descent = self.fonts.extent("".join(s.text for s in spans))
        line_width = sum(self.fonts.width(s.text, size, s.bold) for s in spans) * PT
        x = left + (width - line_width) / 2 if centre else left
        baseline = self.y - ascent * size * PT
        self.lines.append(place_line(self.fonts, field, spans, x, baseline, size))
        self.y -= max(1.3, ascent + descent + 0.15) * size * PT

    def text(
        self,
        field: str,
        text: str,
        size: float,
        bold: bool = False,
        muted: bool = False,
        centre: bool = False,
    ) -> None:
        """A paragraph, wrapped to the text width."""
        size *= self.paper.scale
        for part in wrap_text(self.fonts, normalise_text(text), self.width, size, bold):
            self._line(field, [Span(part, bold, muted)], size, self.left, self.width, centre)

    def row(self, field: str, caption: str, value: str, size: float, column: float) -> None:
        """A muted caption and a bold value beside it; the value wraps within its own column."""
        size *= self.paper.scale
        column *= self.paper.scale
        top = self.y
        self._line(field + ":caption", [Span(caption, muted=True)], size, self.left, column, False)
        self.y = top
        for part in wrap_text(self.fonts, value, self.width - column, size, bold=True) or [""]:
            self._line(field, [Span(part, bold=True)], size, self.left + column, self.width - column, False)

    def rule(self) -> None:
        self.rules.append(Box(self.left, self.y, self.left + self.width, self.y))

    def qr(self, data: str, size: float) -> None:
        box = Box(self.left + (self.width - size) / 2, self.y - size, self.left + (self.width + size) / 2, self.y)
        self.qr_codes.append(QRCode(box, QRCode.matrix(data), data))
        self.y -= size

    def picture(self, layout: LabelLayout, height: float) -> None:
        if layout.logo is None:
            return
        image = load_logo(layout.logo)
        height *= self.paper.scale
        width = min(self.width, height * image.width / image.height)
        height = width * image.height / image.width
        self.pictures.append(Picture(Box(self.left, self.y - height, self.left + width, self.y), image))
        self.y -= height

    def drawing(self) -> Drawing:
        height = self.paper.height if self.paper.height is not None else self.paper.margin - self.y
        if -self.y > height:
            LOGGER.warning("token slip: the content is %.0f mm long and overflows the page", -self.y)
        return Drawing(
            self.paper.width,
            height,
            lines=tuple(line.moved(0, height) for line in self.lines),
            pictures=tuple(Picture(p.box.moved(0, height), p.image) for p in self.pictures),
            qr_codes=tuple(QRCode(q.box.moved(0, height), q.modules, q.data) for q in self.qr_codes),
            rules=tuple(r.moved(0, height) for r in self.rules),
        )


def compose_token_slip(fields: TokenSlipFields, paper: str, layout: LabelLayout | None = None) -> Drawing:
    """Lay out a token slip on `paper` (a key of :data:`SLIP_PAPERS`); see :func:`render_token_slip`."""
    if paper not in SLIP_PAPERS:
        raise ValueError(f"unknown paper {paper!r}; expected one of {', '.join(SLIP_PAPERS)}")
    layout = layout or LabelLayout()
    spec = SLIP_PAPERS[paper]
    fonts = font_set(layout.font_paths)
    flow = _Flow(spec, fonts)
    groups = format_person_name(fields.patient_name, layout.name_style, layout.name_groups)
    name = join_name_groups([g for g in groups if not fonts.missing(g)] or [fonts.renderable(g) for g in groups])

    flow.picture(layout, 14.0)
    if flow.pictures:
        flow.space(4)
    flow.text("institution", fields.institution, 15, bold=True)
    flow.text("department", fields.department, 10.5, muted=True)
    flow.space(3)
    flow.rule()
    flow.space(6)
    flow.text("title", fields.title, 20, bold=True)
    flow.space(4)
    column = 36.0
    patient, study, until = fields.captions
    flow.row("patient_name", patient, name, 11.5, column)
    if fields.study_date.strip():
        flow.row("study_date", study, format_da(fields.study_date, layout.date_format), 11.5, column)
    if fields.expires is not None:
        flow.row("expires", until, format_date(fields.expires, layout.date_format), 11.5, column)
    flow.space(7)
    flow.qr(fields.link.strip(), spec.qr)
    flow.space(3)
    flow.text("link", fields.link.strip(), 10, centre=True)
    flow.space(7)
    for number, line in enumerate(fields.instructions, 1):
        flow.text(f"instruction{number}", line, 11)
        flow.space(1.5)
    flow.space(3)
    flow.rule()
    return flow.drawing()


def render_token_slip(fields: TokenSlipFields, paper: str, out: Path, layout: LabelLayout | None = None) -> Path:
    """Write the patient's token slip as a one-page PDF.

    Parameters
    ----------
    fields : TokenSlipFields
        Institution, patient name, study date, link, expiry and the instructions to print.
    paper : {"A4", "Letter", "receipt80"}
        A full page, or an 80 mm wide receipt exactly as long as its content (for thermal printers).
    out : Path
        The PDF to write (atomically).
    layout : LabelLayout, optional
        The site's settings: logo, name style, date format and fonts (defaults if None).

    Returns
    -------
    Path
        `out`.

    Raises
    ------
    ValueError
        For an unknown paper name.
    """
    drawing = compose_token_slip(fields, paper, layout)
    return write_pdf(drawing, out, title=fields.title, guides=False)
