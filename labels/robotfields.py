"""Field values for the robots' own label templates: Epson ``REPLACE_FIELD`` files, Primera ``MergeField``s.

Robot template fields are single lines in files that the vendors' Windows services parse with
little tolerance: a line break ends the value, a comma or a quote has broken merge files before
(InterPacs release notes, specs/robots.md §6.8), and the Epson file must be in the bridge PC's ANSI
code page unless the site has proved that its TD Bridge reads UTF-8 (§8 question 3). Every value is
therefore flattened, stripped of those characters and fitted to the vendor's length limit here.
"""

from __future__ import annotations

import codecs
import logging
import unicodedata
from pathlib import Path

from labels.fields import DiscLabelFields, format_person_name, normalise_text
from labels.layout import LabelLayout
from labels.render import write_atomic
from labels.values import label_values, study_values

__all__ = [
    "EPSON_MAX_FIELDS",
    "EPSON_MAX_VALUE",
    "PRIMERA_MAX_VALUE",
    "clean_field_value",
    "epson_field_file",
    "primera_merge_fields",
    "write_epson_fields",
]

LOGGER = logging.getLogger(__name__)

#: TD Bridge rejects a REPLACE_FIELD file with a value over 1024 characters or over 255 fields (JDF1604).
EPSON_MAX_VALUE = 1024
EPSON_MAX_FIELDS = 255
#: PTBurn rejects a MergeField string over 260 characters (job error 39).
PRIMERA_MAX_VALUE = 260
_PER_STUDY = ("study_date", "study_description", "modalities", "accession_number")


def clean_field_value(value: str, replacements: dict[str, str], limit: int) -> str:
    """Make `value` safe as one robot template field.

    Line breaks, tabs and other control characters become spaces, each character in
    `replacements` is replaced (by default ``,`` -> space, ``"`` -> ``'``, ``=`` -> ``-``), runs of
    spaces collapse, and a value longer than `limit` is cut and ends in ``...``.
    """
    text = normalise_text("".join(replacements.get(ch, ch) for ch in normalise_text(value)))
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


def _encodable(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def _fit_encoding(name: str, candidates: list[str], encoding: str, warnings: list[str]) -> str:
    """First candidate the encoding can hold; else the first without accents; else with ``?`` for the rest."""
    first = candidates[0]
    for text in candidates:
        if _encodable(text, encoding):
            if text != first:
                warnings.append(f"Epson field {name}: {first!r} does not fit {encoding}; wrote {text!r}")
            return text
    stripped = _strip_accents(first)
    if _encodable(stripped, encoding):
        return stripped
    warnings.append(f"Epson field {name}: {first!r} does not fit {encoding}; unknown characters became '?'")
    return stripped.encode(encoding, errors="replace").decode(encoding)


def epson_field_file(fields: DiscLabelFields, layout: LabelLayout) -> tuple[bytes, tuple[str, ...]]:
    """Build the ``REPLACE_FIELD`` file for an Epson ``.tdd`` label template.

    Parameters
    ----------
    fields : DiscLabelFields
    layout : LabelLayout
        ``epson_fields`` maps our field names to the template's; ``epson_encoding`` is the file's
        encoding; ``field_replace`` the character replacements.

    Returns
    -------
    data : bytes
        ``name=value`` lines ending in CR LF, in the order of ``layout.epson_fields``. The fields of
        the first study carry the plain names (``studyDate``), later studies add their number
        (``studyDate2``, ``studyDate3``...), as Orthanc-Tools does. Every mapped field is written,
        empty if there is no value, so the template never prints its placeholder text.
    warnings : tuple of str
        Values that had to lose characters to fit the encoding. A name that does not fit keeps the
        first of its formatted groups that does (a Japanese name keeps its alphabetic form in cp1252).
    """
    names = layout.epson_field_names
    values = label_values(fields, layout)
    per_study = [study_values(s, layout) for s in fields.studies] or [dict.fromkeys(_PER_STUDY, "")]
    replacements = layout.replacements
    warnings: list[str] = []
    lines: list[str] = []
    for key, template_name in names.items():
        if key in _PER_STUDY:
            entries = [(template_name + (str(i + 1) if i else ""), study[key]) for i, study in enumerate(per_study)]
        else:
            entries = [(template_name, values.get(key, ""))]
        for name, value in entries:
            candidates = [value]
            if key == "patient_name":
                # The whole name first, then each group alone: the ideographic group of a Japanese
                # name cannot be written in cp1252, but its alphabetic group can.
                groups = format_person_name(fields.patient_name, layout.name_style, layout.name_groups)
                candidates += list(groups)
            cleaned = [clean_field_value(c, replacements, EPSON_MAX_VALUE) for c in candidates]
            lines.append(f"{name}={_fit_encoding(name, cleaned, layout.epson_encoding, warnings)}\r\n")
    if len(lines) > EPSON_MAX_FIELDS:
        warnings.append(f"{len(lines)} Epson fields: only the first {EPSON_MAX_FIELDS} are written")
        lines = lines[:EPSON_MAX_FIELDS]
    for warning in warnings:
        LOGGER.warning("disc label: %s", warning)
    # One encode for the whole file, so a codec with a byte-order mark ("utf-8-sig") writes it once.
    return "".join(lines).encode(codecs.lookup(layout.epson_encoding).name), tuple(warnings)


def write_epson_fields(fields: DiscLabelFields, layout: LabelLayout, path: Path) -> tuple[Path, tuple[str, ...]]:
    """Write :func:`epson_field_file` to `path` atomically; returns the path and the warnings."""
    data, warnings = epson_field_file(fields, layout)

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return write_atomic(path, write), warnings


def primera_merge_fields(fields: DiscLabelFields, layout: LabelLayout) -> tuple[str, ...]:
    """Values for the ``MergeField =`` lines of a Primera job that prints a SureThing ``.STD`` template.

    Parameters
    ----------
    fields : DiscLabelFields
    layout : LabelLayout
        ``primera_merge_order`` is the order of the template's merge fields.

    Returns
    -------
    tuple of str
        One cleaned value per entry of ``primera_merge_order``, at most 260 characters each; values
        of several studies are joined. PTBurn's Unicode build takes any characters, so no encoding
        is applied here; the robot driver writes the JRQ.
    """
    values = label_values(fields, layout)
    return tuple(
        clean_field_value(values.get(key, ""), layout.replacements, PRIMERA_MAX_VALUE)
        for key in layout.primera_merge_order
    )
