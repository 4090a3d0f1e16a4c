"""Disc labels carry the patient link's QR code (issue 20, item 5): decoded with zbarimg from the rendered label,
and in the robots' label data (Epson tokenUrl, Primera merge field)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from publishing_support import publish_config

from appliance.core import Appliance
from appliance.dicom.server import DicomNode
from appliance.discs.content import load_content
from appliance.discs.jobs import JobState
from appliance.discs.labelling import EPSON_MERGE, PRIMERA_MERGE, DiscLabeler, LabelPlan
from appliance.discs.publishing import build_publishing, label_layout
from appliance.site.service import Site
from labels import LabelFormat

import dicomdata
from conftest import HOST, dcmtk, wait_until


def _qr(image: Path) -> list[str]:
    done = subprocess.run(
        ["zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(image)], capture_output=True, timeout=60
    )
    return [line for line in done.stdout.decode().splitlines() if line]


@pytest.mark.parametrize(("suffix", "qr"), [("_P", True), ("_P", False)], ids=["qr", "qr-off"])
def test_a_burned_disc_label_carries_the_patient_link(tmp_path: Path, suffix: str, qr: bool) -> None:
    cfg = publish_config(tmp_path / "var")
    if not qr:
        cfg = replace(cfg, labels={"qr": False})
    app = Appliance(cfg)
    app.start()
    site = Site(app)
    site.attach()  # every stored study gets its token, as in `appliance serve`
    publishing = build_publishing(app, cfg, links=site.links.link)
    node = DicomNode(app)
    node.start()
    publishing.start()
    try:
        study = dicomdata.study("PQR1", "QR^PATIENT", ("CT",), 2)
        folder = tmp_path / "study"
        folder.mkdir()
        for inst in study:
            inst.write(folder)
        dcmtk(
            "storescu", "-aec", cfg.dicom.ae_title + suffix, "+sd", HOST, str(cfg.dicom.port), str(folder), check=True
        )
        wait_until(lambda: publishing.jobs.recent() and publishing.jobs.recent()[0].state == JobState.DONE, timeout=90)
        job = publishing.jobs.recent()[0]
        disc = cfg.data_dir / "discs" / str(job.id) / "disc1"
        labels = sorted(disc.rglob("*.jpg")) + sorted(disc.rglob("*.JPG"))
        assert labels, sorted(p.name for p in disc.rglob("*"))
        link = site.links.link(study[0].study_uid)
        assert _qr(labels[0]) == ([link] if qr else [])  # the label image the Primera robot prints
        # The robots' merge data of the same disc, as a site template (.tdd / .std) would receive it.
        content, _ = load_content(app.db, publishing.jobs.instances(job.id))
        labeler = DiscLabeler(
            label_layout(cfg),
            {
                "epson": LabelPlan((LabelFormat.PDF, LabelFormat.EPSON_FIELDS), EPSON_MERGE),
                "primera": LabelPlan((LabelFormat.PDF,), PRIMERA_MERGE),
            },
            links=site.links.link,
        )
        epson = labeler.render("epson", content, 1, 1, False, tmp_path / "epson")["fields"]
        primera = labeler.render("primera", content, 1, 1, False, tmp_path / "primera")["fields"]
        assert epson["tokenUrl"] == (link if qr else "")
        assert primera["token_url"] == (link if qr else "")
    finally:
        publishing.stop()
        node.stop(grace=2.0)
        site.close()
        app.stop()
