"""The SCU side: C-ECHO a node and import files by C-STORE."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pynetdicom import AE, PYNETDICOM_IMPLEMENTATION_UID
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from appliance import codecs
from appliance.core import IMPLEMENTATION_VERSION
from appliance.dicom import retrieve
from appliance.dicom.fast.scu import REJECT_REASONS, AssociationFailed, AssociationLost, Identity, StoreSCU, Timeouts
from appliance.errors import CodecError

LOGGER = logging.getLogger("appliance.dicom")


@dataclass
class EchoResult:
    """Outcome of a C-ECHO."""

    online: bool
    reason: str

    def __str__(self) -> str:
        return "Online" if self.online else f"Offline: {self.reason}"


def _ae(calling_ae: str, timeout: float) -> AE:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = timeout
    ae.implementation_version_name = IMPLEMENTATION_VERSION
    return ae


def _tls_args(context: ssl.SSLContext | None, host: str) -> tuple[ssl.SSLContext, str] | None:
    return (context, host) if context is not None else None


def _why_not(assoc: Association, host: str, port: int, timeout: float, elapsed: float = 0.0) -> str:
    """Explain a failed association in the words an administrator needs."""
    if assoc.is_rejected and assoc.acceptor.primitive is not None:
        prim = assoc.acceptor.primitive
        source, diag = int(prim.result_source or 0), int(prim.diagnostic or 0)
        kind = "permanently" if prim.result == 1 else "transiently"
        return f"association rejected {kind}: {REJECT_REASONS.get((source, diag), f'reason {source}/{diag}')}"
    # pynetdicom does not say why a connection failed: try the TCP connect ourselves.
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port} (nothing listening on that port?)"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s (firewall or wrong address?)"
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"
    if elapsed >= timeout * 0.9:
        return f"connected, but the peer did not answer the association request within {timeout:g} s"
    if assoc.is_aborted:
        return "the peer aborted the association (TLS or protocol mismatch?)"
    return "no association (the peer did not answer the association request)"


def echo(
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str = "APPLIANCE",
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> EchoResult:
    """C-ECHO a node and say whether it answered.

    Parameters
    ----------
    host, port, called_ae : str, int, str
        The node to verify.
    calling_ae : str
        Our AE title in the request.
    timeout : float
        Seconds to wait for the connection and each answer.
    ssl_context : ssl.SSLContext, optional
        Client TLS context for a TLS port.
    """
    ae = _ae(calling_ae, timeout)
    ae.add_requested_context(Verification)
    started = time.monotonic()
    assoc = ae.associate(host, port, ae_title=called_ae, tls_args=_tls_args(ssl_context, host))
    if not assoc.is_established:
        return EchoResult(False, _why_not(assoc, host, port, timeout, time.monotonic() - started))
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if status is None or "Status" not in status:
        return EchoResult(False, "no C-ECHO response (timeout or aborted)")
    if status.Status != 0:
        return EchoResult(False, f"C-ECHO answered with status 0x{int(status.Status):04X}")
    return EchoResult(True, "")


@dataclass
class ImportReport:
    """What ``appliance import`` did."""

    sent: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> Iterator[str]:
        """The report as text lines."""
        yield f"{self.sent} instance(s) sent"
        if self.unreadable:
            yield f"{len(self.unreadable)} file(s) could not be read:"
            for path, why in self.unreadable:
                yield f"  {path}: {why}"
        if self.failed:
            yield f"{len(self.failed)} file(s) could not be sent:"
            for path, why in self.failed:
                yield f"  {path}: {why}"


def _walk(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.upper() != "DICOMDIR":
                yield Path(dirpath) / name


def import_files(
    root: Path,
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str = "APPLIANCE",
    timeout: float = 30.0,
    ssl_context: ssl.SSLContext | None = None,
) -> ImportReport:
    """Send every DICOM file under ``root`` (any depth) by C-STORE.

    Files are read header-only to plan the associations: per SOP class, one presentation context
    per transfer syntax found and one with Explicit + Implicit VR Little Endian (PS3.4 B.4.1), as
    few associations as the 128-context limit allows. Each file goes as it is when its syntax was
    accepted, else converted (:func:`appliance.codecs.convert`, every UID kept).

    Raises
    ------
    ConnectionError
        When no association can be made at all.
    """
    report = ImportReport()
    files: list[_File] = []
    for path in _walk(root):
        try:
            ds = dcmread(path, stop_before_pixels=True)
            sop_class = str(
                ds.file_meta.MediaStorageSOPClassUID if "MediaStorageSOPClassUID" in ds.file_meta else ds.SOPClassUID
            )
            files.append(_File(path, sop_class, str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID)))
        except (InvalidDicomError, AttributeError, KeyError, OSError, ValueError) as exc:
            report.unreadable.append((str(path), _reason(exc)))
    identity = Identity(calling_ae, PYNETDICOM_IMPLEMENTATION_UID, IMPLEMENTATION_VERSION)
    for batch in _batches(files):
        contexts = retrieve.store_contexts(batch)
        sender = StoreSCU(host, port, called_ae, identity, contexts, Timeouts(timeout, timeout, timeout), ssl_context)
        try:
            sender.open()
        except AssociationFailed as exc:
            raise ConnectionError(str(exc)) from exc
        try:
            _send_batch(sender, batch, report)
        finally:
            sender.release()
    return report


@dataclass(frozen=True)
class _File:
    """A file to import, as :func:`appliance.dicom.retrieve.store_contexts` sees an instance."""

    path: Path
    sop_class_uid: str
    sop_uid: str
    transfer_syntax: str


def _reason(exc: BaseException) -> str:
    # pydicom's advice to the programmer ("use force=True") is not for the person importing a folder.
    text = str(exc).split(" Use force=True")[0].strip() or type(exc).__name__
    return text


def _batches(files: list[_File]) -> list[list[_File]]:
    """Groups of files whose contexts fit one association (each SOP class needs 1 + its syntaxes)."""
    batches: list[list[_File]] = []
    need: list[dict[str, set[str]]] = []
    for item in files:
        for i, classes in enumerate(need):
            syntaxes = classes.get(item.sop_class_uid, set())
            grown = len(syntaxes | {item.transfer_syntax}) + (0 if syntaxes else 1)
            total = sum(len(s) + 1 for s in classes.values()) - (len(syntaxes) + 1 if syntaxes else 0) + grown
            if total <= retrieve.MAX_CONTEXTS:
                classes.setdefault(item.sop_class_uid, set()).add(item.transfer_syntax)
                batches[i].append(item)
                break
        else:
            need.append({item.sop_class_uid: {item.transfer_syntax}})
            batches.append([item])
    return batches


def _send_batch(sender: StoreSCU, batch: list[_File], report: ImportReport) -> None:
    for number, item in enumerate(batch, 1):
        contexts = sender.accepted.get(item.sop_class_uid, [])
        syntax = codecs.choose(item.transfer_syntax, [ts for _, ts in contexts])
        if syntax is None:
            report.failed.append((str(item.path), "the receiver accepted no transfer syntax this file can be sent in"))
            continue
        try:
            data = codecs.read_stored(item.path)
            payload = (
                memoryview(data)[codecs.dataset_offset(data) :]
                if syntax == item.transfer_syntax
                else codecs.convert(data, syntax)
            )
        except CodecError as exc:
            report.failed.append((str(item.path), str(exc)))
            continue
        context_id = next(cx for cx, ts in contexts if ts == syntax)
        try:
            code, comment = sender.store(number % 65536, item.sop_class_uid, item.sop_uid, context_id, payload)
        except AssociationLost as exc:
            report.failed.append((str(item.path), str(exc)))
            report.failed.extend((str(rest.path), "not sent: association lost") for rest in batch[number:])
            return
        if code in (0x0000, 0xB000, 0xB006, 0xB007):
            report.sent += 1
        else:
            report.failed.append((str(item.path), f"status 0x{code:04X} {comment}".strip()))
