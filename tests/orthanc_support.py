"""Debian's Orthanc as a real peer in tests: start it from a generated config, talk to its REST API, stop it.

Orthanc plays the other PACS: a C-STORE / C-MOVE destination, a C-MOVE and C-FIND SCU (through its REST API
``/modalities/{name}/...``), a DICOMweb server (``plugins=[DICOMWEB_PLUGIN]``). Its HTTP API answers on loopback
only (``RemoteAccessAllowed`` false); Orthanc 1.10 has no bind address for its DICOM port, so that one listens on
every interface, on a free port.

Fixtures (conftest.py imports them, so every test file can use them):

- ``orthanc_factory`` (session): ``orthanc_factory(modalities=..., plugins=..., settings=...)`` starts one more
  Orthanc with those settings; all are stopped at the end of the session.
- ``orthanc`` (session): one plain Orthanc (AE ``ORTHANC``) shared by the session. Tests that use it add the
  modalities they need with :meth:`Orthanc.put_modality` and look only at their own UIDs (or call
  :meth:`Orthanc.clear` first).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
ORTHANC_BIN = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
#: Debian's orthanc: the Modality Worklist plugin (a second MWL reference beside wlmscpfs).
WORKLIST_PLUGIN = "/usr/share/orthanc/plugins/libModalityWorklists.so"
#: Debian's orthanc-gdcm: decodes JPEG 2000 (and more) when Orthanc transcodes; without it Orthanc cannot.
GDCM_PLUGIN = "/usr/share/orthanc/plugins/libOrthancGdcm.so"


def _free_port() -> int:
    # The same as conftest.free_port; kept here so that bench scripts can import this module without pytest's conftest.
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def installed() -> bool:
    """Whether Debian's ``orthanc`` package is installed."""
    return Path(ORTHANC_BIN).exists()


class OrthancError(RuntimeError):
    """An HTTP error answered by Orthanc's REST API (``status`` and the body Orthanc sent)."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"Orthanc {method} {path}: HTTP {status}: {body[:2000]}")
        self.status = status
        self.body = body


def modality(aet: str, port: int, host: str = HOST, **options: Any) -> dict[str, Any]:
    """A ``DicomModalities`` entry in Orthanc's object form (``AET``, ``Host``, ``Port`` and options such as
    ``AllowMove``, ``AllowGet``, ``Timeout``)."""
    return {"AET": aet, "Host": host, "Port": port, **options}


class Orthanc:
    """One Orthanc process with its own storage in ``work``.

    Parameters
    ----------
    work : Path
        Folder for the config, the storage/index and the log (``orthanc.log``).
    aet : str
        Orthanc's DICOM AE title.
    modalities : dict, optional
        ``DicomModalities``: name -> :func:`modality` entry (or Orthanc's ``[aet, host, port]`` list form).
    plugins : list of str, optional
        Plugin paths (e.g. :data:`DICOMWEB_PLUGIN`).
    settings : dict, optional
        Further config keys; they win over the defaults set here.
    """

    def __init__(
        self,
        work: Path,
        aet: str = "ORTHANC",
        modalities: dict[str, Any] | None = None,
        plugins: list[str] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.work = work
        self.aet = aet
        self.dicom_port = _free_port()
        self.http_port = _free_port()
        self.url = f"http://{HOST}:{self.http_port}"
        storage = work / "db"
        self.config: dict[str, Any] = {
            "Name": f"test-{aet}",
            "DicomAet": aet,
            "DicomPort": self.dicom_port,
            "DicomServerEnabled": True,
            "HttpPort": self.http_port,
            "HttpServerEnabled": True,
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomCheckModalityHost": False,
            "DicomModalitiesInDatabase": False,
            "DicomModalities": modalities or {},
            # Keep the REST C-MOVE/C-FIND from hanging a test when the peer is gone.
            "DicomScuTimeout": 30,
            "Plugins": list(plugins or []),
            "StorageCompression": False,
            "SaveJobs": False,
            "HttpTimeout": 60,
        }
        self.config.update(settings or {})
        self.log_path = work / "orthanc.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- life cycle -------------------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Orthanc:
        """Write the config, start Orthanc and wait until its REST API answers ``/system``."""
        self.work.mkdir(parents=True, exist_ok=True)
        cfg = self.work / "orthanc.json"
        cfg.write_text(json.dumps(self.config, indent=2))
        log = open(self.log_path, "wb")  # noqa: SIM115 - Orthanc keeps writing into it
        try:
            # TCP_NODELAY: DCMTK (inside Orthanc) reads it, as in bench/ingest.
            self.proc = subprocess.Popen(
                [ORTHANC_BIN, str(cfg)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": "/usr/bin:/bin", "TCP_NODELAY": "1"},
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            try:
                self.get("/system")
                break
            except (OSError, OrthancError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"Orthanc's REST API did not answer within {timeout} s:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.1)
        self._wait_dicom(deadline)
        return self

    def _wait_dicom(self, deadline: float) -> None:
        while True:
            with socket.socket() as s:
                if s.connect_ex((HOST, self.dicom_port)) == 0:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc's DICOM port {self.dicom_port} is not open:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after 30 s)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, chars: int = 4000) -> str:
        """The end of Orthanc's log, for assertion messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- REST -------------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, timeout: float = 120.0) -> Any:
        """One REST call; JSON in (``str``/``bytes`` sent as they are), JSON or bytes out.

        Raises
        ------
        OrthancError
            On any HTTP error status, with Orthanc's answer.
        """
        data: bytes | None
        if body is None:
            data = None
        elif isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            raise OrthancError(method, path, exc.code, exc.read().decode(errors="replace")) from None
        if "json" in ctype:
            return json.loads(raw) if raw else None
        return raw

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, body if body is not None else {}, **kw)

    def put(self, path: str, body: Any, **kw: Any) -> Any:
        return self.request("PUT", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    # -- resources --------------------------------------------------------------------------------------------

    def instances(self) -> list[str]:
        """Orthanc IDs of every stored instance."""
        return list(self.get("/instances"))

    def instance_tags(self, orthanc_id: str) -> dict[str, Any]:
        """``/instances/{id}/simplified-tags``: keyword -> value."""
        return dict(self.get(f"/instances/{orthanc_id}/simplified-tags"))

    def instance_file(self, orthanc_id: str) -> bytes:
        """The stored DICOM file, as received."""
        return bytes(self.get(f"/instances/{orthanc_id}/file"))

    def find(self, level: str, query: dict[str, str], expand: bool = False) -> list[Any]:
        """``/tools/find`` (level Patient/Study/Series/Instance); Orthanc IDs, or resources when ``expand``."""
        return list(self.post("/tools/find", {"Level": level, "Query": query, "Expand": expand}))

    def instance_id(self, sop_uid: str) -> str | None:
        """Orthanc's ID of the instance with this SOP Instance UID, or None."""
        found = self.find("Instance", {"SOPInstanceUID": sop_uid})
        return str(found[0]) if found else None

    def sop_uids(self, study_uid: str | None = None) -> set[str]:
        """SOP Instance UIDs stored in Orthanc (of one study when ``study_uid`` is given)."""
        query = {"StudyInstanceUID": study_uid} if study_uid else {}
        return {str(r["MainDicomTags"]["SOPInstanceUID"]) for r in self.find("Instance", query, expand=True)}

    def clear(self) -> None:
        """Delete every patient (and so every instance) stored in this Orthanc."""
        for patient in self.get("/patients"):
            self.delete(f"/patients/{patient}")

    # -- DICOM networking through REST -------------------------------------------------------------------------

    def put_modality(self, name: str, aet: str, port: int, host: str = HOST, **options: Any) -> None:
        """Add or replace a known modality at run time (``PUT /modalities/{name}``)."""
        self.put(f"/modalities/{name}", modality(aet, port, host, **options))

    def echo(self, name: str) -> Any:
        """C-ECHO a modality (``POST /modalities/{name}/echo``)."""
        return self.post(f"/modalities/{name}/echo", {})

    def move(
        self,
        name: str,
        level: str,
        resources: list[dict[str, str]],
        target_aet: str | None = None,
        timeout: int | None = None,
    ) -> Any:
        """C-MOVE SCU: ask modality ``name`` to move ``resources`` to ``target_aet`` (default: this Orthanc).

        ``POST /modalities/{name}/move``; runs synchronously and raises :class:`OrthancError` when the move
        fails (Orthanc answers HTTP 500 then).
        """
        body: dict[str, Any] = {"Level": level, "Resources": resources, "Synchronous": True}
        if target_aet:
            body["TargetAet"] = target_aet
        if timeout is not None:
            body["Timeout"] = timeout
        return self.post(f"/modalities/{name}/move", body)

    def query(self, name: str, level: str, query: dict[str, str]) -> str:
        """C-FIND SCU at modality ``name`` (``POST /modalities/{name}/query``); return the query's ID."""
        return str(self.post(f"/modalities/{name}/query", {"Level": level, "Query": query})["ID"])

    def query_answers(self, query_id: str) -> list[dict[str, Any]]:
        """The answers of a query (``/queries/{id}/answers?expand&simplify``)."""
        return list(self.get(f"/queries/{query_id}/answers?expand&simplify"))

    def retrieve(self, query_id: str, target_aet: str | None = None, timeout: int | None = None) -> Any:
        """C-MOVE every answer of a query (``POST /queries/{id}/retrieve``), synchronously.

        Raises
        ------
        OrthancError
            When the C-MOVE fails (HTTP 500 with Orthanc's reason).
        """
        body: dict[str, Any] = {"Synchronous": True}
        if target_aet:
            body["TargetAet"] = target_aet
        if timeout is not None:
            body["Timeout"] = timeout
        return self.post(f"/queries/{urllib.parse.quote(query_id)}/retrieve", body)


@pytest.fixture(scope="session")
def orthanc_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Orthanc]]:
    """Start Orthanc processes for the session: ``orthanc_factory(aet=..., modalities=..., plugins=...,
    settings=...)``; every one is stopped when the session ends."""
    # A missing peer fails loudly rather than skipping: scripts/test.sh installs it.
    assert installed(), "Debian's orthanc is not installed (scripts/test.sh installs it)"
    started: list[Orthanc] = []

    def start(
        aet: str = "ORTHANC",
        modalities: dict[str, Any] | None = None,
        plugins: list[str] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Orthanc:
        server = Orthanc(tmp_path_factory.mktemp(f"orthanc-{aet.lower()}"), aet, modalities, plugins, settings)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def orthanc(orthanc_factory: Callable[..., Orthanc]) -> Orthanc:
    """One plain Orthanc (AE ``ORTHANC``, accepts every store) shared by the whole session."""
    return orthanc_factory()
