"""tls.cli: the text of ``appliance tls init`` / ``appliance tls show`` and their failures."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tls.certs import Paths, describe
from tls.cli import cmd_init, cmd_show
from tls.contexts import server_context
from tls.errors import IncorrectCertificateError, KeyMismatchError, NoCertificateError, PKIExistsError


def test_init_output_and_config_snippet(tmp_path: Path) -> None:
    out = cmd_init(tmp_path / "pki", ["pacs.example.org"], ["192.0.2.10"], country="DE")
    paths = Paths.in_dir(tmp_path / "pki")
    for path in paths:
        assert str(path) in out
    assert "pacs.example.org, 192.0.2.10" in out
    # the [tls] table printed is valid TOML and yields a working server context
    table = tomllib.loads(out[out.index("[tls]") :])["tls"]
    assert table == {
        "cert": str(paths.server_cert.resolve()),
        "key": str(paths.server_key.resolve()),
        "ca": str(paths.ca_cert.resolve()),
        "verify_peer": False,
    }
    server_context(table["cert"], table["key"], table["ca"], verify_peer=True)


def test_init_without_names_uses_this_host(tmp_path: Path) -> None:
    cmd_init(tmp_path, [], [])
    info = describe(tmp_path / "server.crt")
    assert "localhost" in info.dns_names and "127.0.0.1" in info.ip_addresses


def test_init_twice_fails_with_exit_code(tmp_path: Path) -> None:
    cmd_init(tmp_path, ["a"], [])
    with pytest.raises(PKIExistsError) as exc:
        cmd_init(tmp_path, ["a"], [])
    assert exc.value.exit_code != 0
    assert str(tmp_path / "ca.crt") in str(exc.value)
    cmd_init(tmp_path, ["b"], [], overwrite=True)
    assert describe(tmp_path / "server.crt").common_name == "b"


def test_show_with_matching_key(pki: Paths) -> None:
    out = cmd_show(pki.server_cert, pki.server_key)
    lines = out.splitlines()
    assert lines[0] == str(pki.server_cert)
    assert "  Subject:      CN=localhost,O=Test Org,C=FR" in lines
    assert "  Names (SAN):  DNS:localhost, IP:127.0.0.1" in lines
    assert "  Usage:        TLS server (serverAuth)" in lines
    assert "  Private key:  matches" in lines
    assert any(line.startswith("  Valid until:") and "days left" in line for line in lines)


def test_show_with_wrong_key_fails(pki: Paths) -> None:
    with pytest.raises(KeyMismatchError) as exc:
        cmd_show(pki.server_cert, pki.client_key)
    assert str(exc.value).startswith("Key does not match certificate")
    assert exc.value.exit_code == 2


def test_show_expired_and_bundle(pki: Paths, expired_server: Any, tmp_path: Path) -> None:
    out = cmd_show(expired_server.cert)
    assert "2020-01-31" in out and "(EXPIRED)" in out

    bundle = tmp_path / "chain.pem"
    bundle.write_bytes(pki.server_cert.read_bytes() + pki.ca_cert.read_bytes())
    out = cmd_show(bundle, now=dt.datetime.now(dt.UTC))
    assert f"{bundle} (certificate 1 of 2)" in out and f"{bundle} (certificate 2 of 2)" in out
    assert "Usage:        CA" in out


def test_show_errors(tmp_path: Path) -> None:
    with pytest.raises(NoCertificateError):
        cmd_show(tmp_path / "none.crt")
    junk = tmp_path / "junk.crt"
    junk.write_text("junk")
    with pytest.raises(IncorrectCertificateError) as exc:
        cmd_show(junk)
    assert exc.value.exit_code == 2
