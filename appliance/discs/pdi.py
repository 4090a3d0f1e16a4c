"""The human side of an IHE PDI disc: README.TXT, INDEX.HTM and the optional viewer.

PDI asks for a README.TXT on every disc; INDEX.HTM lets anyone with a web browser see what the disc holds and
start the viewer. Neither relies on autorun: PDI tells readers not to start software from media, and Windows no
longer does for optical discs. Both files are written in UTF-8 with CR LF line ends so Notepad shows them right.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import os
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from appliance.discs.content import Content, StudyInfo
from appliance.names import display_name
from labels import format_da

LOGGER = logging.getLogger(__name__)

README = "README.TXT"
INDEX = "INDEX.HTM"
#: Names at the disc root that belong to the DICOM File-set and the PDI files; a viewer may not replace them.
RESERVED = {"DICOMDIR", README, INDEX}


@dataclass(frozen=True)
class DiscInfo:
    """Facts about one disc that README.TXT and INDEX.HTM print."""

    fileset_id: str
    disc_number: int
    disc_count: int
    profile: str
    created: dt.datetime
    application: str
    institution: str = ""
    contact: str = ""
    viewer_entry: str = ""
    has_viewer: bool = False


def person(name: str) -> str:
    """A DICOM PN as every page of the appliance shows it (:func:`appliance.names.display_name`)."""
    return display_name(name)


def _study_line(study: StudyInfo) -> str:
    parts = [
        format_da(study.date) or "(no date)",
        "/".join(study.modalities) or "?",
        study.description or "(no description)",
    ]
    extra = f"{len(study.series)} series, {study.instance_count} images"
    if study.accession:
        extra += f", accession {study.accession}"
    return "  ".join(parts) + f"  ({extra})"


def readme_text(content: Content, info: DiscInfo) -> str:
    """The README.TXT of a disc."""
    lines = ["MEDICAL IMAGES ON THIS DISC (DICOM)", "=" * 36, ""]
    for patient in content.patients:
        born = format_da(patient.birth_date)
        lines.append(
            f"Patient:  {person(patient.name)}   ID {patient.patient_id or '(none)'}"
            + (f"   born {born}" if born else "")
        )
        lines.extend(f"  Study:  {_study_line(study)}" for study in patient.studies)
    lines += [
        "",
        f"Disc:     {info.disc_number} of {info.disc_count}   (File-set ID {info.fileset_id})",
        f"Created:  {info.created:%Y-%m-%d %H:%M}"
        + (f" by {info.institution}" if info.institution else "")
        + f" with {info.application}",
    ]
    if info.contact:
        lines.append(f"Contact:  {info.contact}")
    if info.disc_count > 1:
        lines += [
            "",
            f"The images of this patient did not fit on one disc; this is disc {info.disc_number} of "
            f"{info.disc_count}.",
            "Each disc can be read on its own; keep the discs together.",
        ]
    lines += ["", "HOW TO LOOK AT THE IMAGES", "-------------------------"]
    if info.has_viewer:
        entry = info.viewer_entry or "the viewer program on this disc"
        lines.append(f"* Start {entry} from this disc. It does not start by itself when the disc is inserted.")
    either = "Or open" if info.has_viewer else "Open"
    lines += [
        f"* {either} the file DICOMDIR, in the top folder of this disc, with any DICOM viewer or workstation",
        "  (import the disc there). The DICOM files have no file name extension, as the DICOM standard requires.",
        "* Or open INDEX.HTM in a web browser to see what the disc holds"
        + (" and to start the viewer." if info.has_viewer else "."),
        "",
        "WHAT IS ON THIS DISC",
        "--------------------",
        "DICOMDIR     the directory of the DICOM files (DICOM PS3.10 media, profile " + info.profile + ")",
        "PT000000\\    the DICOM files: one folder per patient, study and series",
        f"{README}   this file",
        f"{INDEX}    the same list for a web browser",
    ]
    if info.has_viewer:
        lines.append("(others)     the viewer program and its files")
    lines += [
        "",
        "The images are a copy made for the patient and for other physicians. The originals are kept by the",
        "institution that made this disc. This disc follows the IHE Portable Data for Imaging (PDI) profile.",
    ]
    return "\r\n".join(lines) + "\r\n"


def index_html(content: Content, info: DiscInfo) -> str:
    """The INDEX.HTM of a disc: patient, studies and series, and a link to the viewer."""
    esc = html.escape
    rows = []
    for patient in content.patients:
        born = format_da(patient.birth_date)
        rows.append(
            f"<h2>{esc(person(patient.name))}</h2>\n<p>Patient ID {esc(patient.patient_id or '(none)')}"
            + (f", born {esc(born)}" if born else "")
            + "</p>"
        )
        for study in patient.studies:
            rows.append(
                f"<h3>{esc(format_da(study.date) or '(no date)')} &#8212; "
                f"{esc(study.description or '(no description)')}</h3>"
            )
            if study.accession:
                rows.append(f"<p>Accession number {esc(study.accession)}</p>")
            rows.append("<table>\n<tr><th>Series</th><th>Modality</th><th>Description</th><th>Images</th></tr>")
            rows.extend(
                f"<tr><td>{esc(s.number)}</td><td>{esc(s.modality)}</td><td>{esc(s.description)}</td>"
                f"<td>{len(s.instances)}</td></tr>"
                for s in study.series
            )
            rows.append("</table>")
    if info.has_viewer and info.viewer_entry:
        href = esc(urllib.parse.quote(info.viewer_entry.replace(os.sep, "/")), quote=True)
        viewer = (
            f'<p class="viewer"><a href="{href}">Open the viewer</a> ({esc(info.viewer_entry)}). '
            "It does not start by itself when the disc is inserted.</p>"
        )
    elif info.has_viewer:
        viewer = '<p class="viewer">A viewer program is on this disc; see README.TXT.</p>'
    else:
        viewer = '<p class="viewer">Open the file DICOMDIR with a DICOM viewer to see the images.</p>'
    made = f"{info.created:%Y-%m-%d}" + (f" by {esc(info.institution)}" if info.institution else "")
    text = "\n".join(
        [
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
            '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">',
            '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">',
            "<head>",
            '<meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />',
            f"<title>Medical images, disc {info.disc_number} of {info.disc_count}</title>",
            '<style type="text/css">body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}'
            "td,th{border:1px solid #999;padding:.2em .6em;text-align:left}.viewer{font-size:1.2em}</style>",
            "</head>",
            "<body>",
            f"<h1>Medical images (DICOM), disc {info.disc_number} of {info.disc_count}</h1>",
            viewer,
            *rows,
            f'<p>Made {made}. File-set {esc(info.fileset_id)}. See <a href="{README}">{README}</a>.</p>',
            "</body>",
            "</html>",
        ]
    )
    # CR LF throughout, also inside the table rows built above (a disc is read on Windows too).
    return text.replace("\r\n", "\n").replace("\n", "\r\n") + "\r\n"


def write_pdi_files(root: Path, content: Content, info: DiscInfo) -> None:
    """Write README.TXT and INDEX.HTM into a disc's root."""
    (root / README).write_bytes(readme_text(content, info).encode("utf-8"))
    (root / INDEX).write_bytes(index_html(content, info).encode("utf-8"))


def copy_viewer(viewer_dir: Path, root: Path) -> int:
    """Copy the viewer folder's content into a disc's root (hard links where possible); return its bytes.

    A viewer file named like the File-set's own files (DICOMDIR, README.TXT, INDEX.HTM, the ``PT...`` folders)
    is left out with a warning: the disc's DICOM content always wins.
    """
    taken = {name.upper() for name in os.listdir(root)} | RESERVED
    total = 0
    for entry in sorted(os.scandir(viewer_dir), key=lambda e: e.name):
        if entry.name.upper() in taken:
            LOGGER.warning("viewer file %s is left out: the disc root already has %s", entry.path, entry.name)
            continue
        target = root / entry.name
        if entry.is_dir():
            shutil.copytree(entry.path, target, copy_function=_link_or_copy)
            total += sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(target) for f in files)
        else:
            _link_or_copy(entry.path, str(target))
            total += target.stat().st_size
    return total


def viewer_size(viewer_dir: Path) -> int:
    """Bytes of a viewer folder, counted in whole sectors as on the disc (for planning)."""
    total = 0
    for dirpath, _, filenames in os.walk(viewer_dir):
        total += 2 * 2048  # the folder in both name spaces
        total += sum(-(-os.path.getsize(os.path.join(dirpath, f)) // 2048) * 2048 + 160 for f in filenames)
    return total


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
