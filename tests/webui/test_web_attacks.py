"""Attacks on the web site found by the hostile-input run (issue 15), each reproduced and bounded.

The attack clients are raw sockets or plain HTTP clients on loopback, bounded in count and time.
"""

from __future__ import annotations

import ssl
import urllib.request
from pathlib import Path

from appliance import security
from appliance.cli.web import WebService
from appliance.config import parse_config
from appliance.core import Appliance

from conftest import HOST, free_port


def _get(url: str, context: ssl.SSLContext | None = None, timeout: float = 10) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        return response.status, response.read()


# -- [tls] verify_peer and the patient site (finding 12) ----------------------------------------------------

def test_patient_https_site_needs_no_client_certificate(tmp_path: Path) -> None:
    """With ``verify_peer = true`` DICOM and HL7 demand client certificates; the web site never does."""
    cfg = parse_config({"appliance": {"data_dir": str(tmp_path / "data")},
                        "dicom": {"bind": HOST, "port": 0, "tls_port": 0},
                        "hl7": {"port": 0}, "tls": {"verify_peer": True},
                        "web": {"bind": HOST, "port": free_port(), "https": True}})
    app = Appliance(cfg)
    app.start()
    web = WebService(app, cfg)
    web.start()
    try:
        assert security.server_context(cfg).verify_mode == ssl.CERT_REQUIRED  # DICOM / HL7 TLS ports
        context = ssl.create_default_context(cafile=str(tmp_path / "data" / "tls-demo" / "ca.crt"))
        context.check_hostname = False
        # A patient's browser: trusts the server, has no certificate of its own.
        status, body = _get(f"https://{HOST}:{web.server.port}/", context)
        assert status == 200 and b"link" in body.lower()
    finally:
        web.stop()
        app.stop()
