"""Fixtures for the labels tests: synthetic label fields, and the poppler / zbar tools that read outputs back.

Helpers are handed out as fixtures, since test modules cannot import a conftest. Test modules carry a
``test_labels_`` prefix to keep their names unique across the suite. All patient data is made up.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from labels import DiscLabelFields, LabelStudy
from labels.fonts import font_set


def _run(*args: str) -> subprocess.CompletedProcess[bytes]:
    if shutil.which(args[0]) is None:
        pytest.skip(f"{args[0]} is not installed (Debian: poppler-utils / zbar-tools)")
    return subprocess.run(args, capture_output=True, check=False, timeout=60)


@pytest.fixture
def pdf_text() -> Callable[[Path], str]:
    """Text of a PDF as poppler's pdftotext extracts it (reading order, no layout)."""

    def extract(pdf: Path) -> str:
        done = _run("pdftotext", "-enc", "UTF-8", str(pdf), "-")
        assert done.returncode == 0, done.stderr
        return done.stdout.decode("utf-8")

    return extract


@pytest.fixture
def pdf_png(tmp_path: Path) -> Callable[[Path, int], Image.Image]:
    """Render page 1 of a PDF with pdftoppm at a resolution; returns the image."""

    def render(pdf: Path, dpi: int) -> Image.Image:
        prefix = tmp_path / f"{pdf.stem}-{dpi}"
        done = _run("pdftoppm", "-png", "-r", str(dpi), "-singlefile", str(pdf), str(prefix))
        assert done.returncode == 0, done.stderr
        with Image.open(f"{prefix}.png") as image:
            image.load()
            return image

    return render


@pytest.fixture
def decode_qr(tmp_path: Path) -> Callable[[Image.Image | Path], list[str]]:
    """Every QR code zbarimg finds in an image, as text."""

    def decode(image: Image.Image | Path) -> list[str]:
        path = image if isinstance(image, Path) else tmp_path / "qr-input.png"
        if isinstance(image, Image.Image):
            image.save(path)
        done = _run("zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(path))
        return [line for line in done.stdout.decode("utf-8").splitlines() if line]

    return decode


@pytest.fixture
def make_fields() -> Callable[..., DiscLabelFields]:
    """A typical two-study disc with a token link; keyword arguments override any field."""
    base = DiscLabelFields(
        patient_name="Doe^John",
        patient_id="PID-0012345",
        birth_date="19700131",
        studies=(
            LabelStudy("20240501", "CT Thorax Abdomen", ("CT", "SR"), "ACC-1"),
            LabelStudy("20240502", "MR Knee left", ("MR",), "ACC-2"),
        ),
        institution="St. Example General Hospital",
        department="Radiology",
        disc_number=1,
        disc_count=2,
        created=dt.date(2024, 5, 3),
        with_viewer=True,
        token_url="https://pacs.example.org:3000/token?" + "Ab3-" * 16,
    )

    def make(**changes: Any) -> DiscLabelFields:
        return replace(base, **changes)

    return make


@pytest.fixture
def ink_radii() -> Callable[[Image.Image, int], tuple[float, float]]:
    """Smallest and largest distance (mm) of any inked pixel from the centre of a disc image."""

    def radii(image: Image.Image, dpi: int) -> tuple[float, float]:
        grey = np.asarray(image.convert("L"))
        n_rows, n_cols = grey.shape
        rows, cols = np.nonzero(grey < 250)  # anything visibly darker than the white disc
        assert rows.size, "the image has no ink at all"
        # Pixel centres, so a pixel touching the limit counts by where its ink is.
        dist = np.hypot(cols + 0.5 - n_cols / 2, rows + 0.5 - n_rows / 2) * 25.4 / dpi
        return float(dist.min()), float(dist.max())

    return radii


@pytest.fixture
def no_cjk_font(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pretend no Chinese/Japanese/Korean font is installed (for this test only)."""
    monkeypatch.setattr("labels.fonts.CJK_CANDIDATES", ())
    font_set.cache_clear()
    yield
    font_set.cache_clear()


@pytest.fixture
def has_cjk_font() -> None:
    """Skip unless a CJK font is installed (CI installs fonts-wqy-zenhei)."""
    if not any(face.has("山") for face in font_set().regular):
        pytest.skip("no CJK font installed (Debian: fonts-wqy-zenhei)")
