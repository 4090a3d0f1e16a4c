"""Lay out a disc label: the template's zones around the hub, filled with the fields that fit."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from PIL import Image

from labels.drawing import (
    PT,
    Box,
    Drawing,
    Picture,
    QRCode,
    Ring,
    Span,
    TextLine,
    fit_spans,
    load_logo,
    place_line,
)
from labels.fields import DiscLabelFields, format_person_name
from labels.fonts import FontSet, font_set
from labels.layout import LabelLayout
from labels.render import rasterize, write_bmp, write_jpeg, write_pdf
from labels.robotfields import write_epson_fields
from labels.values import label_values, study_values

__all__ = [
    "DISC_MM",
    "ComposedLabel",
    "LabelFormat",
    "RenderedLabel",
    "compose_disc_label",
    "render_disc_label",
]

LOGGER = logging.getLogger(__name__)

DISC_MM = 120.0
_CENTRE = DISC_MM / 2  # the disc's centre on the page; the layout works around (0, 0)
_LEADING = 1.25  # line slot height / font size
_PICTURE_GAP = 1.2  # mm above and below a picture
_MAX_GAP = 1.8  # mm added between the lines of a zone at most, when there is room
_BOLD = frozenset({"institution", "patient_name", "content_type"})


@dataclass(frozen=True)
class ComposedLabel:
    """A disc label laid out: the drawing (centred on the page) and what had to give way."""

    drawing: Drawing
    ring: Ring
    warnings: tuple[str, ...] = ()


_Placed = TextLine | Picture | QRCode | None


@dataclass
class _Item:
    """One line of a zone before placement: text spans, or a picture of a given aspect ratio."""

    name: str
    size: float = 0.0  # font size (pt) of text, or picture height (mm)
    spans: list[Span] = field(default_factory=list)
    image: Image.Image | None = None
    qr: str = ""

    @property
    def picture(self) -> bool:
        return self.image is not None or bool(self.qr)

    def slot(self) -> float:
        return self.size + 2 * _PICTURE_GAP if self.picture else self.size * _LEADING * PT


class _Composer:
    def __init__(self, fields: DiscLabelFields, layout: LabelLayout) -> None:
        self.fields = fields
        self.layout = layout
        self.fonts: FontSet = font_set(layout.font_paths)
        self.ring = Ring(layout.outer_radius, layout.inner_radius)
        self.warnings: list[str] = []
        self.values = label_values(fields, layout, self._name_groups())
        self.lines: list[TextLine] = []
        self.pictures: list[Picture] = []
        self.qr_codes: list[QRCode] = []

    def warn(self, message: str) -> None:
        LOGGER.warning("disc label: %s", message)
        self.warnings.append(message)

    def _name_groups(self) -> tuple[str, ...]:
        """Formatted PN groups, without those a missing font would print as gaps."""
        groups = format_person_name(self.fields.patient_name, self.layout.name_style, self.layout.name_groups)
        drawable = tuple(g for g in groups if not self.fonts.missing(g))
        if len(drawable) < len(groups):
            lost = [g for g in groups if g not in drawable]
            self.warn(f"no installed font can draw the name {', '.join(lost)!r}; install fonts-wqy-zenhei")
        return drawable or groups

    def text(self, value: str) -> str:
        missing = self.fonts.missing(value)
        if missing:
            self.warn(f"no installed font has the characters {missing!r}; they are left out")
            return self.fonts.renderable(value)
        return value

    def items(self, zone: tuple[tuple[str, ...], ...]) -> list[_Item]:
        items: list[_Item] = []
        for line in zone:
            first = line[0]
            if first == "logo":
                if self.layout.logo is not None:
                    items.append(_Item("logo", self.layout.logo_height_mm, image=load_logo(self.layout.logo)))
            elif first == "qr":
                if self.values["token_url"]:
                    items.append(_Item("qr", self.layout.qr_size_mm, qr=self.values["token_url"]))
            elif first == "studies":
                items.extend(self._study_items())
            else:
                spans = self._spans(line, self.values)
                if spans:
                    items.append(_Item("+".join(line), self.layout.font_size(first), spans))
        return items

    def _spans(self, names: tuple[str, ...], values: dict[str, str]) -> list[Span]:
        spans: list[Span] = []
        for name in names:
            value = self.text(values.get(name, ""))
            if not value:
                continue
            if spans:
                spans.append(Span("   "))
            # The disc number's caption is its whole text ("Disc {n} of {m}"), already in the value.
            caption = "" if name == "disc_number" else self.layout.caption(name)
            if caption:
                spans.append(Span(caption + " ", muted=True))
            spans.append(Span(value, bold=name in _BOLD or len(names) > 1))
        return spans

    def _study_items(self) -> list[_Item]:
        studies = list(self.fields.studies)
        limit = self.layout.max_study_lines
        shown = studies if len(studies) <= limit else studies[: limit - 1]
        size = self.layout.font_size("studies")
        items = []
        for study in shown:
            values = study_values(study, self.layout)
            spans = [Span(self.text(values["study_date"]), bold=True)]
            rest = "  ".join(self.text(values[k]) for k in ("modalities", "study_description") if values[k])
            if rest:
                spans.append(Span(("  " if spans[0].text else "") + rest))
            if any(s.text for s in spans):
                items.append(_Item("studies", size, spans))
        if len(shown) < len(studies):
            more = self.layout.caption("more_studies").format(count=len(studies) - len(shown))
            items.append(_Item("studies", size, [Span(more, muted=True)]))
        return items

    def fit_height(self, zone: str, items: list[_Item], height: float) -> list[_Item]:
        """Scale a zone's items down uniformly (within their minimums) until they fit `height`."""
        total = sum(item.slot() for item in items)
        if total <= height:
            return items
        scale = height / total
        for item in items:
            if item.picture:
                floor = self.layout.qr_min_size_mm if item.qr else min(item.size, 3.0)
                item.size = max(floor, item.size * scale)
            else:
                item.size = max(self.layout.min_font_size, item.size * scale)
        while items and sum(item.slot() for item in items) > height:
            dropped = items.pop()
            self.warn(f"{zone} zone is full: left out {dropped.name}")
        return items

    def place_zone(self, zone: str, items: list[_Item], low: float, high: float) -> None:
        """Stack `items` centred between `low` and `high` (mm from the centre), each in its own slot.

        Two passes: the first finds the size at which each line fits where it sits; lines of one
        field (the study lines) then share their smallest size, and the block is stacked again. A
        shrunk line takes less height, so the block moves towards the hub where chords are wider;
        the second pass fits every line afresh at its final place, so the result always holds.
        """
        items = self.fit_height(zone, items, high - low)
        smallest: dict[str, float] = {}
        for item, (placed, _) in zip(items, self._stack(zone, items, low, high), strict=True):
            if isinstance(placed, TextLine) and placed.runs:
                size = min(run.size for run in placed.runs)
                smallest[item.name] = min(size, smallest.get(item.name, size))
        for item in items:
            if not item.picture and item.name in smallest:
                item.size = smallest[item.name]
        for placed, warning in self._stack(zone, items, low, high):
            if warning:
                self.warn(warning)
            if isinstance(placed, TextLine):
                self.lines.append(placed)
            elif isinstance(placed, QRCode):
                self.qr_codes.append(placed)
            elif isinstance(placed, Picture):
                self.pictures.append(placed)

    def _stack(self, zone: str, items: list[_Item], low: float, high: float) -> list[tuple[_Placed, str]]:
        spare = high - low - sum(item.slot() for item in items)
        # Spare height opens the lines up a little (a tight block looks cramped on a disc), then the
        # block is centred in the zone.
        gap = min(_MAX_GAP, spare / (len(items) + 1)) if items else 0.0
        top = high - (spare - gap * (len(items) - 1)) / 2
        out = []
        for item in items:
            slot = item.slot()
            if item.picture:
                out.append(self._place_picture(zone, item, top - slot / 2))
            else:
                out.append(self._place_text(zone, item, top, slot))
            top -= slot + gap
        return out

    def _segment(self, zone: str, y0: float, y1: float) -> tuple[float, float] | None:
        segments = self.ring.segments(y0, y1)
        if not segments:
            return None
        if zone in ("left", "right"):
            return segments[0] if zone == "left" else segments[-1]
        return max(segments, key=lambda s: s[1] - s[0])

    def _place_text(self, zone: str, item: _Item, top: float, slot: float) -> tuple[_Placed, str]:
        ascent, descent = 0.0, 0.0
        for span in item.spans:
            a, d = self.fonts.extent(span.text, span.bold)
            ascent, descent = max(ascent, a), max(descent, d)
        ink = (ascent + descent) * item.size * PT
        baseline = top - (slot - ink) / 2 - ascent * item.size * PT
        segment = self._segment(zone, baseline - descent * item.size * PT, baseline + ascent * item.size * PT)
        if segment is None:
            return None, f"no room for {item.name} in the {zone} zone"
        width = segment[1] - segment[0]
        spans, size, cut = fit_spans(self.fonts, item.spans, width, item.size, self.layout.min_font_size)
        width = sum(self.fonts.width(span.text, size, span.bold) for span in spans) * PT
        left = (segment[0] + segment[1] - width) / 2 + _CENTRE
        line = place_line(self.fonts, item.name, spans, left, baseline + _CENTRE, size, size < item.size, cut)
        return line, f"{item.name} was too long and was shortened" if cut else ""

    def _place_picture(self, zone: str, item: _Item, middle: float) -> tuple[_Placed, str]:
        aspect = item.image.width / item.image.height if item.image is not None else 1.0
        height = item.size
        segment = self._segment(zone, middle - height / 2, middle + height / 2)
        if segment is not None and height * aspect > segment[1] - segment[0]:
            # A smaller picture only widens the chord, so one correction is enough.
            height = (segment[1] - segment[0]) / aspect
            segment = self._segment(zone, middle - height / 2, middle + height / 2)
        if segment is None or height <= 0:
            return None, f"no room for the {item.name} in the {zone} zone"
        x = (segment[0] + segment[1]) / 2 + _CENTRE
        y = middle + _CENTRE
        box = Box(x - height * aspect / 2, y - height / 2, x + height * aspect / 2, y + height / 2)
        if item.qr:
            small = height < self.layout.qr_min_size_mm
            warning = f"the QR code is only {height:.1f} mm wide and may not scan" if small else ""
            return QRCode(box, QRCode.matrix(item.qr), item.qr), warning
        return (Picture(box, item.image) if item.image is not None else None), ""


def compose_disc_label(fields: DiscLabelFields, layout: LabelLayout) -> ComposedLabel:
    """Lay out a disc label.

    Parameters
    ----------
    fields : DiscLabelFields
    layout : LabelLayout

    Returns
    -------
    ComposedLabel
        The drawing on a 120 mm square page with the disc centred on it, and the disc's outline,
        printable ring and hub as `guides`. `ring` is the printable ring (margins applied) around the
        disc's centre; every text and picture box of the drawing, moved back by 60 mm, lies inside it.
        `warnings` lists what was shortened, shrunk below its minimum or left out.
    """
    composer = _Composer(fields, layout)
    ring = composer.ring
    composer.place_zone("top", composer.items(layout.top), ring.inner, ring.outer)
    composer.place_zone("bottom", composer.items(layout.bottom), -ring.outer, -ring.inner)
    composer.place_zone("left", composer.items(layout.left), -ring.inner, ring.inner)
    composer.place_zone("right", composer.items(layout.right), -ring.inner, ring.inner)
    drawing = Drawing(
        DISC_MM,
        DISC_MM,
        lines=tuple(composer.lines),
        pictures=tuple(composer.pictures),
        qr_codes=tuple(composer.qr_codes),
        guides=(
            (_CENTRE, _CENTRE, DISC_MM / 2),
            (_CENTRE, _CENTRE, layout.outer_diameter_mm / 2),
            (_CENTRE, _CENTRE, layout.inner_diameter_mm / 2),
            (_CENTRE, _CENTRE, 7.5),
        ),
    )
    return ComposedLabel(drawing, ring, tuple(composer.warnings))


class LabelFormat(StrEnum):
    """Files :func:`render_disc_label` can produce, with their names in the output directory."""

    PDF = "pdf"
    """``label.pdf``: 120 mm square preview with the disc outline, printable ring and hub as guides."""
    PRIMERA_JPG = "primera_jpg"
    """``label-primera.jpg`` at ``primera_dpi``, for ``PrintLabel =`` of a PTBurn job."""
    PRIMERA_BMP = "primera_bmp"
    """``label-primera.bmp`` at ``primera_dpi``, the same image as a 24-bit BMP."""
    EPSON_FIELDS = "epson_fields"
    """``label-epson.dat``: the ``REPLACE_FIELD`` file for the site's ``.tdd`` template."""
    EPSON_JPG = "epson_jpg"
    """``label-epson.jpg`` at ``epson_dpi``, for TD Bridge versions that take an image as ``LABEL=``."""


FILE_NAMES = {
    LabelFormat.PDF: "label.pdf",
    LabelFormat.PRIMERA_JPG: "label-primera.jpg",
    LabelFormat.PRIMERA_BMP: "label-primera.bmp",
    LabelFormat.EPSON_FIELDS: "label-epson.dat",
    LabelFormat.EPSON_JPG: "label-epson.jpg",
}


@dataclass(frozen=True)
class RenderedLabel:
    """The files :func:`render_disc_label` wrote (None for formats not asked for) and its warnings."""

    pdf: Path | None = None
    primera_jpg: Path | None = None
    primera_bmp: Path | None = None
    epson_fields: Path | None = None
    epson_jpg: Path | None = None
    warnings: tuple[str, ...] = ()

    def path(self, fmt: LabelFormat) -> Path | None:
        """The file written for `fmt`, if any."""
        value: Path | None = getattr(self, fmt.value)
        return value


def render_disc_label(
    fields: DiscLabelFields,
    layout: LabelLayout,
    out_dir: Path,
    formats: Iterable[LabelFormat | str] = (LabelFormat.PDF,),
) -> RenderedLabel:
    """Render a disc label into `out_dir`.

    Parameters
    ----------
    fields : DiscLabelFields
        What to print.
    layout : LabelLayout
        The site's template and settings (``LabelLayout()`` for the defaults).
    out_dir : Path
        The disc job's folder (created if missing); files get the names of :class:`LabelFormat`
        and are written atomically, replacing older ones.
    formats : iterable of LabelFormat or str
        What to produce; the robot driver asks for what its bridge takes (Epson: ``epson_fields``,
        Primera: ``primera_jpg``), the preview needs ``pdf``.

    Returns
    -------
    RenderedLabel
        The paths written and the warnings (text shortened or shrunk to its minimum, missing fonts,
        characters the Epson encoding cannot hold), also logged.

    Raises
    ------
    ValueError
        For an unknown format name.
    OSError
        If a file cannot be written.
    """
    wanted = [LabelFormat(f) for f in formats]
    out_dir.mkdir(parents=True, exist_ok=True)
    composed = compose_disc_label(fields, layout)
    warnings = list(composed.warnings)
    written: dict[str, Path] = {}
    images: dict[int, Image.Image] = {}

    def raster(dpi: int) -> Image.Image:
        if dpi not in images:
            images[dpi] = rasterize(composed.drawing, dpi)
        return images[dpi]

    for fmt in dict.fromkeys(wanted):
        path = out_dir / FILE_NAMES[fmt]
        if fmt is LabelFormat.PDF:
            title = f"Disc label {fields.disc_number}/{fields.disc_count}"
            written[fmt.value] = write_pdf(composed.drawing, path, title=title)
        elif fmt is LabelFormat.PRIMERA_JPG:
            written[fmt.value] = write_jpeg(raster(layout.primera_dpi), path, layout.primera_dpi, layout.jpeg_quality)
        elif fmt is LabelFormat.PRIMERA_BMP:
            written[fmt.value] = write_bmp(raster(layout.primera_dpi), path, layout.primera_dpi)
        elif fmt is LabelFormat.EPSON_JPG:
            written[fmt.value] = write_jpeg(raster(layout.epson_dpi), path, layout.epson_dpi, layout.jpeg_quality)
        else:
            written[fmt.value], epson_warnings = write_epson_fields(fields, layout, path)
            warnings.extend(epson_warnings)
    return RenderedLabel(**written, warnings=tuple(warnings))
