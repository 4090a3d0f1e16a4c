"""Storage Commitment Push Model as SCP (PS3.4 Annex J): a modality asks us to commit what it sent.

N-ACTION (action type 1) names a Transaction UID and the instances; we answer the N-ACTION at once,
then decide which instances are safely stored (:meth:`appliance.core.Appliance.commitment`: indexed,
same SOP class, file in place) and send the N-EVENT-REPORT (event type 1 all committed, 2 some
failed): on the same association while it is open (its requester is the SCU, which takes reports),
otherwise on a new association to the requester, which must then be a known node (its host and
port), proposing the SCP role for us (PS3.4 J.3.3 allows both).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.events import Event

from appliance.core import IMPLEMENTATION_VERSION, Appliance
from appliance.dicom import guard, handlers, status
from appliance.dicom.policy import STORAGE_COMMITMENT

LOGGER = logging.getLogger("appliance.dicom")

#: The Storage Commitment Push Model well-known SOP Instance (PS3.4 J.3.2).
INSTANCE = "1.2.840.10008.1.20.1.1"
#: N-ACTION failures (PS3.7 C.4.x): no such action, invalid argument value, missing attribute.
NO_SUCH_ACTION, INVALID_ARGUMENT, MISSING_ATTRIBUTE = 0x0123, 0x0115, 0x0120


def refusal(app: Appliance, peer: str, sop_class: str) -> int | Dataset | None:
    """The status refusing a Storage Commitment message (N-ACTION or N-EVENT-REPORT) up front, or None.

    0x0124 when ``peer`` has no commit right; 0x0118 when the message is not for the Storage Commitment class.
    """
    if not app.may(peer, "commit"):
        return guard.refusal(status.NOT_AUTHORIZED, "calling AE has no commit right")
    if sop_class != STORAGE_COMMITMENT:
        return 0x0118
    return None


def referenced_sop(sop_class: str, sop_uid: str, reason: int | None = None) -> Dataset:
    """An item of a Referenced (or, with ``reason``, Failed) SOP Sequence."""
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    if reason is not None:
        item.FailureReason = reason
    return item


def handle_n_action(
    event: Event, app: Appliance, reporter: Callable[[Event, Appliance, Dataset], None]
) -> tuple[int | Dataset, Dataset | None]:
    """N-ACTION: accept a Storage Commitment request; the report follows on ``reporter``'s thread.

    Returns
    -------
    (status, reply)
        0x0000 accepted; 0x0124 no commit right; 0x0118 not the Storage Commitment class; 0x0123
        not action type 1; 0x0120 no Transaction UID or no Referenced SOP Sequence; 0x0115 an item
        without its UIDs.
    """
    req: Any = event.request
    peer = handlers.calling_ae(event)
    refused = refusal(app, peer, str(req.RequestedSOPClassUID))
    if refused is not None:
        return refused, None
    if req.ActionTypeID != 1:
        return guard.refusal(NO_SUCH_ACTION, "Storage Commitment has action type 1 only"), None
    try:
        info = event.action_information
    except Exception as exc:
        return guard.failure("N-ACTION", exc, peer, "Storage Commitment"), None
    if not info.get("TransactionUID") or not info.get("ReferencedSOPSequence"):
        return guard.refusal(MISSING_ATTRIBUTE, "Transaction UID and Referenced SOP Sequence are required"), None
    if any(
        not item.get("ReferencedSOPClassUID") or not item.get("ReferencedSOPInstanceUID")
        for item in info.ReferencedSOPSequence
    ):
        return guard.refusal(INVALID_ARGUMENT, "a Referenced SOP Sequence item lacks its UIDs"), None
    LOGGER.info(
        "Storage Commitment from %s: transaction %s, %d instance(s)",
        peer,
        info.TransactionUID,
        len(info.ReferencedSOPSequence),
    )
    reporter(event, app, info)
    return status.SUCCESS, None


def report(app: Appliance, info: Dataset) -> tuple[int, Dataset]:
    """The N-EVENT-REPORT of a commitment request: event type and Event Information."""
    references = [
        (str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID)) for item in info.ReferencedSOPSequence
    ]
    committed, failed = app.commitment(references)
    out = Dataset()
    out.TransactionUID = info.TransactionUID
    out.RetrieveAETitle = app.config.dicom.ae_title
    if committed:
        out.ReferencedSOPSequence = [referenced_sop(sop_class, sop_uid) for sop_class, sop_uid in committed]
    if failed:
        out.FailedSOPSequence = [referenced_sop(sop_class, sop_uid, reason) for sop_class, sop_uid, reason in failed]
    return (2 if failed else 1), out


class Reporter:
    """Sends N-EVENT-REPORTs in their own threads, after the N-ACTION response has gone out.

    Parameters
    ----------
    settle : float
        Seconds to wait before reporting, so the N-ACTION-RSP is sent first.
    """

    def __init__(self, settle: float = 0.05) -> None:
        self.settle = settle
        self._threads: list[threading.Thread] = []

    def __call__(self, event: Event, app: Appliance, info: Dataset) -> None:
        """Schedule the report of one request (the handler's ``reporter``)."""
        thread = threading.Thread(
            target=self._send,
            args=(event.assoc, handlers.calling_ae(event), app, info),
            name="commitment-report",
            daemon=True,
        )
        self._threads.append(thread)
        thread.start()

    def join(self, timeout: float = 10.0) -> None:
        """Wait for the reports in flight (at shutdown, in tests)."""
        for thread in list(self._threads):
            thread.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _send(self, assoc: Any, peer: str, app: Appliance, info: Dataset) -> None:
        time.sleep(self.settle)
        try:
            event_type, data = report(app, info)
        except Exception as exc:
            guard.failure("N-ACTION", exc, peer, f"Storage Commitment report {info.TransactionUID}")
            return
        failed = len(data.get("FailedSOPSequence", []))
        if assoc.is_established and _may_report_on(assoc):
            try:
                answer, _ = assoc.send_n_event_report(data, event_type, STORAGE_COMMITMENT, INSTANCE)
                if answer is not None and answer.get("Status") == 0x0000:
                    LOGGER.info(
                        "Storage Commitment report to %s (same association): transaction %s, %d failed",
                        peer,
                        info.TransactionUID,
                        failed,
                    )
                    return
            except Exception as exc:  # closed meanwhile: report on a new association below
                LOGGER.info("Storage Commitment report to %s: same association not usable (%s)", peer, exc)
        self._send_new(peer, app, data, event_type, failed)

    @staticmethod
    def _send_new(peer: str, app: Appliance, data: Dataset, event_type: int, failed: int) -> None:
        node = app.node(peer)
        if node is None:
            LOGGER.error(
                "Storage Commitment report for %s not sent: the association has ended and %s is not a "
                "known node (add it to [[dicom.nodes]] so the report can reach it)",
                peer,
                peer,
            )
            return
        cfg = app.config.dicom
        ae = AE(ae_title=cfg.ae_title)
        ae.implementation_version_name = IMPLEMENTATION_VERSION
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = cfg.acse_timeout
        ae.add_requested_context(STORAGE_COMMITMENT)
        # On this association we are the requestor but the Storage Commitment SCP (PS3.4 J.3.3).
        role = build_role(STORAGE_COMMITMENT, scu_role=False, scp_role=True)
        tls_args = handlers.app_tls_args(app, node.host) if node.tls else None
        assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, ext_neg=[role], tls_args=tls_args)
        if not assoc.is_established:
            LOGGER.error("Storage Commitment report to %s (%s:%d) not sent: no association", peer, node.host, node.port)
            return
        try:
            answer, _ = assoc.send_n_event_report(data, event_type, STORAGE_COMMITMENT, INSTANCE)
        finally:
            assoc.release()
        code = answer.get("Status") if answer is not None else None
        if code == 0x0000:
            LOGGER.info(
                "Storage Commitment report to %s (new association): transaction %s, %d failed",
                peer,
                data.TransactionUID,
                failed,
            )
        else:
            LOGGER.error(
                "Storage Commitment report to %s answered %s", peer, "nothing" if code is None else f"0x{int(code):04X}"
            )


def _may_report_on(assoc: Any) -> bool:
    """Whether the association has a Storage Commitment context (its requester is the SCU: it takes reports)."""
    return any(str(cx.abstract_syntax) == STORAGE_COMMITMENT for cx in assoc.accepted_contexts)
