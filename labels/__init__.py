"""Disc labels and patient token slips.

The package takes plain field values and writes files; it knows nothing of the DICOM store or the
robots. Start with :func:`render_disc_label` and :func:`render_token_slip`, configured by
:meth:`LabelLayout.from_options` from the ``[labels]`` table of the config (see docs/labels.md).
"""

from labels.disc import ComposedLabel, LabelFormat, RenderedLabel, compose_disc_label, render_disc_label
from labels.fields import DiscLabelFields, LabelStudy, TokenSlipFields, format_da, format_person_name
from labels.layout import FIELD_NAMES, LabelConfigError, LabelLayout
from labels.robotfields import epson_field_file, primera_merge_fields
from labels.slip import SLIP_PAPERS, render_token_slip

__all__ = [
    "FIELD_NAMES",
    "SLIP_PAPERS",
    "ComposedLabel",
    "DiscLabelFields",
    "LabelConfigError",
    "LabelFormat",
    "LabelLayout",
    "LabelStudy",
    "RenderedLabel",
    "TokenSlipFields",
    "compose_disc_label",
    "epson_field_file",
    "format_da",
    "format_person_name",
    "primera_merge_fields",
    "render_disc_label",
    "render_token_slip",
]
