"""Hostile input that used to exhaust memory or shut DICOM out (issue 15): each attack, then its bound.

Raw-socket clients send exactly the bytes of the attack; the assertions are what an operator would
check: the DIMSE status and its reason, nothing stored, the log readable, others still served, and
for a ``serve`` child process its peak memory read from ``/proc``.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastpath_support import RELEASE_RQ, associate_rq, message_pdus, read_pdu
from publishing_support import publish_node
from pydicom import dcmread
from pydicom.filewriter import dcmwrite
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]  # generated at import time

from appliance.db import Database
from appliance.discs.fileset import stage_instance
from appliance.discs.jobs import MAX_AUTHORING_RESTARTS, JobEngine, JobState, JobStore
from appliance.errors import AuthoringError, InvalidDataset
from appliance.part10 import file_meta
from appliance.validate import MAX_DEPTH, TooDeep, check_file, check_structure

from conftest import HOST, Node, dcmtk, free_port, indexed, wait_until

__all__ = ["publish_node"]  # a fixture

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
CONTENT_SEQUENCE = (0x0040, 0xA730)
PRIVATE_SEQUENCE = (0x0029, 0x1010)


# -- data sets built byte by byte (pydicom itself cannot write the deep ones: it recurses) ---------------


def _even(value: bytes) -> bytes:
    return value + b"\x00" if len(value) % 2 else value


def _implicit(group: int, element: int, value: bytes) -> bytes:
    value = _even(value)
    return struct.pack("<HHI", group, element, len(value)) + value


def _explicit(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    value = _even(value)
    if vr in (b"SQ", b"OB", b"UN", b"UT"):
        return struct.pack("<HH2sHI", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def header(
    sop_uid: str,
    explicit: bool = False,
    study: str = "1.2.826.0.1.3680043.10.1234.1",
    series: str = "1.2.826.0.1.3680043.10.1234.1.1",
) -> bytes:
    """The top-level elements every instance needs: SOP Class/Instance, patient, study, series."""
    values = [
        ((0x0008, 0x0016), b"UI", CTImageStorage.encode()),
        ((0x0008, 0x0018), b"UI", sop_uid.encode()),
        ((0x0008, 0x0060), b"CS", b"SR"),
        ((0x0010, 0x0010), b"PN", b"NEST^TEST"),
        ((0x0010, 0x0020), b"LO", b"PNEST"),
        ((0x0020, 0x000D), b"UI", study.encode()),
        ((0x0020, 0x000E), b"UI", series.encode()),
    ]
    if explicit:
        return b"".join(_explicit(g, e, vr, v) for (g, e), vr, v in values)
    return b"".join(_implicit(g, e, v) for (g, e), _, v in values)


def nested(depth: int, defined: bool = True, explicit: bool = False, tag: tuple[int, int] = CONTENT_SEQUENCE) -> bytes:
    """A sequence nested ``depth`` levels deep (each item holds the next sequence), built inside out."""
    inner = _explicit(0x0040, 0xA160, b"UT", b"LEAF") if explicit else _implicit(0x0040, 0xA160, b"LEAF")
    if not defined:  # no lengths to nest: headers, the leaf, delimiters (linear, not quadratic, to build)
        head = struct.pack("<HH2sHI", *tag, b"SQ", 0, 0xFFFFFFFF) if explicit else struct.pack("<HHI", *tag, 0xFFFFFFFF)
        head += struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
        tail = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        return head * depth + inner + tail * depth
    for _ in range(depth):
        item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
        head = struct.pack("<HH2sHI", *tag, b"SQ", 0, len(item)) if explicit else struct.pack("<HHI", *tag, len(item))
        inner = head + item
    return inner


# -- a raw C-STORE peer ------------------------------------------------------------------------------------


def store_rq(ds_bytes: bytes, sop_uid: str, message_id: int = 1) -> bytes:
    from io import BytesIO

    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE

    req = C_STORE()
    req.MessageID = message_id
    req.AffectedSOPClassUID = CTImageStorage
    req.AffectedSOPInstanceUID = sop_uid
    req.Priority = 2
    req.DataSet = BytesIO(ds_bytes)
    return b"".join(message_pdus(C_STORE_RQ(), req, 1))


def command_fields(pdu: bytes) -> dict[int, bytes]:
    """The elements of the command set in a P-DATA-TF answer (one PDV, Implicit VR Little Endian)."""
    assert pdu[:1] == b"\x04", f"expected P-DATA-TF, got {pdu[:16]!r}"
    (pdv_length,) = struct.unpack(">I", pdu[6:10])
    body = pdu[12 : 10 + pdv_length]
    fields, pos = {}, 0
    while pos + 8 <= len(body):
        group, element, length = struct.unpack_from("<HHI", body, pos)
        fields[(group << 16) | element] = body[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return fields


def store_raw(
    port: int, aet: str, ds_bytes: bytes, sop_uid: str, syntax: str = IMPLICIT_LE, calling: str = "HOSTILE"
) -> tuple[int, str]:
    """One C-STORE over a raw association: the response's status and error comment."""
    with socket.create_connection((HOST, port), timeout=30) as sock:
        sock.sendall(associate_rq(aet, calling, [build_context(CTImageStorage, [syntax])]))
        assert read_pdu(sock)[:1] == b"\x02"
        sock.sendall(store_rq(ds_bytes, sop_uid))
        fields = command_fields(read_pdu(sock))
        sock.sendall(RELEASE_RQ)
        read_pdu(sock)
    status = struct.unpack("<H", fields[0x00000900])[0]
    return status, fields.get(0x00000902, b"").rstrip(b"\x00 ").decode("latin-1")


def _set_fast(node: Node, fast: bool) -> None:
    for server in node.dicom.servers:
        server.fast_path = fast


# -- finding 1: nested sequences ---------------------------------------------------------------------------


ATTACKS = {
    "implicit-defined-300": (lambda: nested(300), IMPLICIT_LE),  # the one that passed the old check
    "implicit-undefined-5000": (lambda: nested(5000, defined=False), IMPLICIT_LE),  # was 0xC211 + traceback
    "explicit-defined-40": (lambda: nested(40, explicit=True), EXPLICIT_LE),
    "implicit-private-300": (lambda: nested(300, tag=PRIVATE_SEQUENCE), IMPLICIT_LE),
}


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "pynetdicom"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_deeply_nested_sequences_are_refused_with_a_reason(node: Node, fast: bool, attack: str) -> None:
    _set_fast(node, fast)
    build, syntax = ATTACKS[attack]
    explicit = syntax == EXPLICIT_LE
    data = header("1.2.826.0.1.3680043.10.1234.9.1", explicit) + build()
    status, comment = store_raw(node.port, node.aet, data, "1.2.826.0.1.3680043.10.1234.9.1", syntax)
    assert status == 0xC000
    assert f"nested deeper than {MAX_DEPTH} levels" in comment
    assert node.app.index.counts()["instances"] == 0
    assert list(node.app.store_area.tmp.iterdir()) == []
    assert dcmtk("echoscu", "-aec", node.aet, HOST, str(node.port)).returncode == 0


@pytest.mark.parametrize("explicit", [False, True], ids=["implicit", "explicit"])
def test_nesting_at_the_limit_is_stored_and_re_encodes(node: Node, explicit: bool) -> None:
    uid = "1.2.826.0.1.3680043.10.1234.9.2"
    data = header(uid, explicit) + nested(MAX_DEPTH, explicit=explicit)
    syntax = EXPLICIT_LE if explicit else IMPLICIT_LE
    assert store_raw(node.port, node.aet, data, uid, syntax) == (0, "")
    path = node.app.file_path(indexed(node.app, uid))
    ds = dcmread(path)
    depth, item = 0, ds
    while "ContentSequence" in item:
        item, depth = item.ContentSequence[0], depth + 1
    assert depth == MAX_DEPTH and item.TextValue == "LEAF"
    dcmwrite(path.with_suffix(".copy"), ds, enforce_file_format=True)  # the full re-encode of discs and retrieve


def _part10(path: Path, data: bytes, uid: str, syntax: str = IMPLICIT_LE) -> Path:
    path.write_bytes(file_meta(CTImageStorage, uid, syntax, "TEST") + data)
    return path


def test_an_instance_stored_before_the_limit_fails_its_disc_step(tmp_path: Path) -> None:
    """Stored by an older version: authoring that instance fails the job with the reason, without decoding it."""
    uid = "1.2.826.0.1.3680043.10.1234.9.3"
    deep = _part10(tmp_path / "deep.dcm", header(uid) + nested(300), uid)
    with pytest.raises(InvalidDataset, match="nested deeper"):
        check_file(deep)
    for allowed in (None, frozenset({EXPLICIT_LE})):  # as it is, or transcoded
        with pytest.raises(AuthoringError, match=f"{uid} cannot be put on a disc: .*nested deeper"):
            stage_instance(deep, tmp_path / "staged", uid, IMPLICIT_LE, allowed)
    fine = _part10(tmp_path / "fine.dcm", header(uid) + nested(3), uid)
    check_file(fine)
    assert stage_instance(fine, tmp_path / "staged2", uid, IMPLICIT_LE, frozenset({EXPLICIT_LE})).transcoded


def test_undefined_length_nesting_is_walked_without_recursion() -> None:
    """50 000 levels: far past Python's recursion limit; refused at level 33 for each VR encoding."""
    for explicit in (False, True):
        with pytest.raises(TooDeep, match=f"deeper than {MAX_DEPTH} levels"):
            check_structure(header("1.2.3", explicit) + nested(50_000, False, explicit), not explicit, True)


def test_a_job_interrupted_by_restarts_is_failed_not_resumed_for_ever(tmp_path: Path) -> None:
    db = Database(tmp_path / "appliance.db")
    try:
        jobs = JobStore(db)
        job_id = jobs.create("epson", 1, ["1.2.3"], "manual", reason="test")
        engine = JobEngine(jobs, author=None, publisher=None)  # type: ignore[arg-type]  # only the requeue runs
        for _ in range(MAX_AUTHORING_RESTARTS):
            claimed = jobs.claim_next()  # authoring starts, then the process dies
            assert claimed is not None and claimed.id == job_id
            engine.resume_interrupted()  # the next start
            assert jobs.get(job_id).state is JobState.QUEUED
        claimed = jobs.claim_next()
        assert claimed is not None and claimed.id == job_id
        engine.resume_interrupted()
        failed = jobs.get(job_id)
        assert failed.state is JobState.FAILED
        assert "interrupted by a restart 3 times in a row" in failed.error
        # Staff retry: the count starts again.
        jobs.retry(job_id)
        claimed = jobs.claim_next()
        assert claimed is not None and claimed.id == job_id
        engine.resume_interrupted()
        assert jobs.get(job_id).state is JobState.QUEUED
    finally:
        db.close()


# -- finding 12: invalid UIDs ------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "pynetdicom"])
@pytest.mark.parametrize("bad", ["../../etc/x", "/etc/passwd", "1.2.3\"'", "1.2..3", "1." + "2" * 70])
def test_invalid_uids_are_refused_by_default(node: Node, fast: bool, bad: str) -> None:
    _set_fast(node, fast)
    status, comment = store_raw(node.port, node.aet, header(bad), "1.2.826.0.1.3680043.10.1234.9.4")
    assert status == 0xC000
    assert "is not a valid UID" in comment
    assert node.app.index.counts()["instances"] == 0
    status, comment = store_raw(node.port, node.aet, header("1.2.3", series=bad), "1.2.3")
    assert status == 0xC000 and "Series Instance UID" in comment


def test_invalid_uids_accept_policy_stores_them(node_factory) -> None:
    node = node_factory(invalid_uids="accept")
    assert store_raw(node.port, node.aet, header("1.2.3.4/5"), "1.2.3.4/5") == (0, "")
    assert node.app.index.lookup("1.2.3.4/5") is not None


def test_invalid_uids_policy_is_checked_in_the_config(tmp_path: Path) -> None:
    from appliance.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="invalid_uids must be 'reject' or 'accept'"):
        parse_config({"appliance": {"data_dir": str(tmp_path)}, "dicom": {"invalid_uids": "maybe"}})


# -- a serve child process: memory from /proc, log injection -----------------------------------------------


def vm_kb(pid: int, field: str) -> int:
    """VmHWM (peak resident memory) or VmRSS of a process, in kB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


class ServeChild:
    """``appliance serve`` as a child process with [dicom] settings of the test."""

    def __init__(self, folder: Path, **dicom: object) -> None:
        self.port = free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        keys: dict[str, object] = {"bind": HOST, "port": self.port, "tls_port": 0, "free_space_limit_mb": 1}
        keys.update(dicom)
        self.tls_port = int(keys["tls_port"])  # type: ignore[call-overload]
        lines = ["[appliance]", f'data_dir = "{folder / "var"}"', 'log_level = "INFO"', "[dicom]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
        lines += ["[[dicom.nodes]]", 'ae_title = "PROBE"', f'host = "{HOST}"']  # the echo below, known either way
        lines += ["[hl7]", "port = 0", "[web]", "port = 0"]
        config = folder / "appliance.toml"
        config.write_text("\n".join(lines) + "\n")
        self.out = open(folder / "serve.out", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--config", str(config)],
            stdout=self.out,
            stderr=subprocess.STDOUT,
        )
        wait_until(self.echo, timeout=60)

    def echo(self, timeout: float = 30) -> bool:
        assert self.proc.poll() is None, (self.folder / "serve.out").read_text()
        return (
            dcmtk(
                "echoscu",
                "-to",
                str(timeout),
                "-aet",
                "PROBE",
                "-aec",
                "DISCPACS",
                HOST,
                str(self.port),
                timeout=timeout + 10,
            ).returncode
            == 0
        )

    @property
    def log(self) -> str:
        return (self.folder / "var" / "logs" / "appliance.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        self.out.close()


@pytest.fixture
def serve(tmp_path: Path):
    children: list[ServeChild] = []

    def start(**dicom: object) -> ServeChild:
        child = ServeChild(tmp_path / f"serve{len(children)}", **dicom)
        children.append(child)
        return child

    yield start
    for child in children:
        child.stop()


def test_nested_attack_on_a_burn_ae_stays_small(serve) -> None:
    """The original attack: 300 levels to the _E AE. Refused, no disc job, peak memory stays near idle."""
    child = serve()
    idle = vm_kb(child.proc.pid, "VmHWM")
    for n in range(3):
        uid = f"1.2.826.0.1.3680043.10.1234.9.5.{n}"
        status, comment = store_raw(child.port, "DISCPACS_E", header(uid) + nested(300), uid)
        assert (status, "nested deeper" in comment) == (0xC000, True)
    assert child.echo(timeout=5)
    assert vm_kb(child.proc.pid, "VmHWM") < idle + 50_000  # kB
    assert "disc job" not in child.log


def test_control_characters_from_ae_titles_are_escaped_in_the_log(serve) -> None:
    child = serve(accept_any_ae=False)  # an unknown calling AE is refused and logged
    forged = "2026-01-01 00:00:00,000 FATAL appliance: forged"
    calling = "X\r\n" + forged[:12]
    for title in (calling, "A\x1b[2J\x00B", "C\x85\u2028D"[:4]):
        with socket.create_connection((HOST, child.port), timeout=30) as sock:
            rq = associate_rq("DISCPACS", "PLACEHOLDER", [build_context(Verification)])
            raw = title.encode("latin-1", "replace")[:16].ljust(16)
            rq = rq[:26] + raw + rq[42:]  # the calling AE field, bytes as the attacker wants them
            sock.sendall(rq)
            read_pdu(sock)
    wait_until(lambda: child.log.count("\n") >= 1, timeout=10)
    log = (child.folder / "var" / "logs" / "appliance.log").read_bytes()
    for raw in (b"\x1b", b"\x00", b"\r", b"\xc2\x85", b"\xe2\x80\xa8"):
        assert raw not in log
    assert b"\x1b[2J" not in log and b"A\\x1b[2J\\x00B" in log  # seen, escaped
    assert not [line for line in log.decode().splitlines() if line.startswith(forged[:12])]  # no forged record
    assert child.echo(timeout=5)


# -- findings 2, 3, 4: what may arrive before and within an association ------------------------------------

HUGE = 256 * 1024 * 1024
#: An A-ASSOCIATE-RQ header declaring 256 MB, and a P-DATA-TF header declaring as much (after an association).
HUGE_RQ = struct.pack(">BBI", 0x01, 0, HUGE)
HUGE_PDATA = struct.pack(">BBI", 0x04, 0, HUGE)


def _connect(port: int, tls: bool = False) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=30)
    if tls:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the demo certificate of a test server
        sock = ctx.wrap_socket(sock)
    return sock


def _answer(sock: socket.socket, timeout: float = 30) -> int:
    """Type of the next PDU the server sends, -1 when it closes (or resets) the connection."""
    sock.settimeout(timeout)
    try:
        pdu = read_pdu(sock)
    except ConnectionResetError:
        return -1
    return pdu[0] if pdu else -1


def _associated(port: int, aet: str, tls: bool = False) -> socket.socket:
    sock = _connect(port, tls)
    sock.sendall(associate_rq(aet, "HOLDER", [build_context(CTImageStorage, [IMPLICIT_LE])]))
    assert _answer(sock) == 0x02
    return sock


@pytest.mark.parametrize("how", ["fast-path", "pynetdicom", "tls"])
def test_a_declared_pdu_length_allocates_nothing(serve, how: str) -> None:
    """Finding 2: 256 MB declared before and after the association; A-ABORT at once, peak memory flat."""
    child = serve(fast_path=how != "pynetdicom", tls_port=free_port() if how == "tls" else 0)
    tls = how == "tls"
    port = child.tls_port if tls else child.port
    before = vm_kb(child.proc.pid, "VmHWM")
    held = []
    try:
        for _ in range(4):
            sock = _connect(port, tls)
            sock.sendall(HUGE_RQ)
            held.append(sock)
            sock = _associated(port, "DISCPACS", tls)
            sock.sendall(HUGE_PDATA)
            held.append(sock)
        assert [_answer(sock) for sock in held] == [0x07] * len(held)  # A-ABORT for every one
        assert child.echo(timeout=10)
        assert vm_kb(child.proc.pid, "VmHWM") - before < 64 * 1024  # kB: one 256 MB buffer would be 4x that
    finally:
        for sock in held:
            sock.close()
    assert "PDU of 268435456 bytes" in child.log and "A-ASSOCIATE-RQ of 268435456 bytes" in child.log


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "pynetdicom"])
def test_header_only_connections_do_not_shut_dicom_out(serve, tmp_path: Path, fast: bool) -> None:
    """Finding 3: 20 connections that send a PDU header and stop; DCMTK is served meanwhile, they are closed."""
    child = serve(max_associations=5, acse_timeout=3, fast_path=fast)
    study = tmp_path / "study"
    study.mkdir()
    import dicomdata

    for inst in dicomdata.study("PHOLD", "HOLD^OUT", ("CT",), 2):
        inst.write(study)
    held = []
    try:
        for n in range(20):
            sock = _connect(child.port)
            sock.sendall(struct.pack(">BBI", 0x01, 0, 300 if n % 2 else HUGE)[:6])
            held.append(sock)
        for _ in range(2):
            assert child.echo(timeout=10)
            dcmtk(
                "storescu",
                "-to",
                "10",
                "-aet",
                "PROBE",
                "-aec",
                "DISCPACS",
                "+sd",
                HOST,
                str(child.port),
                str(study),
                check=True,
                timeout=30,
            )
        # ARTIM from the first byte: none of them outlives acse_timeout by much.
        assert [_answer(sock, timeout=30) for sock in held] in ([-1] * 20, [-1, 0x07] * 10, [0x07, -1] * 10)
    finally:
        for sock in held:
            sock.close()
    assert child.echo(timeout=10)
    # Nothing acknowledged is lost: both instances are in the store (sent twice, the second time duplicates).
    assert len(list((child.folder / "var" / "store").glob("????/??/??/*.dcm"))) == 2


def test_an_association_stalled_inside_a_pdu_frees_its_slot(node_factory) -> None:
    """Finding 3, within an association: a P-DATA-TF header and nothing more is aborted after network_timeout."""
    node = node_factory(max_associations=2, network_timeout=3)
    for fast in (True, False):
        _set_fast(node, fast)
        held = [_associated(node.port, node.aet) for _ in range(2)]
        for sock in held:
            sock.sendall(struct.pack(">BBI", 0x04, 0, 1000) + b"\x00\x00")  # and nothing after
        assert [_answer(sock, timeout=30) for sock in held] == [0x07, 0x07]
        for sock in held:
            sock.close()
        wait_until(lambda: not node.dicom.active(), timeout=10)
        assert dcmtk("echoscu", "-to", "10", "-aec", node.aet, HOST, str(node.port)).returncode == 0


JUNK = {
    "http": b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n",
    "zero-length-pdu": b"\x01\x00\x00\x00\x00\x00",
    "bad-ae-title": None,  # built below
    "p-data-first": b"\x04\x00\x00\x00\x00\x06\x00\x00\x00\x02\x01\x03",
    "tls-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),
}


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "pynetdicom"])
def test_junk_connections_hold_no_association_slot(node_factory, fast: bool) -> None:
    """Finding 4: a scan of junk (each closed by the server at once) leaves the one slot free for DCMTK."""
    node = node_factory(max_associations=1)
    _set_fast(node, fast)
    bad_ae = associate_rq(node.aet, "PLACEHOLDER", [build_context(Verification)])
    bad_ae = bad_ae[:26] + b"BAD\x1b\x00AE".ljust(16) + bad_ae[42:]
    not_us = associate_rq("NOTUS", "SCANNER", [build_context(Verification)])  # rejected: called AE unknown
    for _ in range(3):
        for name, payload in JUNK.items():
            with _connect(node.port) as sock:
                sock.sendall(payload if payload is not None else bad_ae)
                assert _answer(sock, timeout=5) in (-1, 0x07), name  # answered and closed, not left waiting
        with _connect(node.port) as sock:
            sock.sendall(not_us)
            assert _answer(sock, timeout=5) == 0x03  # A-ASSOCIATE-RJ
            assert _answer(sock, timeout=5) == -1  # and closed
    wait_until(lambda: len(node.dicom.servers[0].unassociated) == 0, timeout=5)  # its thread ends right after
    wait_until(lambda: not node.dicom.active(), timeout=5)  # a rejected one's thread too (not acse_timeout)
    assert dcmtk("echoscu", "-to", "10", "-aec", node.aet, HOST, str(node.port)).returncode == 0


def test_silent_connections_are_capped_apart_from_associations(node_factory) -> None:
    """Connections that never send a request: beyond the cap the oldest go; an association still gets in."""
    node = node_factory(max_associations=1, acse_timeout=60)
    pending = node.dicom.servers[0].unassociated
    pending.limit = 8
    silent = [_connect(node.port) for _ in range(12)]
    try:
        # Each new one past 8 evicts the oldest: the first four are closed, the last eight wait.
        assert [_answer(sock, timeout=10) for sock in silent[:4]] == [-1] * 4
        wait_until(lambda: len(pending) == 8, timeout=10)
        assert dcmtk("echoscu", "-to", "10", "-aec", node.aet, HOST, str(node.port)).returncode == 0
    finally:
        for sock in silent:
            sock.close()


# -- finding 11: large instances are streamed to disk ------------------------------------------------------


def _large_instance(folder: Path, n: int, megabytes: int) -> tuple[Path, str, bytes]:
    """A CT instance with ``megabytes`` of 16-bit pixel data (a pattern that differs per instance)."""
    import hashlib

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    uid = f"1.2.826.0.1.3680043.10.1234.11.{n}"
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1234.11"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1234.11.1"
    ds.PatientID = "PBIG"
    ds.PatientName = "BIG^INSTANCE"
    ds.Modality = "CT"
    ds.Rows, ds.Columns = 1024, megabytes * 512
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = (bytes([n]) + bytes(range(255))) * (megabytes * 4096)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / f"big{n}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, uid, hashlib.sha256(ds.PixelData).digest()


def test_large_stores_are_streamed_to_disk(serve, tmp_path: Path) -> None:
    """Two 64 MB C-STOREs at once: peak memory grows by far less than one instance, both stored whole."""
    import hashlib

    child = serve()
    sent = [_large_instance(tmp_path, n, 64) for n in (1, 2)]
    before = vm_kb(child.proc.pid, "VmHWM")
    senders = [
        subprocess.Popen(
            ["/usr/bin/storescu", "-aet", "PROBE", "-aec", "DISCPACS", HOST, str(child.port), str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for path, _, _ in sent
    ]
    for proc in senders:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    grown = vm_kb(child.proc.pid, "VmHWM") - before
    assert grown < 48 * 1024, f"peak memory grew by {grown} kB for two 64 MB instances"
    stored = list((child.folder / "var" / "store").glob("????/??/??/*.dcm"))
    digests = {str(dcmread(p).SOPInstanceUID): hashlib.sha256(dcmread(p).PixelData).digest() for p in stored}
    assert digests == {uid: digest for _, uid, digest in sent}
    assert not any((child.folder / "var").rglob("*.spool"))


@pytest.mark.parametrize("path", ["mpps-proposed", "fast-path-off"])
def test_large_stores_served_by_pynetdicom_are_streamed_to_disk(serve, tmp_path: Path, monkeypatch, path: str) -> None:
    """A 64 MB C-STORE on an association pynetdicom serves (it also proposes MPPS, or the fast path is off):
    stored byte for byte as sent, the server's peak memory grows by far less than the instance."""
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

    from appliance.codecs import dataset_offset

    child = serve(fast_path=path != "fast-path-off")
    source, uid, _ = _large_instance(tmp_path, 3, 64)
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # the file's bytes, as they are
    ae = AE(ae_title="PROBE")
    ae.add_requested_context(CTImageStorage, EXPLICIT_LE)
    ae.add_requested_context(ModalityPerformedProcedureStep)
    before = vm_kb(child.proc.pid, "VmHWM")
    assoc = ae.associate(HOST, child.port, ae_title="DISCPACS")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(source).Status == 0x0000
    finally:
        assoc.release()
    grown = vm_kb(child.proc.pid, "VmHWM") - before
    assert grown < 32 * 1024, f"peak memory grew by {grown} kB for a 64 MB instance"
    (stored,) = (child.folder / "var" / "store").glob("????/??/??/*.dcm")
    sent, kept = source.read_bytes(), stored.read_bytes()
    assert kept[dataset_offset(kept) :] == sent[dataset_offset(sent) :]
    assert str(dcmread(stored, stop_before_pixels=True).SOPInstanceUID) == uid
    assert not list((child.folder / "var" / "store" / "tmp").iterdir())  # pynetdicom's file is removed


def test_a_store_cut_off_inside_pynetdicom_leaves_nothing(node_factory) -> None:
    """pynetdicom's chunked receive (fast path off) cut off by an A-ABORT: its file in tmp/ is removed too."""
    node = node_factory(fast_path=False)
    uid = "1.2.826.0.1.3680043.10.1234.11.8"
    body = header(uid) + struct.pack("<HHI", 0x7FE0, 0x0010, 8 << 20) + bytes(8 << 20)
    pdus = store_rq(body, uid)
    with socket.create_connection((HOST, node.port), timeout=30) as sock:
        sock.sendall(associate_rq(node.aet, "CUTOFF", [build_context(CTImageStorage, [IMPLICIT_LE])]))
        assert read_pdu(sock)[:1] == b"\x02"
        sock.sendall(pdus[: len(pdus) // 2])
        wait_until(lambda: any(node.app.store_area.tmp.glob("pynetdicom-*")), timeout=30)
        sock.sendall(b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # A-ABORT
    wait_until(lambda: not any(node.app.store_area.tmp.iterdir()), timeout=30)
    assert node.app.index.counts()["instances"] == 0


def test_a_spooled_store_cut_off_leaves_nothing(node: Node) -> None:
    """An association aborted in the middle of a data set already being spooled: no file, no index row."""
    from appliance.dicom.fast.association import SPOOL_AT

    uid = "1.2.826.0.1.3680043.10.1234.11.9"
    body = header(uid) + struct.pack("<HHI", 0x7FE0, 0x0010, 2 * SPOOL_AT) + bytes(2 * SPOOL_AT)
    pdus = store_rq(body, uid)
    with socket.create_connection((HOST, node.port), timeout=30) as sock:
        sock.sendall(associate_rq(node.aet, "CUTOFF", [build_context(CTImageStorage, [IMPLICIT_LE])]))
        assert read_pdu(sock)[:1] == b"\x02"
        sock.sendall(pdus[: len(pdus) * 3 // 4])  # most of it: past the spool threshold, not the end
        wait_until(lambda: any(node.app.store_area.tmp.glob("*.spool")), timeout=30)
        sock.sendall(b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # A-ABORT
    wait_until(lambda: not any(node.app.store_area.tmp.iterdir()), timeout=30)
    assert node.app.index.counts()["instances"] == 0


# -- finding 1: heavy work on received data within a budget ------------------------------------------------


def test_a_conversion_runs_within_a_memory_and_time_budget(tmp_path: Path) -> None:
    """A task past its memory or time fails with the reason, the worker is replaced, the next task runs."""
    from appliance.budget import Budget, BudgetExceeded

    budget = Budget(memory_mb=1024, seconds=3)
    try:
        with pytest.raises(BudgetExceeded, match="needed more than 1024 MB"):
            budget.run(bytearray, 2 * 1024**3, what="allocating 2 GB")
        with pytest.raises(BudgetExceeded, match="took longer than 3 s and was stopped"):
            budget.run(time.sleep, 60, what="sleeping a minute")
        assert budget.run(len, b"still working") == 13
        # A real conversion through the budget (as disc authoring does it): Implicit VR to Explicit VR.
        uid = "1.2.826.0.1.3680043.10.1234.1.7"
        source = _part10(tmp_path / "implicit.dcm", header(uid) + nested(3), uid)
        staged = stage_instance(source, tmp_path / "explicit.dcm", uid, IMPLICIT_LE, frozenset({EXPLICIT_LE}), budget)
        assert staged.transcoded and staged.transfer_syntax == EXPLICIT_LE
        assert dcmread(staged.path).ContentSequence[0].ContentSequence[0].ContentSequence[0].TextValue == "LEAF"
    finally:
        budget.close()


def test_a_burn_converts_received_instances_in_the_budget_worker(publish_node, tmp_path: Path) -> None:
    """As serve wires it: an Implicit VR instance sent to _E is converted (in the worker) onto the CD."""
    from io import BytesIO

    from publishing_support import iso_files

    node = publish_node()
    assert node.publishing.author.settings.budget is not None
    uid = "1.2.826.0.1.3680043.10.1234.1.8"
    folder = tmp_path / "in"
    folder.mkdir()
    _part10(folder / "sr.dcm", header(uid) + nested(3), uid)
    node.send(folder, "_E", "-xi")  # Implicit VR only: stored so, converted for the CD
    job = node.wait_state(1, JobState.DONE, JobState.FAILED)
    assert (job.state, job.error) == (JobState.DONE, "")
    files = iso_files(node.job_dir(1) / "disc1" / "disc.iso")
    on_disc = [
        dcmread(BytesIO(data)) for name, data in files.items() if "DICOMDIR" not in name and data[128:132] == b"DICM"
    ]
    assert [(str(ds.SOPInstanceUID), ds.file_meta.TransferSyntaxUID) for ds in on_disc] == [(uid, EXPLICIT_LE)]
    assert node.publishing.author.settings.budget._pool is not None  # the worker process did the conversion


def test_large_reads_grow_with_what_arrives_and_keep_their_deadline() -> None:
    """recv_exact beyond one chunk: exact bytes; short when the peer closes; TimeoutError past the deadline."""
    import threading

    from appliance.dicom.fast.wire import CHUNK, recv_exact

    payload = bytes(range(256)) * (3 * CHUNK // 256 + 7)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        sender = threading.Thread(target=theirs.sendall, args=(payload,))
        sender.start()
        assert recv_exact(ours, len(payload), time.monotonic() + 30) == payload
        sender.join()

        def send_and_close() -> None:
            theirs.sendall(payload[: CHUNK + 5])
            theirs.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send_and_close)
        sender.start()
        assert recv_exact(ours, 2 * CHUNK + 1) == payload[: CHUNK + 5]  # the peer closed: what arrived
        sender.join()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"\x04\x00")  # a trickle that stops
        with pytest.raises(TimeoutError):
            recv_exact(ours, 5 * CHUNK, time.monotonic() + 0.5)
        assert ours.gettimeout() is None  # the deadline's timeout does not stay on the socket
