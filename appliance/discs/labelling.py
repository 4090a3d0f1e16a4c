"""Disc labels for jobs: the preview PDF and what each robot prints, rendered by :mod:`labels`.

Which files a robot needs is configuration, decided by the CLI when it builds the robots (:class:`LabelPlan`):
an Epson robot takes a ``REPLACE_FIELD`` file for its ``.tdd`` template (or, on proven TD Bridge versions, a
JPG); a Primera robot takes our JPG, or ``MergeField`` values for a SureThing ``.std`` template.
"""

from __future__ import annotations

import codecs
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.discs.content import Content, label_fields
from labels import LabelFormat, LabelLayout, primera_merge_fields, render_disc_label

LOGGER = logging.getLogger(__name__)

#: Merge data passed to the robot with the label files.
EPSON_MERGE = "epson"
PRIMERA_MERGE = "primera"


@dataclass(frozen=True)
class LabelPlan:
    """What to render for one robot.

    Attributes
    ----------
    formats : tuple of LabelFormat
        Files to write (the PDF preview is always added).
    merge : str
        ``"epson"``: send the values of the Epson field file as merge fields; ``"primera"``: send
        :func:`labels.primera_merge_fields` (for a ``.std`` template); ``""``: none.
    """

    formats: tuple[LabelFormat, ...] = (LabelFormat.PDF,)
    merge: str = ""


class DiscLabeler:
    """Render the label files of one disc.

    Parameters
    ----------
    layout : LabelLayout
        From the ``[labels]`` table.
    plans : mapping of str to LabelPlan
        Robot name -> what it needs; robots not listed get the PDF only.
    institution : str
    """

    def __init__(
        self,
        layout: LabelLayout,
        plans: Mapping[str, LabelPlan],
        institution: str = "",
        links: Callable[[str], str] | None = None,
    ) -> None:
        self.layout = layout
        self.plans = dict(plans)
        self.institution = institution
        #: Study Instance UID -> its patient link (the web site's); printed as a QR code with ``[labels] qr``.
        self.links = links

    def link(self, content: Content) -> str:
        """The patient link of the disc's first study ('' without links, with ``qr = false``, or on failure)."""
        first = next(iter(content.studies()), None)
        if self.links is None or not self.layout.qr or first is None:
            return ""
        try:
            return self.links(first.study_uid)
        except Exception as exc:  # the label is printed without the QR code rather than not at all
            LOGGER.warning("disc label of study %s: no patient link for the QR code: %s", first.study_uid, exc)
            return ""

    def render(
        self,
        robot: str,
        content: Content,
        number: int,
        count: int,
        with_viewer: bool,
        out_dir: Path,
        created: dt.date | None = None,
    ) -> dict[str, Any]:
        """Write the label files of disc ``number`` of ``count`` into ``out_dir``.

        Returns
        -------
        dict
            ``pdf``, ``jpg``, ``bmp``, ``fields_file`` (paths as strings, or None), ``fields`` (merge field name ->
            value, in template order) and ``warnings``.
        """
        plan = self.plans.get(robot, LabelPlan())
        fields = label_fields(content, number, count, self.institution, with_viewer, created, self.link(content))
        formats = dict.fromkeys((LabelFormat.PDF, *plan.formats))
        rendered = render_disc_label(fields, self.layout, out_dir, formats)
        merge: dict[str, str] = {}
        if plan.merge == EPSON_MERGE and rendered.epson_fields is not None:
            merge = parse_field_file(rendered.epson_fields.read_bytes(), self.layout.epson_encoding)
        elif plan.merge == PRIMERA_MERGE:
            values = primera_merge_fields(fields, self.layout)
            merge = dict(zip(self.layout.primera_merge_order, values, strict=True))
        jpg = rendered.primera_jpg or rendered.epson_jpg
        return {
            "pdf": _text(rendered.pdf),
            "jpg": _text(jpg),
            "bmp": _text(rendered.primera_bmp),
            "fields_file": _text(rendered.epson_fields),
            "fields": merge,
            "warnings": list(rendered.warnings),
        }


def parse_field_file(data: bytes, encoding: str) -> dict[str, str]:
    """Read back a ``name=value`` field file written by :func:`labels.epson_field_file`, keeping its order."""
    text = data.decode(codecs.lookup(encoding).name)
    out: dict[str, str] = {}
    for line in text.lstrip("\ufeff").split("\r\n"):
        name, sep, value = line.partition("=")
        if sep and name:
            out[name] = value
    return out


def _text(path: Path | None) -> str | None:
    return str(path) if path is not None else None
