"""Backends: a :class:`~labels.drawing.Drawing` to a PDF (reportlab) or to a raster image (Pillow).

Both draw each font run at the position the layout computed with reportlab's unhinted metrics. The
raster backend places every character itself, because FreeType's hinted advances drift by up to
1-2 % over a line, which would push the end of a long line past the chord the layout allowed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas

from labels.drawing import PT, Drawing, QRCode

__all__ = ["rasterize", "write_atomic", "write_bmp", "write_jpeg", "write_pdf"]

_GUIDE_GREY = (0.72, 0.72, 0.72)
# reportlab keeps per-document subsetting state inside the shared TTFont objects, and the Pillow
# fonts are cached and shared too; labels are rare, so one render at a time is the simple safe rule.
_LOCK = threading.Lock()


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` and rename the result to `path`, so nobody ever reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _qr_runs(code: QRCode) -> list[tuple[int, int, int]]:
    """Dark modules as (row, first column, length): a PDF then needs hundreds of rectangles, not thousands."""
    runs = []
    for r, row in enumerate(code.modules):
        c = 0
        while c < len(row):
            if row[c]:
                start = c
                while c < len(row) and row[c]:
                    c += 1
                runs.append((r, start, c - start))
            else:
                c += 1
    return runs


def write_pdf(drawing: Drawing, path: Path, title: str = "", guides: bool = True) -> Path:
    """Write `drawing` as a one-page PDF of its size, fonts embedded (subset).

    Parameters
    ----------
    drawing : Drawing
    path : Path
        Written atomically.
    title : str
        The PDF's document title.
    guides : bool
        Draw the drawing's guide circles (disc edge solid, printable ring and hub dashed) in light
        grey; they are for the preview only.

    Returns
    -------
    Path
        `path`.
    """

    def write(tmp: Path) -> None:
        with _LOCK:
            draw_pdf(tmp)

    def draw_pdf(tmp: Path) -> None:
        # invariant=1 leaves out the creation time and random IDs: the same label gives the same bytes.
        pdf = canvas.Canvas(str(tmp), pagesize=(drawing.width * mm, drawing.height * mm), invariant=1)
        pdf.setTitle(title)
        pdf.setCreator("appliance labels")
        if guides:
            pdf.setStrokeColorRGB(*_GUIDE_GREY)
            pdf.setLineWidth(0.4)
            for i, (x, y, r) in enumerate(drawing.guides):
                pdf.setDash([] if i == 0 else [3, 2])
                pdf.circle(x * mm, y * mm, r * mm, stroke=1, fill=0)
            pdf.setDash([])
        for rule in drawing.rules:
            pdf.setStrokeColorRGB(*_GUIDE_GREY)
            pdf.setLineWidth(0.6)
            pdf.line(rule.x0 * mm, rule.y0 * mm, rule.x1 * mm, rule.y1 * mm)
        for picture in drawing.pictures:
            b = picture.box
            pdf.drawImage(
                ImageReader(picture.image),
                b.x0 * mm,
                b.y0 * mm,
                (b.x1 - b.x0) * mm,
                (b.y1 - b.y0) * mm,
                mask="auto",
            )
        pdf.setFillColorRGB(0, 0, 0)
        for code in drawing.qr_codes:
            b, n = code.box, len(code.modules)
            module = (b.x1 - b.x0) / n
            # One path for all modules: rectangles filled one by one leave hairline seams between
            # neighbours in anti-aliased viewers, which can break scanning from a screen.
            path = pdf.beginPath()
            for row, col, length in _qr_runs(code):
                x, y = (b.x0 + col * module) * mm, (b.y1 - (row + 1) * module) * mm
                path.rect(x, y, length * module * mm, module * mm)
            pdf.drawPath(path, stroke=0, fill=1)
        for line in drawing.lines:
            for run in line.runs:
                pdf.setFillColorRGB(*(c / 255 for c in run.color))
                pdf.setFont(run.face.name, run.size)
                pdf.drawString(run.x * mm, run.y * mm, run.text)
        pdf.showPage()
        pdf.save()

    return write_atomic(path, write)


def rasterize(drawing: Drawing, dpi: int) -> Image.Image:
    """Render `drawing` to an RGB image at `dpi`, white where there is no ink, without guides.

    Returns
    -------
    PIL.Image.Image
        ``round(width_mm / 25.4 * dpi)`` by ``round(height_mm / 25.4 * dpi)`` pixels.
    """
    with _LOCK:
        return _rasterize(drawing, dpi)


def _rasterize(drawing: Drawing, dpi: int) -> Image.Image:
    scale = dpi / 25.4
    width, height = round(drawing.width * scale), round(drawing.height * scale)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    def px(x: float, y: float) -> tuple[float, float]:
        return x * scale, (drawing.height - y) * scale

    for rule in drawing.rules:
        draw.line(
            [px(rule.x0, rule.y0), px(rule.x1, rule.y1)],
            fill=(184, 184, 184),
            width=max(1, round(0.2 * scale)),
        )
    for picture in drawing.pictures:
        b = picture.box
        left, top = px(b.x0, b.y1)
        right, bottom = px(b.x1, b.y0)
        size = (max(1, round(right - left)), max(1, round(bottom - top)))
        scaled = picture.image.convert("RGBA").resize(size, Image.Resampling.LANCZOS)
        image.paste(scaled, (round(left), round(top)), scaled)
    for code in drawing.qr_codes:
        left, top = px(code.box.x0, code.box.y1)
        module = (code.box.x1 - code.box.x0) * scale / len(code.modules)
        for row, col, length in _qr_runs(code):
            # Round both edges of each run, so modules are whole pixels and the code stays sharp.
            x0, x1 = round(left + col * module), round(left + (col + length) * module)
            y0, y1 = round(top + row * module), round(top + (row + 1) * module)
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=(0, 0, 0))
    for line in drawing.lines:
        for run in line.runs:
            font = run.face.pil(run.size / 72 * dpi)
            x = run.x
            for char in run.text:
                draw.text(px(x, run.y), char, font=font, fill=run.color, anchor="ls")
                x += run.face.width(char, run.size) * PT
    return image


def write_jpeg(image: Image.Image, path: Path, dpi: int, quality: int) -> Path:
    """Save `image` as a JPEG with no chroma subsampling (sharper small text) and its dpi recorded."""
    return write_atomic(
        path,
        lambda tmp: image.save(tmp, "JPEG", quality=quality, subsampling=0, optimize=True, dpi=(dpi, dpi)),
    )


def write_bmp(image: Image.Image, path: Path, dpi: int) -> Path:
    """Save `image` as a 24-bit BMP with its dpi recorded."""
    return write_atomic(path, lambda tmp: image.save(tmp, "BMP", dpi=(dpi, dpi)))
