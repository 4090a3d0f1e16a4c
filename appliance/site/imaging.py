"""Pictures of stored instances for the web pages: thumbnails and viewer images, rendered on the server.

Only the first frame of a multi-frame instance is decoded (``pydicom.pixels.pixel_array(path, index=0)``).
Grey-scale images go through the Modality LUT (Rescale Slope/Intercept) and a linear VOI window: the
instance's first Window Center/Width, else one computed from the 1st and 99th percentile of the pixel values,
so a CT without window tags is not a grey fog. MONOCHROME1 is inverted, PALETTE COLOR expanded, YBR converted to
RGB. An instance with no pixel data (a report, a PDF) or one that cannot be decoded gets a plain placeholder.

Thumbnails are cached as JPEG files under ``<data_dir>/cache/thumbs``, keyed by the SOP Instance UID and the
stored file's name (a replaced instance gets a new file, hence a new key); the cache is safe to delete. The cache
renders a missing thumbnail with the function it is given: :mod:`appliance.site.thumbnails` passes one that decodes in
a separate process, and pre-renders the thumbnails of newly stored series.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, pixel_array

import appliance.codecs  # noqa: F401  (sets pydicom's decoder order: pylibjpeg first, GDCM last)

LOGGER = logging.getLogger(__name__)

THUMB_SIZE = 160
VIEW_SIZE = 1024
#: Why an instance without pixel data (a report, a PDF) gets a placeholder: normal, not a failure.
NO_IMAGE = "instance has no image"


@dataclass(frozen=True)
class Window:
    """A VOI window: centre and width in modality units (HU for CT)."""

    center: float
    width: float


@dataclass(frozen=True)
class Rendered:
    """A rendered picture and the window it was shown with (None for colour images)."""

    image: Image.Image
    window: Window | None


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def default_window(ds: Dataset, values: np.ndarray) -> Window:
    """The window an instance asks for (its first Window Center/Width), else one that fits its values."""
    center, width = _number(ds.get("WindowCenter")), _number(ds.get("WindowWidth"))
    if center is not None and width is not None and width >= 1:
        return Window(center, width)
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if finite.size == 0:
        return Window(0.0, 1.0)
    low, high = np.percentile(finite, (1, 99))
    if high <= low:
        low, high = float(finite.min()), float(finite.max())
    return Window((float(low) + float(high)) / 2, max(float(high) - float(low), 1.0))


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Map modality values to 0-255 with the linear VOI function of PS3.3 C.11.2.1.2.1."""
    c, w = window.center, max(window.width, 1.0)
    scaled = ((values - (c - 0.5)) / (w - 1 if w > 1 else 1) + 0.5) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _modality_values(ds: Dataset, frame: np.ndarray) -> np.ndarray:
    slope, intercept = _number(ds.get("RescaleSlope")), _number(ds.get("RescaleIntercept"))
    values = frame.astype(np.float32)
    if slope is not None and slope != 1.0:
        values *= slope
    if intercept:
        values += intercept
    return values


_LITTLE_NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _native_frame(header: Dataset) -> np.ndarray | None:
    """The pixels of a single-frame, one-sample, uncompressed little-endian instance, read straight from the file.

    This is most instances a front desk sees (CT, MR, CR slices), and skips pydicom's general pixel pipeline,
    which costs about half of a thumbnail. Anything else returns None and goes through pydicom.
    """
    try:
        if (
            str(header.file_meta.TransferSyntaxUID) not in _LITTLE_NATIVE
            or int(header.get("SamplesPerPixel", 1)) != 1
            or int(header.get("NumberOfFrames", 1) or 1) != 1
            or int(header.BitsAllocated) not in (8, 16)
        ):
            return None
        rows, columns, allocated = int(header.Rows), int(header.Columns), int(header.BitsAllocated)
        stored = int(header.get("BitsStored", allocated))
        signed = int(header.get("PixelRepresentation", 0)) == 1
    except (AttributeError, TypeError, ValueError):
        return None
    data = header.PixelData
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    if len(data) < rows * columns * dtype.itemsize:
        return None
    frame = np.frombuffer(data, dtype=dtype, count=rows * columns).reshape(rows, columns)
    if stored < allocated:
        # Bits above BitsStored may hold anything (overlays, noise): drop them, keeping the sign.
        shift = allocated - stored
        frame = (frame << shift) >> shift if signed else frame & ((1 << stored) - 1)
    return frame


def render(path: Path, window: Window | None = None) -> Rendered:
    """Render the first frame of a stored instance.

    Parameters
    ----------
    path : Path
        The Part 10 file.
    window : Window, optional
        Grey-scale window to use instead of the instance's own.

    Returns
    -------
    Rendered
        An 8-bit grey or RGB image at full resolution, and the window used.

    Raises
    ------
    ValueError
        If the instance has no pixel data or its pixels cannot be decoded.
    """
    # Large values (the pixel data) are read only when used: one parse serves the header and the fast path.
    ds = dcmread(path, defer_size=4096)
    if "Rows" not in ds or "Columns" not in ds or "PixelData" not in ds:
        raise ValueError(NO_IMAGE)
    try:
        frame = _native_frame(ds)
        if frame is None:
            # Only the first frame is decoded: a multi-frame instance may hold hundreds.
            frame = pixel_array(os.fspath(path), index=0)
    except Exception as exc:  # pydicom raises many types for exotic or damaged pixel data
        raise ValueError(f"pixel data cannot be decoded: {exc}") from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
        photometric = "RGB"
    if frame.ndim == 3 and frame.shape[-1] in (3, 4):
        rgb = frame[..., :3]
        if rgb.dtype != np.uint8:
            top = float(rgb.max()) or 1.0
            rgb = (rgb.astype(np.float32) * (255.0 / top)).astype(np.uint8)
        return Rendered(Image.fromarray(np.ascontiguousarray(rgb), "RGB"), None)
    if frame.ndim != 2:
        raise ValueError(f"unexpected pixel array shape {frame.shape}")
    values = _modality_values(ds, frame)
    used = window or default_window(ds, values)
    grey = apply_window(values, used)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return Rendered(Image.fromarray(grey, "L"), used)


def placeholder(size: int, text: str = "No image") -> Image.Image:
    """A plain grey square with a short text, for instances that have no picture."""
    image = Image.new("L", (size, size), 48)
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((0, 0), text)
    draw.text(((size - (box[2] - box[0])) / 2, (size - (box[3] - box[1])) / 2), text, fill=200)
    return image


def jpeg_bytes(image: Image.Image, size: int, quality: int = 85) -> bytes:
    """``image`` fitted into a ``size`` square (never enlarged), as JPEG."""
    image = image.copy()
    image.thumbnail((size, size), Image.Resampling.LANCZOS if max(image.size) > size else Image.Resampling.NEAREST)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, optimize=False)
    return out.getvalue()


def try_picture(path: Path, size: int, window: Window | None = None) -> tuple[bytes, Window | None, str]:
    """A JPEG of an instance fitted into ``size`` pixels, or a placeholder and the reason why.

    Returns
    -------
    tuple
        The JPEG bytes, the window used (None for colour images and placeholders) and ``""``, or a placeholder,
        None and why the instance has no picture (no pixel data, pixels that cannot be decoded, not DICOM).
    """
    try:
        rendered = render(path, window)
    except Exception as exc:  # a damaged or exotic file must give a placeholder, not a failed page
        return jpeg_bytes(placeholder(size), size), None, str(exc) or type(exc).__name__
    return jpeg_bytes(rendered.image, size), rendered.window, ""


def picture(path: Path, size: int, window: Window | None = None) -> tuple[bytes, Window | None]:
    """A JPEG of an instance fitted into ``size`` pixels (a placeholder when it has no picture)."""
    data, used, reason = try_picture(path, size, window)
    if reason:
        LOGGER.info("no picture for %s: %s", path.name, reason)
    return data, used


def thumbnail_here(path: Path, size: int) -> bytes:
    """Render a thumbnail in this process (the default renderer of :class:`ThumbnailCache`)."""
    return picture(path, size)[0]


#: Renders the thumbnail of a file at a size (JPEG bytes); it may raise when the picture cannot be made now.
Renderer = Callable[[Path, int], bytes]


class ThumbnailCache:
    """Thumbnails on disk.

    Parameters
    ----------
    folder : Path
        Where the JPEG files go (created when missing).
    size : int
        Largest side of a thumbnail, in pixels.
    renderer : callable, optional
        Makes a missing thumbnail: ``renderer(file, size) -> JPEG bytes``; default :func:`thumbnail_here`.
        An exception it raises reaches the caller and nothing is cached.
    """

    def __init__(self, folder: Path, size: int = THUMB_SIZE, renderer: Renderer = thumbnail_here) -> None:
        self.folder = folder
        self.size = size
        self.renderer = renderer

    def _file(self, sop_uid: str, stored_path: str) -> Path:
        key = hashlib.sha256(f"{sop_uid}\0{stored_path}\0{self.size}".encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.jpg"

    def get(self, sop_uid: str, stored_path: str, file: Path) -> bytes:
        """The thumbnail of an instance, rendered and cached on first use.

        Parameters
        ----------
        sop_uid : str
            SOP Instance UID.
        stored_path : str
            The instance's path relative to the store (part of the cache key).
        file : Path
            The instance's file.
        """
        cached = self._file(sop_uid, stored_path)
        try:
            return cached.read_bytes()
        except FileNotFoundError:
            pass
        data = self.renderer(file, self.size)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{secrets.token_hex(4)}")
        tmp.write_bytes(data)
        os.replace(tmp, cached)
        return data

    def has(self, sop_uid: str, stored_path: str) -> bool:
        """Whether the thumbnail of an instance is cached."""
        return self._file(sop_uid, stored_path).is_file()

    def forget(self, sop_uid: str, stored_path: str) -> None:
        """Remove a cached thumbnail (its instance was deleted)."""
        self._file(sop_uid, stored_path).unlink(missing_ok=True)
