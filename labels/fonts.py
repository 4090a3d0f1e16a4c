"""Find fonts at run time and pick, for each character, a font that has its glyph.

No font file is shipped with the project. The fonts come from the system (Debian packages
``fonts-dejavu-core`` for Latin, Greek and Cyrillic, ``fonts-wqy-zenhei`` for Chinese, Japanese and
Korean), from the site's ``font_paths`` and, as a last resort, from the Bitstream Vera fonts that
reportlab itself carries. One font file rarely covers every script a patient name can use, so a text
is cut into runs, each drawn with the first font of the chain that has all of its glyphs.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import reportlab
from PIL import ImageFont
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFError, TTFont

__all__ = ["BOLD_CANDIDATES", "CJK_CANDIDATES", "REGULAR_CANDIDATES", "FontFace", "FontSet", "font_set"]

LOGGER = logging.getLogger(__name__)

_DEBIAN = "/usr/share/fonts/truetype"
#: Sans-serif fonts for Latin, Greek and Cyrillic, best first.
REGULAR_CANDIDATES = (
    f"{_DEBIAN}/dejavu/DejaVuSans.ttf",
    f"{_DEBIAN}/liberation/LiberationSans-Regular.ttf",
    f"{_DEBIAN}/liberation2/LiberationSans-Regular.ttf",
    f"{_DEBIAN}/noto/NotoSans-Regular.ttf",
    f"{_DEBIAN}/freefont/FreeSans.ttf",
)
#: Bold faces matching :data:`REGULAR_CANDIDATES`.
BOLD_CANDIDATES = (
    f"{_DEBIAN}/dejavu/DejaVuSans-Bold.ttf",
    f"{_DEBIAN}/liberation/LiberationSans-Bold.ttf",
    f"{_DEBIAN}/liberation2/LiberationSans-Bold.ttf",
    f"{_DEBIAN}/noto/NotoSans-Bold.ttf",
    f"{_DEBIAN}/freefont/FreeSansBold.ttf",
)
#: Fonts with Chinese, Japanese and Korean glyphs. Only TrueType outlines can be embedded by
#: reportlab, so the CFF-based Noto CJK ``.ttc`` files are not listed (they would be skipped anyway).
CJK_CANDIDATES = (
    f"{_DEBIAN}/wqy/wqy-zenhei.ttc",
    f"{_DEBIAN}/wqy/wqy-microhei.ttc",
    f"{_DEBIAN}/droid/DroidSansFallbackFull.ttf",
    f"{_DEBIAN}/arphic/uming.ttc",
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    f"{_DEBIAN}/fonts-japanese-gothic.ttf",
    f"{_DEBIAN}/nanum/NanumGothic.ttf",
    f"{_DEBIAN}/unfonts-core/UnDotum.ttf",
)
_VERA = Path(reportlab.__file__).parent / "fonts"


@dataclass(frozen=True, eq=False)
class FontFace:
    """One loaded font: registered with reportlab for PDF, opened with Pillow for images.

    Attributes
    ----------
    path, index : str, int
        The font file and the face inside a ``.ttc`` collection.
    name : str
        The name it is registered under in reportlab.
    ascent, descent : float
        Extent above and below the baseline as a fraction of the font size, from the font's
        ``hhea`` metrics, which bound the ink of its accented capitals and descenders.
    """

    path: str
    index: int
    name: str
    ascent: float
    descent: float
    _font: TTFont

    def has(self, char: str) -> bool:
        """Return True if the font has a glyph for `char`."""
        return ord(char) in self._font.face.charToGlyph

    def width(self, text: str, size: float) -> float:
        """Advance width of `text` at `size` points, in points (no kerning, as reportlab draws)."""
        return float(self._font.stringWidth(text, size))

    @functools.lru_cache(maxsize=64)  # noqa: B019 - faces live as long as the process anyway
    def pil(self, size_px: float) -> ImageFont.FreeTypeFont:
        """The same face opened by Pillow at `size_px` pixels."""
        return ImageFont.truetype(self.path, size=size_px, index=self.index, layout_engine=ImageFont.Layout.BASIC)


@functools.lru_cache(maxsize=32)
def load_face(spec: str) -> FontFace | None:
    """Load ``path`` or ``path#index`` (a face in a collection); None if missing or unusable."""
    path, _, index_text = spec.partition("#")
    index = int(index_text) if index_text.isdigit() else 0
    if not os.path.isfile(path):
        return None
    name = "lbl-" + hashlib.sha1(spec.encode()).hexdigest()[:10]
    try:
        font = TTFont(name, path, subfontIndex=index)
        metrics = ImageFont.truetype(path, size=1000, index=index).getmetrics()
    except (TTFError, OSError, ValueError) as exc:
        # CFF (PostScript-outline) OpenType fonts and broken files end up here; try the next one.
        LOGGER.info("skipping font %s: %s", spec, exc)
        return None
    pdfmetrics.registerFont(font)
    return FontFace(path, index, name, metrics[0] / 1000, metrics[1] / 1000, font)


class FontSet:
    """Regular and bold font chains, and the per-character choice between their faces.

    Parameters
    ----------
    regular, bold : sequence of FontFace
        Faces to try, best first; each chain must not be empty.
    """

    def __init__(self, regular: Sequence[FontFace], bold: Sequence[FontFace]) -> None:
        if not regular or not bold:
            raise ValueError("a font set needs at least one regular and one bold face")
        self.regular = tuple(regular)
        self.bold = tuple(bold)

    def chain(self, bold: bool) -> tuple[FontFace, ...]:
        """The faces tried, in order, for regular or bold text."""
        return self.bold if bold else self.regular

    def missing(self, text: str) -> str:
        """The characters of `text` that no face of either chain can draw (in order, no repeats)."""
        seen: list[str] = []
        for char in text:
            if char not in seen and not self._face_for(char, self.regular):
                seen.append(char)
        return "".join(seen)

    def renderable(self, text: str) -> str:
        """`text` without the characters no face can draw."""
        gone = self.missing(text)
        return "".join(ch for ch in text if ch not in gone) if gone else text

    def runs(self, text: str, bold: bool = False) -> list[tuple[str, FontFace]]:
        """Cut `text` into runs that one face each can draw.

        Spaces and combining marks stay with the run before them, so a space between two Chinese
        words does not switch fonts twice, and an accent is drawn by the font of its base letter.
        Characters no face has are dropped (see :meth:`missing`).
        """
        chain = self.chain(bold)
        out: list[tuple[str, FontFace]] = []
        for char in text:
            current = out[-1][1] if out else None
            sticky = char == " " or unicodedata.combining(char)
            face = current if sticky and current and current.has(char) else self._face_for(char, chain)
            if face is None:
                continue
            if face is current and out:
                out[-1] = (out[-1][0] + char, face)
            else:
                out.append((char, face))
        return out

    def width(self, text: str, size: float, bold: bool = False) -> float:
        """Width of `text` in points at `size` points, as :meth:`runs` would draw it."""
        return sum(face.width(run, size) for run, face in self.runs(text, bold))

    def extent(self, text: str, bold: bool = False) -> tuple[float, float]:
        """Largest ascent and descent (fractions of the size) among the faces drawing `text`."""
        faces = [face for _, face in self.runs(text, bold)] or [self.chain(bold)[0]]
        return max(f.ascent for f in faces), max(f.descent for f in faces)

    @staticmethod
    def _face_for(char: str, chain: Sequence[FontFace]) -> FontFace | None:
        return next((face for face in chain if face.has(char)), None)


@functools.lru_cache(maxsize=8)
def font_set(extra: tuple[str, ...] = ()) -> FontSet:
    """Build the font set from the site's `extra` fonts and the system candidates.

    Parameters
    ----------
    extra : tuple of str
        Font files (``path`` or ``path#index``) tried before the system fonts, for both weights.

    Returns
    -------
    FontSet
        Always usable: reportlab's own Vera fonts close both chains. A warning is logged if no font
        for Chinese, Japanese and Korean was found, since such names would then lose characters.
    """

    def load(specs: Sequence[str]) -> list[FontFace]:
        faces = [load_face(spec) for spec in specs]
        return [face for face in faces if face is not None]

    cjk = load(CJK_CANDIDATES)
    if not cjk:
        LOGGER.warning(
            "no font with Chinese/Japanese/Korean glyphs found (looked for %s); install fonts-wqy-zenhei",
            ", ".join(CJK_CANDIDATES[:2]),
        )
    site = load(extra)
    fallback = load(REGULAR_CANDIDATES) + cjk + load([str(_VERA / "Vera.ttf")])
    # A bold chain falls back to regular faces: a Chinese name in a regular face beats no name at all.
    bold = site + load(BOLD_CANDIDATES) + load([str(_VERA / "VeraBd.ttf")]) + fallback
    return FontSet(site + fallback, bold)
