"""Site settings for labels and slips: the validated form of the ``[labels]`` table of the config."""

from __future__ import annotations

import codecs
import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from labels.fields import NAME_GROUPS, NAME_STYLES

__all__ = ["FIELD_NAMES", "LabelConfigError", "LabelLayout", "Zone"]

#: Every name a zone of the disc template can list. ``logo`` and ``qr`` are pictures; ``studies``
#: expands to one line per study; the others are text, and several may share a line (``"a+b"``).
FIELD_NAMES = (
    "logo",
    "qr",
    "institution",
    "department",
    "patient_name",
    "patient_id",
    "birth_date",
    "studies",
    "study_date",
    "modalities",
    "study_description",
    "accession_number",
    "content_type",
    "disc_number",
    "created",
)
_PICTURES = ("logo", "qr")
#: A zone is a tuple of lines; a line is a tuple of field names printed side by side.
Zone = tuple[tuple[str, ...], ...]

_DEFAULT_SIZES = {
    "institution": 9.5,
    "department": 7.5,
    "patient_name": 13.0,
    "patient_id": 8.5,
    "birth_date": 8.5,
    "studies": 8.0,
    "study_date": 8.0,
    "modalities": 8.0,
    "study_description": 8.0,
    "accession_number": 8.0,
    "content_type": 8.5,
    "disc_number": 8.5,
    "created": 7.0,
}
_DEFAULT_CAPTIONS = {
    "patient_id": "ID",
    "birth_date": "Born",
    "study_date": "Study",
    "modalities": "",
    "study_description": "",
    "accession_number": "Acc.",
    "created": "Created",
    "disc_number": "Disc {n} of {m}",
    "dicom_only": "DICOM ONLY",
    "dicom_viewer": "DICOM + VIEWER",
    "more_studies": "+ {count} more",
}
_DEFAULT_EPSON_FIELDS = {
    "institution": "institution",
    "department": "department",
    "patient_name": "patientName",
    "patient_id": "patientId",
    "birth_date": "patientDOB",
    "study_date": "studyDate",
    "study_description": "studyDescription",
    "modalities": "modalities",
    "accession_number": "accessionNumber",
    "content_type": "contentType",
    "disc_number": "discNumber",
    "created": "creationDate",
    "token_url": "tokenUrl",
}
_DEFAULT_REPLACE = {",": " ", '"': "'", "=": "-"}
_DEFAULT_MERGE_ORDER = (
    "institution",
    "patient_name",
    "patient_id",
    "birth_date",
    "study_date",
    "modalities",
    "study_description",
    "disc_number",
    "created",
    "content_type",
    "token_url",
)


class LabelConfigError(ValueError):
    """The ``[labels]`` table has a bad key or value; the message names each problem."""


def _pairs(mapping: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(mapping.items())


@dataclass(frozen=True)
class LabelLayout:
    """How labels and slips look at this site. Every field has a working default.

    Lengths are in millimetres, font sizes in points. Tables (sizes, captions, Epson field names,
    replacements) are kept as tuples of pairs so the layout stays immutable and hashable;
    read them through :meth:`font_size`, :meth:`caption`, :attr:`epson_field_names` and
    :attr:`replacements`. See ``docs/labels.md`` for every key.
    """

    outer_diameter_mm: float = 118.0
    """Outer edge of the printable ring (the disc itself is 120 mm)."""
    inner_diameter_mm: float = 43.0
    """Hub: nothing is printed inside it. 43 mm suits every medium; hub-printable media allow ~23 mm."""
    margin_mm: float = 1.5
    """Extra clearance kept from both edges of the ring."""
    top: Zone = (
        ("logo",),
        ("institution",),
        ("department",),
        ("patient_name",),
        ("patient_id", "birth_date"),
    )
    """Lines above the hub, top to bottom."""
    left: Zone = (("content_type",), ("disc_number",))
    """Lines left of the hub."""
    right: Zone = (("qr",),)
    """Lines right of the hub."""
    bottom: Zone = (("studies",), ("created",))
    """Lines below the hub, top to bottom."""
    font_sizes: tuple[tuple[str, float], ...] = _pairs(_DEFAULT_SIZES)
    """Nominal size of each text field; a line of several fields uses its first field's size."""
    min_font_size: float = 5.5
    """Text is shrunk down to this size before it is cut short with an ellipsis."""
    captions: tuple[tuple[str, str], ...] = _pairs(_DEFAULT_CAPTIONS)
    """Muted words before values ("ID", "Born"), the content types and the "Disc {n} of {m}" text."""
    name_style: str = "family_comma_given"
    """How a Latin-script name is written: one of :data:`labels.fields.NAME_STYLES`."""
    name_groups: tuple[str, ...] = ("alphabetic", "ideographic")
    """PN component groups shown, in this order; the first is the main one, the others in brackets."""
    date_format: str = "%Y-%m-%d"
    """Date pattern using only %Y, %m and %d, so no output depends on the machine's locale."""
    max_study_lines: int = 3
    """Study lines on a disc; with more studies the last line says how many were left out."""
    logo: Path | None = None
    """Site logo for the ``logo`` line of the label and the top of the slip."""
    logo_height_mm: float = 9.0
    """Logo height on the disc; it shrinks if the chord at its place is too narrow."""
    qr: bool = True
    """Print the patient link's QR code (where a zone lists ``qr``) and pass the link to the robots' merge fields."""
    qr_size_mm: float = 22.0
    """QR code size on the disc, quiet zone included."""
    qr_min_size_mm: float = 14.0
    """Smallest QR code size before a warning that it may not scan."""
    font_paths: tuple[str, ...] = ()
    """Site fonts tried before the system's: ``path`` or ``path#index``."""
    primera_dpi: int = 300
    """Resolution of the Primera JPG and BMP."""
    epson_dpi: int = 300
    """Resolution of the Epson JPG."""
    jpeg_quality: int = 95
    """JPEG quality of the robot images."""
    epson_encoding: str = "cp1252"
    """Encoding of the Epson REPLACE_FIELD file (TD Bridge reads the Windows ANSI code page)."""
    epson_fields: tuple[tuple[str, str], ...] = _pairs(_DEFAULT_EPSON_FIELDS)
    """Our field name -> the ``.tdd`` template's field name ("" leaves the field out)."""
    primera_merge_order: tuple[str, ...] = _DEFAULT_MERGE_ORDER
    """Our field names in the order of a SureThing template's merge fields."""
    field_replace: tuple[tuple[str, str], ...] = _pairs(_DEFAULT_REPLACE)
    """Characters replaced in robot field values, because they break the vendors' parsers."""

    def font_size(self, name: str) -> float:
        """Nominal font size of a field, in points."""
        return dict(self.font_sizes).get(name, 8.0)

    def caption(self, name: str) -> str:
        """Caption (or template) for a field; empty if it has none."""
        return dict(self.captions).get(name, "")

    @property
    def epson_field_names(self) -> dict[str, str]:
        """Our field name -> the ``.tdd`` template's field name; fields mapped to "" are left out."""
        return {k: v for k, v in self.epson_fields if v}

    @property
    def replacements(self) -> dict[str, str]:
        """Character -> replacement applied to every robot field value."""
        return dict(self.field_replace)

    @property
    def outer_radius(self) -> float:
        """Largest radius text may reach, margin included, in mm."""
        return self.outer_diameter_mm / 2 - self.margin_mm

    @property
    def inner_radius(self) -> float:
        """Smallest radius text may reach, margin included, in mm."""
        return self.inner_diameter_mm / 2 + self.margin_mm

    @classmethod
    def from_options(cls, options: Mapping[str, Any], base_dir: Path | None = None) -> LabelLayout:
        """Validate the raw ``[labels]`` TOML table and build a layout.

        Parameters
        ----------
        options : mapping
            The table as ``tomllib`` returns it; every key is optional.
        base_dir : Path, optional
            Directory that relative ``logo`` and ``font_paths`` are resolved against (the config
            file's directory); the working directory if None.

        Returns
        -------
        LabelLayout

        Raises
        ------
        LabelConfigError
            Listing every unknown key and every bad value, each prefixed with ``labels.<key>``.
        """
        parser = _Parser(base_dir or Path.cwd())
        values: dict[str, Any] = {}
        for key, raw in options.items():
            spec = _SPECS.get(key)
            if spec is None:
                hint = difflib.get_close_matches(str(key), sorted(_SPECS), n=1)
                parser.errors.append(f"labels.{key}: unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
                continue
            try:
                values[key] = spec(parser, key, raw)
            except _Bad as exc:
                parser.errors.append(f"labels.{key}: {exc}")
        layout = cls(**values)
        parser.check_layout(layout)
        if parser.errors:
            raise LabelConfigError("invalid [labels] options:\n  " + "\n  ".join(parser.errors))
        return layout


class _Bad(Exception):
    """One bad value; `from_options` collects them all before raising."""


def _type_name(value: object) -> str:
    return type(value).__name__


class _Parser:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.errors: list[str] = []

    @staticmethod
    def number(value: object, low: float, high: float, integer: bool = False) -> float:
        # TOML booleans are ints to Python; "true" is never a size.
        if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
            kind = "an integer" if integer else "a number"
            raise _Bad(f"expected {kind} from {low:g} to {high:g}, got {value!r} ({_type_name(value)})")
        number = float(value)
        if not (math.isfinite(number) and low <= number <= high):
            raise _Bad(f"{value!r} is out of range (allowed {low:g} to {high:g})")
        return number

    @staticmethod
    def string(value: object) -> str:
        if not isinstance(value, str):
            raise _Bad(f"expected a string, got {value!r} ({_type_name(value)})")
        return value

    def path(self, value: object) -> Path:
        text = self.string(value)
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def table(self, value: object, keys: tuple[str, ...] | None, item: Callable[[object], Any]) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _Bad(f"expected a table, got {value!r} ({_type_name(value)})")
        out: dict[str, Any] = {}
        for key, raw in value.items():
            if keys is not None and key not in keys:
                raise _Bad(f"unknown entry {key!r} (known: {', '.join(keys)})")
            try:
                out[key] = item(raw)
            except _Bad as exc:
                raise _Bad(f"entry {key!r}: {exc}") from None
        return out

    def zone(self, value: object) -> Zone:
        if not isinstance(value, list):
            raise _Bad(
                f'expected a list of field names such as ["institution", "patient_id+birth_date"], got {value!r}'
            )
        lines = []
        for entry in value:
            names = tuple(n.strip() for n in self.string(entry).split("+"))
            bad = [n for n in names if n not in FIELD_NAMES]
            if bad:
                raise _Bad(f"unknown field {bad[0]!r} in {entry!r} (known: {', '.join(FIELD_NAMES)})")
            if len(names) > 1 and any(n in _PICTURES or n == "studies" for n in names):
                raise _Bad(f"{entry!r}: logo, qr and studies need a line of their own")
            lines.append(names)
        return tuple(lines)

    def check_layout(self, layout: LabelLayout) -> None:
        """Checks that involve several keys at once."""
        if layout.inner_radius + 10 > layout.outer_radius:
            self.errors.append(
                f"labels.inner_diameter_mm: {layout.inner_diameter_mm:g} leaves less than 10 mm of printable "
                f"ring inside outer_diameter_mm = {layout.outer_diameter_mm:g} "
                f"(with margin_mm = {layout.margin_mm:g})"
            )
        seen: set[str] = set()
        for zone in ("top", "left", "right", "bottom"):
            for line in getattr(layout, zone):
                for name in line:
                    if name in seen:
                        self.errors.append(f"labels.{zone}: field {name!r} is listed twice")
                    seen.add(name)
        for key, name in layout.epson_fields:
            try:
                name.encode(layout.epson_encoding)
            except UnicodeEncodeError:
                self.errors.append(
                    f"labels.epson_fields: {key} = {name!r} cannot be written in {layout.epson_encoding}"
                )
        if layout.qr_min_size_mm > layout.qr_size_mm:
            self.errors.append("labels.qr_min_size_mm: must not be larger than qr_size_mm")
        sizes = dict(layout.font_sizes)
        if any(size < layout.min_font_size for size in sizes.values()):
            self.errors.append(
                f"labels.font_sizes: every size must be at least min_font_size = {layout.min_font_size:g}"
            )


def _opt_number(low: float, high: float, integer: bool = False) -> Callable[[_Parser, str, object], Any]:
    def parse(p: _Parser, key: str, raw: object) -> float | int:
        number = p.number(raw, low, high, integer)
        return int(number) if integer else number

    return parse


def _opt_choice(choices: tuple[str, ...]) -> Callable[[_Parser, str, object], str]:
    def parse(p: _Parser, key: str, raw: object) -> str:
        text = p.string(raw)
        if text not in choices:
            raise _Bad(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return parse


def _opt_bool(p: _Parser, key: str, raw: object) -> bool:
    if not isinstance(raw, bool):
        raise _Bad(f"{raw!r} is not true or false")
    return raw


def _opt_zone(p: _Parser, key: str, raw: object) -> Zone:
    return p.zone(raw)


def _opt_sizes(p: _Parser, key: str, raw: object) -> tuple[tuple[str, float], ...]:
    sizes = p.table(raw, tuple(_DEFAULT_SIZES), lambda v: p.number(v, 4, 40))
    return _pairs({**_DEFAULT_SIZES, **sizes})


def _opt_captions(p: _Parser, key: str, raw: object) -> tuple[tuple[str, str], ...]:
    captions = p.table(raw, tuple(_DEFAULT_CAPTIONS), p.string)
    for name, template in captions.items():
        try:
            template.format(n=1, m=2, count=3)
        except (KeyError, IndexError, ValueError) as exc:
            raise _Bad(
                f"entry {name!r}: bad placeholder in {template!r} ({exc}); use {{n}}, {{m}} or {{count}}"
            ) from None
    return _pairs({**_DEFAULT_CAPTIONS, **captions})


def _opt_name_groups(p: _Parser, key: str, raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise _Bad(f"expected a non-empty list drawn from {', '.join(NAME_GROUPS)}, got {raw!r}")
    groups = tuple(_opt_choice(NAME_GROUPS)(p, key, item) for item in raw)
    if len(set(groups)) != len(groups):
        raise _Bad("a group is listed twice")
    return groups


def _opt_date_format(p: _Parser, key: str, raw: object) -> str:
    text = p.string(raw)
    stripped = text.replace("%Y", "").replace("%m", "").replace("%d", "")
    if "%" in stripped or "%Y" not in text:
        raise _Bad(f'{text!r}: use %Y, %m and %d only (and %Y at least), e.g. "%d.%m.%Y"')
    return text


def _opt_logo(p: _Parser, key: str, raw: object) -> Path | None:
    if raw == "":
        return None
    path = p.path(raw)
    try:
        with Image.open(path) as image:
            image.verify()
    except FileNotFoundError:
        raise _Bad(f"no such file: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise _Bad(f"{path} is not an image Pillow can read ({exc})") from None
    return path


def _opt_font_paths(p: _Parser, key: str, raw: object) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise _Bad(f'expected a list of font files ("path" or "path#index" for a .ttc), got {raw!r}')
    specs = []
    for item in raw:
        path_text, sep, index = p.string(item).partition("#")
        path = p.path(path_text)
        if not path.is_file():
            raise _Bad(f"no such font file: {path}")
        if sep and not index.isdigit():
            raise _Bad(f"{item!r}: the face index after '#' must be a number")
        specs.append(f"{path}{sep}{index}")
    return tuple(specs)


def _opt_encoding(p: _Parser, key: str, raw: object) -> str:
    text = p.string(raw)
    try:
        codecs.lookup(text)
    except LookupError:
        raise _Bad(f'unknown encoding {text!r} (e.g. "cp1252", "cp932", "utf-8", "utf-8-sig")') from None
    return text


def _opt_epson_fields(p: _Parser, key: str, raw: object) -> tuple[tuple[str, str], ...]:
    def name(value: object) -> str:
        text = p.string(value)
        if any(ch in text for ch in "=\r\n") or text != text.strip():
            raise _Bad(f"{text!r} cannot be a field name (no '=', line breaks or outer spaces)")
        return text

    return _pairs({**_DEFAULT_EPSON_FIELDS, **p.table(raw, tuple(_DEFAULT_EPSON_FIELDS), name)})


def _opt_merge_order(p: _Parser, key: str, raw: object) -> tuple[str, ...]:
    known = tuple(_DEFAULT_EPSON_FIELDS)
    if not isinstance(raw, list):
        raise _Bad(f"expected a list of field names from {', '.join(known)}")
    return tuple(_opt_choice(known)(p, key, item) for item in raw)


def _opt_replace(p: _Parser, key: str, raw: object) -> tuple[tuple[str, str], ...]:
    table = p.table(raw, None, p.string)
    for char, repl in table.items():
        if len(char) != 1:
            raise _Bad(f"keys must be single characters, got {char!r}")
        if any(c in repl for c in ',"=\r\n'):
            raise _Bad(f'the replacement for {char!r} must not itself contain , " = or line breaks')
    return _pairs({**_DEFAULT_REPLACE, **table})


_SPECS: dict[str, Callable[[_Parser, str, object], Any]] = {
    "outer_diameter_mm": _opt_number(70, 120),
    "inner_diameter_mm": _opt_number(15, 50),
    "margin_mm": _opt_number(0, 5),
    "top": _opt_zone,
    "left": _opt_zone,
    "right": _opt_zone,
    "bottom": _opt_zone,
    "font_sizes": _opt_sizes,
    "min_font_size": _opt_number(4, 20),
    "captions": _opt_captions,
    "name_style": _opt_choice(NAME_STYLES),
    "name_groups": _opt_name_groups,
    "date_format": _opt_date_format,
    "max_study_lines": _opt_number(1, 20, integer=True),
    "logo": _opt_logo,
    "logo_height_mm": _opt_number(3, 30),
    "qr": _opt_bool,
    "qr_size_mm": _opt_number(10, 40),
    "qr_min_size_mm": _opt_number(8, 40),
    "font_paths": _opt_font_paths,
    "primera_dpi": _opt_number(50, 1200, integer=True),
    "epson_dpi": _opt_number(50, 1200, integer=True),
    "jpeg_quality": _opt_number(50, 100, integer=True),
    "epson_encoding": _opt_encoding,
    "epson_fields": _opt_epson_fields,
    "primera_merge_order": _opt_merge_order,
    "field_replace": _opt_replace,
}
