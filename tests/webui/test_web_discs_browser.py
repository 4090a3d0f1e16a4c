"""End to end in headless Chromium with disc publishing running on simulated robots: burn, watch the burn queue
refresh itself until the disc is done, retry a failed job, burn again; the robots page; an HL7-made worklist item.

Screenshots go to test-artifacts/webui/. Every wait is for a state, with a deadline (no timing asserts).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hl7support
import pytest
from publishing_support import robot_table

from appliance.config import parse_config
from appliance.core import Appliance
from appliance.discs.publishing import build_publishing
from hl7.handlers import MessageProcessor
from webui import create_app
from webui.server import WebServer

import dicomdata
from conftest import HOST, free_port

pytestmark = pytest.mark.browser
WAIT_MS = 90_000
ADMIN = ("admin", "admin-password-1")
DESK = ("desk", "desk-password-1")


class PublishingSite:
    """An appliance with disc publishing on two fast simulated robots and its web site on loopback."""

    def __init__(self, data_dir: Path, store: Any) -> None:
        robots = {"epson": robot_table(data_dir, "epson"), "primera": robot_table(data_dir, "primera")}
        self.cfg = parse_config(
            {
                "appliance": {"data_dir": str(data_dir), "institution": "St. Example Hospital"},
                "dicom": {"bind": HOST, "port": 0, "tls_port": 0, "free_space_limit_mb": 1},
                "hl7": {"port": 0, "station_aets": {"CT": "CT1", "MR": "MR1"}},
                "burn": {"delay": 2.0, "poll_interval": 0.1, "staging_free_space_mb": 0},
                "robots": copy.deepcopy(robots),
                "web": {"bind": HOST, "port": free_port()},
            }
        )
        self.app = Appliance(self.cfg)
        self.app.start()
        self.flask = create_app(self.cfg, self.app, {"TESTING": True})
        self.site = self.flask.extensions["appliance"].site
        self.site.attach()
        self.publishing = build_publishing(self.app, self.cfg, housekeeping_interval=0.2)
        self.site.discs.use_publishing(self.publishing)
        self.publishing.start()
        ct = dicomdata.study(
            "PID100", "SMITH^ANNA", ("CT",), 2, accession="ACC-CT", study_description="CT THORAX", rows=64, columns=64
        )
        store(self.app, ct, realistic=True)
        self.study = ct[0].study_uid
        self.site.users.add(*ADMIN, "admin")
        self.site.users.add(*DESK, "frontdesk")
        self.server = WebServer(self.flask, HOST, 0, threads=4)
        self.server.start()
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()
        self.publishing.stop()
        self.site.close()
        self.app.stop()


@pytest.fixture
def publishing_site(tmp_path: Path, store: Any) -> Iterator[PublishingSite]:
    site = PublishingSite(tmp_path / "data", store)
    yield site
    site.stop()


def sign_in(page: Any, url: str, who: tuple[str, str]) -> None:
    page.goto(url + "/staff/login")
    page.get_by_label("User name").fill(who[0])
    page.get_by_label("Password").fill(who[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/staff/studies")


def test_burn_watch_retry_reburn_robots_and_worklist(publishing_site, browser, shot) -> None:
    site = publishing_site
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, site.url, DESK)
    page.get_by_label("Patient name").fill("smi")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="SMITH, ANNA").click()
    page.wait_for_selector("#patient-name")
    # The first burn fails on the robot (an injected drive error), to show the reason and retry it.
    site.publishing.simulators["epson"].inject("drive_error")
    page.get_by_label("Robot").select_option("epson")
    page.get_by_label("Copies").fill("1")
    shot(page, "staff-study-burn")
    page.get_by_role("button", name="Burn", exact=True).click()
    page.wait_for_selector(".flash-success")
    assert "Disc job 1 queued on epson (1 copy)." in page.locator(".flash").inner_text()
    page.get_by_role("link", name="Watch it in the burn queue").click()
    page.wait_for_url("**/staff/jobs#job-1")
    # No reload from here on: only the page's script can show the new states.
    page.wait_for_selector("#job-1[data-state='failed']", timeout=WAIT_MS)
    assert "Failed" in page.locator("#job-1").inner_text()
    shot(page, "staff-jobs-failed")
    page.get_by_role("button", name="Retry job 1").click()
    page.wait_for_selector(".flash-success")
    assert "Job 1 is queued again." in page.locator(".flash").inner_text()
    page.wait_for_selector("#job-1[data-state='done']", timeout=WAIT_MS)
    row = page.locator("#job-1").inner_text()
    assert "Done" in row and "SMITH, ANNA" in row and "epson" in row
    # The live refresh shows name and size as the server-drawn page does (one name rule, one size formatter).
    live_size = page.locator("#job-1 td.num.nowrap").inner_text()
    drawn = page.request.get(site.url + "/staff/jobs").text()
    assert live_size.endswith((" kB", " MB")) and f'<td class="num nowrap">{live_size}</td>' in drawn
    assert page.get_by_role("link", name="Label of job 1").count() == 1
    page.get_by_role("button", name="Burn again job 1").click()
    page.wait_for_selector(".flash-success")
    assert "Job 2 queued: job 1 burned again." in page.locator(".flash").inner_text()
    page.wait_for_selector("#job-2[data-state='done']", timeout=WAIT_MS)
    shot(page, "staff-jobs")
    label = page.request.get(site.url + "/staff/jobs/1/label.pdf")
    assert label.ok and label.body().startswith(b"%PDF")

    page.get_by_role("link", name="Robots").click()
    page.wait_for_selector("#robot-epson[data-online='1']", timeout=WAIT_MS)
    page.wait_for_selector("#robot-epson meter")
    assert "Bridge online" in page.locator("#robot-epson").inner_text()
    shot(page, "staff-robots")

    ack = MessageProcessor(site.app, site.cfg.hl7)(hl7support.orm().encode("latin-1"), "127.0.0.1")
    assert ack is not None and b"|AA|" in ack
    page.get_by_role("link", name="Worklist").click()
    page.wait_for_selector("#worklist .wl-step")
    assert "SPS-1" in page.locator("#worklist").inner_text()
    shot(page, "staff-worklist")
    page.get_by_label("Modality").fill("CT")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_selector("#worklist .empty")

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(site.url + "/staff/jobs")
    shot(page, "staff-jobs-phone")
    page.close()
