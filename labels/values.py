"""Field values as text: the one place that turns `DiscLabelFields` into the strings every output shows."""

from __future__ import annotations

from labels.fields import (
    DiscLabelFields,
    LabelStudy,
    format_da,
    format_date,
    format_person_name,
    join_name_groups,
    normalise_text,
)
from labels.layout import LabelLayout

__all__ = ["label_values", "study_values"]


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(item for item in items if item))


def study_values(study: LabelStudy, layout: LabelLayout) -> dict[str, str]:
    """The per-study text fields of one study."""
    return {
        "study_date": format_da(study.date, layout.date_format),
        "modalities": "/".join(_unique([normalise_text(m).upper() for m in study.modalities])),
        "study_description": normalise_text(study.description),
        "accession_number": normalise_text(study.accession_number),
    }


def label_values(fields: DiscLabelFields, layout: LabelLayout, name_groups: tuple[str, ...] = ()) -> dict[str, str]:
    """Every text field of a disc label as one string each, before captions are added.

    Parameters
    ----------
    fields : DiscLabelFields
    layout : LabelLayout
        Supplies the name style, the date format and the captions of ``content_type`` and
        ``disc_number``.
    name_groups : tuple of str, optional
        Already formatted PN groups to use instead of formatting ``fields.patient_name`` again
        (the disc drawing drops groups that no installed font can draw).

    Returns
    -------
    dict
        Keys are the text names of :data:`labels.layout.FIELD_NAMES` plus ``token_url``. Values of
        several studies are joined without repeats (``; ``, modalities ``/``); empty values stay empty.
    """
    groups = name_groups or format_person_name(fields.patient_name, layout.name_style, layout.name_groups)
    per_study = [study_values(s, layout) for s in fields.studies]
    joined = {
        key: "; ".join(_unique([v[key] for v in per_study]))
        for key in ("study_date", "study_description", "accession_number")
    }
    joined["modalities"] = "/".join(_unique([m for v in per_study for m in v["modalities"].split("/")]))
    return {
        "institution": normalise_text(fields.institution),
        "department": normalise_text(fields.department),
        "patient_name": join_name_groups(groups),
        "patient_id": normalise_text(fields.patient_id),
        "birth_date": format_da(fields.birth_date, layout.date_format),
        **joined,
        "content_type": layout.caption("dicom_viewer" if fields.with_viewer else "dicom_only"),
        "disc_number": layout.caption("disc_number").format(n=fields.disc_number, m=fields.disc_count),
        "created": format_date(fields.creation_date, layout.date_format),
        "token_url": fields.token_url.strip(),
    }
