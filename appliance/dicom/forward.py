"""Forwarding over DICOM: batches by C-STORE on the raw-socket sender, Storage Commitment by N-ACTION.

The :class:`~appliance.forwarding.worker.Transport` of the forwarding worker. The batch association
proposes the same contexts as a C-MOVE (:func:`appliance.dicom.retrieve.store_contexts`, with
``[forwarding] preferred_ts``), so what the regional server accepts decides the syntax of each
instance, every UID kept. The commitment association proposes the SCU and SCP roles for us, so the
regional server may report on it; a report that comes later on a new association to our listener is
handled by :func:`handle_n_event_report`.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.events import Event

from appliance.config import ForwardingConfig
from appliance.core import IMPLEMENTATION_VERSION, Appliance
from appliance.dicom import guard, handlers, retrieve, status
from appliance.dicom.commitment import INSTANCE, referenced_sop, refusal
from appliance.dicom.fast.scu import AssociationLost, Identity, StoreSCU, Timeouts
from appliance.dicom.policy import STORAGE_COMMITMENT
from appliance.errors import CodecError
from appliance.forwarding.worker import BatchResult, Report
from appliance.index import StoredInstance

LOGGER = logging.getLogger("appliance.forwarding")

#: Failure Reasons of a Storage Commitment report (PS3.4 J.3.3.1.1) in words.
FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0112: "no such object instance",
    0x0213: "resource limitation",
    0x0122: "SOP class not supported",
    0x0119: "class / instance conflict",
    0x0131: "duplicate transaction UID",
}


class DicomTransport:
    """Sends forwarding batches to the regional PACS of ``[forwarding]``.

    Parameters
    ----------
    app : Appliance
        The core (files of stored instances, our AE title).
    config : ForwardingConfig
        The regional server and the timeouts.
    client_tls : callable, optional
        Makes the client TLS context when ``[forwarding] tls`` is on.
    """

    def __init__(
        self, app: Appliance, config: ForwardingConfig, client_tls: Callable[[], ssl.SSLContext] | None = None
    ) -> None:
        self.app = app
        self.config = config
        self.client_tls = client_tls
        self.prefer = retrieve.preferred_name(config.preferred_ts)

    def _tls(self) -> ssl.SSLContext | None:
        if not self.config.tls:
            return None
        if self.client_tls is None:
            raise ConnectionError("[forwarding] tls needs the [tls] settings")
        return self.client_tls()

    def send(self, instances: list[StoredInstance]) -> BatchResult:
        """C-STORE the instances over one association.

        Raises
        ------
        ConnectionError
            When no association can be made (refused, rejected, no context accepted, timeout).
        """
        cfg = self.config
        dicom = self.app.config.dicom
        sender = StoreSCU(
            cfg.host,
            cfg.port,
            cfg.ae_title,
            Identity(dicom.ae_title, _implementation_uid(), IMPLEMENTATION_VERSION, dicom.max_pdu),
            retrieve.store_contexts(instances, self.prefer),
            Timeouts(cfg.tcp_timeout_ms / 1000, cfg.dicom_timeout_ms / 1000, cfg.transfer_timeout_ms / 1000),
            self._tls(),
        )
        sender.open()
        result = BatchResult()
        try:
            for number, inst in enumerate(instances, 1):
                contexts = sender.accepted.get(inst.sop_class_uid, [])
                try:
                    syntax, data = retrieve.payload(self.app, inst, [ts for _, ts in contexts], self.prefer)
                except CodecError as exc:
                    result.failed[inst.sop_uid] = str(exc)
                    continue
                context_id = next(cx for cx, ts in contexts if ts == syntax)
                try:
                    code, comment = sender.store(number % 65536, inst.sop_class_uid, inst.sop_uid, context_id, data)
                except AssociationLost as exc:
                    for rest in instances[number - 1 :]:
                        result.failed[rest.sop_uid] = str(exc)
                    return result
                if code in (0x0000, 0xB000, 0xB006, 0xB007):
                    result.sent.append(inst.sop_uid)
                else:
                    result.failed[inst.sop_uid] = f"refused with status 0x{code:04X} {comment}".strip()
        finally:
            sender.release()
        return result

    def commit(
        self, instances: list[StoredInstance], transaction_uid: str, reported: threading.Event | None = None
    ) -> Report | None:
        """Ask the regional server to commit the instances (N-ACTION, Storage Commitment Push Model).

        Parameters
        ----------
        reported : threading.Event, optional
            Set by the worker when the report came on a new association (to our listener) meanwhile.

        Returns
        -------
        Report or None
            The report when it came on this association within a few seconds; None when it came or will
            come on a new association (to our listener).

        Raises
        ------
        ConnectionError
            When no association can be made or the N-ACTION is refused.
        """
        cfg = self.config
        ae = AE(ae_title=self.app.config.dicom.ae_title)
        ae.implementation_version_name = IMPLEMENTATION_VERSION
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = cfg.dicom_timeout_ms / 1000
        ae.connection_timeout = cfg.tcp_timeout_ms / 1000
        ae.add_requested_context(STORAGE_COMMITMENT)
        got: list[Report] = []
        # One event for both ways the report may come: on this association, or on a new one meanwhile.
        arrived = reported if reported is not None else threading.Event()

        def on_report(event: Event) -> tuple[int, None]:
            got.append(parse_report(event.event_information))
            arrived.set()
            return status.SUCCESS, None

        context = self._tls()
        assoc = ae.associate(
            cfg.host,
            cfg.port,
            ae_title=cfg.ae_title,
            ext_neg=[build_role(STORAGE_COMMITMENT, scu_role=True, scp_role=True)],
            tls_args=(context, cfg.host) if context is not None else None,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
        )
        if not assoc.is_established:
            raise ConnectionError(f"no association with {cfg.ae_title}@{cfg.host}:{cfg.port} for storage commitment")
        try:
            answer, _ = assoc.send_n_action(request(instances, transaction_uid), 1, STORAGE_COMMITMENT, INSTANCE)
            code = answer.get("Status") if answer is not None else None
            if code != 0x0000:
                raise ConnectionError(
                    f"{cfg.ae_title} answered the storage commitment request with "
                    f"{'nothing' if code is None else f'0x{int(code):04X}'}"
                )
            arrived.wait(min(5.0, cfg.dicom_timeout_ms / 1000))
        finally:
            if assoc.is_established:
                assoc.release()
        return got[0] if got else None


def _implementation_uid() -> str:
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID

    return str(PYNETDICOM_IMPLEMENTATION_UID)


def request(instances: list[StoredInstance], transaction_uid: str) -> Dataset:
    """The Action Information of a Storage Commitment request."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ds.ReferencedSOPSequence = [referenced_sop(inst.sop_class_uid, inst.sop_uid) for inst in instances]
    return ds


def parse_report(info: Dataset) -> Report:
    """A Storage Commitment report's Event Information as a :class:`Report`."""
    committed = [str(item.ReferencedSOPInstanceUID) for item in info.get("ReferencedSOPSequence", [])]
    failed = {}
    for item in info.get("FailedSOPSequence", []):
        reason = int(item.get("FailureReason", 0x0110))
        failed[str(item.ReferencedSOPInstanceUID)] = f"0x{reason:04X} {FAILURE_REASONS.get(reason, '')}".strip()
    return Report(str(info.get("TransactionUID", "")), committed, failed)


def handle_n_event_report(event: Event, app: Appliance) -> tuple[int | Dataset, Dataset | None]:
    """N-EVENT-REPORT to our listener: a Storage Commitment report on a new association.

    Returns
    -------
    (status, reply)
        0x0000 taken (also for a transaction nobody here asked about: logged); 0x0124 no commit right;
        0x0118 not the Storage Commitment class; 0x0110 the report cannot be read.
    """
    req: Any = event.request
    peer = handlers.calling_ae(event)
    refused = refusal(app, peer, str(req.AffectedSOPClassUID))
    if refused is not None:
        return refused, None
    try:
        report = parse_report(event.event_information)
    except Exception as exc:
        return guard.failure("N-ACTION", exc, peer, "Storage Commitment report"), None
    taken = any(
        listener(report.transaction_uid, report.committed, report.failed) for listener in app.commitment_listeners
    )
    if not taken:
        LOGGER.warning(
            "Storage Commitment report from %s for unknown transaction %s ignored", peer, report.transaction_uid
        )
    return status.SUCCESS, None
