"""An outgoing association that sends stored instances by C-STORE on the raw socket.

Why: pynetdicom's requestor sends each C-STORE through its DIMSE and DUL threads, which poll
their queues every millisecond, and its socket keeps Nagle's algorithm on, so each sub-operation
of a C-MOVE waited for a delayed ACK (~26 ms per instance measured against ``storescp``). Here
the connection has ``TCP_NODELAY``, the stored data set bytes go out as they are (no decoding
when the receiver accepted the stored syntax), and the response is read in the sending thread.

The A-ASSOCIATE-RQ and -AC are encoded and decoded with pynetdicom's PDU classes (once per
association); C-STORE-RQ and P-DATA-TF are written by hand (:mod:`appliance.dicom.fast.dimse`,
tested byte for byte against pynetdicom).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext

from appliance.dicom.fast.dimse import C_STORE_RSP, CommandReader, encode_store_request, pdata_pdus, pdv_buffers
from appliance.dicom.fast.wire import RELEASE_RP, abort_pdu, close, recv_exact, send_buffers

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
_RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
#: A-ASSOCIATE-RJ (source, reason) in an administrator's words.
REJECT_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded (too many associations)",
}


class AssociationFailed(ConnectionError):
    """No association: refused, rejected, timed out, or the peer accepted no context."""


class AssociationLost(ConnectionError):
    """The association ended while an instance was being sent (abort, reset, timeout)."""


@dataclass
class Timeouts:
    """Seconds to wait: for the TCP connection, the A-ASSOCIATE-AC, and each C-STORE-RSP."""

    connect: float = 10.0
    acse: float = 30.0
    dimse: float = 60.0


@dataclass
class Identity:
    """What we say about ourselves in the A-ASSOCIATE-RQ."""

    calling_ae: str
    implementation_class_uid: str
    implementation_version: str = ""
    max_pdu: int = 1048576


@dataclass
class StoreSCU:
    """One outgoing C-STORE association.

    Parameters
    ----------
    host, port : str, int
        The receiver.
    called_ae : str
        The receiver's AE title.
    identity : Identity
        Our AE title and implementation.
    contexts : sequence of (str, sequence of str)
        (SOP Class UID, transfer syntaxes) per presentation context to propose, at most 128.
    timeouts : Timeouts
        Connection, association and response timeouts.
    ssl_context : ssl.SSLContext, optional
        Client TLS context (the connection is wrapped before the A-ASSOCIATE-RQ).
    """

    host: str
    port: int
    called_ae: str
    identity: Identity
    contexts: Sequence[tuple[str, Sequence[str]]]
    timeouts: Timeouts = field(default_factory=Timeouts)
    ssl_context: ssl.SSLContext | None = None
    #: Accepted contexts: SOP Class UID -> [(context ID, transfer syntax)], in proposal order.
    accepted: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    _sock: socket.socket | None = None
    _peer_max: int = 0

    def open(self) -> None:
        """Connect and associate.

        Raises
        ------
        AssociationFailed
            With the reason in an administrator's words.
        """
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeouts.connect)
        except ConnectionRefusedError as exc:
            raise AssociationFailed(f"connection refused by {self.host}:{self.port}") from exc
        except TimeoutError as exc:
            raise AssociationFailed(
                f"no answer from {self.host}:{self.port} within {self.timeouts.connect:g} s"
            ) from exc
        except OSError as exc:
            raise AssociationFailed(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self.timeouts.acse)
            sock.sendall(self._request())
            pdu_type, body = self._read_pdu(sock)
        except (OSError, ssl.SSLError) as exc:
            close(sock)
            raise AssociationFailed(f"association with {self.called_ae}@{self.host}:{self.port} failed: {exc}") from exc
        if pdu_type == 0x03:
            close(sock)
            rj = A_ASSOCIATE_RJ()
            rj.decode(b"\x03\x00" + len(body).to_bytes(4, "big") + bytes(body))
            kind = "permanently" if rj.result == 1 else "transiently"
            reason = REJECT_REASONS.get(
                (cast(int, rj.source), cast(int, rj.reason_diagnostic)), f"reason {rj.source}/{rj.reason_diagnostic}"
            )
            raise AssociationFailed(
                f"{self.called_ae}@{self.host}:{self.port} rejected the association {kind}: {reason}"
            )
        if pdu_type != 0x02:
            close(sock)
            raise AssociationFailed(f"{self.called_ae}@{self.host}:{self.port} aborted the association request")
        ac = A_ASSOCIATE_AC()
        ac.decode(b"\x02\x00" + len(body).to_bytes(4, "big") + bytes(body))
        primitive = ac.to_primitive()
        self._peer_max = int(primitive.maximum_length_received or 0)
        proposed = {i * 2 + 1: uid for i, (uid, _) in enumerate(self.contexts)}
        for cx in primitive.presentation_context_definition_results_list:
            if cx.result == 0x00 and cx.context_id in proposed and cx.transfer_syntax:
                self.accepted.setdefault(proposed[cast(int, cx.context_id)], []).append(
                    (cast(int, cx.context_id), str(cx.transfer_syntax[0]))
                )
        self._sock = sock
        if not self.accepted:
            self.abort()
            raise AssociationFailed(
                f"{self.called_ae}@{self.host}:{self.port} accepted none of the "
                f"{len(self.contexts)} presentation context(s) proposed"
            )

    def _request(self) -> bytes:
        rq = A_ASSOCIATE()
        rq.application_context_name = APPLICATION_CONTEXT_NAME
        rq.calling_ae_title = self.identity.calling_ae
        rq.called_ae_title = self.called_ae
        contexts = []
        for i, (sop_class, syntaxes) in enumerate(self.contexts[:128]):
            cx = PresentationContext()
            cx.context_id = i * 2 + 1
            cx.abstract_syntax = sop_class
            cx.transfer_syntax = list(syntaxes)
            contexts.append(cx)
        rq.presentation_context_definition_list = contexts
        max_length = MaximumLengthNotification()
        max_length.maximum_length_received = self.identity.max_pdu
        class_uid = ImplementationClassUIDNotification()
        class_uid.implementation_class_uid = self.identity.implementation_class_uid
        user: list[Any] = [max_length, class_uid]
        if self.identity.implementation_version:
            version = ImplementationVersionNameNotification()
            version.implementation_version_name = self.identity.implementation_version
            user.append(version)
        rq.user_information = user
        pdu = A_ASSOCIATE_RQ()
        pdu.from_primitive(rq)
        return cast(bytes, pdu.encode())

    @staticmethod
    def _read_pdu(sock: socket.socket) -> tuple[int, bytearray]:
        header = recv_exact(sock, 6)
        if len(header) < 6:
            raise ConnectionResetError("the peer closed the connection")
        length = int.from_bytes(header[2:6], "big")
        if length > 64 * 1024 * 1024:
            raise ConnectionResetError(f"the peer sent a PDU of {length} bytes")
        body = recv_exact(sock, length)
        if len(body) < length:
            raise ConnectionResetError("the peer closed the connection")
        return header[0], body

    def store(
        self,
        message_id: int,
        sop_class: str,
        sop_instance: str,
        context_id: int,
        data: bytes | memoryview,
        move_originator: tuple[str, int] | None = None,
    ) -> tuple[int, str]:
        """Send one C-STORE-RQ with its data set and wait for the response.

        Returns
        -------
        (int, str)
            The response's Status and Error Comment ('' when none).

        Raises
        ------
        AssociationLost
            When the association ended (A-ABORT, reset, DIMSE timeout: then we abort it).
        """
        self.send(message_id, sop_class, sop_instance, context_id, data, move_originator)
        return self.response(message_id)

    def send(
        self,
        message_id: int,
        sop_class: str,
        sop_instance: str,
        context_id: int,
        data: bytes | memoryview,
        move_originator: tuple[str, int] | None = None,
    ) -> None:
        """Send one C-STORE-RQ with its data set (:meth:`response` then waits for its answer).

        Raises
        ------
        AssociationLost
            When the association ended (reset, send timeout: then we abort it).
        """
        sock = self._sock
        if sock is None:
            raise AssociationLost("the association is not open")
        command = pdata_pdus(
            encode_store_request(message_id, sop_class, sop_instance, 0, move_originator), context_id, self._peer_max
        )
        try:
            sock.settimeout(self.timeouts.dimse)
            send_buffers(sock, [command, *pdv_buffers(data, context_id, self._peer_max)])
        except TimeoutError as exc:
            self.abort()
            raise AssociationLost(
                f"no C-STORE response within {self.timeouts.dimse:g} s (association aborted)"
            ) from exc
        except OSError as exc:
            self.abort()
            raise AssociationLost(f"association lost while sending: {exc}") from exc

    def response(self, message_id: int) -> tuple[int, str]:
        """Wait for the response to the C-STORE-RQ sent with ``message_id``.

        Returns
        -------
        (int, str)
            The response's Status and Error Comment ('' when none).

        Raises
        ------
        AssociationLost
            When the association ended (A-ABORT, reset, DIMSE timeout: then we abort it).
        """
        sock = self._sock
        if sock is None:
            raise AssociationLost("the association is not open")
        try:
            return self._response(sock, message_id)
        except TimeoutError as exc:
            self.abort()
            raise AssociationLost(
                f"no C-STORE response within {self.timeouts.dimse:g} s (association aborted)"
            ) from exc
        except (OSError, ValueError) as exc:
            self.abort()
            raise AssociationLost(f"association lost while sending: {exc}") from exc

    def _response(self, sock: socket.socket, message_id: int) -> tuple[int, str]:
        reader = CommandReader()
        while True:
            pdu_type, body = self._read_pdu(sock)
            if pdu_type == 0x07:
                raise ConnectionAbortedError("the receiver aborted the association")
            if pdu_type != 0x04:
                raise ConnectionAbortedError(f"unexpected PDU type 0x{pdu_type:02X} while waiting for a response")
            for fields in reader.feed(body):
                if fields.get(0x0100) == C_STORE_RSP and fields.get(0x0120) == message_id:
                    return int(fields.get(0x0900, 0xFFFF)), str(fields.get(0x0902, ""))

    def release(self) -> None:
        """Release the association (A-RELEASE-RQ, wait for the RP) and close the connection."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError, ConnectionError):
            sock.settimeout(self.timeouts.acse)
            sock.sendall(_RELEASE_RQ)
            while True:
                pdu_type, _ = self._read_pdu(sock)
                if pdu_type in (0x06, 0x07):
                    break
                if pdu_type == 0x05:  # release collision: answer it
                    sock.sendall(RELEASE_RP)
                    break
        close(sock)

    def abort(self) -> None:
        """Send an A-ABORT and close the connection."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.sendall(abort_pdu(0x00, 0x00))
        close(sock)
