"""Debian's Orthanc as a reference peer for tests: started from a generated JSON configuration.

:class:`Orthanc` runs ``Orthanc`` in a temporary folder of its own with a configuration written there, on free
ports (DICOM and REST), waits until its REST API answers, and stops it. Plugins are named without their
path (``ModalityWorklists``, ``OrthancDicomWeb``...) and found in Debian's plugin folder; extra configuration
keys are merged in. Example::

    orthanc = Orthanc(tmp_path, plugins=["ModalityWorklists"],
                      config={"Worklists": {"Enable": True, "Database": str(folder)}})
    ...
    orthanc.stop()
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from conftest import HOST, free_port

PLUGIN_FOLDERS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))


def orthanc_executable() -> str:
    """The Orthanc server of Debian's ``orthanc`` package; the test is skipped with the reason when absent."""
    exe = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/bin")
    if not exe:
        pytest.skip("Debian's orthanc is not installed (scripts/test.sh installs it)")
    return exe


def plugin_path(name: str) -> str:
    """The shared library of an Orthanc plugin, e.g. ``ModalityWorklists`` -> .../libModalityWorklists.so."""
    for folder in PLUGIN_FOLDERS:
        for candidate in sorted(folder.glob(f"lib{name}.so*")):
            return str(candidate)
    pytest.skip(f"Orthanc plugin {name} is not installed (Debian orthanc)")
    raise AssertionError("unreachable")


class Orthanc:
    """A running Orthanc.

    Parameters
    ----------
    root : Path
        A folder of its own (configuration, storage, index and log go there).
    aet : str
        Its DICOM AE title.
    plugins : iterable of str
        Plugin names to load.
    config : Mapping, optional
        Configuration keys merged over the defaults (a DICOM and REST port on loopback, no authentication,
        every C-FIND and C-ECHO allowed).
    timeout : float
        Seconds to wait for the REST API.

    Attributes
    ----------
    port, http_port : int
        DICOM and REST ports.
    url : str
        The REST API's base URL.
    """

    def __init__(self, root: Path, aet: str = "ORTHANC", plugins: Iterable[str] = (),
                 config: Mapping[str, Any] | None = None, timeout: float = 60.0) -> None:
        exe = orthanc_executable()
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        self.port, self.http_port = free_port(), free_port()
        self.url = f"http://{HOST}:{self.http_port}"
        cfg: dict[str, Any] = {
            "Name": "test", "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
            "HttpPort": self.http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomAet": aet, "DicomPort": self.port, "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowFind": True, "DicomAlwaysAllowFindWorklist": True,
            "DicomAlwaysAllowStore": True, "Plugins": [plugin_path(p) for p in plugins],
        }
        cfg.update(config or {})
        self.config_path = root / "orthanc.json"
        self.config_path.write_text(json.dumps(cfg, indent=2))
        self.log_path = root / "orthanc.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen([exe, str(self.config_path)], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self._log.close()
                raise AssertionError(f"Orthanc ended ({self.proc.returncode}):\n{self.log_path.read_text()[-3000:]}")
            try:
                self.get("/system")
                break
            except (OSError, urllib.error.URLError) as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"Orthanc's REST API does not answer:\n"
                                         f"{self.log_path.read_text()[-3000:]}") from exc
                time.sleep(0.1)

    def get(self, path: str) -> Any:
        """GET a REST resource and decode its JSON."""
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after 20 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
