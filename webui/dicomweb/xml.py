"""DICOM JSON objects as the Native DICOM Model XML of PS3.19 A.1 (``application/dicom+xml``)."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr

from pydicom.datadict import keyword_for_tag

_PN_PARTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")


def _attribute(tag: str, element: dict[str, Any]) -> str:
    vr = element.get("vr", "UN")
    keyword = keyword_for_tag(int(tag, 16)) or ""
    head = f"<DicomAttribute tag={quoteattr(tag)} vr={quoteattr(vr)}"
    head += f" keyword={quoteattr(keyword)}>" if keyword else ">"
    body = []
    if "BulkDataURI" in element:
        body.append(f"<BulkData uri={quoteattr(element['BulkDataURI'])}/>")
    elif "InlineBinary" in element:
        body.append(f"<InlineBinary>{escape(element['InlineBinary'])}</InlineBinary>")
    for number, value in enumerate(element.get("Value", []), start=1):
        if vr == "SQ":
            body.append(f'<Item number="{number}">{_items(value)}</Item>')
        elif vr == "PN":
            groups = []
            for group in ("Alphabetic", "Ideographic", "Phonetic"):
                text = value.get(group) if isinstance(value, dict) else None
                if text:
                    parts = str(text).split("^")
                    inner = "".join(
                        f"<{name}>{escape(part)}</{name}>" for name, part in zip(_PN_PARTS, parts, strict=False) if part
                    )
                    groups.append(f"<{group}>{inner}</{group}>")
            body.append(f'<PersonName number="{number}">{"".join(groups)}</PersonName>')
        else:
            body.append(f'<Value number="{number}">{escape(str(value))}</Value>')
    return head + "".join(body) + "</DicomAttribute>"


def _items(dataset: dict[str, Any]) -> str:
    return "".join(_attribute(tag, element) for tag, element in sorted(dataset.items()))


def to_xml(dataset: dict[str, Any]) -> bytes:
    """One data set (DICOM JSON object) as a ``NativeDicomModel`` document, UTF-8."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<NativeDicomModel xml:space="preserve">'
        + _items(dataset)
        + "</NativeDicomModel>\n"
    ).encode("utf-8")
