"""Backend-neutral drawings: positioned text, pictures and QR codes, and the geometry to place them.

A label or slip is first laid out as a :class:`Drawing` in millimetres (origin bottom-left, y up,
as in PDF). The PDF and the raster backends only copy it, so the preview and the robot's image agree,
and tests can check the computed boxes without rendering anything.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from pathlib import Path

import qrcode
from PIL import Image
from qrcode.constants import ERROR_CORRECT_M

from labels.fonts import FontFace, FontSet

__all__ = [
    "Box",
    "Drawing",
    "Picture",
    "QRCode",
    "Ring",
    "Span",
    "TextLine",
    "TextRun",
    "fit_spans",
    "wrap_text",
]

PT = 25.4 / 72  # millimetres per point
ELLIPSIS = "…"
INK = (0, 0, 0)
MUTED = (85, 85, 85)


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle in mm."""

    x0: float
    y0: float
    x1: float
    y1: float

    def corners(self) -> tuple[tuple[float, float], ...]:
        """The four corners."""
        return ((self.x0, self.y0), (self.x0, self.y1), (self.x1, self.y0), (self.x1, self.y1))

    def moved(self, dx: float, dy: float) -> Box:
        """The same box shifted by (dx, dy)."""
        return Box(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)


@dataclass(frozen=True)
class Span:
    """A piece of one line of text with its own weight and colour."""

    text: str
    bold: bool = False
    muted: bool = False


@dataclass(frozen=True)
class TextRun:
    """Text drawn with one face: left end of the baseline at (x, y) mm, size in points."""

    x: float
    y: float
    text: str
    face: FontFace
    size: float
    color: tuple[int, int, int] = INK


@dataclass(frozen=True)
class TextLine:
    """One placed line: its runs, the box that bounds their ink, and what fitting had to do."""

    field: str
    runs: tuple[TextRun, ...]
    box: Box
    shrunk: bool = False
    ellipsised: bool = False

    @property
    def text(self) -> str:
        """The text as drawn."""
        return "".join(run.text for run in self.runs)

    def moved(self, dx: float, dy: float) -> TextLine:
        """The same line shifted by (dx, dy)."""
        runs = tuple(replace(run, x=run.x + dx, y=run.y + dy) for run in self.runs)
        return replace(self, runs=runs, box=self.box.moved(dx, dy))


@dataclass(frozen=True)
class Picture:
    """A raster image (the site logo) scaled into `box`."""

    box: Box
    image: Image.Image


@dataclass(frozen=True)
class QRCode:
    """A QR code as its module matrix (quiet zone included), drawn square into `box`."""

    box: Box
    modules: tuple[tuple[bool, ...], ...]
    data: str

    @staticmethod
    def matrix(data: str) -> tuple[tuple[bool, ...], ...]:
        """Encode `data` with error correction M (15 %) and the standard 4-module quiet zone."""
        code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=4)
        code.add_data(data)
        code.make(fit=True)
        return tuple(tuple(bool(m) for m in row) for row in code.get_matrix())


@dataclass(frozen=True)
class Drawing:
    """Everything on one page, in mm; `guides` are circles (centre x, y, radius) for previews only."""

    width: float
    height: float
    lines: tuple[TextLine, ...] = ()
    pictures: tuple[Picture, ...] = ()
    qr_codes: tuple[QRCode, ...] = ()
    guides: tuple[tuple[float, float, float], ...] = ()
    rules: tuple[Box, ...] = ()


@dataclass(frozen=True)
class Ring:
    """The printable ring of a disc, centred on the origin; radii in mm, margins already applied."""

    outer: float
    inner: float

    def segments(self, y0: float, y1: float) -> list[tuple[float, float]]:
        """Horizontal spans where a box reaching from `y0` to `y1` fits inside the ring.

        A box's corner farthest from the centre is at its largest ``|y|``, so that row bounds the
        outer chord; the hub is nearest at the box's smallest ``|y|`` (zero if the box straddles the
        centre line). A box beside the hub gets two spans, left and right; one above or below it gets
        one; a box that cannot fit at all gets none.
        """
        far = max(abs(y0), abs(y1))
        if far >= self.outer:
            return []
        half = math.sqrt(self.outer**2 - far**2)
        near = 0.0 if y0 <= 0 <= y1 else min(abs(y0), abs(y1))
        if near >= self.inner:
            return [(-half, half)]
        hub = math.sqrt(self.inner**2 - near**2)
        return [(-half, -hub), (hub, half)] if hub < half else []

    def contains(self, box: Box) -> bool:
        """True if the whole box lies inside the ring (used by tests and sanity checks).

        The outer disc is convex, so the four corners decide; the hub is cleared if the point of the
        box nearest to the centre is outside it.
        """
        inside = all(math.hypot(x, y) <= self.outer + 1e-9 for x, y in box.corners())
        near_x = min(max(0.0, box.x0), box.x1)
        near_y = min(max(0.0, box.y0), box.y1)
        return inside and math.hypot(near_x, near_y) >= self.inner - 1e-9


@functools.lru_cache(maxsize=4)
def load_logo(path: Path) -> Image.Image:
    """The site logo as RGBA, read once per process (the file is checked by the config already)."""
    with Image.open(path) as image:
        image.load()
        return image.convert("RGBA")


def fit_spans(
    fonts: FontSet, spans: list[Span], width: float, size: float, min_size: float
) -> tuple[list[Span], float, bool]:
    """Fit a line into `width` mm: shrink it towards `min_size`, then cut it short with "…".

    Returns
    -------
    spans, size, ellipsised
        The spans to draw (values shortened, widest first, if needed; captions are kept), the font
        size, and whether text was cut. The width at a size is linear in the size, so one division
        finds the size; rounding it down to 0.1 pt keeps the result inside `width`. A line whose
        captions alone are too wide comes back empty.
    """

    def measure(items: list[Span], at: float) -> float:
        return sum(fonts.width(s.text, at, s.bold) for s in items) * PT

    natural = measure(spans, size)
    if natural <= width or natural == 0:
        return spans, size, False
    fitted = math.floor(size * width / natural * 10) / 10
    if fitted >= min_size:
        return spans, fitted, False
    size = min_size
    out = list(spans)
    while True:
        # Cut the widest value (never a caption), so a line with an ID and a birth date keeps
        # both, each shortened, rather than losing the date to a long ID.
        values = [i for i, s in enumerate(out) if not s.muted and s.text.strip(ELLIPSIS + " ")]
        if not values:
            return [], size, True
        i = max(values, key=lambda k: fonts.width(out[k].text, size, out[k].bold))
        text = out[i].text.rstrip(ELLIPSIS).rstrip()
        out[i] = Span(text[:-1].rstrip() + ELLIPSIS, out[i].bold, out[i].muted)
        if measure(out, size) <= width:
            return out, size, True


def wrap_text(fonts: FontSet, text: str, width: float, size: float, bold: bool = False) -> list[str]:
    """Break `text` into lines no wider than `width` mm: at spaces, or anywhere inside a long word.

    A URL has no spaces, so it is broken wherever it reaches the edge; a word never overflows.
    """
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if fonts.width(candidate, size, bold) * PT <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = ""
        for char in word:
            if current and fonts.width(current + char, size, bold) * PT > width:
                lines.append(current)
                current = ""
            current += char
    if current:
        lines.append(current)
    return lines


def place_line(
    fonts: FontSet,
    field: str,
    spans: list[Span],
    left: float,
    baseline: float,
    size: float,
    shrunk: bool = False,
    ellipsised: bool = False,
) -> TextLine:
    """Turn fitted spans into font runs starting at (`left`, `baseline`) and compute their ink box."""
    runs: list[TextRun] = []
    x = left
    ascent = descent = 0.0
    for span in spans:
        color = MUTED if span.muted else INK
        for text, face in fonts.runs(span.text, span.bold):
            runs.append(TextRun(x, baseline, text, face, size, color))
            x += face.width(text, size) * PT
            ascent, descent = max(ascent, face.ascent), max(descent, face.descent)
    box = Box(left, baseline - descent * size * PT, x, baseline + ascent * size * PT)
    return TextLine(field, tuple(runs), box, shrunk, ellipsised)
