"""What goes on a label: plain field values, and how DICOM values are shown to people.

`labels` knows nothing of the DICOM store. The caller passes plain strings as they come out of the
dataset (a PN such as ``Yamada^Tarou=山田^太郎``, a DA such as ``19700131``), and this module turns
them into the text a person would write.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "NAME_GROUPS",
    "NAME_STYLES",
    "DiscLabelFields",
    "LabelStudy",
    "TokenSlipFields",
    "format_da",
    "format_date",
    "format_person_name",
    "join_name_groups",
    "normalise_text",
]

#: Accepted values of ``LabelLayout.name_style``.
NAME_STYLES = ("family_comma_given", "given_family", "family_given")
#: The three component groups of a DICOM PN, in their order in the value.
NAME_GROUPS = ("alphabetic", "ideographic", "phonetic")

_DA_DIGITS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?$")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class LabelStudy:
    """One study on a disc.

    Parameters
    ----------
    date : str
        Study Date as a DICOM DA (``YYYYMMDD``); partial or odd values are shown as they are.
    description : str
        Study Description.
    modalities : tuple of str
        Modalities in Study, e.g. ``("CT", "SR")``.
    accession_number : str
        Accession Number; only shown if the layout asks for it.
    """

    date: str = ""
    description: str = ""
    modalities: tuple[str, ...] = ()
    accession_number: str = ""


@dataclass(frozen=True)
class DiscLabelFields:
    """The values printed on one disc.

    Parameters
    ----------
    patient_name : str
        Patient's Name as a DICOM PN string (``Doe^John``, ``Yamada^Tarou=山田^太郎``).
    patient_id : str
        Patient ID.
    birth_date : str
        Patient's Birth Date as a DICOM DA; empty if unknown.
    studies : tuple of LabelStudy
        The studies on this disc, in the order they should be listed.
    institution, department : str
        Originating institution and department (IHE PDI asks for the institution).
    disc_number, disc_count : int
        "disc n of m" when a job spans several discs.
    created : datetime.date or None
        Media creation date; None means today.
    with_viewer : bool
        True if the disc carries a viewer ("DICOM + VIEWER"), else "DICOM ONLY".
    token_url : str
        The patient's token link; printed as a QR code when not empty and the layout shows ``qr``.
    """

    patient_name: str = ""
    patient_id: str = ""
    birth_date: str = ""
    studies: tuple[LabelStudy, ...] = ()
    institution: str = ""
    department: str = ""
    disc_number: int = 1
    disc_count: int = 1
    created: dt.date | None = None
    with_viewer: bool = False
    token_url: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.disc_number <= self.disc_count:
            raise ValueError(f"disc {self.disc_number} of {self.disc_count} is not a valid disc number")

    @property
    def creation_date(self) -> dt.date:
        """The media creation date (today if none was given)."""
        return self.created if self.created is not None else dt.date.today()


@dataclass(frozen=True)
class TokenSlipFields:
    """The values printed on a patient's token slip.

    Parameters
    ----------
    link : str
        The token link; printed in full and as a QR code.
    patient_name : str
        Patient's Name as a DICOM PN string.
    study_date : str
        Study Date as a DICOM DA.
    expires : datetime.date
        Last day the link works.
    institution, department : str
        Who hands out the slip.
    title : str
        Heading of the slip.
    instructions : tuple of str
        Short lines on how to open the link; the defaults are English.
    captions : tuple of str
        Captions of the patient name, the study date and the expiry date.
    """

    link: str
    patient_name: str = ""
    study_date: str = ""
    expires: dt.date | None = None
    institution: str = ""
    department: str = ""
    title: str = "Your images online"
    instructions: tuple[str, ...] = field(
        default=(
            "Scan the QR code with your phone camera, or type the link into a web browser.",
            "Keep this slip private: anyone who has the link can see your images.",
        )
    )
    captions: tuple[str, str, str] = ("Patient", "Study date", "Available until")


def normalise_text(value: str) -> str:
    """Return `value` in NFC with every run of whitespace (line breaks included) as one space.

    DICOM strings are padded with spaces and may carry stray control characters; a label line is a
    single line, so they are flattened here once for every output.
    """
    value = unicodedata.normalize("NFC", value)
    value = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in value)
    return _SPACES.sub(" ", value).strip()


def format_da(value: str, pattern: str = "%Y-%m-%d") -> str:
    """Show a DICOM DA the same way in every locale.

    Parameters
    ----------
    value : str
        ``YYYYMMDD``; the old ACR-NEMA form ``YYYY.MM.DD`` and partial dates (``YYYY``,
        ``YYYYMM``) are accepted too.
    pattern : str
        Uses only ``%Y``, ``%m`` and ``%d``, so no month names depend on the machine's locale.

    Returns
    -------
    str
        The formatted date; a partial date keeps only the parts it has (``1970-01``); a value that is
        not a date is returned as it is (after whitespace clean-up) rather than hidden, so staff can
        still see what the modality sent. Dates before 1900 are fine.
    """
    text = normalise_text(value)
    match = _DA_DIGITS.match(text.replace(".", "").replace("-", ""))
    if not match:
        return text
    year, month, day = match.groups()
    if month is None or day is None:
        if month is not None and not 1 <= int(month) <= 12:
            return text
        return year if month is None else f"{year}-{month}"
    try:
        dt.date(int(year), int(month), int(day))
    except ValueError:
        return text
    return pattern.replace("%Y", year).replace("%m", month).replace("%d", day)


def format_date(value: dt.date, pattern: str = "%Y-%m-%d") -> str:
    """Format a `datetime.date` with the same locale-free pattern as :func:`format_da`."""
    return format_da(f"{value.year:04d}{value.month:02d}{value.day:02d}", pattern)


# Greek capitals are written without accents and breathings (the tonos of "Παπαδόπουλος" is dropped
# in "ΠΑΠΑΔΟΠΟΥΛΟΣ"); the diaeresis stays, it changes the pronunciation.
_GREEK_CAPS_DROP = frozenset("\u0300\u0301\u0313\u0314\u0342\u0345")


def upper_name(text: str) -> str:
    """Uppercase a family name the way its script writes capitals."""
    decomposed = unicodedata.normalize("NFD", text.upper())
    kept: list[str] = []
    base = ""
    for char in decomposed:
        if unicodedata.combining(char):
            if char in _GREEK_CAPS_DROP and unicodedata.name(base, "").startswith("GREEK"):
                continue
        else:
            base = char
        kept.append(char)
    return unicodedata.normalize("NFC", "".join(kept))


def _name_group(group: str, style: str, ideographic: bool) -> str:
    parts = [normalise_text(p) for p in group.split("^")]
    parts += [""] * (5 - len(parts))
    family, given, middle, prefix, suffix = parts[:5]
    if ideographic:
        # Chinese, Japanese and Korean names are written family name first, without a comma and
        # without changing case, whatever the Latin style is.
        return " ".join(p for p in (family, given, middle) if p)
    first = " ".join(p for p in (prefix, given, middle) if p)
    if style == "given_family":
        text = " ".join(p for p in (first, family) if p)
    elif style == "family_given":
        text = " ".join(p for p in (family, first) if p)
    else:
        text = ", ".join(p for p in (upper_name(family), first) if p)
    return f"{text}, {suffix}" if suffix and text else text or suffix


def format_person_name(
    value: str, style: str = "family_comma_given", groups: Sequence[str] = ("alphabetic", "ideographic")
) -> tuple[str, ...]:
    """Show a DICOM PN as a person would write it.

    Parameters
    ----------
    value : str
        ``family^given^middle^prefix^suffix``, up to three ``=``-separated groups (alphabetic,
        ideographic, phonetic).
    style : str
        One of :data:`NAME_STYLES`: ``"family_comma_given"`` gives ``DOE, John``,
        ``"given_family"`` gives ``John Doe``, ``"family_given"`` gives ``Doe John``. Ideographic
        and phonetic groups are always written family name first.
    groups : sequence of str
        Which groups to show, in this order (names from :data:`NAME_GROUPS`).

    Returns
    -------
    tuple of str
        The non-empty formatted groups, in the order asked for; the caller decides how to join them
        (a label shows ``YAMADA, Tarou (山田 太郎)``).
    """
    if style not in NAME_STYLES:
        raise ValueError(f"unknown name style {style!r}; expected one of {', '.join(NAME_STYLES)}")
    raw = value.split("=")
    raw += [""] * (3 - len(raw))
    shown = []
    for name in groups:
        index = NAME_GROUPS.index(name)
        text = _name_group(raw[index], style, ideographic=index > 0)
        if text and text not in shown:
            shown.append(text)
    return tuple(shown)


def join_name_groups(groups: Sequence[str]) -> str:
    """Join formatted PN groups as ``first (second, third)``."""
    if not groups:
        return ""
    rest = ", ".join(groups[1:])
    return f"{groups[0]} ({rest})" if rest else groups[0]
