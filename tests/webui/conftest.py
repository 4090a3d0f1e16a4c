"""Fixtures of the web tests: a core with synthetic studies, the Flask app, users, a served app, a browser."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian

from appliance.cli.web import build_site
from appliance.config import Config, parse_config
from appliance.core import Appliance
from appliance.site.service import Site
from webui import create_app

import dicomdata
from conftest import HOST, free_port

ADMIN = ("admin", "admin-password-1")
DESK = ("desk", "desk-password-1")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "webui"
_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def phantom(rows: int, columns: int, number: int) -> np.ndarray:
    """A synthetic CT-like slice in HU (air, a body ellipse, two "lungs", a "spine"), varying with ``number``."""
    y, x = np.mgrid[-1 : 1 : rows * 1j, -1 : 1 : columns * 1j]
    image = np.full((rows, columns), -1000.0)
    image[(x / 0.85) ** 2 + (y / 0.65) ** 2 < 1] = 40.0
    r = 0.22 + 0.03 * np.sin(number)
    image[((x + 0.38) / r) ** 2 + (y / 0.42) ** 2 < 1] = -800.0
    image[((x - 0.38) / r) ** 2 + (y / 0.42) ** 2 < 1] = -800.0
    image[(x / 0.12) ** 2 + ((y - 0.4) / 0.12) ** 2 < 1] = 700.0
    return (image + 1024).astype(np.uint16)


def store(app: Appliance, instances: list[dicomdata.Instance], realistic: bool = False) -> None:
    """Store synthetic instances through the core, as C-STORE would (no network needed).

    ``realistic`` gives them CT-like pixels with rescale and window tags, for screenshots worth looking at.
    """
    for inst in instances:
        ds = inst.dataset()
        if realistic:
            ds.PixelData = phantom(inst.rows, inst.columns, inst.instance_number).tobytes()
            ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
            ds.WindowCenter, ds.WindowWidth = 40, 400
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_dataset(fp, ds)
        app.store(
            fp.getvalue(),
            ExplicitVRLittleEndian,
            ds.SOPClassUID,
            ds.SOPInstanceUID,
            "MODALITY",
            app.config.dicom.ae_title,
            "test",
        )


def web_config(data_dir: Path, **web: Any) -> Config:
    """A configuration for web tests; ``web`` overrides [web] keys."""
    table: dict[str, Any] = {"bind": HOST, "port": free_port(), "rate_limit": 5, "rate_window": 60}
    table.update(web)
    return parse_config(
        {
            "appliance": {"data_dir": str(data_dir), "institution": "St. Example Hospital", "log_level": "INFO"},
            "dicom": {"bind": HOST, "port": 0, "tls_port": 0, "free_space_limit_mb": 1},
            "hl7": {"port": 0, "station_aets": {"CT": "CT1", "MR": "MR1"}},
            "web": table,
        }
    )


def csrf_of(text: str) -> str:
    """The CSRF token in a page's forms."""
    match = _CSRF_RE.search(text)
    assert match, "page has no CSRF token"
    return html.unescape(match.group(1))


@dataclass
class WebEnv:
    """A core with studies, its Site and Flask app."""

    cfg: Config
    app: Appliance
    site: Site
    flask: Any
    studies: dict[str, str] = field(default_factory=dict)  # name -> Study Instance UID

    def client(self) -> Any:
        return self.flask.test_client()

    def token(self, name: str) -> str:
        return self.site.tokens.token(self.studies[name])

    def login(self, client: Any, who: tuple[str, str] = ADMIN) -> Any:
        page = client.get("/staff/login")
        response = client.post(
            "/staff/login",
            data={"name": who[0], "password": who[1], "csrf_token": csrf_of(page.get_data(as_text=True))},
        )
        assert response.status_code == 302, response.get_data(as_text=True)
        return response

    def csrf(self, client: Any, path: str = "/staff/studies") -> str:
        return csrf_of(client.get(path).get_data(as_text=True))

    @staticmethod
    def csrf_of(text: str) -> str:
        return csrf_of(text)


def make_env(tmp_path: Path, **web: Any) -> WebEnv:
    """Build a web environment with the standard studies and users."""
    cfg = web_config(tmp_path / "data", **web)
    app = Appliance(cfg)
    app.start()
    # Wired as `appliance serve` wires it outside the running publishing: the robots and C-ECHO.
    site: Site = build_site(app, cfg, robots=True)
    flask = create_app(overrides={"TESTING": True}, site=site)
    site.attach()
    today = dt.date.today()
    recent = today.strftime("%Y%m%d")
    old = (today - dt.timedelta(days=400)).strftime("%Y%m%d")
    env = WebEnv(cfg, app, site, flask)
    ct = dicomdata.study(
        "PID100",
        "SMITH^ANNA",
        ("CT", "CT"),
        3,
        study_date=recent,
        accession="ACC-CT",
        study_description="CT THORAX",
        rows=96,
        columns=96,
    )
    mr = dicomdata.study(
        "PID200", "JONES^BOB", ("MR",), 2, study_date=recent, accession="ACC-MR", study_description="MR KNEE"
    )
    expired = dicomdata.study(
        "PID300",
        "OLD^OSCAR",
        ("CR",) if "CR" in dicomdata.SOP_CLASSES else ("OT",),
        1,
        study_date=old,
        accession="ACC-OLD",
        study_description="CHEST XRAY",
    )
    store(app, ct, realistic=True)
    store(app, mr + expired)
    env.studies = {"ct": ct[0].study_uid, "mr": mr[0].study_uid, "expired": expired[0].study_uid}
    site.users.add(*ADMIN, "admin")
    site.users.add(*DESK, "frontdesk")
    return env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[WebEnv]:
    """Two recent studies (CT with 2 series x 3, MR 1 x 2) and one whose link expired; an admin and a desk user."""
    web = make_env(tmp_path)
    yield web
    web.site.close()
    web.app.stop()


@pytest.fixture
def env_factory(tmp_path: Path) -> Iterator[Any]:
    """Build environments with [web] overrides; all are stopped at the end."""
    made: list[WebEnv] = []

    def build(**web: Any) -> WebEnv:
        made.append(make_env(tmp_path / f"env{len(made)}", **web))
        return made[-1]

    yield build
    for web in made:
        web.site.close()
        web.app.stop()


@pytest.fixture
def client(env: WebEnv) -> Any:
    """A Flask test client."""
    return env.client()


@pytest.fixture
def admin(env: WebEnv) -> Any:
    """A test client signed in as admin."""
    c = env.client()
    env.login(c, ADMIN)
    return c


@pytest.fixture
def desk(env: WebEnv) -> Any:
    """A test client signed in as front desk."""
    c = env.client()
    env.login(c, DESK)
    return c


@pytest.fixture(name="store")
def store_fixture() -> Any:
    """The :func:`store` helper, for tests that add studies."""
    return store


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Live:
    """A web environment served by waitress on loopback."""

    env: WebEnv
    url: str


@pytest.fixture
def live(env_factory: Any) -> Iterator[Any]:
    """Serve environments over HTTP with waitress; call with [web] overrides."""
    from webui.server import WebServer

    servers: list[WebServer] = []

    def serve(**web: Any) -> Live:
        env = env_factory(**web)
        server = WebServer(env.flask, HOST, 0, threads=4)
        server.start()
        servers.append(server)
        return Live(env, server.url)

    yield serve
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium, driven by Playwright."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium is not installed (scripts/test.sh installs it)")
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def shot() -> Any:
    """Save a full-page screenshot as a test artefact: ``shot(page, "name")``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str, full_page: bool = True) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take
