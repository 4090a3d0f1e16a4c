"""The staff login page with no staff user yet says how to make the first admin (issue 20, item 2)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.config import parse_config
from appliance.core import Appliance
from appliance.site.service import Site
from webui import create_app

from conftest import HOST, free_port


@pytest.fixture
def site_without_users(tmp_path: Path) -> Iterator[Any]:
    """A web app on a fresh data folder: no staff user yet."""
    cfg = parse_config(
        {
            "appliance": {"data_dir": str(tmp_path / "data")},
            "dicom": {"bind": HOST, "port": 0, "tls_port": 0},
            "hl7": {"port": 0},
            "web": {"bind": HOST, "port": free_port()},
        }
    )
    app = Appliance(cfg)
    app.start()
    flask = create_app(cfg, app, {"TESTING": True})
    yield flask
    flask.extensions["appliance"].site.close()
    app.stop()


def test_the_login_page_says_how_to_make_the_first_admin(site_without_users: Any) -> None:
    site: Site = site_without_users.extensions["appliance"].site
    client = site_without_users.test_client()
    page = client.get("/staff/login").get_data(as_text=True)
    assert "No staff user exists yet" in page and "appliance user add NAME --role admin" in page
    site.users.add("boss", "a-long-enough-password-1", "admin")
    assert "No staff user exists yet" not in client.get("/staff/login").get_data(as_text=True)


def test_every_page_shows_sizes_with_the_cli_formatter(site_without_users: Any) -> None:
    """One formatter, one unit (issue 20, item 9): the web's ``size`` filter is the CLI's ``human_size``."""
    from appliance.units import human_size

    assert site_without_users.jinja_env.filters["size"] is human_size
