"""The staff login page with no staff user yet says how to make the first admin (issue 20, item 2)."""

from __future__ import annotations

from pathlib import Path

from appliance.config import parse_config
from appliance.core import Appliance
from appliance.site.service import Site
from webui import create_app

from conftest import HOST, free_port


def test_the_login_page_says_how_to_make_the_first_admin(tmp_path: Path) -> None:
    cfg = parse_config({"appliance": {"data_dir": str(tmp_path / "data")},
                        "dicom": {"bind": HOST, "port": 0, "tls_port": 0}, "hl7": {"port": 0},
                        "web": {"bind": HOST, "port": free_port()}})
    app = Appliance(cfg)
    app.start()
    try:
        flask = create_app(cfg, app, {"TESTING": True})
        site: Site = flask.extensions["appliance"].site
        client = flask.test_client()
        page = client.get("/staff/login").get_data(as_text=True)
        assert "No staff user exists yet" in page and "appliance user add NAME --role admin" in page
        site.users.add("boss", "a-long-enough-password-1", "admin")
        assert "No staff user exists yet" not in client.get("/staff/login").get_data(as_text=True)
        site.close()
    finally:
        app.stop()


def test_every_page_shows_sizes_with_the_cli_formatter(tmp_path: Path) -> None:
    """One formatter, one unit (issue 20, item 9): the web's ``size`` filter is the CLI's ``human_size``."""
    from appliance.units import human_size

    cfg = parse_config({"appliance": {"data_dir": str(tmp_path / "data")},
                        "dicom": {"bind": HOST, "port": 0, "tls_port": 0}, "hl7": {"port": 0},
                        "web": {"bind": HOST, "port": free_port()}})
    app = Appliance(cfg)
    app.start()
    try:
        flask = create_app(cfg, app, {"TESTING": True})
        assert flask.jinja_env.filters["size"] is human_size
        flask.extensions["appliance"].site.close()
    finally:
        app.stop()
