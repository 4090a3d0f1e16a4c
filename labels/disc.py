"""Lay out a disc label: the template's zones around the hub, filled with the fields that fit."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
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
    place_line,
)
from labels.fields import DiscLabelFields, format_person_name
from labels.fonts import FontSet, font_set
from labels.layout import LabelLayout
from labels.values import label_values, study_values

__all__ = ["DISC_MM", "ComposedLabel", "compose_disc_label"]

LOGGER = logging.getLogger(__name__)

DISC_MM = 120.0
_CENTRE = DISC_MM / 2  # the disc's centre on the page; the layout works around (0, 0)
_LEADING = 1.25  # line slot height / font size
_PICTURE_GAP = 1.2  # mm above and below a picture
_BOLD = frozenset({"institution", "patient_name", "content_type"})


@dataclass(frozen=True)
class ComposedLabel:
    """A disc label laid out: the drawing (centred on the page) and what had to give way."""

    drawing: Drawing
    ring: Ring
    warnings: tuple[str, ...] = ()


@dataclass
class _Item:
    """One line of a zone before placement: text spans, or a picture of a given aspect ratio."""

    field: str
    size: float = 0.0  # font size (pt) of text, or picture height (mm)
    spans: list[Span] = field(default_factory=list)
    image: Image.Image | None = None
    qr: str = ""

    @property
    def picture(self) -> bool:
        return self.image is not None or bool(self.qr)

    def slot(self) -> float:
        return self.size + 2 * _PICTURE_GAP if self.picture else self.size * _LEADING * PT


@functools.lru_cache(maxsize=4)
def _logo(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image.convert("RGBA")


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
                    items.append(_Item("logo", self.layout.logo_height_mm, image=_logo(self.layout.logo)))
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
            caption = self.layout.caption(name) if name not in ("disc_number",) else ""
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
            self.warn(f"{zone} zone is full: left out {dropped.field}")
        return items

    def place_zone(self, zone: str, items: list[_Item], low: float, high: float) -> None:
        """Stack `items` centred between `low` and `high` (mm from the centre), each in its own slot."""
        items = self.fit_height(zone, items, high - low)
        top = high - (high - low - sum(item.slot() for item in items)) / 2
        for item in items:
            slot = item.slot()
            if item.picture:
                self._place_picture(zone, item, top - slot / 2)
            else:
                self._place_text(zone, item, top, slot)
            top -= slot

    def _segment(self, zone: str, y0: float, y1: float) -> tuple[float, float] | None:
        segments = self.ring.segments(y0, y1)
        if not segments:
            return None
        return segments[0] if zone == "left" else segments[-1] if zone == "right" else max(
            segments, key=lambda s: s[1] - s[0]
        )

    def _place_text(self, zone: str, item: _Item, top: float, slot: float) -> None:
        ascent, descent = 0.0, 0.0
        for span in item.spans:
            a, d = self.fonts.extent(span.text, span.bold)
            ascent, descent = max(ascent, a), max(descent, d)
        ink = (ascent + descent) * item.size * PT
        baseline = top - (slot - ink) / 2 - ascent * item.size * PT
        segment = self._segment(zone, baseline - descent * item.size * PT, baseline + ascent * item.size * PT)
        if segment is None:
            self.warn(f"no room for {item.field} in the {zone} zone")
            return
        width = segment[1] - segment[0]
        spans, size, cut = fit_spans(self.fonts, item.spans, width, item.size, self.layout.min_font_size)
        if cut:
            self.warn(f"{item.field} was too long and was shortened")
        width = sum(self.fonts.width(span.text, size, span.bold) for span in spans) * PT
        left = (segment[0] + segment[1] - width) / 2 + _CENTRE
        self.lines.append(place_line(self.fonts, item.field, spans, left, baseline + _CENTRE, size, size < item.size, cut))

    def _place_picture(self, zone: str, item: _Item, middle: float) -> None:
        aspect = item.image.width / item.image.height if item.image is not None else 1.0
        height = item.size
        segment = self._segment(zone, middle - height / 2, middle + height / 2)
        if segment is not None and height * aspect > segment[1] - segment[0]:
            # A smaller picture only widens the chord, so one correction is enough.
            height = (segment[1] - segment[0]) / aspect
            segment = self._segment(zone, middle - height / 2, middle + height / 2)
        if segment is None or height <= 0:
            self.warn(f"no room for the {item.field} in the {zone} zone")
            return
        if item.qr and height < self.layout.qr_min_size_mm:
            self.warn(f"the QR code is only {height:.1f} mm wide and may not scan")
        x = (segment[0] + segment[1]) / 2 + _CENTRE
        y = middle + _CENTRE
        box = Box(x - height * aspect / 2, y - height / 2, x + height * aspect / 2, y + height / 2)
        if item.qr:
            self.qr_codes.append(QRCode(box, QRCode.matrix(item.qr), item.qr))
        elif item.image is not None:
            self.pictures.append(Picture(box, item.image))


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
        disc's centre; every text and picture box of the drawing, moved back by 60 mm, lies inside it. `warnings` lists what was shortened,
        shrunk below its minimum or left out.
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
