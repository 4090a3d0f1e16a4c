"""C-FIND on the fast path: Q/R and Modality Worklist queries answered on the raw socket.

Why: through pynetdicom an answer cost ~0.8 ms beyond the SQL (bench/find: a one-year date range
with 666 answers took ~450-550 ms): a pydicom data set per answer, its encoding, then pynetdicom's
response primitive, DIMSE message and DUL queues. Here the decisions stay where they are
(:func:`appliance.dicom.find_handlers.find_responses`: rights, statuses, log lines, cancel),
Q/R answers are written from plain values (:mod:`appliance.dicom.fast.codec`) and each response is
one ``sendall`` of hand-encoded command and data set PDVs.

Kept as pynetdicom's ``QueryRetrieveServiceClass`` / ``BasicWorklistManagementServiceClass`` do
it: the service chosen from the request's Affected SOP Class UID and refused (A-ABORT) on a context
of another service; the identifier decoded with the context's transfer syntax; one C-FIND-RSP per
yielded status, the identifier only with a pending one, a final 0x0000 after the last answer;
0xC311 when the handler logic raises, 0xC312 when an answer cannot be encoded; C-CANCEL-RQ (with the
request's Message ID) seen between answers; A-ABORT stops the answers; an A-RELEASE-RQ stops them
and the final 0x0000 goes out before the A-RELEASE-RP.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from io import BytesIO
from typing import TYPE_CHECKING, Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.service_class import BasicWorklistManagementServiceClass, QueryRetrieveServiceClass
from pynetdicom.sop_class import uid_to_service_class
from pynetdicom.status import QR_FIND_SERVICE_CLASS_STATUS, STATUS_PENDING, STATUS_WARNING

from appliance.dicom import find_handlers, status
from appliance.dicom.fast.codec import AnswerEncoder
from appliance.dicom.fast.dimse import encode_response, pdata_pdus, simple_status
from appliance.query import Answer

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.presentation import PresentationContext

    from appliance.dicom.fast import FastAssociation
    from appliance.dicom.server import ApplianceServer

LOGGER = logging.getLogger("appliance.dicom")

_C_FIND_RSP = 0x8020
_SCPS = (QueryRetrieveServiceClass.SCP, BasicWorklistManagementServiceClass.SCP)


def handler_is_ours(server: ApplianceServer) -> bool:
    """Whether the listener's EVT_C_FIND handler is the appliance's own (another one keeps pynetdicom's path)."""
    bound = server.get_handlers(evt.EVT_C_FIND)
    return bool(bound) and bound[0] is find_handlers.handle_c_find


def serves(sop_class: str, abstract_syntax: str) -> bool:
    """Whether pynetdicom would run a C-FIND for ``sop_class`` on a context of ``abstract_syntax``.

    pynetdicom picks the service class from the request's SOP class, then refuses (and aborts) a
    context that service does not list.
    """
    service = uid_to_service_class(sop_class)
    return (
        issubclass(service, QueryRetrieveServiceClass)
        and service.SCP in _SCPS
        and abstract_syntax in service._SUPPORTED_UIDS["C-FIND"]
    )


class _Peer:
    """What the peer sent while the answers went out (see :meth:`FastAssociation.poll`)."""

    def __init__(self, assoc: FastAssociation, message_id: int) -> None:
        self.assoc = assoc
        self.message_id = message_id
        self.event: str | None = None  # "release" or "ended" once seen

    def cancelled(self) -> bool:
        """Asked before each answer: True once a C-CANCEL-RQ for this request has arrived."""
        if self.event is not None:
            return False
        seen = self.assoc.poll(self.message_id)
        if seen == "cancel":
            return True
        self.event = seen
        return False


def serve_find(
    assoc: FastAssociation, command: dict[int, Any], data: bytes | None, context: PresentationContext
) -> bool:
    """Answer one C-FIND-RQ, streaming its responses.

    Parameters
    ----------
    assoc : FastAssociation
        The association (its socket, peer and appliance).
    command : dict
        The request's command elements (:func:`appliance.dicom.fast.dimse.decode_command`).
    data : bytes or None
        The encoded identifier.
    context : PresentationContext
        The accepted presentation context the request came on.

    Returns
    -------
    bool
        False when the association has ended (aborted, closed) meanwhile.
    """
    message_id, sop_class = command.get(0x0110), command.get(0x0002)
    if message_id is None or sop_class is None or 0x0700 not in command:
        LOGGER.warning("Received unexpected C-FIND service message")  # pynetdicom ignores it too
        return True
    if not serves(sop_class, str(context.abstract_syntax)):
        LOGGER.error(
            "fast path: association from %s aborted: C-FIND for %s on a %s context",
            assoc.requestor.ae_title,
            sop_class,
            context.abstract_syntax,
        )
        assoc.abort()
        return False
    syntax = cast(UID, context.transfer_syntax[0])

    def identifier() -> Dataset:
        if not data:
            return Dataset()
        implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
        ds = decode(BytesIO(data), implicit, little, syntax.is_deflated)
        ds.set_original_encoding(implicit, little)
        return ds

    peer = _Peer(assoc, message_id)
    responses = find_handlers.find_responses(
        assoc.server.app, assoc.requestor.ae_title, sop_class, identifier, peer.cancelled
    )
    stream = _Stream(assoc, message_id, sop_class, cast(int, context.context_id), syntax)
    return stream.run(responses, peer)


class _Stream:
    """The responses of one C-FIND, as pynetdicom's ``_c_find_scp`` sends them."""

    def __init__(self, assoc: FastAssociation, message_id: int, sop_class: str, context_id: int, syntax: UID) -> None:
        self.assoc = assoc
        self.message_id = message_id
        self.sop_class = sop_class
        self.context_id = context_id
        self.syntax = syntax
        self.max_length = assoc.requestor.maximum_length
        self._encoder: AnswerEncoder | None = None

    def run(self, responses: Iterator[tuple[Any, Any]], peer: _Peer) -> bool:
        """Send a response per yielded status, then the final 0x0000; False when the association ended."""
        try:
            while True:
                try:
                    result, answer = next(responses)
                except StopIteration:
                    break
                except Exception as exc:  # pynetdicom: 0xC311 for an exception in the handler
                    _log_handler_error(exc)
                    return self._send(self._status(0xC311, None)[1])
                if peer.event == "ended":
                    return False
                if peer.event == "release":
                    break  # pynetdicom stops at an A-RELEASE-RQ and answers 0x0000
                data = None
                if _is_pending(result):
                    try:
                        flags = self.syntax.is_implicit_VR, self.syntax.is_little_endian, self.syntax.is_deflated
                    except ValueError as exc:  # not a transfer syntax: pynetdicom's service class raises, aborts
                        LOGGER.error("fast path: association from %s aborted: %s", self.assoc.requestor.ae_title, exc)
                        self.assoc.abort()
                        return False
                    try:
                        data = self._identifier(answer, *flags)
                    except Exception as exc:  # making the data set is the handler's part under pynetdicom
                        _log_handler_error(exc)
                        return self._send(self._status(0xC311, None)[1])
                category, pdus = self._status(result, data)
                if not self._send(pdus):
                    return False
                if category not in (STATUS_PENDING, STATUS_WARNING):
                    return True
            return self._send(self._status(status.SUCCESS, None)[1])
        finally:
            close = getattr(responses, "close", None)
            if close is not None:
                close()  # a generator: stop it where it is (no log line, as under pynetdicom)

    def _identifier(
        self, answer: Answer | Dataset | None, implicit: bool, little: bool, deflated: bool
    ) -> bytes | None:
        """A pending answer's data set bytes (None when it cannot be encoded: 0xC312)."""
        if answer is None:
            return None
        if isinstance(answer, Answer):
            if little and not deflated:
                if self._encoder is None or self._encoder.fields is not answer.fields:
                    self._encoder = AnswerEncoder(answer.fields, implicit)
                try:
                    raw = self._encoder.encode(answer)
                except Exception:  # pydicom's own encoder below says what is wrong, as it would have
                    raw = None
                if raw is not None:
                    return raw
            answer = answer.dataset()
        return encode(answer, implicit, little, deflated)

    def _status(self, result: Any, data: bytes | None) -> tuple[str | None, bytes]:
        """(status category, P-DATA-TF PDUs) of one response."""
        code, comment = simple_status(result)
        if code is None:
            return self._pynetdicom_status(result, data)
        category = QR_FIND_SERVICE_CLASS_STATUS.get(code, (None, ""))[0]
        if category is None:
            LOGGER.warning("Unknown status value returned by callback - 0x%04X", code)
        if category == STATUS_PENDING and not data:
            LOGGER.error("Failed encoding the response 'Identifier' dataset")
            return self._status(0xC312, None)
        with_data = category == STATUS_PENDING
        command = encode_response(_C_FIND_RSP, self.message_id, self.sop_class, code, comment, None, with_data)
        pdus = pdata_pdus(command, self.context_id, self.max_length)
        if with_data:
            pdus += pdata_pdus(cast(bytes, data), self.context_id, self.max_length, data_set=True)
        return category, pdus

    def _pynetdicom_status(self, result: Any, data: bytes | None) -> tuple[str | None, bytes]:
        """A status data set with other elements, an invalid value: pynetdicom's own check and encoder."""
        rsp = C_FIND()
        rsp.MessageIDBeingRespondedTo = self.message_id
        rsp.AffectedSOPClassUID = self.sop_class
        service = QueryRetrieveServiceClass(cast("Association", self.assoc))
        service.statuses = QR_FIND_SERVICE_CLASS_STATUS
        rsp = service.validate_status(result, rsp)
        category = QR_FIND_SERVICE_CLASS_STATUS.get(cast(int, rsp.Status), (None, ""))[0]
        if category == STATUS_PENDING:
            if not data:
                LOGGER.error("Failed encoding the response 'Identifier' dataset")
                return self._status(0xC312, None)
            rsp.Identifier = BytesIO(data)
        message = C_FIND_RSP()
        message.primitive_to_message(rsp)
        out = []
        for pdata in message.encode_msg(self.context_id, self.max_length):
            pdu = P_DATA_TF()
            pdu.from_primitive(pdata)
            out.append(pdu.encode())
        return category, b"".join(out)

    def _send(self, pdus: bytes) -> bool:
        """Send; False (the association ended) when the peer has gone or stopped reading."""
        return self.assoc.send_or_end(pdus)


def _is_pending(result: Any) -> bool:
    code = result if isinstance(result, int) else getattr(result, "Status", None)
    return QR_FIND_SERVICE_CLASS_STATUS.get(cast(int, code), (None, ""))[0] == STATUS_PENDING


def _log_handler_error(exc: BaseException) -> None:
    """pynetdicom's log of an exception raised while the handler's answers were taken."""
    LOGGER.error("Exception in handler bound to 'evt.EVT_C_FIND'")
    LOGGER.error(
        "\nTraceback (most recent call last):\n"
        + "".join(traceback.format_tb(exc.__traceback__))
        + f"{type(exc).__name__}: {exc}"
    )
