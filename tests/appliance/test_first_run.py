"""First run (issue 20, items 1 and 2): patient links name an address a phone can reach, and the console leads a
person to the staff UI and to the first admin."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
from pathlib import Path

from appliance.site.links import interface_addresses, machine_address

from conftest import HOST, free_port, wait_until


def test_links_name_the_first_reachable_interface_address() -> None:
    addresses = interface_addresses()
    assert "127.0.0.1" in addresses  # the list is read from the kernel, loopback included
    reachable = [
        a for a in addresses if not (ipaddress.ip_address(a).is_loopback or ipaddress.ip_address(a).is_link_local)
    ]
    chosen = machine_address()
    if reachable:
        assert chosen.strip("[]") == sorted(reachable, key=lambda a: ipaddress.ip_address(a).version)[0]
    else:
        assert chosen == socket.gethostname()


def test_loopback_and_link_local_are_never_named() -> None:
    assert machine_address(["127.0.0.1", "::1", "fe80::1", "169.254.3.4"]) == socket.gethostname()
    assert machine_address(["127.0.1.1", "fd00::2"]) == "[fd00::2]"  # Debian's /etc/hosts address is loopback
    assert machine_address(["::1", "2001:db8::5", "192.0.2.7"]) == "192.0.2.7"  # IPv4 first


def test_the_console_names_the_staff_ui_and_how_to_make_the_first_admin(tmp_path: Path) -> None:
    web = free_port()
    config = tmp_path / "appliance.toml"
    config.write_text(
        f'[appliance]\ndata_dir = "{tmp_path / "var"}"\n'
        f'[dicom]\nbind = "{HOST}"\nport = {free_port()}\ntls_port = 0\nfree_space_limit_mb = 1\n'
        f'[hl7]\nport = 0\n[web]\nbind = "{HOST}"\nport = {web}\n'
    )
    log = tmp_path / "console.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
        try:
            wait_until(lambda: "no staff user yet" in log.read_text(), timeout=60)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    text = log.read_text()
    assert f"staff web UI: http://{HOST}:{web}/staff/" in text
    assert "appliance user add NAME --role admin" in text
